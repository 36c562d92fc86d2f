package workloadcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/nodemesh/nodemesh/api"
)

// Names of Istio's CA protocol (istio.io/istio pkg/security).
const (
	// ImpersonatedIdentityKey is the request metadata field naming the
	// identity a trusted node component asks a certificate for.
	ImpersonatedIdentityKey = "ImpersonatedIdentity"
	// ClusterIDHeader is the gRPC metadata istiod picks the cluster (and
	// its node authorizer) by; DefaultClusterID is istiod's default.
	ClusterIDHeader  = "ClusterID"
	DefaultClusterID = "Kubernetes"
	// CAAudience is the audience of the token istiod's CA accepts
	// (istio-agent's default).
	CAAudience = api.IstioCAAudience
	// DefaultCAAddress is istiod's CA in a default install.
	DefaultCAAddress = "istiod.istio-system.svc:15012"
	// maxTokenBytes bounds what is read from the token file.
	maxTokenBytes = 16 << 10
)

// ErrRefused is wrapped by Sign when the CA answered with a refusal
// (authentication, authorization, a bad request) rather than being
// unreachable.
var ErrRefused = errors.New("the CA refused the request")

// CAClientOptions configure a CAClient.
type CAClientOptions struct {
	// Address of the CA, host:port (default DefaultCAAddress).
	Address string
	// ServerName is the name the CA's certificate is verified for (default:
	// the host of Address).
	ServerName string
	// Roots verify the CA's serving certificate (istiod's root,
	// ConfigMap istio-ca-root-cert).
	Roots *x509.CertPool
	// TokenFile is the caller's projected ServiceAccount token (audience
	// istio-ca), read again for every request, so the kubelet's renewals
	// are picked up.
	TokenFile string
	// ClusterID is sent as ClusterID metadata (default DefaultClusterID).
	ClusterID string
	// TTL is the lifetime asked for (the CA may cap it; 0: the CA's
	// default, 24h in istiod).
	TTL time.Duration
}

// CAClient signs workload CSRs with Istio's IstioCertificateService.
type CAClient struct {
	conn   *grpc.ClientConn
	client pb.IstioCertificateServiceClient
	opts   CAClientOptions
}

// NewCAClient connects (lazily, as grpc-go does) to the CA over TLS.
// There is no plaintext mode: the request carries a token that lets its
// holder obtain any identity of the node.
func NewCAClient(o CAClientOptions) (*CAClient, error) {
	if o.Address == "" {
		o.Address = DefaultCAAddress
	}
	if o.ClusterID == "" {
		o.ClusterID = DefaultClusterID
	}
	if o.Roots == nil {
		return nil, errors.New("ca client: the CA's root certificates are required")
	}
	if o.TokenFile == "" {
		return nil, errors.New("ca client: a token file is required")
	}
	if o.TTL < 0 {
		return nil, errors.New("ca client: negative certificate lifetime")
	}
	if o.ServerName == "" {
		host := o.Address
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			host = host[:i]
		}
		o.ServerName = strings.Trim(host, "[]")
	}
	tc := credentials.NewTLS(&tls.Config{RootCAs: o.Roots, ServerName: o.ServerName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(o.Address, grpc.WithTransportCredentials(tc),
		grpc.WithPerRPCCredentials(tokenFile{path: o.TokenFile, cluster: o.ClusterID}))
	if err != nil {
		return nil, fmt.Errorf("ca client for %s: %w", o.Address, err)
	}
	return &CAClient{conn: conn, client: pb.NewIstioCertificateServiceClient(conn), opts: o}, nil
}

// Close closes the connection.
func (c *CAClient) Close() error { return c.conn.Close() }

// Issued is a signed workload certificate with its key.
type Issued struct {
	ID ID
	// KeyPEM is the private key (PKCS#8); ChainPEM the leaf and any
	// intermediates; RootPEM the trust bundle the CA returned (last).
	KeyPEM, ChainPEM, RootPEM []byte
	NotBefore, NotAfter       time.Time
}

// Issue makes a key and CSR for id and has the CA sign it, impersonating
// id. The answer is checked before it is returned: the leaf carries the
// key just made and exactly id's SPIFFE URI, and chains to the root the CA
// sent, so a misbehaving or misconfigured CA cannot hand Envoy a
// certificate for another identity.
func (c *CAClient) Issue(ctx context.Context, id ID) (*Issued, error) {
	if err := id.validate(); err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := newKeyAndCSR(id)
	if err != nil {
		return nil, err
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: int64(c.opts.TTL / time.Second),
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			ImpersonatedIdentityKey: structpb.NewStringValue(id.String()),
		}},
	}
	resp, err := c.client.CreateCertificate(ctx, req)
	if err != nil {
		if refused(err) {
			return nil, fmt.Errorf("certificate for %s: %w: %w", id, ErrRefused, err)
		}
		return nil, fmt.Errorf("certificate for %s: %w", id, err)
	}
	iss, err := checkResponse(id, keyPEM, resp.GetCertChain(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", id, err)
	}
	return iss, nil
}

// tokenFile is the caller's credential: "authorization: Bearer <token>"
// from the file at every request, and istiod's ClusterID header.
type tokenFile struct{ path, cluster string }

func (t tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	f, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxTokenBytes+1)
	n, _ := f.Read(buf)
	if n > maxTokenBytes {
		return nil, fmt.Errorf("read token %s: larger than %d bytes", t.path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(buf[:n]))
	if tok == "" {
		return nil, fmt.Errorf("read token %s: empty", t.path)
	}
	return map[string]string{"authorization": "Bearer " + tok, ClusterIDHeader: t.cluster}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }

// checkResponse checks what the CA answered: leaf first, root last (the
// API's contract), the leaf's key is ours, its only URI SAN is id, and it
// chains to that root through the elements between.
func checkResponse(id ID, keyPEM []byte, chain []string, now time.Time) (*Issued, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("the CA returned %d certificates, want the leaf and the root at least", len(chain))
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, p := range chain {
		c, err := parseOneCert([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("element %d of the chain: %w", i, err)
		}
		certs = append(certs, c)
	}
	leaf, root := certs[0], certs[len(certs)-1]
	if _, err := tls.X509KeyPair([]byte(chain[0]), keyPEM); err != nil {
		return nil, fmt.Errorf("the leaf does not carry the requested key: %w", err)
	}
	if leaf.IsCA {
		return nil, errors.New("the leaf is a CA certificate")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		var got []string
		for _, u := range leaf.URIs {
			got = append(got, u.String())
		}
		return nil, fmt.Errorf("the leaf names %v, want exactly %s", got, id)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the leaf does not chain to the returned root: %w", err)
	}
	var chainPEM bytes.Buffer
	for _, c := range certs[:len(certs)-1] {
		_ = pem.Encode(&chainPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &Issued{ID: id, KeyPEM: keyPEM, ChainPEM: chainPEM.Bytes(),
		RootPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}

func parseOneCert(p []byte) (*x509.Certificate, error) {
	b, rest := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// LoadRoots reads a PEM bundle (the istio-ca-root-cert ConfigMap's
// root-cert.pem, mounted) into a pool.
func LoadRoots(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("CA roots %s: no PEM certificate", path)
	}
	return pool, nil
}
