package policy

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

// decode reads a TrafficPolicy as the agent's informer holds it.
func decode(t *testing.T, spec map[string]any) *TrafficPolicy {
	t.Helper()
	tp, err := DecodeTrafficPolicy("a", "tp", map[string]any{"spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestTrafficPolicies(t *testing.T) {
	web := map[string]any{"matchLabels": map[string]any{"app": "web"}}
	tests := map[string]struct {
		spec     map[string]any
		policies []*networkingv1.NetworkPolicy
		id       bpf.Identity
		flags    bpf.EndpointFlags
		want     []string
		diag     string
	}{
		"Allow isolates and allows, like a NetworkPolicy": {
			spec: map[string]any{"selector": web, "action": "Allow", "ingress": []any{map[string]any{
				"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "db"}}}},
				"ports": []any{map[string]any{"port": int64(8080)}, map[string]any{"protocol": "UDP", "port": int64(53), "endPort": int64(54)}},
			}}},
			id: idWeb, flags: bpf.EnforceIngress,
			want: []string{"ingress 301 53/17 allow", "ingress 301 54/17 allow", "ingress 301 8080/6 allow"},
		},
		"Allow with an empty list isolates and allows nothing": {
			spec: map[string]any{"selector": web, "action": "Allow", "egress": []any{}},
			id:   idWeb, flags: bpf.EnforceEgress, want: nil,
		},
		"Deny writes deny entries and isolates nothing": {
			spec: map[string]any{"selector": web, "action": "Deny", "egress": []any{map[string]any{
				"peers": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": "x"}}},
					map[string]any{"cidr": "10.0.0.0/8"}},
				"ports": []any{map[string]any{"port": int64(443)}},
			}}},
			id: idWeb, flags: 0,
			want: []string{"egress 302 443/6 deny", "egress 303 443/6 deny", "egress {10.0.0.0/8} 443/6 deny"},
		},
		"Deny wins over a NetworkPolicy allow of the same entry": {
			spec: map[string]any{"selector": web, "action": "Deny", "ingress": []any{map[string]any{
				"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "db"}}}},
			}}},
			policies: []*networkingv1.NetworkPolicy{np("allow-db", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("db")}}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress, want: []string{"ingress 301 0/0 deny"},
		},
		"Deny of everyone on every port": {
			spec: map[string]any{"action": "Deny", "ingress": []any{map[string]any{}}},
			id:   idDB, flags: 0, want: []string{"ingress 0 0/0 deny"},
		},
		"a Deny range wider than 1,024 ports denies exactly its ports": {
			spec: map[string]any{"selector": web, "action": "Deny", "ingress": []any{map[string]any{
				"ports": []any{map[string]any{"port": int64(1024), "endPort": int64(8191)}},
			}}},
			id: idWeb, flags: 0, want: []string{"ingress 0 1024-2047/6 deny", "ingress 0 2048-4095/6 deny", "ingress 0 4096-8191/6 deny"},
		},
		"a Deny peer with an invalid selector denies every peer": {
			spec: map[string]any{"selector": web, "action": "Deny", "ingress": []any{map[string]any{
				"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "not valid!"}}}},
				"ports": []any{map[string]any{"port": int64(22)}},
			}}},
			id: idWeb, flags: 0, want: []string{"ingress 0 22/6 deny"}, diag: "spec.ingress[0].peers[0].podSelector",
		},
		// A label identities leave out cannot be decided per identity: a
		// Deny on it denies every peer the rest of the selector matches
		// (before: In matched no identity, the deny denied nothing).
		"a Deny peer on a label identities leave out denies the rest of the selector's peers": {
			spec: map[string]any{"selector": web, "action": "Deny", "ingress": []any{map[string]any{
				"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{
					"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}}}},
				"ports": []any{map[string]any{"port": int64(22)}},
			}}},
			id: idWeb, flags: 0, want: []string{"ingress 301 22/6 deny"}, diag: "statefulset.kubernetes.io/pod-name, which identities leave out",
		},
		"an Allow range inside a Deny range is dropped (deny wins in the trie)": {
			spec: map[string]any{"selector": web, "action": "Deny", "ingress": []any{map[string]any{
				"ports": []any{map[string]any{"port": int64(1024), "endPort": int64(2047)}},
			}}},
			policies: []*networkingv1.NetworkPolicy{np("allow", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(intstr.FromInt32(1536), corev1.ProtocolTCP, i32(1791)), port(intstr.FromInt32(2048), corev1.ProtocolTCP, i32(2049))}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress, want: []string{"ingress 0 1024-2047/6 deny", "ingress 0 2048-2049/6 allow"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := testInput(tc.policies...)
			in.AllowHostIngress = false
			in.TrafficPolicies = []*TrafficPolicy{decode(t, tc.spec)}
			res := Translate(in)
			pol := res.Identities[tc.id]
			if pol.Flags != tc.flags {
				t.Errorf("flags %v, want %v", pol.Flags, tc.flags)
			}
			want := slices.Clone(tc.want)
			for i := range want {
				for p, id := range res.CIDRs { // CIDR identities are numbered by the allocator
					want[i] = strings.ReplaceAll(want[i], "{"+p.String()+"}", strconv.Itoa(int(id)))
				}
			}
			sort.Strings(want)
			if diff := cmp.Diff(want, entries(pol), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			var diags []string
			for _, d := range res.Diagnostics {
				diags = append(diags, d.String())
			}
			joined := strings.Join(diags, "\n")
			if tc.diag == "" && joined != "" {
				t.Errorf("unexpected diagnostics:\n%s", joined)
			}
			if tc.diag != "" && !strings.Contains(joined, tc.diag) {
				t.Errorf("diagnostics lack %q:\n%s", tc.diag, joined)
			}
		})
	}
}

// TestDenyForSharedIdentity: a Deny selecting one pod of an identity by a
// label identities keep (track) denies for that pod; with endpoint keys
// the other pod of the identity keeps its own entries; without, both get
// the union of the denies (a deny lost would allow what a policy denies).
func TestDenyForSharedIdentity(t *testing.T) {
	in := testInput()
	in.Endpoints = append(in.Endpoints, Endpoint{Namespace: "a", Name: "web-canary",
		Labels: map[string]string{"app": "web", "track": "canary"}, Identity: idWeb})
	in.TrafficPolicies = []*TrafficPolicy{decode(t, map[string]any{
		"selector": map[string]any{"matchLabels": map[string]any{"track": "canary"}}, "action": "Deny",
		"egress": []any{map[string]any{"ports": []any{map[string]any{"port": int64(25)}}}},
	})}
	in.Policies = []*networkingv1.NetworkPolicy{np("web", "web", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(80), corev1.ProtocolTCP, nil)}}}
	})}
	res := Translate(in)
	want := []string{"egress 0 25/6 deny", "ingress 0 80/6 allow"}
	if diff := cmp.Diff(want, entries(res.Identities[idWeb])); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if len(res.Diagnostics) == 0 || !strings.Contains(res.Diagnostics[0].Message, "no endpoint key") {
		t.Errorf("the difference is not reported: %v", res.Diagnostics)
	}

	in.Endpoints[0].Key, in.Endpoints[2].Key = bpf.EndpointKey(3), bpf.EndpointKey(4)
	res = Translate(in)
	if diff := cmp.Diff([]string{"ingress 0 80/6 allow"}, entries(res.Identities[bpf.EndpointKey(3)])); diff != "" {
		t.Errorf("web-1 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, entries(res.Identities[bpf.EndpointKey(4)])); diff != "" {
		t.Errorf("web-canary (-want +got):\n%s", diff)
	}
}

func TestDecodeTrafficPolicy(t *testing.T) {
	tp, err := DecodeTrafficPolicy("ns", "p", map[string]any{"spec": map[string]any{"action": "Deny", "ingress": []any{}}})
	if err != nil || !tp.HasIngress || tp.HasEgress || tp.Spec.Action != v1alpha1.ActionDeny {
		t.Errorf("got %+v, %v", tp, err)
	}
	for name, obj := range map[string]map[string]any{
		"no spec":        {},
		"unknown action": {"spec": map[string]any{"action": "Maybe", "ingress": []any{}}},
		"unknown field":  {"spec": map[string]any{"action": "Allow", "ingres": []any{}}},
		"wrong type":     {"spec": map[string]any{"action": "Allow", "ingress": "all"}},
	} {
		if _, err := DecodeTrafficPolicy("ns", "p", obj); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

// TestDenyNotOverwritten: an allow translated after a deny of the same
// entry (policies go by kind, namespace, name) leaves the deny.
func TestDenyNotOverwritten(t *testing.T) {
	in := testInput()
	rule := []any{map[string]any{"ports": []any{map[string]any{"port": int64(22)}}}}
	deny, err := DecodeTrafficPolicy("a", "a-deny", map[string]any{"spec": map[string]any{"action": "Deny", "ingress": rule}})
	if err != nil {
		t.Fatal(err)
	}
	allow, err := DecodeTrafficPolicy("a", "b-allow", map[string]any{"spec": map[string]any{"action": "Allow", "ingress": rule}})
	if err != nil {
		t.Fatal(err)
	}
	in.TrafficPolicies = []*TrafficPolicy{allow, deny}
	if diff := cmp.Diff([]string{"ingress 0 22/6 deny"}, entries(Translate(in).Identities[idDB])); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}
