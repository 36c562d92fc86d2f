package envoy

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/translate/ir"
)

func mtlsSpec(auto bool) *ir.IstioMTLS {
	return &ir.IstioMTLS{Auto: auto, SNI: "outbound_.80_._.s.shop.svc.cluster.local", SubjectAltNames: []string{"spiffe://cluster.local/ns/shop/sa/s"}, ALPN: []string{"istio-peer-exchange", "istio"}}
}

var testIDs = []string{"spiffe://cluster.local/ns/shop/sa/b", "spiffe://cluster.local/ns/shop/sa/a", "spiffe://td.example/ns/x/sa/y"}

// TestMTLSCheapValidationAgrees: the per-node validation of a cluster's
// Istio mTLS (validateIstioMTLS: the context once with a template
// certificate, each certificate once, the matcher once, the sockets'
// shape) rejects what the validator's full deep check rejects, and passes
// what it passes.
func TestMTLSCheapValidationAgrees(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    func(m *ir.IstioMTLS)
		ids     []string
		invalid bool
	}{
		{"auto-mTLS", func(*ir.IstioMTLS) {}, testIDs, false},
		{"ISTIO_MUTUAL", func(m *ir.IstioMTLS) { m.Auto = false }, testIDs, false},
		{"no identity", func(*ir.IstioMTLS) {}, nil, false},
		{"auto-mTLS, SNI over 255 bytes", func(m *ir.IstioMTLS) { m.SNI = strings.Repeat("s", 256) }, testIDs, true},
		{"ISTIO_MUTUAL, SNI over 255 bytes", func(m *ir.IstioMTLS) { m.Auto, m.SNI = false, strings.Repeat("s", 256) }, testIDs, true},
		{"ISTIO_MUTUAL without identities, SNI over 255 bytes", func(m *ir.IstioMTLS) { m.Auto, m.SNI = false, strings.Repeat("s", 256) }, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mtlsSpec(true)
			tc.spec(m)
			ids, err := NewMTLSIdentities(tc.ids)
			if err != nil {
				t.Fatal(err)
			}
			shared := &clusterv3.Cluster{Name: "outbound|80||s.shop.svc.cluster.local"}
			_, cheapErr := WithIstioMTLS(shared, m, ids)
			// The same cluster, unvalidated, through the full validator.
			full := proto.Clone(shared).(*clusterv3.Cluster)
			ids2, _ := NewMTLSIdentities(tc.ids)
			if err := applyIstioMTLS(full, m, ids2); err != nil {
				t.Fatal(err)
			}
			problems := ValidateWith(&Resources{Clusters: []*clusterv3.Cluster{full}}, &Refs{Endpoints: map[string]bool{shared.GetName(): true}})
			if (cheapErr != nil) != tc.invalid || (len(problems) > 0) != tc.invalid {
				t.Fatalf("cheap validation: %v; full validation: %v; want invalid=%v", cheapErr, problems, tc.invalid)
			}
		})
	}
}

// TestMTLSIdentitiesRejected: an identity that is not a SPIFFE ID of the
// allowed characters (the listener writes it into a format string, where
// "%" is an operator) or that is given twice is refused.
func TestMTLSIdentitiesRejected(t *testing.T) {
	for name, ids := range map[string][]string{
		"percent":                 {"spiffe://cluster.local/ns/a/sa/%DOWNSTREAM_REMOTE_ADDRESS%"},
		"no scheme":               {"cluster.local/ns/a/sa/b"},
		"no trust domain":         {"spiffe:///ns/a/sa/b"},
		"upper-case trust domain": {"spiffe://Cluster.local/ns/a/sa/b"},
		"empty segment":           {"spiffe://cluster.local/ns//sa/b"},
		"dot segment":             {"spiffe://cluster.local/ns/../sa/b"},
		"space":                   {"spiffe://cluster.local/ns/a/sa/b c"},
		"twice":                   {"spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewMTLSIdentities(ids); err == nil {
				t.Fatalf("%q accepted", ids)
			}
			if _, err := clientIdentityFilter(ids[0]); err == nil && name != "twice" {
				t.Fatalf("listener filter for %q built", ids[0])
			}
		})
	}
}

// TestMTLSSocketsDifferOnlyInCertificate: each identity's socket is the
// cluster's context with that identity's SDS certificate and nothing else
// (what validating one template per cluster relies on); the ISTIO_MUTUAL
// fallback has no certificate.
func TestMTLSSocketsDifferOnlyInCertificate(t *testing.T) {
	for _, auto := range []bool{true, false} {
		ids, err := NewMTLSIdentities(testIDs)
		if err != nil {
			t.Fatal(err)
		}
		m := mtlsSpec(auto)
		c, err := WithIstioMTLS(&clusterv3.Cluster{Name: "c"}, m, ids)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, tsm := range c.GetTransportSocketMatches() {
			if tsm.GetName() == SocketDisabled {
				continue
			}
			var got tlsv3.UpstreamTlsContext
			if err := tsm.GetTransportSocket().GetTypedConfig().UnmarshalTo(&got); err != nil {
				t.Fatal(err)
			}
			want := istioTLSContext(m)
			if id, ok := strings.CutPrefix(tsm.GetName(), SocketIstioPrefix); ok {
				want.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(id)}
				seen++
			} else if tsm.GetName() != SocketNoIdentity {
				t.Fatalf("socket %q", tsm.GetName())
			}
			if !proto.Equal(want, &got) {
				t.Fatalf("auto=%v socket %s:\n got %v\nwant %v", auto, tsm.GetName(), &got, want)
			}
		}
		if seen != len(testIDs) {
			t.Fatalf("auto=%v: %d identity sockets, want %d", auto, seen, len(testIDs))
		}
	}
}

// TestSocketMatcherProblems: the validator's matcher → socket name checks.
func TestSocketMatcherProblems(t *testing.T) {
	for name, tc := range map[string]struct {
		matches, selects []string
		problems         int
	}{
		"every name exists": {[]string{"a", "b"}, []string{"b", "a", "a"}, 0},
		"missing socket":    {[]string{"a"}, []string{"a", "b"}, 1},
		"duplicate name":    {[]string{"a", "a"}, []string{"a"}, 1},
	} {
		if got := socketMatcherProblems(tc.matches, tc.selects); len(got) != tc.problems {
			t.Errorf("%s: %v, want %d problems", name, got, tc.problems)
		}
	}
}

// TestMTLSValidationCatchesTampering: the per-node check of a cluster's
// sockets refuses sockets that are not the ones the identities and the
// matcher call for.
func TestMTLSValidationCatchesTampering(t *testing.T) {
	for name, tamper := range map[string]func(c *clusterv3.Cluster){
		"socket renamed": func(c *clusterv3.Cluster) { c.TransportSocketMatches[0].Name += "x" },
		"socket dropped": func(c *clusterv3.Cluster) { c.TransportSocketMatches = c.TransportSocketMatches[1:] },
		"socket twice": func(c *clusterv3.Cluster) {
			c.TransportSocketMatches = append(c.TransportSocketMatches, c.TransportSocketMatches[0])
		},
		"plaintext for identity": func(c *clusterv3.Cluster) {
			c.TransportSocketMatches[0].TransportSocket = c.TransportSocketMatches[len(testIDs)].TransportSocket
		},
		"fallback is TLS": func(c *clusterv3.Cluster) {
			c.TransportSocketMatches[len(testIDs)].TransportSocket = c.TransportSocketMatches[0].TransportSocket
		},
		"unnamed socket": func(c *clusterv3.Cluster) { c.TransportSocketMatches[0].TransportSocket.Name = "" },
	} {
		t.Run(name, func(t *testing.T) {
			ids, err := NewMTLSIdentities(testIDs)
			if err != nil {
				t.Fatal(err)
			}
			m := mtlsSpec(true)
			c := &clusterv3.Cluster{Name: "c"}
			if err := applyIstioMTLS(c, m, ids); err != nil {
				t.Fatal(err)
			}
			if err := ids.validateIstioMTLS(c, m); err != nil {
				t.Fatalf("untampered: %v", err)
			}
			c = proto.Clone(c).(*clusterv3.Cluster)
			tamper(c)
			if err := ids.validateIstioMTLS(c, m); err == nil {
				t.Fatal("tampered cluster passes")
			}
		})
	}
}
