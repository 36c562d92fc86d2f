package authz

import (
	"slices"
	"strings"
)

// trustDomains is the local trust domain and its aliases, the local one
// first: the principals an AuthorizationPolicy names are rewritten for every
// one of them, as istiod does (pilot/pkg/security/trustdomain), so that a
// policy written for cluster.local keeps working in a mesh whose trust
// domain changed, and a peer of an aliased trust domain is the same peer.
type trustDomains []string

// principals rewrites a list of principals ("td/ns/NS/sa/SA" globs) for the
// bundle. A principal whose trust domain is "*" or that is not of that form
// is kept as written; one whose trust domain matches a member of the
// bundle, or is "cluster.local" (which always stands for the local trust
// domain), becomes one principal per member; any other is kept.
func (t trustDomains) principals(in []string) []string {
	var out []string
	for _, p := range in {
		td, rest, _ := strings.Cut(p, "/")
		if strings.Count(p, "/") != 4 || td == "*" {
			out = append(out, p)
			continue
		}
		if !t.matches(td) && td != DefaultTrustDomain {
			out = append(out, p)
			continue
		}
		var these []string
		for _, member := range t {
			np := p
			if !suffixMatch(member, td) {
				np = member + "/" + rest
			}
			if !slices.Contains(these, np) {
				these = append(these, np)
			}
		}
		out = append(out, these...)
	}
	return out
}

// domains expands trust domain values (source.trustDomains): a member of
// the bundle stands for all of them.
func (t trustDomains) domains(in []string) []string {
	var out []string
	for _, v := range in {
		if slices.Contains(t, v) {
			out = append(out, t...)
		} else {
			out = append(out, v)
		}
	}
	return slices.Compact(dedupe(out))
}

// matches reports whether a principal's trust domain (possibly "*x" or
// "x*") matches a member of the bundle.
func (t trustDomains) matches(td string) bool {
	for _, member := range t {
		switch {
		case td == member:
			return true
		case strings.HasPrefix(td, "*") && strings.HasSuffix(member, td[1:]):
			return true
		case strings.HasSuffix(td, "*") && strings.HasPrefix(member, td[:len(td)-1]):
			return true
		}
	}
	return false
}

// suffixMatch reports whether member is the trust domain pattern td itself,
// or matches its "*suffix" form: the principal is then kept as written
// rather than rewritten into several.
func suffixMatch(member, td string) bool {
	if strings.HasPrefix(td, "*") {
		return strings.HasSuffix(member, td[1:])
	}
	return member == td
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, v := range in {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
