package translate

import (
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestAuthorizerOf: who authorizes a pod is the agent's rule — only a pod
// it redirects (opted-in namespace not injected, no sidecar, not opted
// out, not on the host network) is nodemesh's; a status claiming eBPF for
// any other would be false.
func TestAuthorizerOf(t *testing.T) {
	optedIn := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	for name, c := range map[string]struct {
		pod  input.Pod
		ns   map[string]string
		want Authorizer
	}{
		"meshed":                 {input.Pod{}, optedIn, AuthorizedByNodemesh},
		"sidecar":                {input.Pod{Sidecar: true}, optedIn, AuthorizedBySidecar},
		"sidecar, not opted in":  {input.Pod{Sidecar: true}, nil, AuthorizedBySidecar},
		"namespace not opted in": {input.Pod{}, nil, AuthorizedByNone},
		"ambient namespace":      {input.Pod{}, map[string]string{api.DataplaneModeLabel: api.DataplaneModeAmbient}, AuthorizedByNone},
		"pod opted out":          {input.Pod{Labels: map[string]string{api.DataplaneModeLabel: api.DataplaneModeNone}}, optedIn, AuthorizedByNone},
		"host network":           {input.Pod{HostNetwork: true}, optedIn, AuthorizedByNone},
		"namespace still injected": {input.Pod{}, map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh,
			api.IstioInjectionLabel: api.IstioInjectionEnabled}, AuthorizedByNone},
		"namespace with a revision": {input.Pod{}, map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh,
			api.IstioRevisionLabel: "canary"}, AuthorizedByNone},
	} {
		t.Run(name, func(t *testing.T) {
			if got := AuthorizerOf(&c.pod, c.ns); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

// TestAuthzRules: an L7 rule runs as its L4 projection only where nodemesh
// authorizes (a sidecar keeps evaluating it whole), its degradations are
// listed once (the projection's include the rule's own), and AUDIT and
// dry-run rules decide nothing.
func TestAuthzRules(t *testing.T) {
	ref := ir.ResourceRef{Kind: "AuthorizationPolicy", Namespace: "ns", Name: "p"}
	own := ir.Degradation{Instead: ir.FallbackMatchNothing, Diagnostic: ir.Diagnostic{Code: ir.CodeDeniesMore, Resource: ref,
		Field: "spec.rules[0].from[0].source.ipBlocks[0]", Message: "own degradation"}}
	l7 := ir.PolicyRule{Field: "spec.rules[0]", Clauses: []ir.PolicyClause{{Field: "spec.rules[0].to", Matches: []ir.PolicyMatch{
		{Field: "spec.rules[0].to[0].operation", L7: []ir.L7Condition{{Attribute: "method", Values: []ir.Glob{"GET"}}}}}}},
		Degradations: []ir.Degradation{own}}
	l4 := ir.PolicyRule{Field: "spec.rules[1]", Clauses: []ir.PolicyClause{{Field: "spec.rules[1].to", Matches: []ir.PolicyMatch{
		{Field: "spec.rules[1].to[0].operation", Ports: []ir.PortMatch{{Port: 8080}}}}}}}
	allow := ir.Policy{Source: ref, Gate: ir.GateAuthorization, Action: ir.PolicyAllow, Rules: []ir.PolicyRule{l7, l4}}
	for name, c := range map[string]struct {
		p         ir.Policy
		by        Authorizer
		projected bool
		decides   bool
		degs      int
	}{
		"nodemesh: projected": {allow, AuthorizedByNodemesh, true, true, 2},
		"sidecar: whole":      {allow, AuthorizedBySidecar, false, true, 1},
		"audit":               {ir.Policy{Source: ref, Action: ir.PolicyAudit, Rules: []ir.PolicyRule{l7, l4}}, AuthorizedByNodemesh, false, false, 1},
		"dry run":             {ir.Policy{Source: ref, Action: ir.PolicyAllow, DryRun: true, Rules: []ir.PolicyRule{l7, l4}}, AuthorizedByNodemesh, false, false, 1},
	} {
		t.Run(name, func(t *testing.T) {
			rs := AuthzRules(&c.p, c.by)
			if len(rs) != 2 {
				t.Fatalf("%d rules, want 2", len(rs))
			}
			r := rs[0]
			if r.Layer != ir.LayerL7 || r.Projected != c.projected || r.Decides != c.decides || len(r.DeniesMore) != c.degs {
				t.Errorf("L7 rule: %+v, want projected %v decides %v with %d degradations", r, c.projected, c.decides, c.degs)
			}
			if c.projected && !strings.Contains(r.DeniesMore[len(r.DeniesMore)-1].Message, "never matches") {
				t.Errorf("projection degradation: %+v", r.DeniesMore)
			}
			if rs[1].Layer != ir.LayerL4 || rs[1].Projected || len(rs[1].DeniesMore) != 0 {
				t.Errorf("L4 rule: %+v", rs[1])
			}
		})
	}
}
