package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// TestNetworkPolicyModel: the first step, NetworkPolicy → model, keeps the
// policy's meaning (scope, isolation, a peers clause and a ports clause) and
// records what it cannot express with the fallback it chose.
func TestNetworkPolicyModel(t *testing.T) {
	tcp := corev1.ProtocolTCP
	tests := map[string]struct {
		policy *networkingv1.NetworkPolicy
		want   ir.Policy
	}{
		"peers and ports become two clauses": {
			policy: np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), tcp, nil), port(intstr.FromString("sql"), tcp, nil)},
				}}
			}),
			want: ir.Policy{
				Source: ir.ResourceRef{Kind: KindNetworkPolicy, Namespace: "a", Name: "p"}, Gate: ir.GateNetwork, Action: ir.PolicyAllow,
				Scope:    ir.PolicyScope{Namespace: "a", Workloads: &ir.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
				Isolates: []ir.PolicyDirection{ir.PolicyIngress},
				Rules: []ir.PolicyRule{{Direction: ir.PolicyIngress, Field: "spec.ingress[0]", Clauses: []ir.PolicyClause{
					{Matches: []ir.PolicyMatch{
						{Field: "spec.ingress[0].from[0]", Workloads: []ir.WorkloadSelector{{Namespace: "a", Labels: &ir.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}},
						{Field: "spec.ingress[0].from[1]", IPBlocks: []ir.IPBlock{{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}},
					}},
					{Matches: []ir.PolicyMatch{
						{Field: "spec.ingress[0].ports[0]", Ports: []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Port: 5432}}},
						{Field: "spec.ingress[0].ports[1]", Ports: []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Name: "sql"}}},
					}},
				}}},
			},
		},
		"an invalid peer is left out of its clause, and recorded": {
			policy: np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "bogus"}}}}}
			}),
			want: ir.Policy{
				Source: ir.ResourceRef{Kind: KindNetworkPolicy, Namespace: "a", Name: "p"}, Gate: ir.GateNetwork, Action: ir.PolicyAllow,
				Scope:    ir.PolicyScope{Namespace: "a", Workloads: &ir.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
				Isolates: []ir.PolicyDirection{ir.PolicyIngress},
				Rules: []ir.PolicyRule{{Direction: ir.PolicyIngress, Field: "spec.ingress[0]",
					Clauses: []ir.PolicyClause{{Matches: []ir.PolicyMatch{}}}, // matches nothing
					Degradations: []ir.Degradation{{Instead: ir.FallbackMatchNothing, Diagnostic: ir.Diagnostic{
						Severity: ir.SeverityWarning, Code: ir.CodeDeniesMore, Resource: ir.ResourceRef{Kind: KindNetworkPolicy, Namespace: "a", Name: "p"},
						Field: "spec.ingress[0].from[0].ipBlock.cidr", Message: `invalid CIDR "bogus"; the peer matches nothing`}}},
				}},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, NetworkPolicyModel(tc.policy), cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
				t.Errorf("model (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDenyDegradesToMore: what a Deny TrafficPolicy cannot express denies
// more — every peer, every port — never less. The CRD's validation rejects
// these inputs; the agent must not rely on it (an object stored before the
// CRD had its validation, or a CRD installed by hand, reaches it anyway).
func TestDenyDegradesToMore(t *testing.T) {
	web := map[string]any{"matchLabels": map[string]any{"app": "web"}}
	tests := map[string]struct {
		rule map[string]any
		want []string
		diag string
	}{
		"an unparsable CIDR denies every peer": {
			rule: map[string]any{"peers": []any{map[string]any{"cidr": "10.0.0.0/33"}}, "ports": []any{map[string]any{"port": int64(22)}}},
			want: []string{"ingress 0 22/6 deny"}, diag: `spec.ingress[0].peers[0].cidr: invalid CIDR "10.0.0.0/33"; the rule denies every peer`,
		},
		"an empty peer denies every peer": {
			rule: map[string]any{"peers": []any{map[string]any{}}, "ports": []any{map[string]any{"port": int64(22)}}},
			want: []string{"ingress 0 22/6 deny"}, diag: "the rule denies every peer",
		},
		"a peer with a CIDR and a selector denies every peer": {
			rule: map[string]any{"peers": []any{map[string]any{"cidr": "10.0.0.0/8", "podSelector": web}}},
			want: []string{"ingress 0 0/0 deny"}, diag: "ipBlock cannot be combined with selectors; the rule denies every peer",
		},
		"an unknown protocol denies every port and protocol": {
			rule: map[string]any{"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "db"}}}},
				"ports": []any{map[string]any{"port": int64(22), "protocol": "ICMP"}}},
			want: []string{"ingress 301 0/0 deny"}, diag: "the rule denies every port and protocol",
		},
		"a port out of range denies every port of its protocol": {
			rule: map[string]any{"ports": []any{map[string]any{"port": int64(70000), "protocol": "UDP"}}},
			want: []string{"ingress 0 0/17 deny"}, diag: "port 70000 out of range; denied on every port",
		},
		"an endPort below the port denies every port of its protocol": {
			rule: map[string]any{"ports": []any{map[string]any{"port": int64(80), "endPort": int64(70)}}},
			want: []string{"ingress 0 0/6 deny"}, diag: "endPort 70 is below port 80 or above 65535; denied on every port",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := testInput()
			in.TrafficPolicies = []*TrafficPolicy{decode(t, map[string]any{"selector": web, "action": "Deny", "ingress": []any{tc.rule}})}
			res := Translate(in)
			if diff := cmp.Diff(tc.want, entries(res.Identities[idWeb]), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if res.Identities[idWeb].Flags != 0 {
				t.Errorf("a Deny isolated the pod: %v", res.Identities[idWeb].Flags)
			}
			if !slices.ContainsFunc(res.Diagnostics, func(d Diagnostic) bool { return strings.Contains(d.String(), tc.diag) }) {
				t.Errorf("diagnostics %v lack %q", res.Diagnostics, tc.diag)
			}
		})
	}
}

// TestModelsBeyondKubernetes: what the L4 back end does with model
// features no NetworkPolicy or TrafficPolicy produces (AuthorizationPolicy,
// issue 14): request conditions and policies of a gate it does not know
// deny more, with a diagnostic; principals resolve to identities; audit
// and dry run change nothing (authz_test.go has the AuthorizationPolicy
// cases).
func TestModelsBeyondKubernetes(t *testing.T) {
	src := ir.ResourceRef{Kind: "AuthorizationPolicy", Namespace: "a", Name: "ap"}
	db := &ir.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	fromWeb := ir.PolicyMatch{Field: "spec.rules[0].from[0]", Workloads: []ir.WorkloadSelector{{Namespace: "a", Labels: &ir.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}
	get := ir.PolicyMatch{Field: "spec.rules[0].to[0]", Ports: []ir.PortMatch{{Protocol: ir.IPProtocolTCP, Port: 5432}},
		L7: []ir.L7Condition{{Attribute: ir.L7Method, Values: []ir.Glob{"GET"}}}}
	principal := ir.PolicyMatch{Field: "spec.rules[0].from[0]", Principals: []ir.Glob{"cluster.local/ns/a/sa/web"}}
	// The test cluster's identities have no service account: "default".
	principalDefault := ir.PolicyMatch{Field: "spec.rules[0].from[0]", Principals: []ir.Glob{"cluster.local/ns/a/sa/default"}}
	rule := func(ms ...ir.PolicyMatch) []ir.PolicyRule {
		r := ir.PolicyRule{Direction: ir.PolicyIngress, Field: "spec.rules[0]"}
		for _, m := range ms {
			r.Clauses = append(r.Clauses, ir.PolicyClause{Matches: []ir.PolicyMatch{m}})
		}
		return []ir.PolicyRule{r}
	}
	policy := func(gate ir.PolicyGate, action ir.PolicyAction, rules []ir.PolicyRule) ir.Policy {
		p := ir.Policy{Source: src, Gate: gate, Action: action, Scope: ir.PolicyScope{Namespace: "a", Workloads: db}, Rules: rules}
		if action == ir.PolicyAllow {
			p.Isolates = []ir.PolicyDirection{ir.PolicyIngress}
		}
		return p
	}
	// Every case also has a NetworkPolicy allowing web → db on 5432.
	base := np("allow-web", "db", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}},
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), corev1.ProtocolTCP, nil)}}}
	})
	tests := map[string]struct {
		model ir.Policy
		want  []string
		flags bpf.EndpointFlags
		diag  string
	}{
		"an allow with a request condition never matches": {
			model: policy(ir.GateNetwork, ir.PolicyAllow, rule(fromWeb, get)),
			want:  []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress, diag: "request conditions cannot be enforced",
		},
		"a deny ignores its request conditions": {
			model: policy(ir.GateNetwork, ir.PolicyDeny, rule(fromWeb, get)),
			want:  []string{"ingress 300 5432/6 deny"}, flags: bpf.EnforceIngress, diag: "the deny ignores them",
		},
		"a deny by principal denies the service account's identities": {
			model: policy(ir.GateNetwork, ir.PolicyDeny, rule(principalDefault)),
			want:  []string{"ingress 300 0/0 deny", "ingress 300 5432/6 allow", "ingress 301 0/0 deny"}, flags: bpf.EnforceIngress,
		},
		"an allow by a principal no identity has allows nothing more": {
			model: policy(ir.GateNetwork, ir.PolicyAllow, rule(principal)),
			want:  []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress,
		},
		"an allow of the authorization gate meets the network gate's": {
			model: policy(ir.GateAuthorization, ir.PolicyAllow, rule(fromWeb)),
			want:  []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress,
		},
		"an allow of a gate the back end does not know isolates and keeps no allow": {
			model: policy("mesh-x", ir.PolicyAllow, rule(fromWeb)),
			want:  nil, flags: bpf.EnforceIngress, diag: "policies of the mesh-x gate are not enforced",
		},
		"a deny of the authorization gate denies TCP": {
			model: policy(ir.GateAuthorization, ir.PolicyDeny, rule(fromWeb)),
			want:  []string{"ingress 300 0/6 deny", "ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress, // the deny of every port wins in the datapath
		},
		"an audit changes nothing": {
			model: policy(ir.GateNetwork, ir.PolicyAudit, rule(principal)),
			want:  []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress,
		},
		"a dry run changes nothing": {
			model: func() ir.Policy { p := policy(ir.GateNetwork, ir.PolicyDeny, rule()); p.DryRun = true; return p }(),
			want:  []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress,
		},
		"Service targets of no Service select nothing": {
			model: func() ir.Policy {
				p := policy(ir.GateNetwork, ir.PolicyDeny, rule())
				p.Scope.Services = []string{"db"}
				return p
			}(),
			want: []string{"ingress 300 5432/6 allow"}, flags: bpf.EnforceIngress,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := testInput(base)
			for i := range in.Endpoints {
				in.Endpoints[i].Meshed = true
			}
			in.Models = []ir.Policy{tc.model}
			res := Translate(in)
			got := res.Identities[idDB]
			if diff := cmp.Diff(tc.want, entries(got), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if got.Flags != tc.flags {
				t.Errorf("flags %v, want %v", got.Flags, tc.flags)
			}
			var diags []string
			for _, d := range res.Diagnostics {
				diags = append(diags, d.String())
			}
			joined := strings.Join(diags, "\n")
			if tc.diag == "" && joined != "" || !strings.Contains(joined, tc.diag) {
				t.Errorf("diagnostics %q, want one with %q", joined, tc.diag)
			}
		})
	}
}

// TestIntersectPorts: port lists AND-ed (a rule with two port conditions,
// issue 14) meet with wildcards.
func TestIntersectPorts(t *testing.T) {
	tests := map[string]struct {
		a, b, want []portProto
	}{
		"any meets a port":             {[]portProto{{}}, []portProto{{80, 0, 6}}, []portProto{{80, 0, 6}}},
		"any port of TCP meets 80/TCP": {[]portProto{{0, 0, 6}}, []portProto{{80, 0, 6}, {53, 0, 17}}, []portProto{{80, 0, 6}}},
		"different ports":              {[]portProto{{80, 0, 6}}, []portProto{{81, 0, 6}}, nil},
		"protocols differ":             {[]portProto{{0, 0, 6}}, []portProto{{0, 0, 17}}, nil},
		"ranges overlap":               {[]portProto{{1000, 3000, 6}}, []portProto{{2000, 5000, 6}}, []portProto{{2000, 3000, 6}}},
		"range meets a port in it":     {[]portProto{{1024, 65535, 6}}, []portProto{{40000, 0, 6}}, []portProto{{40000, 0, 6}}},
		"range meets a port outside":   {[]portProto{{1024, 65535, 6}}, []portProto{{80, 0, 6}}, nil},
		"ranges touch in one port":     {[]portProto{{10, 20, 6}}, []portProto{{20, 30, 0}}, []portProto{{20, 0, 6}}},
		"any port meets a range":       {[]portProto{{0, 0, 0}}, []portProto{{10, 20, 17}}, []portProto{{10, 20, 17}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, intersectPorts(tc.a, tc.b), cmp.AllowUnexported(portProto{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
