package envoy

import (
	"strconv"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

func authzPolicy(name string, action ir.PolicyAction, rules ...ir.PolicyRule) ir.Policy {
	return ir.Policy{Source: ir.ResourceRef{Kind: "AuthorizationPolicy", Namespace: "foo", Name: name},
		Gate: ir.GateAuthorization, Action: action, Rules: rules}
}

func one(field string, m ir.PolicyMatch) ir.PolicyRule {
	m.Field = field
	return ir.PolicyRule{Direction: ir.PolicyIngress, Field: field, Clauses: []ir.PolicyClause{{Field: field, Matches: []ir.PolicyMatch{m}}}}
}

func TestBuildRBAC(t *testing.T) {
	get := func(p ir.L7Condition) ir.PolicyMatch { return ir.PolicyMatch{L7: []ir.L7Condition{p}} }
	method := ir.L7Condition{Attribute: ir.L7Method, Values: []ir.Glob{"GET"}}
	tests := map[string]struct {
		pols []ir.Policy
		tcp  bool
		// want: per filter "ACTION rules=N shadow=M", in order.
		want    []string
		diags   int
		wantErr string
	}{
		"one filter per action, in Istio's order": {
			pols: []ir.Policy{
				authzPolicy("a", ir.PolicyAllow, one("spec.rules[0]", get(method))),
				authzPolicy("d", ir.PolicyDeny, one("spec.rules[0]", get(method))),
				authzPolicy("au", ir.PolicyAudit, one("spec.rules[0]", get(method))),
				{Source: ir.ResourceRef{Namespace: "foo", Name: "c"}, Gate: ir.GateAuthorization, Action: ir.PolicyDeny, Custom: "ext", Rules: []ir.PolicyRule{{}}},
			},
			want: []string{"DENY rules=1 shadow=-", "DENY rules=1 shadow=-", "ALLOW rules=1 shadow=-", "LOG rules=1 shadow=-"},
		},
		"dry-run policies are shadow rules of their action's filter": {
			pols: []ir.Policy{authzPolicy("a", ir.PolicyAllow, ir.PolicyRule{}), func() ir.Policy {
				p := authzPolicy("b", ir.PolicyAllow, ir.PolicyRule{})
				p.DryRun = true
				return p
			}()},
			want: []string{"ALLOW rules=1 shadow=1"},
		},
		"network policies are not RBAC's": {
			pols: []ir.Policy{{Gate: ir.GateNetwork, Action: ir.PolicyAllow}},
		},
		"TCP: an ALLOW rule with HTTP conditions is left out, with a diagnostic": {
			pols: []ir.Policy{authzPolicy("a", ir.PolicyAllow, one("spec.rules[0]", get(method)), one("spec.rules[1]", ir.PolicyMatch{Namespaces: []ir.Glob{"x"}}))},
			tcp:  true, want: []string{"ALLOW rules=1 shadow=-"}, diags: 1,
		},
		"TCP: a DENY rule drops its HTTP conditions, with a diagnostic": {
			pols: []ir.Policy{authzPolicy("d", ir.PolicyDeny, one("spec.rules[0]", get(method)))},
			tcp:  true, want: []string{"DENY rules=1 shadow=-"}, diags: 1,
		},
		"a peer workload selector has no RBAC form": {
			pols:    []ir.Policy{authzPolicy("a", ir.PolicyAllow, one("spec.rules[0]", ir.PolicyMatch{Workloads: []ir.WorkloadSelector{{Namespace: "x"}}}))},
			wantErr: "workload selectors",
		},
		"an invalid header name fails validation": {
			pols:    []ir.Policy{authzPolicy("a", ir.PolicyAllow, one("spec.rules[0]", get(ir.L7Condition{Attribute: ir.L7Header, Name: "bad\nname", Values: []ir.Glob{"x"}})))},
			wantErr: "HeaderMatcher.Name",
		},
		"an invalid address fails, never matches more": {
			pols:    []ir.Policy{authzPolicy("a", ir.PolicyAllow, one("spec.rules[0]", get(ir.L7Condition{Attribute: ir.L7DestinationIP, Values: []ir.Glob{"nope"}})))},
			wantErr: "address",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			filters, diags, err := BuildRBAC(tc.pols, tc.tcp)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range filters {
				var rules, shadow *rbacv3.RBAC
				switch c := f.Config.(type) {
				case *rbachttpv3.RBAC:
					if tc.tcp {
						t.Errorf("HTTP filter for a TCP port")
					}
					rules, shadow = c.GetRules(), c.GetShadowRules()
				case *rbacnetv3.RBAC:
					if !tc.tcp {
						t.Errorf("network filter for an HTTP port")
					}
					rules, shadow = c.GetRules(), c.GetShadowRules()
				}
				action := rules.GetAction()
				if rules == nil {
					action = shadow.GetAction()
				}
				n := func(r *rbacv3.RBAC) string {
					if r == nil {
						return "-"
					}
					return strconv.Itoa(len(r.GetPolicies()))
				}
				got = append(got, action.String()+" rules="+n(rules)+" shadow="+n(shadow))
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Errorf("filters %v, want %v", got, tc.want)
			}
			if len(diags) != tc.diags {
				t.Errorf("%d diagnostics, want %d: %v", len(diags), tc.diags, diags)
			}
		})
	}
}

func TestRBACName(t *testing.T) {
	p := authzPolicy("httpbin", ir.PolicyDeny)
	if got := RBACName(&p, 2); got != "ns[foo]-policy[httpbin]-rule[2]" {
		t.Errorf("name %q", got)
	}
	p.Custom = "ext"
	if got := RBACName(&p, 0); got != "istio-ext-authz-ext-ns[foo]-policy[httpbin]-rule[0]-deny-due-to-bad-CUSTOM-action" {
		t.Errorf("CUSTOM name %q", got)
	}
}

// TestValidatePolicy: what protoc-gen-validate cannot see is checked — a
// regular expression Envoy (RE2) would reject, a packed path template
// that does not unpack or validate — at any depth.
func TestValidatePolicy(t *testing.T) {
	bad := func(re string) *rbacv3.Principal {
		return notID(orIds([]*rbacv3.Principal{authenticated(regexMatcher(re))}))
	}
	badTemplate := pathPermission("/a/{*}")
	badTemplate.GetUriTemplate().TypedConfig.Value = []byte{0xff}
	emptyTemplate := pathPermission("/a/{*}")
	a, err := anypb.New(&uritemplatev3.UriTemplateMatchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	emptyTemplate.GetUriTemplate().TypedConfig = a
	tests := map[string]struct {
		pol     *rbacv3.Policy
		wantErr string
	}{
		"a path template that does not validate": {pol: &rbacv3.Policy{Permissions: []*rbacv3.Permission{emptyTemplate}, Principals: []*rbacv3.Principal{princAny()}},
			wantErr: "PathTemplate"},
		"valid": {pol: &rbacv3.Policy{Permissions: []*rbacv3.Permission{pathPermission("/a/{*}")}, Principals: []*rbacv3.Principal{bad(".*/ns/a/.*")}}},
		"a regex that does not compile, nested": {pol: &rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{bad("(")}},
			wantErr: "does not compile"},
		"a path template that does not unpack": {pol: &rbacv3.Policy{Permissions: []*rbacv3.Permission{notRule(orRules([]*rbacv3.Permission{badTemplate}))}, Principals: []*rbacv3.Principal{princAny()}},
			wantErr: "unpack"},
		"no principals (PGV)": {pol: &rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}}, wantErr: "Principals"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := validatePolicy(tc.pol)
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
