package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/bpf"
)

// decide is the datapath's decision (bpf/c/policy_maps.h decide()) for a
// flow to an endpoint with policy p under key self: a deny in any key the
// flow matches wins, then any allow, then the isolation flag.
func decide(p *IdentityPolicy, self bpf.Identity, dir bpf.Direction, peer bpf.Identity, port uint16, proto uint8) bool {
	if p == nil {
		return true
	}
	allowed := false
	for _, id := range []bpf.Identity{peer, bpf.IdentityAny} {
		var vs []bpf.Verdict
		if port != 0 {
			vs = append(vs, p.Entries[bpf.PolicyKey{Endpoint: self, Peer: id, Port: port, Proto: proto, Dir: dir}])
			// The longest block containing the port decides (LPM trie).
			for bits := 16; bits >= 0; bits-- {
				b := bpf.PortBlock{Port: port &^ uint16(uint32(1)<<(16-bits)-1), Bits: uint8(bits)}
				if v, ok := p.Ranges[bpf.PortRangeKey{Endpoint: self, Peer: id, Dir: dir, Proto: proto, Block: b}]; ok {
					vs = append(vs, v)
					break
				}
			}
		}
		vs = append(vs, p.Entries[bpf.PolicyKey{Endpoint: self, Peer: id, Proto: proto, Dir: dir}])
		if proto != 0 {
			vs = append(vs, p.Entries[bpf.PolicyKey{Endpoint: self, Peer: id, Dir: dir}])
		}
		for _, v := range vs {
			if v == bpf.Deny {
				return false
			}
			allowed = allowed || v == bpf.Allow
		}
	}
	flag := bpf.EnforceIngress
	if dir == bpf.Egress {
		flag = bpf.EnforceEgress
	}
	return allowed || p.Flags&flag == 0
}

// aps decodes AuthorizationPolicies as the agent does (unstructured →
// DecodeAuthorizationPolicy).
func aps(t testing.TB, docs ...string) []*securityv1.AuthorizationPolicy {
	t.Helper()
	var out []*securityv1.AuthorizationPolicy
	for _, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatalf("yaml: %v", err)
		}
		ap, err := DecodeAuthorizationPolicy(obj)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ap)
	}
	return out
}

// authzPolicy is an AuthorizationPolicy in namespace ns (name p) with a
// spec in YAML flow style.
func authzPolicy(ns, spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: " + ns + "}\nspec: " + spec
}

// authzInput is the test cluster with service accounts: web (a/web), db
// (a/db), other (b/client), mon (mon/prom); 10.9.0.0/16 has a CIDR
// identity when a policy names it.
func authzInput(nps ...*networkingv1.NetworkPolicy) Input {
	in := testInput(nps...)
	for i := range in.Endpoints {
		in.Endpoints[i].Meshed = true // opted in, no sidecar: Istio's policies apply
	}
	sas := map[bpf.Identity]string{idWeb: "web", idDB: "db", idOther: "client", idMon: "prom"}
	for i := range in.Identities {
		in.Identities[i].ServiceAccount = sas[in.Identities[i].ID]
	}
	in.PeerAddrs = map[bpf.Identity][]netip.Addr{
		idWeb: {netip.MustParseAddr("10.244.0.10")}, idDB: {netip.MustParseAddr("10.244.0.11")},
		idOther: {netip.MustParseAddr("10.244.1.20")}, idMon: {netip.MustParseAddr("10.244.1.30"), netip.MustParseAddr("10.244.2.30")},
	}
	return in
}

// flow is "peer port/proto" → allowed, checked at the db pod's ingress.
type flow struct {
	peer  bpf.Identity
	port  uint16
	proto uint8
}

func (f flow) String() string { return fmt.Sprintf("%d→db %d/%d", f.peer, f.port, f.proto) }

const tcp, udp = bpf.ProtoTCP, bpf.ProtoUDP

// TestAuthorizationPolicyL4 is the L4 back end of the authorization gate:
// AuthorizationPolicies (through the agent's own decoding and
// translate/authz) decided at the db pod's ingress, alone and with
// NetworkPolicies, for every peer of the test cluster.
func TestAuthorizationPolicyL4(t *testing.T) {
	allowB := np("allow-b", "db", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "b"}}}}}}
	})
	// web on every port, b on 5432 only.
	allowWebAnyBOn5432 := np("web-any-b-5432", "db", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}}},
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), corev1.ProtocolTCP, nil)}},
		}
	})
	const cidr = bpf.Identity(1<<31 - 1) // stands for the CIDR identity of 10.9.0.0/16
	tests := map[string]struct {
		policies []string
		nps      []*networkingv1.NetworkPolicy
		opts     AuthzOptions
		mutate   func(*Input)
		allow    []flow
		deny     []flow
		flags    bpf.EndpointFlags
		diag     string // substring of a diagnostic
	}{
		"ALLOW from a principal on a port": {
			policies: []string{authzPolicy("a", `{selector: {matchLabels: {app: db}}, rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/web"]}}], to: [{operation: {ports: ["8080"]}}]}]}`)},
			allow:    []flow{{idWeb, 8080, tcp}, {idOther, 53, udp}, {idWeb, 9, udp}},
			deny:     []flow{{idWeb, 5432, tcp}, {idOther, 8080, tcp}, {idMon, 8080, tcp}, {bpf.IdentityWorld, 8080, tcp}, {bpf.IdentityHost, 8080, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW: a principal of a foreign trust domain matches no identity": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {principals: ["other.td/ns/a/sa/web"]}}]}]}`)},
			deny:     []flow{{idWeb, 8080, tcp}, {idOther, 8080, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW: the cluster's trust domain is an alias of the policy's": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {principals: ["old.td/ns/a/sa/web"]}}]}]}`)},
			opts:     AuthzOptions{TrustDomain: "new.td", TrustDomainAliases: []string{"old.td"}},
			mutate:   func(in *Input) { in.TrustDomain = "new.td" },
			allow:    []flow{{idWeb, 8080, tcp}},
			deny:     []flow{{idOther, 8080, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW: principals of cluster.local stand for the cluster's trust domain": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/web"]}}]}]}`)},
			opts:     AuthzOptions{TrustDomain: "new.td"},
			mutate:   func(in *Input) { in.TrustDomain = "new.td" },
			allow:    []flow{{idWeb, 8080, tcp}},
			deny:     []flow{{idOther, 8080, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW by service account and by principal glob": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {serviceAccounts: ["b/client"]}}, {source: {principals: ["*/sa/prom"]}}]}]}`)},
			allow:    []flow{{idOther, 80, tcp}, {idMon, 80, tcp}},
			deny:     []flow{{idWeb, 80, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW from namespaces": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {namespaces: ["b", "mo*"]}}]}]}`)},
			allow:    []flow{{idOther, 5432, tcp}, {idMon, 1, tcp}},
			deny:     []flow{{idWeb, 5432, tcp}, {bpf.IdentityWorld, 5432, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW notNamespaces is the exact complement, WORLD and HOST included": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {notNamespaces: ["a"]}}]}]}`)},
			allow:    []flow{{idOther, 5432, tcp}, {idMon, 5432, tcp}, {bpf.IdentityWorld, 5432, tcp}, {bpf.IdentityHost, 5432, tcp}},
			deny:     []flow{{idWeb, 5432, tcp}, {idDB, 5432, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW notPrincipals": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {notPrincipals: ["cluster.local/ns/a/sa/web"]}}]}]}`)},
			allow:    []flow{{idDB, 80, tcp}, {idOther, 80, tcp}, {bpf.IdentityWorld, 80, tcp}},
			deny:     []flow{{idWeb, 80, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW trustDomains and notTrustDomains": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {trustDomains: ["cluster.local"]}}]}, {from: [{source: {notTrustDomains: ["cluster.local"]}}], to: [{operation: {ports: ["9"]}}]}]}`)},
			allow:    []flow{{idWeb, 80, tcp}, {idOther, 80, tcp}, {bpf.IdentityWorld, 9, tcp}},
			deny:     []flow{{bpf.IdentityWorld, 80, tcp}, {idWeb, 80, udp + 200}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW notPorts": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {namespaces: ["b"]}}], to: [{operation: {notPorts: ["8080", "22"]}}]}]}`)},
			allow:    []flow{{idOther, 8079, tcp}, {idOther, 8081, tcp}, {idOther, 1, tcp}, {idOther, 65535, tcp}, {idOther, 23, tcp}},
			deny:     []flow{{idOther, 8080, tcp}, {idOther, 22, tcp}, {idWeb, 8081, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"ALLOW ipBlocks match pods' addresses and CIDRs": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {ipBlocks: ["10.244.1.0/24", "10.9.0.0/16"]}}]}]}`)},
			allow:    []flow{{idOther, 80, tcp}, {cidr, 80, tcp}},
			// mon has one pod in the block and one outside: left out.
			deny:  []flow{{idMon, 80, tcp}, {idWeb, 80, tcp}, {bpf.IdentityWorld, 80, tcp}},
			flags: bpf.EnforceIngress, diag: "1 of the 2 pods of identity 303",
		},
		"DENY ipBlocks round a split identity in": {
			policies: []string{authzPolicy("a", `{action: DENY, rules: [{from: [{source: {ipBlocks: ["10.244.1.0/24"]}}]}]}`)},
			allow:    []flow{{idWeb, 80, tcp}, {bpf.IdentityWorld, 80, tcp}},
			deny:     []flow{{idOther, 80, tcp}, {idMon, 80, tcp}},
			diag:     "1 of the 2 pods of identity 303",
		},
		"DENY from a namespace wins over a NetworkPolicy allowing it": {
			policies: []string{authzPolicy("a", `{action: DENY, rules: [{from: [{source: {namespaces: ["b"]}}]}]}`)},
			nps:      []*networkingv1.NetworkPolicy{allowB},
			allow:    []flow{{idOther, 53, udp}}, // Istio authorizes TCP only
			deny:     []flow{{idOther, 5432, tcp}, {idWeb, 5432, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"DENY notPrincipals denies everyone else, but not the node when host ingress is allowed": {
			policies: []string{authzPolicy("a", `{action: DENY, rules: [{from: [{source: {notPrincipals: ["cluster.local/ns/a/sa/web"]}}]}]}`)},
			mutate:   func(in *Input) { in.AllowHostIngress = true },
			allow:    []flow{{idWeb, 80, tcp}, {bpf.IdentityHost, 80, tcp}},
			deny:     []flow{{idOther, 80, tcp}, {idMon, 80, tcp}, {bpf.IdentityWorld, 80, tcp}},
		},
		"gates intersect: a flow must pass the NetworkPolicy and the AuthorizationPolicy": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/web", "cluster.local/ns/b/sa/client"]}}], to: [{operation: {ports: ["8080"]}}]}]}`)},
			nps:      []*networkingv1.NetworkPolicy{allowWebAnyBOn5432},
			// web: NP any port ∩ AP 8080; b: NP 5432 ∩ AP 8080 = nothing.
			allow: []flow{{idWeb, 8080, tcp}, {idWeb, 53, udp}},
			deny:  []flow{{idWeb, 5432, tcp}, {idOther, 8080, tcp}, {idOther, 5432, tcp}, {idOther, 53, udp}, {idMon, 8080, tcp}},
			flags: bpf.EnforceIngress,
		},
		"gates intersect with port ranges on both sides": {
			policies: []string{authzPolicy("a", `{rules: [{to: [{operation: {notPorts: ["5000"]}}]}]}`)},
			nps: []*networkingv1.NetworkPolicy{np("range", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(4000), corev1.ProtocolTCP, i32(6000))}}}
			})},
			allow: []flow{{idOther, 4000, tcp}, {idOther, 4999, tcp}, {idOther, 5001, tcp}, {idWeb, 6000, tcp}},
			deny:  []flow{{idOther, 5000, tcp}, {idOther, 3999, tcp}, {idOther, 6001, tcp}, {idOther, 4500, udp}},
			flags: bpf.EnforceIngress,
		},
		"CUSTOM denies what it selects": {
			policies: []string{authzPolicy("a", `{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {namespaces: ["b"]}}]}]}`)},
			allow:    []flow{{idWeb, 80, tcp}},
			deny:     []flow{{idOther, 80, tcp}},
			diag:     `CUSTOM (provider "ext") is not supported`,
		},
		"allow-nothing isolates with no allow": {
			policies: []string{authzPolicy("a", `{selector: {matchLabels: {app: db}}}`)},
			mutate:   func(in *Input) { in.AllowHostIngress = true },
			allow:    []flow{{bpf.IdentityHost, 80, tcp}, {idWeb, 53, udp}},
			deny:     []flow{{idWeb, 80, tcp}, {idOther, 80, tcp}, {bpf.IdentityWorld, 80, tcp}},
			flags:    bpf.EnforceIngress,
		},
		"deny-all": {
			policies: []string{authzPolicy("a", `{action: DENY, rules: [{}]}`)},
			allow:    []flow{{idWeb, 53, udp}},
			deny:     []flow{{idWeb, 80, tcp}, {idOther, 80, tcp}, {bpf.IdentityWorld, 80, tcp}, {bpf.IdentityHost, 80, tcp}},
		},
		"an L7-only ALLOW on TCP isolates with no allow": {
			policies: []string{authzPolicy("a", `{rules: [{to: [{operation: {methods: ["GET"]}}]}]}`)},
			deny:     []flow{{idWeb, 80, tcp}, {idOther, 8080, tcp}},
			flags:    bpf.EnforceIngress, diag: "the allow rule never matches",
		},
		"an L7 fact next to an L4 one: the ALLOW still never matches": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {namespaces: ["b"]}}, {source: {requestPrincipals: ["*"]}}]}]}`)},
			deny:     []flow{{idOther, 80, tcp}},
			flags:    bpf.EnforceIngress, diag: "never matches",
		},
		"a DENY with L7 fields drops them and denies more": {
			policies: []string{authzPolicy("a", `{action: DENY, rules: [{from: [{source: {namespaces: ["b"]}}], to: [{operation: {methods: ["POST"], ports: ["8080"]}}]}]}`)},
			allow:    []flow{{idOther, 5432, tcp}, {idWeb, 8080, tcp}},
			deny:     []flow{{idOther, 8080, tcp}},
			diag:     "request conditions cannot be enforced",
		},
		"AUDIT changes nothing": {
			policies: []string{authzPolicy("a", `{action: AUDIT, rules: [{}]}`)},
			allow:    []flow{{idWeb, 80, tcp}, {idOther, 80, tcp}},
		},
		"a dry-run DENY changes nothing": {
			policies: []string{strings.Replace(authzPolicy("a", `{action: DENY, rules: [{}]}`), "namespace: a}", "namespace: a, annotations: {istio.io/dry-run: 'true'}}", 1)},
			allow:    []flow{{idWeb, 80, tcp}},
		},
		"a mesh-wide policy in the root namespace": {
			policies: []string{authzPolicy("istio-system", `{action: DENY, rules: [{from: [{source: {namespaces: ["mon"]}}]}]}`)},
			allow:    []flow{{idWeb, 80, tcp}},
			deny:     []flow{{idMon, 80, tcp}},
		},
		"a policy of another namespace does not apply": {
			policies: []string{authzPolicy("b", `{action: DENY, rules: [{}]}`)},
			allow:    []flow{{idWeb, 80, tcp}},
		},
		"targetRefs select the pods of the Service": {
			policies: []string{authzPolicy("a", `{targetRefs: [{kind: Service, group: "", name: db-svc}], rules: [{from: [{source: {namespaces: ["b"]}}]}]}`)},
			mutate: func(in *Input) {
				in.Services = []Service{{Namespace: "a", Name: "db-svc", Selector: map[string]string{"app": "db"}},
					{Namespace: "b", Name: "db-svc", Selector: map[string]string{"app": "web"}}}
			},
			allow: []flow{{idOther, 80, tcp}},
			deny:  []flow{{idWeb, 80, tcp}},
			flags: bpf.EnforceIngress,
		},
		"an unknown condition key: the ALLOW's match matches nothing": {
			policies: []string{authzPolicy("a", `{rules: [{from: [{source: {namespaces: ["b"]}}], when: [{key: "source.bogus", values: ["x"]}]}]}`)},
			deny:     []flow{{idOther, 80, tcp}},
			flags:    bpf.EnforceIngress, diag: `unknown condition key "source.bogus"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := authzInput(tc.nps...)
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			in.CIDRs = NewCIDRAllocator(nil)
			models, diags := AuthorizationPolicyModels(aps(t, tc.policies...), tc.opts)
			in.Models = models
			res := Translate(in)
			res.Diagnostics = append(diags, res.Diagnostics...)
			got := res.Identities[idDB]
			if got == nil {
				t.Fatal("no policy for db")
			}
			if got.Flags&bpf.EnforceIngress != tc.flags {
				t.Errorf("flags %v, want %v", got.Flags, tc.flags)
			}
			peerOf := func(f flow) bpf.Identity {
				if f.peer == cidr {
					return res.CIDRs[netip.MustParsePrefix("10.9.0.0/16")]
				}
				return f.peer
			}
			if slices.ContainsFunc(append(tc.allow, tc.deny...), func(f flow) bool { return f.peer == cidr }) && peerOf(flow{peer: cidr}) == 0 {
				t.Fatal("no policy names 10.9.0.0/16: the case cannot use its CIDR identity")
			}
			for _, f := range tc.allow {
				if !decide(got, idDB, bpf.Ingress, peerOf(f), f.port, f.proto) {
					t.Errorf("%v denied, want allowed\nentries %v", f, entries(got))
				}
			}
			for _, f := range tc.deny {
				if decide(got, idDB, bpf.Ingress, peerOf(f), f.port, f.proto) {
					t.Errorf("%v allowed, want denied\nentries %v", f, entries(got))
				}
			}
			var ds []string
			for _, d := range res.Diagnostics {
				ds = append(ds, d.String())
			}
			if tc.diag != "" && !strings.Contains(strings.Join(ds, "\n"), tc.diag) {
				t.Errorf("diagnostics %q lack %q", ds, tc.diag)
			}
		})
	}
}

// TestAuthorizationPolicyOnlyMeshed: Istio authorizes only the pods it
// proxies. A pod with a sidecar (or outside the mesh) is not Meshed: an
// AuthorizationPolicy selecting it changes nothing in eBPF — its sidecar
// decides, with the HTTP facts the L4 projection would turn into a deny
// of everything (a sidecar namespace with a GET-only ALLOW must keep
// working once nodemesh is installed). NetworkPolicy still applies to it.
func TestAuthorizationPolicyOnlyMeshed(t *testing.T) {
	getOnly := authzPolicy("a", `{selector: {matchLabels: {app: db}}, rules: [{to: [{operation: {methods: [GET]}}]}]}`)
	denyB := authzPolicy("a", `{action: DENY, rules: [{from: [{source: {namespaces: [b]}}]}]}`)
	for name, meshed := range map[string]bool{"meshed": true, "sidecar or outside the mesh": false} {
		t.Run(name, func(t *testing.T) {
			in := authzInput()
			for i := range in.Endpoints {
				in.Endpoints[i].Meshed = meshed
			}
			in.CIDRs = NewCIDRAllocator(nil)
			models, _ := AuthorizationPolicyModels(aps(t, getOnly, denyB), AuthzOptions{})
			in.Models = models
			got := Translate(in).Identities[idDB]
			if got == nil {
				t.Fatal("no policy for db")
			}
			fromWeb := decide(got, idDB, bpf.Ingress, idWeb, 5432, tcp)
			fromB := decide(got, idDB, bpf.Ingress, idOther, 5432, tcp)
			if meshed && (fromWeb || fromB) {
				t.Errorf("meshed: web %v, b %v; want both denied (GET-only ALLOW projects to nothing, DENY b)", fromWeb, fromB)
			}
			if !meshed && (!fromWeb || !fromB || got.Flags != 0) {
				t.Errorf("not meshed: web %v, b %v, flags %v; want both allowed and nothing isolated (the sidecar decides)", fromWeb, fromB, got.Flags)
			}
		})
	}
}

// TestUnion: the sorted merge of two peer sets (addressPeers' CIDR and pod
// identities).
func TestUnion(t *testing.T) {
	ids := func(v ...bpf.Identity) peerSet { return peerSet{ids: v} }
	for name, tc := range map[string]struct{ a, b, want peerSet }{
		"disjoint":   {ids(1, 5, 9), ids(2, 3, 10), ids(1, 2, 3, 5, 9, 10)},
		"overlap":    {ids(1, 2, 3), ids(2, 3, 4), ids(1, 2, 3, 4)},
		"one empty":  {ids(), ids(7, 8), ids(7, 8)},
		"both empty": {ids(), ids(), ids()},
		"any":        {peerSet{any: true}, ids(1), peerSet{any: true}},
	} {
		t.Run(name, func(t *testing.T) {
			got := union(tc.a, tc.b)
			if got.any != tc.want.any || !slices.Equal(got.ids, tc.want.ids) && len(got.ids)+len(tc.want.ids) > 0 {
				t.Errorf("union(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// TestPeerMemoKeepsFactsApart: the memo of peer sets is per fact — the same
// glob as a principal (matching no identity here) and as a namespace
// (matching namespace a) in one sync must not share a set.
func TestPeerMemoKeepsFactsApart(t *testing.T) {
	in := authzInput()
	in.CIDRs = NewCIDRAllocator(nil)
	deny := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a-deny, namespace: a}\n" +
		"spec: {selector: {matchLabels: {app: db}}, action: DENY, rules: [{from: [{source: {principals: [\"a*\"]}}]}]}"
	allow := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b-allow, namespace: a}\n" +
		"spec: {selector: {matchLabels: {app: db}}, rules: [{from: [{source: {namespaces: [\"a*\"]}}]}]}"
	models, diags := AuthorizationPolicyModels(aps(t, deny, allow), AuthzOptions{})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	in.Models = models
	got := Translate(in).Identities[idDB]
	if got == nil {
		t.Fatal("no policy for db")
	}
	if !decide(got, idDB, bpf.Ingress, idWeb, 5432, tcp) {
		t.Errorf("web (namespace a) denied: the namespace glob got the principal glob's empty set\n%v", entries(got))
	}
	if decide(got, idDB, bpf.Ingress, idOther, 5432, tcp) {
		t.Errorf("b allowed: only namespace a* is")
	}
}

// TestNotIPBlocksByPodAddress: Istio's ipBlocks and notIpBlocks match
// pods' addresses; notIpBlocks carves a pod's address out of the block.
func TestNotIPBlocksByPodAddress(t *testing.T) {
	in := authzInput()
	in.CIDRs = NewCIDRAllocator(nil)
	allow := authzPolicy("a", `{selector: {matchLabels: {app: db}}, rules: [{from: [{source: {ipBlocks: ["10.244.0.0/16"], notIpBlocks: ["10.244.0.10/32"]}}]}]}`)
	models, diags := AuthorizationPolicyModels(aps(t, allow), AuthzOptions{})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	in.Models = models
	got := Translate(in).Identities[idDB]
	if got == nil {
		t.Fatal("no policy for db")
	}
	if decide(got, idDB, bpf.Ingress, idWeb, 5432, tcp) {
		t.Error("web (10.244.0.10, in notIpBlocks) allowed")
	}
	if !decide(got, idDB, bpf.Ingress, idOther, 5432, tcp) {
		t.Error("b's client (10.244.1.20, in the block) denied")
	}
}
