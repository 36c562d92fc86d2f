package envoy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// evalPrincipal is Envoy's RBAC principal matching (source/extensions/
// filters/common/rbac/matchers.cc) for what JWT facts need: and/or/not,
// any, and metadata matchers over the dynamic metadata a request carries
// (here: jwt_authn's payload, as jwt_authn writes it — the token's JSON
// claims as a Struct).
func evalPrincipal(t *testing.T, p *rbacv3.Principal, md map[string]*structpb.Struct) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		for _, c := range id.AndIds.GetIds() {
			if !evalPrincipal(t, c, md) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		for _, c := range id.OrIds.GetIds() {
			if evalPrincipal(t, c, md) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_NotId:
		return !evalPrincipal(t, id.NotId, md)
	case *rbacv3.Principal_Any:
		return id.Any
	case *rbacv3.Principal_Metadata:
		m := id.Metadata
		s, ok := md[m.GetFilter()]
		if !ok {
			return m.GetInvert()
		}
		v := structpb.NewStructValue(s)
		for _, seg := range m.GetPath() {
			f := v.GetStructValue().GetFields()[seg.GetKey()]
			if f == nil {
				return m.GetInvert() // Envoy: a missing path does not match
			}
			v = f
		}
		return evalValue(t, m.GetValue(), v) != m.GetInvert()
	}
	t.Fatalf("principal %T not evaluated", p.GetIdentifier())
	return false
}

func evalValue(t *testing.T, m *matcherv3.ValueMatcher, v *structpb.Value) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_PresentMatch:
		return p.PresentMatch
	case *matcherv3.ValueMatcher_StringMatch:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok && evalString(t, p.StringMatch, s.StringValue)
	case *matcherv3.ValueMatcher_ListMatch:
		for _, e := range v.GetListValue().GetValues() {
			if evalValue(t, p.ListMatch.GetOneOf(), e) {
				return true
			}
		}
		return false
	case *matcherv3.ValueMatcher_OrMatch:
		for _, c := range p.OrMatch.GetValueMatchers() {
			if evalValue(t, c, v) {
				return true
			}
		}
		return false
	}
	t.Fatalf("value matcher %T not evaluated", m.GetMatchPattern())
	return false
}

func evalString(t *testing.T, m *matcherv3.StringMatcher, s string) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == p.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, p.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, p.Suffix)
	case *matcherv3.StringMatcher_SafeRegex:
		return regexp.MustCompile(`^(?:` + p.SafeRegex.GetRegex() + `)$`).MatchString(s) // RE2 full match
	}
	t.Fatalf("string matcher %T not evaluated", m.GetMatchPattern())
	return false
}

// token is what jwt_authn writes for a verified token: its claims under
// "payload" in its dynamic metadata namespace.
func token(t *testing.T, claims map[string]any) map[string]*structpb.Struct {
	s, err := structpb.NewStruct(map[string]any{JWTPayloadKey: claims})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*structpb.Struct{FilterJWTAuthn: s}
}

// istioPrincipalMatch is Istio's meaning of a requestPrincipals value: the
// request principal "iss/sub" of the verified token against the glob
// ("*": any principal; "x*" a prefix, "*x" a suffix; else exact). Where
// istiod is narrower by construction, its choice is kept: a value without
// "/" is istiod's iss/sub pair (iss = value, sub = ""; a glob's free side
// non-empty), and a wildcard that would be the whole subject does not
// match an empty one (istiod's ".+").
func istioPrincipalMatch(value, iss, sub string) bool {
	p := iss + "/" + sub
	if !strings.Contains(value, "/") {
		switch {
		case value == "*":
			return iss != "" && sub != ""
		case strings.HasPrefix(value, "*"):
			return iss != "" && strings.HasSuffix(sub, value[1:])
		case strings.HasSuffix(value, "*"):
			return strings.HasPrefix(iss, value[:len(value)-1]) && sub != ""
		}
		return iss == value && sub == ""
	}
	if sub == "" && strings.HasSuffix(value, "*") && value[:len(value)-1] == iss+"/" {
		return false
	}
	switch {
	case strings.HasPrefix(value, "*"):
		return strings.HasSuffix(p, value[1:])
	case strings.HasSuffix(value, "*"):
		return strings.HasPrefix(p, value[:len(value)-1])
	}
	return p == value
}

// TestRequestPrincipalSemantics evaluates the RBAC principal of each
// requestPrincipals value over a table of verified tokens (iss, sub) and
// compares with Istio's meaning, iss/sub against the glob. Both may hold a
// "/": istiod's split at the last "/" misses e.g. sub "users/alice" of
// issuer "https://idp" for "https://idp/users/alice"; nodemesh's OR over
// every split does not. The one difference kept is istiod's: a value
// without "/" names an issuer with an empty subject.
func TestRequestPrincipalSemantics(t *testing.T) {
	values := []string{
		"*", "https://idp/alice", "https://idp/users/alice", "https://idp/*", "https://idp/users/*", "https://*",
		"*/alice", "*/users/alice", "*dp/users/alice", "*alice", "plain", "plain*", "*plain", "https://idp/", "a/b/c/d",
	}
	tokens := [][2]string{
		{"https://idp", "alice"}, {"https://idp", "users/alice"}, {"https://idp/users", "alice"}, {"https://idp/tenant", "bob"},
		{"https://other", "alice"}, {"https://idp", ""}, {"plain", ""}, {"plain", "x"}, {"a", "b/c/d"}, {"a/b", "c/d"}, {"a/b/c", "d"},
		{"https://idp", "users/alice/x"}, {"x/plain", "y"},
	}
	for _, v := range values {
		p := requestPrincipal(ir.Glob(v))
		if err := checkPrincipal(p, 0); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if err := p.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		for _, tk := range tokens {
			t.Run(fmt.Sprintf("%s vs %s|%s", v, tk[0], tk[1]), func(t *testing.T) {
				got := evalPrincipal(t, p, token(t, map[string]any{"iss": tk[0], "sub": tk[1]}))
				want := istioPrincipalMatch(v, tk[0], tk[1])
				if got != want {
					t.Errorf("match %v, Istio's meaning %v", got, want)
				}
			})
		}
	}
	t.Run("no token: no principal matches", func(t *testing.T) {
		for _, v := range values {
			if evalPrincipal(t, requestPrincipal(ir.Glob(v)), nil) {
				t.Errorf("%s matches a request without a token", v)
			}
		}
	})
}

// TestJWTClaimSemantics: request.auth.claims[…], audiences and presenter
// over verified tokens, as Istio: a claim matches when it is the string or
// a list holding it, nested keys walk objects, a claim of another type or a
// missing one never matches.
func TestJWTClaimSemantics(t *testing.T) {
	claims := map[string]any{
		"iss": "https://idp", "sub": "alice", "aud": []any{"web", "db"}, "azp": "frontend",
		"groups": []any{"admin", "dev"}, "role": "reader", "level": 3.0,
		"realm": map[string]any{"roles": []any{"ops"}, "name": "corp"},
		"scope": []any{"read", "write"}, // jwt_authn splits space-delimited claims into lists
	}
	tests := map[string]struct {
		cond ir.L7Condition
		want bool
	}{
		"list claim holds the value":  {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"groups"}, Values: []ir.Glob{"admin"}}, true},
		"list claim lacks the value":  {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"groups"}, Values: []ir.Glob{"root"}}, false},
		"string claim":                {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"role"}, Values: []ir.Glob{"reader"}}, true},
		"prefix glob on a list":       {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"groups"}, Values: []ir.Glob{"ad*"}}, true},
		"number claim never matches":  {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"level"}, Values: []ir.Glob{"3", "*"}}, false},
		"nested list":                 {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"realm", "roles"}, Values: []ir.Glob{"ops"}}, true},
		"nested string":               {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"realm", "name"}, Values: []ir.Glob{"corp"}}, true},
		"missing claim":               {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"tenant"}, Values: []ir.Glob{"*"}}, false},
		"missing claim, notValues":    {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"tenant"}, NotValues: []ir.Glob{"x"}}, true},
		"space-delimited scope":       {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"scope"}, Values: []ir.Glob{"write"}}, true},
		"audience in the list":        {ir.L7Condition{Attribute: ir.L7Audience, Values: []ir.Glob{"db"}}, true},
		"audience not in the list":    {ir.L7Condition{Attribute: ir.L7Audience, Values: []ir.Glob{"billing"}}, false},
		"presenter":                   {ir.L7Condition{Attribute: ir.L7Presenter, Values: []ir.Glob{"front*"}}, true},
		"notValues holding the value": {ir.L7Condition{Attribute: ir.L7Claim, Path: []string{"groups"}, NotValues: []ir.Glob{"dev"}}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ids := principalsOf(&ir.PolicyMatch{L7: []ir.L7Condition{tc.cond}})
			p := &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
			if got := evalPrincipal(t, p, token(t, claims)); got != tc.want {
				t.Errorf("match %v, want %v", got, tc.want)
			}
		})
	}
}
