package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/bpf"
)

// Identities of the test cluster.
const (
	idWeb   bpf.Identity = 300 // ns a, app=web
	idDB    bpf.Identity = 301 // ns a, app=db
	idOther bpf.Identity = 302 // ns b, app=client
	idMon   bpf.Identity = 303 // ns mon, app=prom
)

func testInput(policies ...*networkingv1.NetworkPolicy) Input {
	return Input{
		Endpoints: []Endpoint{
			{Namespace: "a", Name: "web-1", Labels: map[string]string{"app": "web"}, Identity: idWeb,
				Ports: []NamedPort{{Name: "http", Port: 8080, Proto: bpf.ProtoTCP}, {Name: "dns", Port: 53, Proto: bpf.ProtoUDP}}},
			{Namespace: "a", Name: "db-1", Labels: map[string]string{"app": "db"}, Identity: idDB,
				Ports: []NamedPort{{Name: "sql", Port: 5432, Proto: bpf.ProtoTCP}}},
		},
		Identities: []Identity{
			{ID: idWeb, Namespace: "a", Labels: map[string]string{"app": "web"}},
			{ID: idDB, Namespace: "a", Labels: map[string]string{"app": "db"}},
			{ID: idOther, Namespace: "b", Labels: map[string]string{"app": "client"}},
			{ID: idMon, Namespace: "mon", Labels: map[string]string{"app": "prom"}},
		},
		Namespaces: map[string]map[string]string{
			"a":   {"kubernetes.io/metadata.name": "a"},
			"b":   {"kubernetes.io/metadata.name": "b", "team": "x"},
			"mon": {"kubernetes.io/metadata.name": "mon", "team": "x", "monitoring": "true"},
		},
		Policies: policies,
	}
}

// np builds a NetworkPolicy in namespace a selecting app=sel ("" = all).
func np(name, sel string, mut func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name}}
	if sel != "" {
		p.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": sel}}
	}
	if mut != nil {
		mut(&p.Spec)
	}
	return p
}

func podSel(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func port(p intstr.IntOrString, proto corev1.Protocol, end *int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: &p, Protocol: &proto, EndPort: end}
}

func i32(v int32) *int32 { return &v }

// entries renders a policy as sorted lines "dir peer port/proto".
func entries(p *IdentityPolicy) []string {
	if p == nil {
		return nil
	}
	var out []string
	for k, v := range p.Entries {
		out = append(out, fmt.Sprintf("%s %d %d/%d %s", k.Dir, k.Peer, k.Port, k.Proto, v))
	}
	// Port range blocks as "first-last" (a one-port block as its port).
	for k, v := range p.Ranges {
		out = append(out, fmt.Sprintf("%s %d %s/%d %s", k.Dir, k.Peer, k.Block, k.Proto, v))
	}
	sort.Strings(out)
	return out
}

func TestTranslate(t *testing.T) {
	tests := map[string]struct {
		policies []*networkingv1.NetworkPolicy
		mutate   func(*Input)
		id       bpf.Identity
		flags    bpf.EndpointFlags
		want     []string
		diag     string // substring of a diagnostic, if one is expected
	}{
		"no policy: not isolated": {
			id: idWeb, flags: 0, want: nil,
		},
		"empty ingress policy isolates": {
			policies: []*networkingv1.NetworkPolicy{np("deny", "web", nil)},
			id:       idWeb, flags: bpf.EnforceIngress, want: nil,
		},
		"other pod not selected": {
			policies: []*networkingv1.NetworkPolicy{np("deny", "web", nil)},
			id:       idDB, flags: 0, want: nil,
		},
		"egress-only policyTypes": {
			policies: []*networkingv1.NetworkPolicy{np("e", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			})},
			id: idWeb, flags: bpf.EnforceEgress, want: nil,
		},
		"egress rules imply egress type": {
			policies: []*networkingv1.NetworkPolicy{np("e", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("db")}}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress | bpf.EnforceEgress, want: []string{"egress 301 0/0 allow"},
		},
		"podSelector peer, numbered port": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), corev1.ProtocolTCP, nil)},
				}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 300 5432/6 allow"},
		},
		// Identities leave pod-name out: NotIn and DoesNotExist on it would
		// match every identity — web-0 included — so the peer matches
		// nothing (denies more), and says so.
		"peer NotIn a label identities leave out matches nothing": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"},
						MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "statefulset.kubernetes.io/pod-name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"web-0"}}}}}},
				}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: nil, diag: "statefulset.kubernetes.io/pod-name, which identities leave out",
		},
		"peer DoesNotExist on a label identities leave out matches nothing": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
						MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod-template-hash", Operator: metav1.LabelSelectorOpDoesNotExist}}}}},
				}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: nil, diag: "pod-template-hash, which identities leave out",
		},
		"allow all ingress": {
			policies: []*networkingv1.NetworkPolicy{np("p", "", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 0 0/0 allow"},
		},
		"named port resolves on the endpoint (ingress)": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(intstr.FromString("http"), corev1.ProtocolTCP, nil),
					port(intstr.FromString("dns"), corev1.ProtocolUDP, nil),
					port(intstr.FromString("dns"), corev1.ProtocolTCP, nil), // no TCP port named dns
					port(intstr.FromString("nope"), corev1.ProtocolTCP, nil),
				}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress, want: []string{"ingress 0 53/17 allow", "ingress 0 8080/6 allow"},
		},
		"named port resolves on the peer (egress)": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("db")}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("sql"), corev1.ProtocolTCP, nil)},
				}}
			})},
			id: idWeb, flags: bpf.EnforceEgress, want: []string{"egress 301 5432/6 allow"},
		},
		"named egress port to every peer: only pods that name it": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("sql"), corev1.ProtocolTCP, nil)},
				}}
			})},
			mutate: func(in *Input) {
				in.PeerPorts = map[bpf.Identity][][]NamedPort{idOther: {{{Name: "sql", Port: 3306, Proto: bpf.ProtoTCP}}}}
			},
			id: idWeb, flags: bpf.EnforceEgress, want: []string{"egress 301 5432/6 allow", "egress 302 3306/6 allow"},
		},
		"endPort expands": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(7000), corev1.ProtocolUDP, i32(7002))},
				}}
			})},
			id: idDB, flags: bpf.EnforceIngress,
			want: []string{"ingress 300 7000-7001/17 allow", "ingress 300 7002/17 allow"},
		},
		"endPort 1024-65535 (ephemeral ports) is held exactly": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(1024), corev1.ProtocolTCP, i32(65535))},
				}}
			})},
			id: idDB, flags: bpf.EnforceIngress,
			want: []string{"ingress 300 1024-2047/6 allow", "ingress 300 16384-32767/6 allow", "ingress 300 2048-4095/6 allow",
				"ingress 300 32768-65535/6 allow", "ingress 300 4096-8191/6 allow", "ingress 300 8192-16383/6 allow"},
		},
		"endPort equal to port is a single port": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(8080), corev1.ProtocolTCP, i32(8080))}}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 0 8080/6 allow"},
		},
		"endPort over the whole range is any port": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(1), corev1.ProtocolTCP, i32(65535))}}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 0 0/6 allow"},
		},
		"a range wider than 1,024 ports (denied before: the review defect)": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(1000), corev1.ProtocolTCP, i32(3001))}}}
			})},
			id: idDB, flags: bpf.EnforceIngress,
			want: []string{"ingress 0 1000-1007/6 allow", "ingress 0 1008-1023/6 allow", "ingress 0 1024-2047/6 allow",
				"ingress 0 2048-2559/6 allow", "ingress 0 2560-2815/6 allow", "ingress 0 2816-2943/6 allow",
				"ingress 0 2944-2975/6 allow", "ingress 0 2976-2991/6 allow", "ingress 0 2992-2999/6 allow",
				"ingress 0 3000-3001/6 allow"},
		},
		"namespaceSelector": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}},
				}}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 302 0/0 allow", "ingress 303 0/0 allow"},
		},
		"namespaceSelector and podSelector in one peer": {
			policies: []*networkingv1.NetworkPolicy{np("p", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}},
					PodSelector:       podSel("prom"),
				}}}}
			})},
			id: idDB, flags: bpf.EnforceIngress, want: []string{"ingress 303 0/0 allow"},
		},
		"ipBlock with except": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24"},
				}}}}}
			})},
			id: idWeb, flags: bpf.EnforceEgress, want: []string{"egress cidr:192.168.0.0/16 0/0 allow"},
		},
		"ipBlock /0 includes world, not the except": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"},
				}}}}}
			})},
			id: idWeb, flags: bpf.EnforceEgress, want: []string{"egress 2 0/0 allow"},
		},
		"ipBlock inside another policy's except": {
			policies: []*networkingv1.NetworkPolicy{
				np("p1", "web", func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
						CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"},
					}}}}}
				}),
				np("p2", "web", func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.2.0/24"}}}}}
				}),
			},
			id: idWeb, flags: bpf.EnforceEgress,
			want: []string{"egress cidr:10.0.0.0/8 0/0 allow", "egress cidr:10.1.2.0/24 0/0 allow"},
		},
		"IPv6 block reported": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}}}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress, want: nil, diag: "IPv6",
		},
		"unknown protocol reported": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(80), "ICMP", nil)}}}
			})},
			id: idWeb, flags: bpf.EnforceIngress, want: nil, diag: "unknown protocol",
		},
		"invalid podSelector isolates the namespace": {
			policies: []*networkingv1.NetworkPolicy{np("p", "", func(s *networkingv1.NetworkPolicySpec) {
				s.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})},
			id: idDB, flags: bpf.EnforceIngress | bpf.EnforceEgress, want: nil, diag: "invalid selector",
		},
		"host ingress and proxy egress defaults": {
			policies: []*networkingv1.NetworkPolicy{np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
			})},
			mutate: func(in *Input) {
				in.AllowHostIngress = true
				in.ProxyPort = 15001
				in.Endpoints[0].Redirected = true
			},
			id: idWeb, flags: bpf.EnforceIngress | bpf.EnforceEgress,
			want: []string{"egress 1 15001/6 allow", "ingress 1 0/0 allow"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := testInput(tc.policies...)
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			res := Translate(in)
			got := res.Identities[tc.id]
			if got == nil {
				t.Fatalf("no policy for identity %d", tc.id)
			}
			if got.Flags != tc.flags {
				t.Errorf("flags = %b, want %b", got.Flags, tc.flags)
			}
			// Name CIDR identities by their prefix.
			names := map[bpf.Identity]string{}
			for p, id := range res.CIDRs {
				names[id] = "cidr:" + p.String()
			}
			var lines []string
			for _, l := range entries(got) {
				f := strings.Fields(l)
				var id uint32
				fmt.Sscan(f[1], &id)
				if n, ok := names[bpf.Identity(id)]; ok {
					f[1] = n
				}
				lines = append(lines, strings.Join(f, " "))
			}
			sort.Strings(lines)
			if diff := cmp.Diff(tc.want, lines); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			var diags []string
			for _, d := range res.Diagnostics {
				diags = append(diags, d.String())
			}
			if tc.diag == "" && len(diags) > 0 {
				t.Errorf("unexpected diagnostics %v", diags)
			}
			if tc.diag != "" && !strings.Contains(strings.Join(diags, "\n"), tc.diag) {
				t.Errorf("diagnostics %v lack %q", diags, tc.diag)
			}
		})
	}
}

// TestSharedIdentityNamedPorts: two pods of one identity whose named port
// differs each get their own entries under their endpoint key, exactly
// what each is allowed; without endpoint keys, only what both are
// allowed, reported.
func TestSharedIdentityNamedPorts(t *testing.T) {
	in := testInput(np("p", "web", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			port(intstr.FromString("http"), corev1.ProtocolTCP, nil), port(intstr.FromInt32(9000), corev1.ProtocolTCP, nil),
		}}}
	}))
	in.Endpoints = append(in.Endpoints, Endpoint{Namespace: "a", Name: "web-2", Labels: map[string]string{"app": "web"},
		Identity: idWeb, Ports: []NamedPort{{Name: "http", Port: 8081, Proto: bpf.ProtoTCP}}})
	res := Translate(in)
	if diff := cmp.Diff([]string{"ingress 0 9000/6 allow"}, entries(res.Identities[idWeb])); diff != "" {
		t.Errorf("without endpoint keys (-want +got):\n%s", diff)
	}
	if len(res.Diagnostics) != 2 || !strings.Contains(res.Diagnostics[0].Message, "no endpoint key") {
		t.Errorf("diagnostics %v", res.Diagnostics)
	}

	for i := range in.Endpoints {
		in.Endpoints[i].Key = bpf.EndpointKey(10 + i)
	}
	res = Translate(in)
	if len(res.Diagnostics) != 0 {
		t.Errorf("diagnostics %v", res.Diagnostics)
	}
	web1, web2 := bpf.EndpointKey(10), bpf.EndpointKey(12)
	if diff := cmp.Diff([]bpf.Identity{web1, idDB, web2}, res.EndpointKeys); diff != "" {
		t.Errorf("endpoint keys (-want +got):\n%s", diff)
	}
	for key, want := range map[bpf.Identity][]string{
		web1: {"ingress 0 8080/6 allow", "ingress 0 9000/6 allow"},
		web2: {"ingress 0 8081/6 allow", "ingress 0 9000/6 allow"},
	} {
		if diff := cmp.Diff(want, entries(res.Identities[key])); diff != "" {
			t.Errorf("entries of %x (-want +got):\n%s", key, diff)
		}
		for k := range res.Identities[key].Entries {
			if k.Endpoint != key {
				t.Errorf("entry %+v is not under its endpoint key %x", k, key)
			}
		}
	}
	if _, shared := res.Identities[idWeb]; shared {
		t.Errorf("identity %d still has shared entries", idWeb)
	}
}

// TestSharedIdentityStatefulSet is the review defect: two pods of a
// StatefulSet have one identity (statefulset.kubernetes.io/pod-name is
// left out of identities), and policies select them by pod name. Each
// gets exactly its own allows (before: the intersection, nothing).
func TestSharedIdentityStatefulSet(t *testing.T) {
	byName := func(name, pod string, p int32) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"statefulset.kubernetes.io/pod-name": pod}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(intstr.FromInt32(p), corev1.ProtocolTCP, nil)}}},
			}}
	}
	in := testInput(byName("to-db-0", "db-0", 5432), byName("to-db-1", "db-1", 1024))
	in.Policies[1].Spec.Ingress[0].Ports[0].EndPort = i32(65535)
	in.Endpoints = []Endpoint{
		{Namespace: "a", Name: "db-0", Labels: map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}, Identity: idDB, Key: bpf.EndpointKey(7)},
		{Namespace: "a", Name: "db-1", Labels: map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-1"}, Identity: idDB, Key: bpf.EndpointKey(8)},
		{Namespace: "a", Name: "db-2", Labels: map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-2"}, Identity: idDB, Key: bpf.EndpointKey(9)},
	}
	res := Translate(in)
	for key, want := range map[bpf.Identity][]string{
		bpf.EndpointKey(7): {"ingress 0 5432/6 allow"},
		bpf.EndpointKey(8): {"ingress 0 1024-2047/6 allow", "ingress 0 16384-32767/6 allow", "ingress 0 2048-4095/6 allow",
			"ingress 0 32768-65535/6 allow", "ingress 0 4096-8191/6 allow", "ingress 0 8192-16383/6 allow"},
		bpf.EndpointKey(9): nil,
	} {
		got := res.Identities[key]
		if got == nil {
			t.Fatalf("no entries under %x", key)
		}
		if diff := cmp.Diff(want, entries(got)); diff != "" {
			t.Errorf("entries of %x (-want +got):\n%s", key, diff)
		}
		if wantFlags := map[bool]bpf.EndpointFlags{true: bpf.EnforceIngress, false: 0}[want != nil]; got.Flags != wantFlags {
			t.Errorf("flags of %x = %b, want %b", key, got.Flags, wantFlags)
		}
	}
	if diff := cmp.Diff([]bpf.Identity{bpf.EndpointKey(7), bpf.EndpointKey(8), bpf.EndpointKey(9)}, res.EndpointKeys); diff != "" {
		t.Errorf("endpoint keys (-want +got):\n%s", diff)
	}
}

// TestCIDRIdentitiesStable: CIDR identities survive unrelated changes and
// are restored from the identity map.
func TestCIDRIdentitiesStable(t *testing.T) {
	block := func(name, cidr string) *networkingv1.NetworkPolicy {
		return np(name, "web", func(s *networkingv1.NetworkPolicySpec) {
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}}}}
		})
	}
	alloc := NewCIDRAllocator(nil)
	in := testInput(block("p1", "10.0.0.0/8"))
	in.CIDRs = alloc
	first := Translate(in).CIDRs
	in = testInput(block("p1", "10.0.0.0/8"), block("p2", "172.16.0.0/12"))
	in.CIDRs = alloc
	second := Translate(in).CIDRs
	p := netip.MustParsePrefix("10.0.0.0/8")
	if first[p] != second[p] || !IsCIDRIdentity(first[p]) {
		t.Errorf("identity of %s changed from %d to %d", p, first[p], second[p])
	}
	restored := NewCIDRAllocator(second)
	in.CIDRs = restored
	if third := Translate(in).CIDRs; !cmp.Equal(third, second) {
		t.Errorf("after restore %v, before %v", third, second)
	}
}
