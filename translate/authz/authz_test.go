package authz

import (
	"encoding/json"
	"strings"
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// authzFrom decodes AuthorizationPolicies the way the loader does.
func authzFrom(t testing.TB, yml string) []*securityv1.AuthorizationPolicy {
	t.Helper()
	l := input.NewLoader("foo")
	l.KeepIgnored = true
	l.LoadBytes("policy.yaml", []byte(yml))
	if ds := l.Diagnostics(); ds.HasErrors() {
		t.Fatalf("decode: %v", ds)
	}
	var out []*securityv1.AuthorizationPolicy
	for _, o := range l.Bag().Other {
		if ap, ok := o.Typed.(*securityv1.AuthorizationPolicy); ok {
			out = append(out, ap)
		}
	}
	return out
}

func ap(spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n" + spec
}

// check is what a case asserts about the translation of one policy.
type authzCheck struct {
	// policies is how many policies come out (default 1).
	policies int
	// want is checked against the first policy, as JSON fragments that
	// must appear in its JSON form.
	want []string
	// not are JSON fragments that must not appear.
	not []string
	// diags are "severity field" pairs that must be reported.
	diags []string
	// degraded are the Instead values of the policy's and rules'
	// degradations, in order.
	degraded []ir.Fallback
}

func TestAuthorizationPolicyTranslation(t *testing.T) {
	tests := map[string]struct {
		in    string
		opts  Options
		check authzCheck
	}{
		"allow-nothing: an ALLOW without rules isolates and allows nothing": {
			in:    ap("  action: ALLOW\n"),
			check: authzCheck{want: []string{`"action":"Allow"`, `"isolates":["ingress"]`, `"gate":"authorization"`}, not: []string{`"rules"`}},
		},
		"deny-all: a rule without conditions matches every request": {
			in:    ap("  action: DENY\n  rules: [{}]\n"),
			check: authzCheck{want: []string{`"action":"Deny"`, `"rules":[{"direction":"ingress","field":"spec.rules[0]"}]`}, not: []string{`"isolates"`}},
		},
		"CUSTOM denies what it selects, with a degradation": {
			in: ap("  action: CUSTOM\n  provider: {name: ext}\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"),
			check: authzCheck{want: []string{`"action":"Deny"`, `"custom":"ext"`, `"attribute":"path","values":["/admin"]`},
				diags: nil, degraded: []ir.Fallback{ir.FallbackMatchMore}},
		},
		"AUDIT changes no decision": {
			in:    ap("  action: AUDIT\n  rules: [{}]\n"),
			check: authzCheck{want: []string{`"action":"Audit"`}, not: []string{`"isolates"`}},
		},
		"dry-run annotation": {
			in:    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n",
			check: authzCheck{want: []string{`"dryRun":true`}},
		},
		"a dry-run annotation that is not a boolean is enforced, with a warning": {
			in:    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo, annotations: {istio.io/dry-run: \"yes\"}}\nspec: {action: DENY, rules: [{}]}\n",
			check: authzCheck{not: []string{`"dryRun"`}, diags: []string{"warning metadata.annotations[istio.io/dry-run]"}},
		},
		"root namespace applies mesh-wide": {
			in:    strings.Replace(ap("  action: DENY\n  rules: [{}]\n"), "namespace: foo", "namespace: istio-system", 1),
			check: authzCheck{want: []string{`"scope":{}`}},
		},
		"selector narrows to workloads": {
			in:    ap("  selector: {matchLabels: {app: web}}\n  rules: [{}]\n"),
			check: authzCheck{want: []string{`"scope":{"namespace":"foo","workloads":{"matchLabels":{"app":"web"}}}`}},
		},
		"targetRefs to Services": {
			in:    ap("  targetRefs: [{kind: Service, group: \"\", name: web}, {kind: Service, group: \"\", name: api}]\n  rules: [{}]\n"),
			check: authzCheck{want: []string{`"services":["api","web"]`}},
		},
		"targetRefs to a Gateway only: the policy is not for workloads' inbound": {
			in:    ap("  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n  rules: [{}]\n"),
			check: authzCheck{policies: -1, diags: []string{"info spec.targetRefs[0]"}},
		},
		"targetRefs and selector: error, the whole namespace": {
			in: ap("  selector: {matchLabels: {app: web}}\n  targetRefs: [{kind: Service, group: \"\", name: web}]\n  action: DENY\n  rules: [{}]\n"),
			check: authzCheck{want: []string{`"scope":{"namespace":"foo"}`}, diags: []string{"error spec.targetRefs"},
				degraded: []ir.Fallback{ir.FallbackMatchMore}},
		},
		"from, to and when become clauses": {
			in: ap(`  rules:
  - from: [{source: {principals: ["cluster.local/ns/a/sa/web"], namespaces: [a]}}, {source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.1.2.3]}}]
    to: [{operation: {ports: ["8080"], methods: [GET], notPaths: ["/admin/*"]}}]
    when: [{key: "request.headers[x-token]", values: ["*"]}, {key: source.namespace, notValues: [b]}]
`),
			check: authzCheck{want: []string{
				`"field":"spec.rules[0].from","matches":[{"field":"spec.rules[0].from[0].source","principals":["cluster.local/ns/a/sa/web"],"namespaces":["a"]}`,
				`"ipBlocks":[{"cidr":"10.0.0.0/8"}],"notIPBlocks":[{"cidr":"10.1.2.3/32"}]`,
				`"ports":[{"protocol":"TCP","port":8080}]`,
				`{"attribute":"method","values":["GET"]}`, `{"attribute":"path","notValues":["/admin/*"]}`,
				`{"attribute":"header","name":"x-token","values":["*"]}`,
				`"field":"spec.rules[0].when[1]","matches":[{"field":"spec.rules[0].when[1]","notNamespaces":["b"]}]`,
			}},
		},
		"trust domain aliases rewrite principals": {
			in:    ap("  rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/web, other.td/ns/a/sa/x, \"*/ns/a/sa/y\"]}}]}]\n"),
			opts:  Options{TrustDomain: "td1", TrustDomainAliases: []string{"old-td"}},
			check: authzCheck{want: []string{`"principals":["td1/ns/a/sa/web","old-td/ns/a/sa/web","other.td/ns/a/sa/x","*/ns/a/sa/y"]`}},
		},
		"serviceAccounts are principals of any trust domain": {
			in:    ap("  rules: [{from: [{source: {serviceAccounts: [web, b/api]}}]}]\n"),
			check: authzCheck{want: []string{`"principals":["*/ns/foo/sa/web","*/ns/b/sa/api"]`}},
		},
		"an unknown when key makes an ALLOW rule match nothing": {
			in: ap("  rules: [{when: [{key: request.bogus, values: [x]}]}]\n"),
			check: authzCheck{want: []string{`"clauses":[{"field":"spec.rules[0].when[0]","matches":null}]`},
				diags: []string{"error spec.rules[0].when[0].key"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
		"an unknown when key makes a DENY condition match everything": {
			in: ap("  action: DENY\n  rules: [{to: [{operation: {ports: [\"22\"]}}], when: [{key: request.bogus, values: [x]}]}]\n"),
			check: authzCheck{want: []string{`{"field":"spec.rules[0].when[0]","matches":[{"field":"spec.rules[0].when[0]"}]}`, `"port":22`},
				diags: []string{"error spec.rules[0].when[0].key"}, degraded: []ir.Fallback{ir.FallbackMatchMore}},
		},
		"an invalid ipBlock drops an ALLOW source, keeps the other": {
			in: ap("  rules: [{from: [{source: {ipBlocks: [not-an-ip]}}, {source: {namespaces: [a]}}]}]\n"),
			check: authzCheck{want: []string{`"matches":[{"field":"spec.rules[0].from[1].source","namespaces":["a"]}]`},
				diags: []string{"error spec.rules[0].from[0].source.ipBlocks[0]"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
		"an invalid port in a DENY is dropped: the deny matches every port": {
			in: ap("  action: DENY\n  rules: [{to: [{operation: {ports: [\"0\"]}}]}]\n"),
			check: authzCheck{want: []string{`"matches":[{"field":"spec.rules[0].to[0].operation"}]`},
				diags: []string{"error spec.rules[0].to[0].operation.ports[0]"}, degraded: []ir.Fallback{ir.FallbackMatchMore}},
		},
		"a wildcard inside a value is invalid": {
			in:    ap("  rules: [{from: [{source: {principals: [\"a*b\"]}}]}]\n"),
			check: authzCheck{diags: []string{"error spec.rules[0].from[0].source.principals[0]"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
		"a header name that is not a token is invalid": {
			in:    ap("  rules: [{when: [{key: \"request.headers[bad name]\", values: [x]}]}]\n"),
			check: authzCheck{diags: []string{"error spec.rules[0].when[0].key"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
		"a condition without values is invalid": {
			in:    ap("  rules: [{when: [{key: source.ip}]}]\n"),
			check: authzCheck{diags: []string{"error spec.rules[0].when[0]"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
		"when keys of every kind": {
			in: ap(`  rules: [{when: [
    {key: remote.ip, values: [1.2.3.0/24]}, {key: destination.ip, notValues: [10.0.0.1]},
    {key: destination.port, values: ["443"]}, {key: connection.sni, values: ["*.example.com"]},
    {key: "request.auth.claims[groups][admin]", values: [yes]}, {key: request.auth.audiences, values: [api]},
    {key: request.auth.presenter, values: [p]}, {key: request.auth.principal, values: ["iss/sub"]},
    {key: "experimental.envoy.filters.a.b[c]", values: [v]}, {key: source.principal, values: [cluster.local/ns/a/sa/b]},
    {key: source.serviceAccount, values: [a/b]}, {key: source.ip, values: [10.0.0.0/8]}]}]
`),
			check: authzCheck{want: []string{`"attribute":"remoteIP","values":["1.2.3.0/24"]`, `"attribute":"destinationIP","notValues":["10.0.0.1/32"]`,
				`"port":443`, `"attribute":"sni","values":["*.example.com"]`, `"attribute":"claim","path":["groups","admin"]`,
				`"attribute":"audience"`, `"attribute":"presenter"`, `"attribute":"requestPrincipal","values":["iss/sub"]`,
				`"attribute":"metadata","name":"envoy.filters.a.b","path":["c"]`, `"principals":["cluster.local/ns/a/sa/b"]`,
				`"principals":["*/ns/a/sa/b"]`, `"ipBlocks":[{"cidr":"10.0.0.0/8"}]`}},
		},
		"path templates are kept, bad ones rejected": {
			in:    ap("  rules: [{to: [{operation: {paths: [\"/api/{*}/x\"]}}, {operation: {paths: [\"/a{*}b\"]}}]}]\n"),
			check: authzCheck{want: []string{`"values":["/api/{*}/x"]`}, diags: []string{"error spec.rules[0].to[1].operation.paths"}, degraded: []ir.Fallback{ir.FallbackMatchNothing}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pols, diags := AuthorizationPolicies(authzFrom(t, tc.in), tc.opts)
			want := tc.check.policies
			if want == 0 {
				want = 1
			}
			if want < 0 {
				want = 0
			}
			if len(pols) != want {
				t.Fatalf("%d policies, want %d (diagnostics %v)", len(pols), want, diags)
			}
			for _, d := range tc.check.diags {
				sev, field, _ := strings.Cut(d, " ")
				found := false
				for _, got := range diags {
					found = found || (string(got.Severity) == sev && got.Field == field && got.Resource.Name == "p")
				}
				if !found {
					t.Errorf("no %s diagnostic at %s; got %v", sev, field, diags)
				}
			}
			if tc.check.diags == nil {
				for _, d := range diags {
					if d.Severity == ir.SeverityError {
						t.Errorf("unexpected %s", d)
					}
				}
			}
			if len(pols) == 0 {
				return
			}
			js, _ := json.Marshal(pols[0])
			for _, w := range tc.check.want {
				if !strings.Contains(string(js), w) {
					t.Errorf("missing %s in\n%s", w, js)
				}
			}
			for _, n := range tc.check.not {
				if strings.Contains(string(js), n) {
					t.Errorf("unexpected %s in\n%s", n, js)
				}
			}
			var got []ir.Fallback
			for _, d := range pols[0].Degradations {
				got = append(got, d.Instead)
			}
			for _, r := range pols[0].Rules {
				for _, d := range r.Degradations {
					got = append(got, d.Instead)
					if d.Diagnostic.Code != ir.CodeDeniesMore || d.Diagnostic.Field == "" {
						t.Errorf("degradation diagnostic %+v", d.Diagnostic)
					}
				}
			}
			if strings.Trim(strings.Join(fallbackStrings(got), ","), ",") != strings.Join(fallbackStrings(tc.check.degraded), ",") {
				t.Errorf("degradations %v, want %v", got, tc.check.degraded)
			}
		})
	}
}

func fallbackStrings(fs []ir.Fallback) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, string(f))
	}
	return out
}

// One broken policy does not stop the others, and nothing panics on nil
// parts.
func TestAuthorizationPoliciesIndependent(t *testing.T) {
	aps := authzFrom(t, ap("  rules: [{when: [{key: nope, values: [x]}]}]\n")+"---\n"+
		strings.Replace(ap("  action: DENY\n  rules: [{}]\n"), "name: p", "name: q", 1))
	aps = append(aps, nil, &securityv1.AuthorizationPolicy{})
	aps[len(aps)-1].Spec.Rules = append(aps[len(aps)-1].Spec.Rules, nil)
	pols, diags := AuthorizationPolicies(aps, Options{})
	if len(pols) != 3 || !diags.HasErrors() {
		t.Fatalf("got %d policies, diagnostics %v", len(pols), diags)
	}
	if pols[2].Source.Name != "q" || pols[2].Action != ir.PolicyDeny || len(pols[2].Rules) != 1 {
		t.Errorf("the valid policy was not translated: %+v", pols[2])
	}
}
