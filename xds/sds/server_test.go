package sds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"maps"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodemesh/nodemesh/internal/workloadcert"
)

var (
	idA = workloadcert.ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: "productpage"}
	idB = workloadcert.ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: "reviews"}
)

func startServer(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	if o.Socket == "" {
		o.Socket = filepath.Join(t.TempDir(), "sds", "socket")
	}
	s, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(s.Stop)
	return s, o.Socket
}

// sdsStream is a state-of-the-world SDS subscription as Envoy opens one
// (go-control-plane's generated client on the unix socket).
type sdsStream struct {
	t      *testing.T
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
	names  []string
}

func subscribe(t *testing.T, socket string, names ...string) *sdsStream {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Bounded: a push that never comes fails the test with a message.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &sdsStream{t: t, stream: st, names: names}
	s.send("", "")
	return s
}

func (s *sdsStream) send(version, nonce string) {
	s.t.Helper()
	if err := s.stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resourcev3.SecretType,
		ResourceNames: s.names, VersionInfo: version, ResponseNonce: nonce}); err != nil {
		s.t.Fatal(err)
	}
}

// next receives one response, ACKs it and returns its secrets by name.
func (s *sdsStream) next() map[string]*tlsv3.Secret {
	s.t.Helper()
	resp, err := s.stream.Recv()
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			s.t.Fatal(err)
		}
		out[sec.GetName()] = sec
	}
	s.send(resp.GetVersionInfo(), resp.GetNonce())
	return out
}

// until receives until ok holds (each push is a response; no timing).
func (s *sdsStream) until(what string, ok func(map[string]*tlsv3.Secret) bool) map[string]*tlsv3.Secret {
	s.t.Helper()
	for range 20 {
		if got := s.next(); ok(got) {
			return got
		}
	}
	s.t.Fatalf("no response with %s", what)
	return nil
}

func leafOf(t *testing.T, sec *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if b == nil {
		t.Fatalf("secret %s has no certificate", sec.GetName())
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSecretsServedRotatedRemoved: a workload's secret (named by its
// SPIFFE ID) and ROOTCA arrive, a rotation is pushed, and the secret of an
// identity whose pods left disappears while ROOTCA stays.
func TestSecretsServedRotatedRemoved(t *testing.T) {
	ca := newTestCA(t, "root-1")
	srv, socket := startServer(t, Options{})
	now := time.Now()
	a1 := ca.issue(t, idA, now.Add(-time.Minute), now.Add(time.Hour))
	srv.Update(a1)

	s := subscribe(t, socket, idA.String(), RootCASecret)
	got := s.until("the workload secret and ROOTCA", func(m map[string]*tlsv3.Secret) bool {
		return m[idA.String()] != nil && m[RootCASecret] != nil
	})
	leaf := leafOf(t, got[idA.String()])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() {
		t.Fatalf("served certificate names %v, want %s", leaf.URIs, idA)
	}
	if string(got[idA.String()].GetTlsCertificate().GetPrivateKey().GetInlineBytes()) != string(a1.KeyPEM) {
		t.Fatal("served key is not the issued one")
	}
	if got := got[RootCASecret].GetValidationContext().GetTrustedCa().GetInlineBytes(); string(got) != string(ca.pem) {
		t.Fatalf("ROOTCA = %q, want the CA's root", got)
	}

	a2 := ca.issue(t, idA, now.Add(-time.Minute), now.Add(2*time.Hour))
	srv.Update(a2)
	s.until("the rotated certificate", func(m map[string]*tlsv3.Secret) bool {
		return m[idA.String()] != nil && leafOf(t, m[idA.String()]).SerialNumber.Cmp(leafOf(t, &tlsv3.Secret{Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: inline(a2.ChainPEM)}}}).SerialNumber) == 0
	})

}

// TestRemovedSecretDisappears: over delta SDS (the only variant that can
// say a secret is gone: state-of-the-world SDS responses carry changed
// secrets only), the secret of an identity whose last pod left is removed
// while ROOTCA and the other identities stay.
func TestRemovedSecretDisappears(t *testing.T) {
	ca := newTestCA(t, "root-1")
	srv, socket := startServer(t, Options{})
	now := time.Now()
	srv.Update(ca.issue(t, idA, now.Add(-time.Minute), now.Add(time.Hour)))
	srv.Update(ca.issue(t, idB, now.Add(-time.Minute), now.Add(time.Hour)))

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounded: a push that never comes fails the test with a message.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{idA.String(), idB.String(), RootCASecret}}); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	recv := func() {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResources() {
			have[r.GetName()] = true
		}
		for _, n := range resp.GetRemovedResources() {
			delete(have, n)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		if have[idA.String()] && have[idB.String()] && have[RootCASecret] {
			break
		}
		recv()
	}
	if !have[idA.String()] || !have[idB.String()] || !have[RootCASecret] {
		t.Fatalf("secrets received: %v", have)
	}
	srv.Remove(idA)
	recv()
	if have[idA.String()] || !have[idB.String()] || !have[RootCASecret] {
		t.Fatalf("after the last pod of %s left, the client has %v", idA, have)
	}
}

// TestTrustBundle: ROOTCA is the anchors and every served certificate's
// root (both roots during a root rotation), follows removals, and is
// absent when there is no root at all.
func TestTrustBundle(t *testing.T) {
	r1, r2 := newTestCA(t, "root-1"), newTestCA(t, "root-2")
	now := time.Now()
	bundle := func(srv *Server) []byte {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if !srv.bundleSet {
			return nil
		}
		return srv.bundle
	}
	for name, tc := range map[string]struct {
		anchors []byte
		steps   func(*Server)
		want    [][]byte
	}{
		"no root: no ROOTCA":        {steps: func(*Server) {}},
		"anchors alone":             {anchors: r1.pem, steps: func(*Server) {}, want: [][]byte{r1.pem}},
		"an issued root is trusted": {steps: func(s *Server) { s.Update(r1.issue(t, idA, now, now.Add(time.Hour))) }, want: [][]byte{r1.pem}},
		"root rotation: both": {anchors: r1.pem, steps: func(s *Server) {
			s.Update(r2.issue(t, idA, now, now.Add(time.Hour)))
		}, want: [][]byte{r1.pem, r2.pem}},
		"the last certificate of a root gone: its root goes": {anchors: r1.pem, steps: func(s *Server) {
			s.Update(r2.issue(t, idA, now, now.Add(time.Hour)))
			s.Remove(idA)
		}, want: [][]byte{r1.pem}},
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := startServer(t, Options{TrustAnchors: tc.anchors})
			tc.steps(srv)
			got := bundle(srv)
			pool := x509.NewCertPool()
			if len(tc.want) == 0 {
				if len(got) != 0 {
					t.Fatalf("ROOTCA = %q, want none", got)
				}
				return
			}
			n := 0
			for rest := got; ; n++ {
				var b *pem.Block
				if b, rest = pem.Decode(rest); b == nil {
					break
				}
			}
			if n != len(tc.want) {
				t.Fatalf("ROOTCA has %d roots, want %d", n, len(tc.want))
			}
			pool.AppendCertsFromPEM(got)
			for _, w := range tc.want {
				b, _ := pem.Decode(w)
				c, _ := x509.ParseCertificate(b.Bytes)
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
					t.Fatalf("ROOTCA does not hold %s: %v", c.Subject, err)
				}
			}
		})
	}
}

// TestServedCertificateHandshakes: what SDS serves completes a real
// crypto/tls mutual handshake verified like ISTIO_MUTUAL (SPIFFE ID +
// ROOTCA), and the wrong identity, an expired certificate, another trust
// domain and another CA's certificate fail it.
func TestServedCertificateHandshakes(t *testing.T) {
	ca, other := newTestCA(t, "mesh-root"), newTestCA(t, "other-root")
	now := time.Now()
	otherTD := workloadcert.ID{TrustDomain: "evil.local", Namespace: idA.Namespace, ServiceAccount: idA.ServiceAccount}
	for name, tc := range map[string]struct {
		server *workloadcert.Issued
		want   workloadcert.ID
		// direct: the server's certificate does not come through SDS (an
		// attacker's, from a CA that is not the mesh's).
		direct  bool
		wantErr bool
	}{
		"the served identity":     {server: ca.issue(t, idA, now.Add(-time.Minute), now.Add(time.Hour)), want: idA},
		"wrong SPIFFE ID":         {server: ca.issue(t, idB, now.Add(-time.Minute), now.Add(time.Hour)), want: idA, wantErr: true},
		"expired":                 {server: ca.issue(t, idA, now.Add(-2*time.Hour), now.Add(-time.Hour)), want: idA, wantErr: true},
		"another trust domain":    {server: ca.issue(t, otherTD, now.Add(-time.Minute), now.Add(time.Hour)), want: idA, wantErr: true},
		"another CA, same SPIFFE": {server: other.issue(t, idA, now.Add(-time.Minute), now.Add(time.Hour)), want: idA, direct: true, wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			srv, socket := startServer(t, Options{TrustAnchors: ca.pem})
			if !tc.direct {
				srv.Update(tc.server)
			}
			srv.Update(ca.issue(t, idB, now.Add(-time.Minute), now.Add(time.Hour)))
			names := []string{idB.String(), RootCASecret}
			if !tc.direct && tc.server.ID != idB {
				names = append(names, tc.server.ID.String())
			}
			s := subscribe(t, socket, names...)
			got := map[string]*tlsv3.Secret{}
			s.until("the secrets", func(m map[string]*tlsv3.Secret) bool {
				maps.Copy(got, m)
				return len(got) == len(names)
			})
			if tc.direct {
				got[tc.server.ID.String()] = &tlsv3.Secret{Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: inline(tc.server.ChainPEM), PrivateKey: inline(tc.server.KeyPEM)}}}
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(got[RootCASecret].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
				t.Fatal("ROOTCA holds no certificate")
			}
			pair := func(name string) tls.Certificate {
				tc := got[name].GetTlsCertificate()
				p, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			err := handshake(t, pair(tc.server.ID.String()), pair(idB.String()), roots, tc.want, idB)
			if tc.wantErr != (err != nil) {
				t.Fatalf("handshake error = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

// handshake runs a TLS 1.3 mutual handshake over loopback TCP: the server
// presents serverCert and wants clientID, the client presents clientCert
// and wants serverID; both verify against roots only (no system roots, no
// hostname: the SPIFFE ID is the name).
func handshake(t *testing.T, serverCert, clientCert tls.Certificate, roots *x509.CertPool, serverID, clientID workloadcert.ID) error {
	t.Helper()
	verify := func(want workloadcert.ID) func([][]byte, [][]*x509.Certificate) error {
		return func(raw [][]byte, _ [][]*x509.Certificate) error {
			var chain []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				chain = append(chain, c)
			}
			_, err := workloadcert.VerifyPeer(chain, roots, time.Now(), want)
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert,
			VerifyPeerCertificate: verify(clientID), MinVersion: tls.VersionTLS13})
		serverErr <- tc.Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{Certificates: []tls.Certificate{clientCert}, InsecureSkipVerify: true, // verified by VerifyPeerCertificate
		VerifyPeerCertificate: verify(serverID), MinVersion: tls.VersionTLS13})
	cerr := tc.Handshake()
	if cerr == nil {
		// TLS 1.3: the client finishes before the server checked its
		// certificate; a read surfaces the server's verdict.
		_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = tc.Read(make([]byte, 1))
	}
	c.Close()
	return errors.Join(cerr, <-serverErr)
}
