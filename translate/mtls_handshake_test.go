package translate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/nodemesh/nodemesh/translate/envoy"
)

// testCA issues Istio-shaped workload certificates: a SPIFFE URI SAN and
// nothing else, as Istio's CA does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) issue(t *testing.T, spiffe string, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(spiffe)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12, tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// clientConfig configures crypto/tls as Envoy reads the UpstreamTlsContext:
// versions, ALPN, SNI, the certificates its SDS secrets name (from sds),
// the trust bundle of its validation SDS secret, and the SAN check of
// match_subject_alt_names (exact, against the certificate's URI SANs; Envoy
// does not check the SNI against the certificate).
func clientConfig(t *testing.T, ctx *tlsv3.UpstreamTlsContext, sds map[string]tls.Certificate, roots map[string]*x509.CertPool) *tls.Config {
	t.Helper()
	common := ctx.GetCommonTlsContext()
	minV, okMin := tlsVersions[common.GetTlsParams().GetTlsMinimumProtocolVersion()]
	maxV, okMax := tlsVersions[common.GetTlsParams().GetTlsMaximumProtocolVersion()]
	if !okMin || !okMax {
		t.Fatalf("TLS versions %v", common.GetTlsParams())
	}
	cfg := &tls.Config{MinVersion: minV, MaxVersion: maxV, NextProtos: common.GetAlpnProtocols(), ServerName: ctx.GetSni()}
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		cert, ok := sds[s.GetName()]
		if !ok {
			t.Fatalf("no SDS certificate %q", s.GetName())
		}
		if s.GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != envoy.SDSClusterName {
			t.Fatalf("SDS secret %q not from %s", s.GetName(), envoy.SDSClusterName)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	combined := common.GetCombinedValidationContext()
	pool := roots[combined.GetValidationContextSdsSecretConfig().GetName()]
	if pool == nil {
		t.Fatalf("no trust bundle %q", combined.GetValidationContextSdsSecretConfig().GetName())
	}
	var sans []string
	for _, m := range combined.GetDefaultValidationContext().GetMatchSubjectAltNames() {
		sans = append(sans, m.GetExact())
	}
	cfg.InsecureSkipVerify = true // verified below, as Envoy does
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		leaf, err := verifyChain(raw, pool, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return err
		}
		if len(sans) == 0 {
			return nil
		}
		for _, u := range leaf.URIs {
			for _, s := range sans {
				if u.String() == s {
					return nil
				}
			}
		}
		return fmt.Errorf("server certificate %v matches none of %v", leaf.URIs, sans)
	}
	return cfg
}

// TestIstioMTLSHandshake runs the emitted tlsMode-istio socket of the
// productpage client against a Go TLS server that presents an Istio-shaped
// certificate and, as an Istio sidecar's inbound does, requires a client
// certificate from the mesh CA: the right SPIFFE ID succeeds (and the server
// sees the client's identity, the SNI and ALPN Istio sends); a wrong SPIFFE
// ID, a wrong trust domain or an expired certificate fails; the
// no-identity socket of ISTIO_MUTUAL is refused.
func TestIstioMTLSHandshake(t *testing.T) {
	const manifests = `
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, security.istio.io/tlsMode: istio}}
spec: {nodeName: node-b, serviceAccountName: bookinfo-reviews, containers: [{name: app, image: a}, {name: istio-proxy, image: p}]}
status: {phase: Running, podIP: 10.1.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1, namespace: default, labels: {app: productpage}}
spec: {nodeName: node-a, serviceAccountName: bookinfo-productpage, containers: [{name: app, image: a}]}
status: {phase: Running, podIP: 10.1.0.5}
`
	res := translateMTLS(t, nil, manifests, "node-a", true)
	if res.HasErrors() {
		t.Fatalf("error diagnostics: %v", res.Diagnostics)
	}
	var ctx, noIdentity *tlsv3.UpstreamTlsContext
	for _, c := range res.XDS.Clusters {
		if c.GetName() != "outbound|9080||reviews.default.svc.cluster.local" {
			continue
		}
		// productpage's connection: its chain's identity, then the socket.
		identity, err := clientIdentity(listenerOf(t, res.XDS), conn{dst: netip.MustParseAddrPort("10.255.0.1:9080"), alpn: "http/1.1", src: netip.MustParseAddr(productpageAddr)})
		if err != nil {
			t.Fatal(err)
		}
		sel, err := selectSocket(c, istioEndpoint, identity)
		if err != nil {
			t.Fatal(err)
		}
		ctx = tlsContextOf(t, sel)
		// ISTIO_MUTUAL's fallback, for a client of no known identity.
		ids, err := envoy.NewMTLSIdentities(nil)
		if err != nil {
			t.Fatal(err)
		}
		spec := res.IR.Clusters[0].IstioMTLS
		for i := range res.IR.Clusters {
			if res.IR.Clusters[i].Name == c.GetName() {
				spec = res.IR.Clusters[i].IstioMTLS
			}
		}
		explicit := *spec
		explicit.Auto = false
		ec, err := envoy.WithIstioMTLS(c, &explicit, ids)
		if err != nil {
			t.Fatal(err)
		}
		sel, err = selectSocket(ec, nil, identity)
		if err != nil {
			t.Fatal(err)
		}
		noIdentity = tlsContextOf(t, sel)
	}
	if ctx == nil {
		t.Fatal("no reviews cluster")
	}

	ca := newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	sds := map[string]tls.Certificate{productpageID: ca.issue(t, productpageID, time.Now().Add(time.Hour))}
	bundles := map[string]*x509.CertPool{envoy.SDSRootCA: roots}
	const reviewsID = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"

	for _, tc := range []struct {
		name       string
		serverID   string
		notAfter   time.Duration
		ctx        *tlsv3.UpstreamTlsContext
		wantClient string // "" → the handshake must fail
	}{
		{"right SPIFFE ID", reviewsID, time.Hour, ctx, productpageID},
		{"wrong SPIFFE ID", "spiffe://cluster.local/ns/default/sa/attacker", time.Hour, ctx, ""},
		{"wrong trust domain", "spiffe://evil.example/ns/default/sa/bookinfo-reviews", time.Hour, ctx, ""},
		{"expired certificate", reviewsID, -time.Minute, ctx, ""},
		{"no client identity", reviewsID, time.Hour, noIdentity, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverCert := ca.issue(t, tc.serverID, time.Now().Add(tc.notAfter))
			type seen struct {
				sni, alpn, client string
				err               error
			}
			got := make(chan seen, 1)
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
				NextProtos: []string{"istio-peer-exchange", "istio", "h2", "http/1.1"}, MinVersion: tls.VersionTLS12,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					got <- seen{err: err}
					return
				}
				defer conn.Close()
				tc := conn.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					got <- seen{err: err}
					return
				}
				st := tc.ConnectionState()
				s := seen{sni: st.ServerName, alpn: st.NegotiatedProtocol}
				if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
					s.client = st.PeerCertificates[0].URIs[0].String()
				}
				got <- s
			}()
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientConfig(t, tc.ctx, sds, bundles))
			if err == nil {
				// TLS 1.3: the server's verdict on the client certificate
				// arrives after the client's handshake completes.
				_, err = conn.Read(make([]byte, 1))
				if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
					err = nil
				}
				conn.Close()
			}
			s := <-got
			if tc.wantClient == "" {
				if err == nil && s.err == nil {
					t.Fatalf("handshake succeeded (server saw client %q)", s.client)
				}
				return
			}
			if err != nil || s.err != nil {
				t.Fatalf("handshake failed: client %v, server %v", err, s.err)
			}
			if s.client != tc.wantClient || s.sni != ctx.GetSni() || s.alpn != "istio-peer-exchange" {
				t.Fatalf("server saw client %q SNI %q ALPN %q; want %q %q istio-peer-exchange", s.client, s.sni, s.alpn, tc.wantClient, ctx.GetSni())
			}
		})
	}
}

// verifyChain is what Envoy does with a peer's certificates under a
// validation context: the leaf, with the chain's intermediates, must chain
// to pool for usage. The callers then match its SANs (exact or prefix).
func verifyChain(raw [][]byte, pool *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return leaf, nil
}
