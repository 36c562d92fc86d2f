package policy

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodemesh/nodemesh/bpf"
)

// TestCapturedPortsLeftToEnvoy: on the ports the node Envoy captures
// (Endpoint.Captured), the authorization gate leaves AuthorizationPolicies
// to the Envoy — its upstream connection carries the client's address, and
// the L4 projection of a GET-only ALLOW (nothing) or of a DENY with HTTP
// facts (everything) would undo its decisions — while every other port
// keeps the projection, PeerAuthentication and NetworkPolicy still apply
// on the captured port, and HOST (the node's own connections, which are
// not captured) is denied there unless AllowHostIngress.
func TestCapturedPortsLeftToEnvoy(t *testing.T) {
	const envoyPort, other = 8080, 5432
	getOnly := authzPolicy("a", `{selector: {matchLabels: {app: db}}, rules: [{to: [{operation: {methods: [GET]}}]}]}`)
	denyPostFromB := authzPolicy("a", `{action: DENY, rules: [{from: [{source: {namespaces: [b]}}], to: [{operation: {methods: [POST]}}]}]}`)
	strict := peerAuthnPolicy("a", "default", "01", `{mtls: {mode: STRICT}}`)
	onlyWeb := np("only-web", "db", func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("web")}}}}
	})
	tests := map[string]struct {
		aps, pas    []string
		nps         []*networkingv1.NetworkPolicy
		notCaptured bool
		// mtlsOnly: the port is captured only to terminate Istio mTLS
		// (CapturedForMTLS): the Envoy enforces no policy there.
		mtlsOnly    bool
		hostDenied  bool
		allow, deny []flow
	}{
		"GET-only ALLOW: the captured port is the Envoy's, the others keep the projection": {
			aps:   []string{getOnly},
			allow: []flow{{idWeb, envoyPort, tcp}, {idOther, envoyPort, tcp}, {bpf.IdentityWorld, envoyPort, tcp}, {bpf.IdentityHost, envoyPort, tcp}},
			deny:  []flow{{idWeb, other, tcp}, {idOther, other, tcp}, {idWeb, envoyPort + 1, tcp}},
		},
		"not captured: the projection everywhere (GET-only admits nothing)": {
			aps: []string{getOnly}, notCaptured: true,
			deny: []flow{{idWeb, envoyPort, tcp}, {idOther, envoyPort, tcp}, {idWeb, other, tcp}},
		},
		"captured for mTLS only: the projection still applies there (GET-only admits nothing)": {
			aps: []string{getOnly}, mtlsOnly: true,
			deny: []flow{{idWeb, envoyPort, tcp}, {idOther, envoyPort, tcp}, {bpf.IdentityWorld, envoyPort, tcp}, {idWeb, other, tcp}},
		},
		"DENY with HTTP facts denies more off the captured port only": {
			aps:   []string{denyPostFromB},
			allow: []flow{{idOther, envoyPort, tcp}, {idWeb, other, tcp}, {idOther, other, udp}},
			deny:  []flow{{idOther, other, tcp}, {idOther, envoyPort - 1, tcp}, {idOther, 65535, tcp}},
		},
		"HOST is denied on the captured port without AllowHostIngress": {
			aps: []string{getOnly}, hostDenied: true,
			allow: []flow{{idWeb, envoyPort, tcp}},
			deny:  []flow{{bpf.IdentityHost, envoyPort, tcp}},
		},
		"PeerAuthentication STRICT still refuses WORLD on the captured port": {
			aps: []string{getOnly}, pas: []string{strict},
			allow: []flow{{idOther, envoyPort, tcp}},
			deny:  []flow{{bpf.IdentityWorld, envoyPort, tcp}},
		},
		"NetworkPolicy still applies on the captured port": {
			aps: []string{getOnly}, nps: []*networkingv1.NetworkPolicy{onlyWeb},
			allow: []flow{{idWeb, envoyPort, tcp}},
			deny:  []flow{{idOther, envoyPort, tcp}, {idWeb, other, tcp}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := authzInput(tc.nps...)
			in.AllowHostIngress = !tc.hostDenied
			for i := range in.Endpoints {
				switch {
				case in.Endpoints[i].Identity != idDB || tc.notCaptured:
				case tc.mtlsOnly:
					in.Endpoints[i].CapturedForMTLS = []uint16{envoyPort}
				default:
					in.Endpoints[i].Captured = []uint16{envoyPort}
				}
			}
			in.CIDRs = NewCIDRAllocator(nil)
			models, _ := AuthorizationPolicyModels(aps(t, tc.aps...), AuthzOptions{})
			in.Models = models
			idx, _ := PeerAuthentications(pas(t, tc.pas...), "", nil)
			in.PeerAuthn = idx
			got := Translate(in).Identities[idDB]
			if got == nil {
				t.Fatal("no policy for db")
			}
			for _, f := range tc.allow {
				if !decide(got, idDB, bpf.Ingress, f.peer, f.port, f.proto) {
					t.Errorf("%v denied, want allowed\nentries %v", f, entries(got))
				}
			}
			for _, f := range tc.deny {
				if decide(got, idDB, bpf.Ingress, f.peer, f.port, f.proto) {
					t.Errorf("%v allowed, want denied\nentries %v", f, entries(got))
				}
			}
		})
	}
}

// TestWithoutPorts: the port arithmetic the captured ports need.
func TestWithoutPorts(t *testing.T) {
	for name, c := range map[string]struct {
		pp    portProto
		ports []uint16
		want  []portProto
	}{
		"a single captured port":       {portProto{port: 80, proto: tcp}, []uint16{80}, nil},
		"a single other port":          {portProto{port: 81, proto: tcp}, []uint16{80}, []portProto{{port: 81, proto: tcp}}},
		"UDP is not captured":          {portProto{port: 80, proto: udp}, []uint16{80}, []portProto{{port: 80, proto: udp}}},
		"a range split":                {portProto{port: 70, end: 90, proto: tcp}, []uint16{80, 85}, []portProto{{port: 70, end: 79, proto: tcp}, {port: 81, end: 84, proto: tcp}, {port: 86, end: 90, proto: tcp}}},
		"range edges":                  {portProto{port: 80, end: 82, proto: tcp}, []uint16{80, 82}, []portProto{{port: 81, proto: tcp}}},
		"every port":                   {portProto{proto: tcp}, []uint16{80}, []portProto{{port: 1, end: 79, proto: tcp}, {port: 81, end: 65535, proto: tcp}}},
		"every port, none captured in": {portProto{port: 1000, end: 2000, proto: tcp}, []uint16{80}, []portProto{{port: 1000, end: 2000, proto: tcp}}},
		"any protocol": {portProto{port: 80, proto: bpf.ProtoAny}, []uint16{80},
			[]portProto{{port: 80, proto: udp}, {port: 80, proto: bpf.ProtoSCTP}}},
		"the last port": {portProto{proto: tcp}, []uint16{65535}, []portProto{{port: 1, end: 65534, proto: tcp}}},
	} {
		t.Run(name, func(t *testing.T) {
			got := withoutPorts(c.pp, c.ports)
			if len(got) != len(c.want) {
				t.Fatalf("withoutPorts(%+v, %v) = %+v, want %+v", c.pp, c.ports, got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("withoutPorts(%+v, %v) = %+v, want %+v", c.pp, c.ports, got, c.want)
				}
			}
		})
	}
}
