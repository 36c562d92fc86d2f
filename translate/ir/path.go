package ir

import (
	"strconv"
	"strings"
)

// Path is a field path inside a Kubernetes object, written the way users read
// it: spec.http[0].match[1].headers.end-user.exact. Map keys that are not
// plain words are quoted: metadata.labels["app.kubernetes.io/name"].
type Path string

// Field appends a struct field or plain map key.
func (p Path) Field(name string) Path {
	if !plainKey(name) {
		return p + Path("["+strconv.Quote(name)+"]")
	}
	if p == "" {
		return Path(name)
	}
	return p + "." + Path(name)
}

// Index appends a list index.
func (p Path) Index(i int) Path {
	return p + Path("["+strconv.Itoa(i)+"]")
}

func (p Path) String() string { return string(p) }

func plainKey(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '@', r == ':':
		default:
			return false
		}
	}
	return true
}

// PathElem is one step of a parsed Path: a key or an index.
type PathElem struct {
	Key     string
	Index   int
	IsIndex bool
}

// ParsePath splits a Path into its steps. It never fails: text it cannot
// parse ends the path.
func ParsePath(p string) []PathElem {
	var out []PathElem
	s := p
	for len(s) > 0 {
		switch s[0] {
		case '.':
			s = s[1:]
		case '[':
			end := strings.IndexByte(s, ']')
			if len(s) > 1 && s[1] == '"' {
				// quoted key; find the closing quote honouring escapes
				q, err := strconv.QuotedPrefix(s[1:])
				if err != nil {
					return out
				}
				k, _ := strconv.Unquote(q)
				out = append(out, PathElem{Key: k})
				s = s[1+len(q):]
				if len(s) > 0 && s[0] == ']' {
					s = s[1:]
				}
				continue
			}
			if end < 0 {
				return out
			}
			n, err := strconv.Atoi(s[1:end])
			if err != nil {
				return out
			}
			out = append(out, PathElem{Index: n, IsIndex: true})
			s = s[end+1:]
		default:
			end := strings.IndexAny(s, ".[")
			if end < 0 {
				end = len(s)
			}
			out = append(out, PathElem{Key: s[:end]})
			s = s[end:]
		}
	}
	return out
}
