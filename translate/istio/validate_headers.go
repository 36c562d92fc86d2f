package istio

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's header rules (pkg/config/validation/validation.go and
// header_value_validator.go); each exists because Envoy rejects the
// configuration otherwise.

// validHeaderName is RFC 7230's token (Istio's validHeaderNameRegex).
var validHeaderName = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~A-Za-z0-9]+$")

// pseudoHeaders may be matched on (Istio's pseudoHeaders).
var pseudoHeaders = map[string]bool{":method": true, ":scheme": true, ":authority": true, ":path": true, ":status": true}

// invalidHeaderValue matches the characters Envoy refuses in a header value
// (Istio's httpHeaderValueRegexp, PGV's HTTP_HEADER_VALUE: controls but tab).
var invalidHeaderValue = regexp.MustCompile("[\u0000-\u0008\u000A-\u001F\u007F]")

// headerOp checks the name of a header operation: request set/add may name
// the authority (a host rewrite) but no other pseudo-header; removals and
// response operations may name neither Host nor a pseudo-header (Istio's
// ValidateHTTPHeaderWithAuthorityOperationName / ValidateHTTPHeaderOperationName;
// Envoy: ":-prefixed or host headers may not be modified").
func (v vsValidator) headerOp(field ir.Path, name string, requestSet bool, fail failFunc) {
	switch {
	case name == "":
	case requestSet && isAuthorityHeader(name):
	case strings.HasPrefix(name, ":"):
		fail(field.Field(name), "header %q cannot have a \":\" prefix", name)
	case strings.EqualFold(name, "host"):
		fail(field.Field(name), "the Host header cannot be set or removed here")
	}
}

// headerValueError is Istio's ValidateHTTPHeaderValue: no control
// characters, and Envoy's %VARIABLE% syntax well formed (a lone % must be
// written %%), which Envoy's header parser enforces.
func headerValueError(value string) error {
	if invalidHeaderValue.MatchString(value) {
		return errors.New("control characters (NUL, CR, LF…) are not allowed")
	}
	return headerFormatError(value)
}

// headerFormatError is Istio's validateHeaderValue, a port of Envoy's
// HeaderParser (source/common/router/header_parser.cc): a small state
// machine over %VAR%, %VAR(arg)% and %VAR(["a","b"])%.
func headerFormatError(value string) error {
	const (
		literal = iota
		varName
		expectArray
		expectString
		inString
		expectDelimOrEnd
		expectArgsEnd
		expectVarEnd
	)
	state := literal
	for pos := 0; pos < len(value); pos++ {
		ch := value[pos]
		hasNext := pos+1 < len(value)
		switch state {
		case literal:
			if ch != '%' {
				break
			}
			if !hasNext {
				return errors.New("un-escaped % (write %% for a literal %)")
			}
			if value[pos+1] == '%' {
				pos++
				break
			}
			state = varName
		case varName:
			switch ch {
			case '%':
				state = literal
			case '(':
				state = expectArray
			}
		case expectArray:
			if ch == '[' {
				state = expectString
			} else if ch != ' ' {
				state = inString
			}
		case expectDelimOrEnd:
			switch {
			case ch == ',':
				state = expectString
			case ch == ']':
				state = expectArgsEnd
			case ch != ' ':
				return errors.New("expecting ',', ']', or whitespace")
			}
		case expectString:
			if ch == '"' {
				state = inString
			} else if ch != ' ' {
				return errors.New(`expecting '"'`)
			}
		case inString:
			switch ch {
			case '\\':
				if !hasNext {
					return errors.New("un-terminated backslash in JSON string")
				}
				pos++
			case ')':
				state = expectVarEnd
			case '"':
				state = expectDelimOrEnd
			}
		case expectArgsEnd:
			if ch == ')' {
				state = expectVarEnd
			} else if ch != ' ' {
				return errors.New("expecting ')' or whitespace")
			}
		case expectVarEnd:
			if ch == '%' {
				state = literal
			} else if ch != ' ' {
				return errors.New("expecting '%' or whitespace")
			}
		}
	}
	if state != literal {
		return fmt.Errorf("un-terminated variable expression %q", value)
	}
	return nil
}
