package ir

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := map[string]struct {
		glob Glob
		in   string
		want bool
	}{
		"exact":                  {"ns-1", "ns-1", true},
		"exact, other":           {"ns-1", "ns-12", false},
		"prefix":                 {"ns-*", "ns-12", true},
		"prefix, bare prefix":    {"ns-*", "ns-", true},
		"prefix, other":          {"ns-*", "nx-1", false},
		"suffix":                 {"*/sa/web", "cluster.local/ns/a/sa/web", true},
		"suffix, other":          {"*/sa/web", "cluster.local/ns/a/sa/db", false},
		"presence":               {"*", "anything", true},
		"presence, empty":        {"*", "", false},
		"exact, empty":           {"", "", true},
		"star inside is literal": {"a*b", "a*b", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.glob.Match(tc.in); got != tc.want {
				t.Errorf("Glob(%q).Match(%q) = %v, want %v", tc.glob, tc.in, got, tc.want)
			}
		})
	}
}

// flow is what the test evaluator knows of a request.
type flow struct {
	namespace, principal string
	port                 uint16
	method, path, host   string
}

// matches evaluates a rule for a flow, over the fields the cases use.
func (f flow) matches(r PolicyRule) bool {
	for _, c := range r.Clauses {
		any := false
		for _, m := range c.Matches {
			if f.matchOne(m) {
				any = true
			}
		}
		if !any {
			return false
		}
	}
	return true
}

func (f flow) matchOne(m PolicyMatch) bool {
	anyGlob := func(gs []Glob, s string) bool {
		for _, g := range gs {
			if g.Match(s) {
				return true
			}
		}
		return false
	}
	if len(m.Namespaces) > 0 && !anyGlob(m.Namespaces, f.namespace) || anyGlob(m.NotNamespaces, f.namespace) {
		return false
	}
	if len(m.Principals) > 0 && !anyGlob(m.Principals, f.principal) || anyGlob(m.NotPrincipals, f.principal) {
		return false
	}
	if len(m.Ports) > 0 {
		ok := false
		for _, p := range m.Ports {
			ok = ok || p.Port == f.port
		}
		if !ok {
			return false
		}
	}
	for _, c := range m.L7 {
		v := map[L7Attribute]string{L7Method: f.method, L7Path: f.path, L7Host: f.host}[c.Attribute]
		if len(c.Values) > 0 && !anyGlob(c.Values, v) || anyGlob(c.NotValues, v) {
			return false
		}
	}
	return true
}

// flows is a grid of requests over the values the cases name.
func flows() []flow {
	var out []flow
	for _, ns := range []string{"ns-1", "ns-2"} {
		for _, sa := range []string{"web", "db"} {
			for _, port := range []uint16{80, 8080} {
				for _, method := range []string{"GET", "POST"} {
					for _, path := range []string{"/admin", "/public"} {
						out = append(out, flow{namespace: ns, principal: "cluster.local/ns/" + ns + "/sa/" + sa,
							port: port, method: method, path: path, host: "example.com"})
					}
				}
			}
		}
	}
	return out
}

func l7(a L7Attribute, values ...Glob) L7Condition { return L7Condition{Attribute: a, Values: values} }

// TestProjectL4 checks Istio's behaviour on a port without L7 enforcement
// (../shared/conformance/istio-authz/tcp/allow-only-http and
// istio-ambient-authz/deny-groups): an allow with request conditions never
// matches, a deny ignores them; and that the projection never allows more
// nor denies less than the rule, for every request of a grid.
func TestProjectL4(t *testing.T) {
	src := ResourceRef{Kind: "AuthorizationPolicy", Namespace: "foo", Name: "httpbin"}
	onlyHTTP := []PolicyRule{
		{Direction: PolicyIngress, Field: "spec.rules[0]", Clauses: []PolicyClause{
			{Matches: []PolicyMatch{{Field: "spec.rules[0].from[0]", L7: []L7Condition{l7(L7RequestPrincipal, "id-1")}}}},
			{Matches: []PolicyMatch{{Field: "spec.rules[0].to[0]", L7: []L7Condition{l7(L7Method, "GET")}}}},
		}},
		{Direction: PolicyIngress, Field: "spec.rules[1]", Clauses: []PolicyClause{
			{Matches: []PolicyMatch{{Field: "spec.rules[1].from[0]", Namespaces: []Glob{"ns-1"}}}},
			{Matches: []PolicyMatch{{Field: "spec.rules[1].to[0]", L7: []L7Condition{l7(L7Host, "example.com")}}}},
		}},
	}
	mixed := []PolicyRule{{Direction: PolicyIngress, Field: "spec.rules[0]", Clauses: []PolicyClause{
		{Matches: []PolicyMatch{
			{Field: "spec.rules[0].from[0]", Principals: []Glob{"*/sa/web"}},
			{Field: "spec.rules[0].from[1]", Namespaces: []Glob{"ns-2"}, L7: []L7Condition{l7(L7Path, "/admin")}},
		}},
		{Matches: []PolicyMatch{{Field: "spec.rules[0].to[0]", Ports: []PortMatch{{Protocol: IPProtocolTCP, Port: 80}},
			L7: []L7Condition{{Attribute: L7Method, NotValues: []Glob{"GET"}}}}}},
	}}}
	l4OrL7 := []PolicyRule{{Direction: PolicyIngress, Field: "spec.rules[0]", Clauses: []PolicyClause{
		{Matches: []PolicyMatch{
			{Field: "spec.rules[0].from[0]", Namespaces: []Glob{"ns-1"}},
			{Field: "spec.rules[0].from[1]", L7: []L7Condition{l7(L7RequestPrincipal, "iss/sub")}},
		}},
	}}}
	l4Only := []PolicyRule{{Direction: PolicyIngress, Field: "spec.rules[0]", Clauses: []PolicyClause{
		{Matches: []PolicyMatch{{Namespaces: []Glob{"ns-1"}}}},
	}}}

	tests := map[string]struct {
		action PolicyAction
		rules  []PolicyRule
		// want is which grid flows the projected rules match, as
		// "ns/sa:port", sorted and deduplicated by the request fields.
		want   []string
		degrad []Fallback // per rule, flattened
	}{
		"allow with only HTTP fields matches nothing (allow-only-http)": {
			action: PolicyAllow, rules: onlyHTTP, want: nil,
			degrad: []Fallback{FallbackMatchNothing, FallbackMatchNothing},
		},
		"deny with only HTTP fields ignores them (deny-groups)": {
			action: PolicyDeny, rules: onlyHTTP,
			want:   []string{"ns-1/db:80", "ns-1/db:8080", "ns-1/web:80", "ns-1/web:8080", "ns-2/db:80", "ns-2/db:8080", "ns-2/web:80", "ns-2/web:8080"},
			degrad: []Fallback{FallbackMatchMore, FallbackMatchMore, FallbackMatchMore},
		},
		"an allow with an L7 fact anywhere never matches": {
			action: PolicyAllow, rules: mixed, want: nil,
			degrad: []Fallback{FallbackMatchNothing},
		},
		"an allow's L4 alternative does not survive an L7 one (istiod's TCP filter, ztunnel)": {
			action: PolicyAllow, rules: l4OrL7, want: nil,
			degrad: []Fallback{FallbackMatchNothing},
		},
		"a deny keeps its L4 alternative and widens the L7 one": {
			action: PolicyDeny, rules: l4OrL7,
			want:   []string{"ns-1/db:80", "ns-1/db:8080", "ns-1/web:80", "ns-1/web:8080", "ns-2/db:80", "ns-2/db:8080", "ns-2/web:80", "ns-2/web:8080"},
			degrad: []Fallback{FallbackMatchMore},
		},
		"deny widens each L7 match to its L4 part": {
			action: PolicyDeny, rules: mixed,
			want:   []string{"ns-1/web:80", "ns-2/db:80", "ns-2/web:80"},
			degrad: []Fallback{FallbackMatchMore, FallbackMatchMore},
		},
		"an L4 rule is unchanged": {
			action: PolicyAllow, rules: l4Only,
			want: []string{"ns-1/db:80", "ns-1/db:8080", "ns-1/web:80", "ns-1/web:8080"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var projected []PolicyRule
			var got []Fallback
			for _, r := range tc.rules {
				p := ProjectL4(tc.action, src, r)
				if p.Layer() != LayerL4 {
					t.Errorf("%s: projection still needs L7", r.Field)
				}
				for _, d := range p.Degradations {
					got = append(got, d.Instead)
					if d.Diagnostic.Resource != src || d.Diagnostic.Field == "" || !strings.Contains(d.Diagnostic.Message, "request conditions") {
						t.Errorf("degradation diagnostic %+v", d.Diagnostic)
					}
				}
				projected = append(projected, p)
			}
			if strings.Join(fallbacks(got), ",") != strings.Join(fallbacks(tc.degrad), ",") {
				t.Errorf("degradations %v, want %v", got, tc.degrad)
			}
			seen := map[string]bool{}
			var matched []string
			for _, f := range flows() {
				orig, proj := anyRule(f, tc.rules), anyRule(f, projected)
				// The safety property: never allow more, never deny less.
				if tc.action.Denies() && orig && !proj {
					t.Errorf("the projected deny misses %+v, which the rule denies", f)
				}
				if !tc.action.Denies() && proj && !orig {
					t.Errorf("the projected allow matches %+v, which the rule does not", f)
				}
				k := f.namespace + "/" + f.principal[strings.LastIndex(f.principal, "/")+1:] + ":" + strconv.Itoa(int(f.port))
				if proj && !seen[k] {
					seen[k] = true
					matched = append(matched, k)
				}
			}
			if strings.Join(sorted(matched), " ") != strings.Join(tc.want, " ") {
				t.Errorf("projected rules match %v, want %v", sorted(matched), tc.want)
			}
		})
	}
}

func anyRule(f flow, rules []PolicyRule) bool {
	for _, r := range rules {
		if f.matches(r) {
			return true
		}
	}
	return false
}

func fallbacks(fs []Fallback) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f))
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestRestrictLeavesInputAlone: the projection copies; the rule it was
// given still has its L7 conditions (the L7 back end reads the same rule).
func TestRestrictLeavesInputAlone(t *testing.T) {
	r := PolicyRule{Clauses: []PolicyClause{{Matches: []PolicyMatch{{L7: []L7Condition{l7(L7Method, "GET")}}}}}}
	_ = ProjectL4(PolicyDeny, ResourceRef{}, r)
	if len(r.Clauses[0].Matches[0].L7) != 1 || len(r.Degradations) != 0 {
		t.Errorf("ProjectL4 modified its input: %+v", r)
	}
}

func TestIPBlockContains(t *testing.T) {
	b := IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	for addr, want := range map[string]bool{"10.2.3.4": true, "10.1.2.3": false, "11.0.0.1": false} {
		if got := b.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
}
