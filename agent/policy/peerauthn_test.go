package policy

import (
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// peerAuthnPolicy is a PeerAuthentication ns/name with a spec in YAML flow
// style, created at second sec of the day (older: smaller).
func peerAuthnPolicy(ns, name, sec, spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns +
		", creationTimestamp: '2026-01-01T00:00:" + sec + "Z'}\nspec: " + spec
}

func pas(t testing.TB, docs ...string) []*securityv1.PeerAuthentication {
	t.Helper()
	var out []*securityv1.PeerAuthentication
	for _, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatalf("yaml: %v", err)
		}
		pa, err := DecodePeerAuthentication(obj)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pa)
	}
	return out
}

// TestPeerAuthenticationPlan is the agent's plan for PeerAuthentication:
// the entries a meshed db pod gets, decided for every kind of peer — pods
// of the cluster (web, b's client, mon), a CIDR identity, WORLD, HOST — alone
// and with AuthorizationPolicies and NetworkPolicies (the order Istio
// checks them in: authentication first, so a STRICT port refuses a peer
// without an identity whatever they allow).
func TestPeerAuthenticationPlan(t *testing.T) {
	const cidr = bpf.Identity(1<<31 - 1) // the CIDR identity of 10.9.0.0/16
	nsStrict := peerAuthnPolicy("a", "default", "01", `{mtls: {mode: STRICT}}`)
	meshStrict := peerAuthnPolicy("istio-system", "default", "01", `{mtls: {mode: STRICT}}`)
	allowCIDR := authzPolicy("a", `{rules: [{from: [{source: {ipBlocks: ["10.9.0.0/16"]}}]}]}`)
	tests := map[string]struct {
		pas        []string
		aps        []string
		nps        []*networkingv1.NetworkPolicy
		unmeshed   bool
		hostDenied bool // AllowHostIngress off
		unreadable []ir.ResourceRef
		allow      []flow
		deny       []flow
		flags      bpf.EndpointFlags
		diag       string
	}{
		"no PeerAuthentication: PERMISSIVE, nothing added": {
			allow: []flow{{bpf.IdentityWorld, 5432, tcp}, {idOther, 5432, tcp}},
		},
		"namespace STRICT: pods of the cluster in, WORLD out, the node in": {
			pas:   []string{nsStrict},
			allow: []flow{{idWeb, 5432, tcp}, {idOther, 5432, tcp}, {idMon, 1, tcp}, {bpf.IdentityHost, 5432, tcp}, {bpf.IdentityWorld, 53, udp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}, {bpf.IdentityWorld, 1, tcp}, {bpf.IdentityWorld, 65535, tcp}},
		},
		"mesh STRICT in the root namespace": {
			pas:   []string{meshStrict},
			allow: []flow{{idOther, 5432, tcp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"STRICT denies the node too when host ingress is not allowed": {
			pas: []string{nsStrict}, hostDenied: true,
			allow: []flow{{idWeb, 5432, tcp}},
			deny:  []flow{{bpf.IdentityHost, 5432, tcp}, {bpf.IdentityWorld, 5432, tcp}},
		},
		"PERMISSIVE: nothing": {
			pas:   []string{peerAuthnPolicy("a", "default", "01", `{mtls: {mode: PERMISSIVE}}`)},
			allow: []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"DISABLE on the workload over a STRICT namespace": {
			pas:   []string{nsStrict, peerAuthnPolicy("a", "db", "02", `{selector: {matchLabels: {app: db}}, mtls: {mode: DISABLE}}`)},
			allow: []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"port-level DISABLE opens that port only": {
			pas:   []string{nsStrict, peerAuthnPolicy("a", "db", "02", `{selector: {matchLabels: {app: db}}, portLevelMtls: {"8080": {mode: DISABLE}}}`)},
			allow: []flow{{bpf.IdentityWorld, 8080, tcp}, {idWeb, 5432, tcp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}, {bpf.IdentityWorld, 8079, tcp}, {bpf.IdentityWorld, 8081, tcp}, {bpf.IdentityWorld, 1, tcp}},
		},
		"port-level STRICT on a PERMISSIVE workload closes that port only": {
			pas:   []string{peerAuthnPolicy("a", "db", "02", `{selector: {matchLabels: {app: db}}, portLevelMtls: {"5432": {mode: STRICT}}}`)},
			allow: []flow{{bpf.IdentityWorld, 8080, tcp}, {bpf.IdentityWorld, 5433, tcp}, {idOther, 5432, tcp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"a workload policy for another pod does not apply": {
			pas:   []string{nsStrict, peerAuthnPolicy("a", "web", "02", `{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}`)},
			allow: []flow{{idOther, 5432, tcp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"the oldest namespace policy wins": {
			pas:   []string{peerAuthnPolicy("a", "young", "09", `{mtls: {mode: DISABLE}}`), nsStrict},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}},
			diag:  "ignored: the namespace-level PeerAuthentication default is older",
			allow: []flow{{idWeb, 5432, tcp}},
		},
		"STRICT refuses a CIDR an ALLOW names: authentication comes first": {
			pas: []string{nsStrict}, aps: []string{allowCIDR},
			allow: []flow{{bpf.IdentityWorld, 53, udp}},
			deny:  []flow{{cidr, 5432, tcp}, {bpf.IdentityWorld, 5432, tcp}, {idOther, 5432, tcp}},
			flags: bpf.EnforceIngress,
		},
		"the ALLOW still decides for pods under STRICT": {
			pas:   []string{nsStrict},
			aps:   []string{authzPolicy("a", `{rules: [{from: [{source: {namespaces: ["b"]}}]}]}`)},
			allow: []flow{{idOther, 5432, tcp}},
			deny:  []flow{{idWeb, 5432, tcp}, {bpf.IdentityWorld, 5432, tcp}},
			flags: bpf.EnforceIngress,
		},
		"STRICT with a NetworkPolicy allowing everyone": {
			pas: []string{nsStrict},
			nps: []*networkingv1.NetworkPolicy{np("all", "db", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})},
			allow: []flow{{idOther, 5432, tcp}, {bpf.IdentityWorld, 53, udp}},
			deny:  []flow{{bpf.IdentityWorld, 5432, tcp}},
			flags: bpf.EnforceIngress,
		},
		"a pod with a sidecar (not meshed) is left to its sidecar": {
			pas: []string{nsStrict}, unmeshed: true,
			allow: []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
		"an unreadable PeerAuthentication makes its namespace STRICT": {
			pas:        []string{peerAuthnPolicy("a", "default", "01", `{mtls: {mode: DISABLE}}`)},
			unreadable: []ir.ResourceRef{{Kind: KindPeerAuthentication, Namespace: "a", Name: "bad"}},
			allow:      []flow{{idWeb, 5432, tcp}},
			deny:       []flow{{bpf.IdentityWorld, 5432, tcp}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := authzInput(tc.nps...)
			in.AllowHostIngress = !tc.hostDenied
			if tc.unmeshed {
				for i := range in.Endpoints {
					in.Endpoints[i].Meshed = false
				}
			}
			in.CIDRs = NewCIDRAllocator(nil)
			models, diags := AuthorizationPolicyModels(aps(t, tc.aps...), AuthzOptions{})
			in.Models = models
			idx, pdiags := PeerAuthentications(pas(t, tc.pas...), "", tc.unreadable)
			in.PeerAuthn = idx
			res := Translate(in)
			res.Diagnostics = append(append(diags, pdiags...), res.Diagnostics...)
			got := res.Identities[idDB]
			if got == nil {
				t.Fatal("no policy for db")
			}
			if got.Flags&bpf.EnforceIngress != tc.flags {
				t.Errorf("flags %v, want %v", got.Flags, tc.flags)
			}
			peerOf := func(f flow) bpf.Identity {
				if f.peer == cidr {
					id := res.CIDRs[netip.MustParsePrefix("10.9.0.0/16")]
					if id == 0 {
						t.Fatal("no policy names 10.9.0.0/16")
					}
					return id
				}
				return f.peer
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

// TestPeerAuthenticationEntries pins the entries themselves: a STRICT
// namespace is one deny per identity without a pod identity, any TCP port
// (not one per port); port exceptions become the complement's blocks.
func TestPeerAuthenticationEntries(t *testing.T) {
	in := authzInput()
	in.AllowHostIngress = true
	in.CIDRs = NewCIDRAllocator(nil)
	in.PeerAuthn, _ = PeerAuthentications(pas(t, peerAuthnPolicy("a", "default", "01", `{mtls: {mode: STRICT}}`)), "", nil)
	res := Translate(in)
	got := res.Identities[idDB]
	want := map[bpf.PolicyKey]bpf.Verdict{{Endpoint: idDB, Peer: bpf.IdentityWorld, Proto: bpf.ProtoTCP, Dir: bpf.Ingress}: bpf.Deny}
	if len(got.Entries) != len(want) || len(got.Ranges) != 0 || got.Flags != 0 {
		t.Fatalf("entries %v ranges %v flags %v, want %v", entries(got), got.Ranges, got.Flags, want)
	}
	for k, v := range want {
		if got.Entries[k] != v {
			t.Errorf("%+v: %v, want %v", k, got.Entries[k], v)
		}
	}
}
