package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
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
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/clibase"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/internal/workloadcert"
	"github.com/nodemesh/nodemesh/xds/sds"
)

// TestSDSCommand runs 'nodemesh-controller sds' as the chart does, against
// the real API server and a real istiod, and reads it as the node Envoy
// would (delta SDS on the unix socket): the certificate of the meshed pod
// of its node arrives with ROOTCA, signed by istiod; it completes a mutual
// crypto/tls handshake verified for its SPIFFE ID against ROOTCA (and fails
// for another identity); the pod of another node gets nothing; deleting
// the pod removes the secret.
func TestSDSCommand(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agentNS := env.Namespace(t, "nodemesh-system", nil)
	meshNS := env.Namespace(t, "bookinfo", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	istiod := env.StartIstiod(t, kubetest.IstiodOptions{TrustedNodeAccounts: []string{agentNS + "/" + api.AgentName}})
	pod := func(ns, name, sa, node string) *corev1.Pod {
		t.Helper()
		if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		obj, err := env.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}})
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*corev1.Pod)
	}
	agent := pod(agentNS, "agent", api.AgentName, "node-a")
	pod(meshNS, "productpage", "productpage", "node-a")
	pod(meshNS, "reviews", "reviews", "node-b")

	dir := t.TempDir()
	tr, err := env.Client.CoreV1().ServiceAccounts(agentNS).CreateToken(ctx, api.AgentName, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{api.IstioCAAudience}, ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agent.Name, UID: agent.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	socket := filepath.Join(dir, "sds", "socket")
	o := &sdsOptions{kube: KubeFlags{Kubeconfig: env.Kubeconfig}, log: clibase.LogFlags{Level: "info", Format: "text"},
		node: "node-a", trustDomain: "cluster.local", socket: socket, allowedUIDs: []uint{uint(os.Geteuid())},
		caAddress: istiod.CAAddress, caServerName: istiod.ServerName, caRootFile: write("root-cert.pem", istiod.RootPEM),
		tokenFile: write("token", []byte(tr.Status.Token)), clusterID: workloadcert.DefaultClusterID, maxIdentities: 16}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runSDS(runCtx, o, IO{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sds: %v", err)
		}
	}()

	pp := workloadcert.ID{TrustDomain: "cluster.local", Namespace: meshNS, ServiceAccount: "productpage"}
	rv := workloadcert.ID{TrustDomain: "cluster.local", Namespace: meshNS, ServiceAccount: "reviews"}
	var conn *grpc.ClientConn
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("sds exited: %v", err)
		case <-ctx.Done():
			t.Fatal("no SDS socket")
		case <-time.After(50 * time.Millisecond):
		}
	}
	conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-a"}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{pp.String(), rv.String(), sds.RootCASecret}}); err != nil {
		t.Fatal(err)
	}
	have := map[string]*tlsv3.Secret{}
	recv := func() {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResources() {
			s := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			have[r.GetName()] = s
		}
		for _, n := range resp.GetRemovedResources() {
			delete(have, n)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	for have[pp.String()] == nil || have[sds.RootCASecret] == nil {
		recv()
	}
	if have[rv.String()] != nil {
		t.Fatalf("served %s, whose only pod runs on node-b", rv)
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(have[sds.RootCASecret].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("ROOTCA holds no certificate")
	}
	if got := bytes.TrimSpace(have[sds.RootCASecret].GetValidationContext().GetTrustedCa().GetInlineBytes()); !bytes.Equal(got, bytes.TrimSpace(istiod.RootPEM)) {
		t.Fatalf("ROOTCA is not istiod's root alone:\n%s", got)
	}
	tc := have[pp.String()].GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := mutualTLS(cert, roots, pp); err != nil {
		t.Fatalf("handshake with the served certificate: %v", err)
	}
	if err := mutualTLS(cert, roots, rv); err == nil {
		t.Fatal("the served certificate passed for another identity")
	}

	if err := env.Client.CoreV1().Pods(meshNS).Delete(ctx, "productpage", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	for have[pp.String()] != nil {
		recv()
	}
}

// mutualTLS runs a TLS 1.3 handshake over loopback with cert on both
// sides, each verifying the other's SPIFFE ID is want against roots.
func mutualTLS(cert tls.Certificate, roots *x509.CertPool, want workloadcert.ID) error {
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
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
		serverErr <- tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert,
			VerifyPeerCertificate: verify, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	cl := tls.Client(c, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, // VerifyPeerCertificate checks
		VerifyPeerCertificate: verify, MinVersion: tls.VersionTLS13})
	cerr := cl.Handshake()
	if cerr == nil {
		_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = cl.Read(make([]byte, 1))
	}
	c.Close()
	return errors.Join(cerr, <-serverErr)
}
