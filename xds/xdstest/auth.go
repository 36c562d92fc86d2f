package xdstest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/servingcert"
	// grpc-go's xDS client sends bootstrap call credentials only with this.
	_ "github.com/nodemesh/nodemesh/xds/xdstest/internal/callcredsenv"
)

// Test credentials. The servers Serve starts authenticate clients as the
// controller does — a bearer token on every stream, the node of every
// request checked against it, TLS — but with tokens this process signs
// (HMAC, a key made at startup) instead of Kubernetes ServiceAccount
// tokens: Token(node) is what a node proxy's projected token is in a
// cluster. Clients of this package (NewADSClient, NewGRPCClient) present
// the token of the node they claim; tests that play an attacker use
// NewADSClientConn with DialOptions of another token, or none.
var (
	testKeyOnce sync.Once
	testKey     []byte
	testCA      *servingcert.CA
)

func keys() {
	testKeyOnce.Do(func() {
		testKey = make([]byte, 32)
		if _, err := rand.Read(testKey); err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		ca, err := servingcert.NewCA("xdstest CA", time.Hour*24)
		if err != nil {
			panic(err)
		}
		testCA = ca
	})
}

// Token is a test token for node (a JWT: grpc-go's jwt_token_file
// credentials read its exp), valid for an hour.
func Token(node string) string { return token(node, time.Now().Add(time.Hour)) }

// ExpiredToken is a test token for node that expired a minute ago.
func ExpiredToken(node string) string { return token(node, time.Now().Add(-time.Minute)) }

func token(sub string, exp time.Time) string {
	keys()
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{"iss": "xdstest", "sub": sub, "exp": exp.Unix()})
	signed := header + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

// verify returns the subject of a test token this process signed.
func verify(tok string) (string, error) {
	keys()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", xds.Refuse(codes.Unauthenticated, xds.ReasonBadToken, "not a test token")
	}
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", xds.Refuse(codes.Unauthenticated, xds.ReasonRejected, "test token signature invalid")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", xds.Refuse(codes.Unauthenticated, xds.ReasonBadToken, "test token claims: %v", err)
	}
	if time.Now().Unix() >= c.Exp {
		return "", xds.Refuse(codes.Unauthenticated, xds.ReasonBadToken, "test token expired")
	}
	return c.Sub, nil
}

// Auth authenticates test tokens: a token of node X may be served as node
// X (either kind) and nothing else.
var Auth xds.Authenticator = testAuth{}

type testAuth struct{}

func (testAuth) Authenticate(_ context.Context, tok string) (xds.Principal, error) {
	sub, err := verify(tok)
	if err != nil {
		return nil, err
	}
	return testPrincipal(sub), nil
}

type testPrincipal string

func (p testPrincipal) AuthorizeNode(n *corev3.Node) error {
	if n.GetId() != string(p) {
		return xds.Refuse(codes.PermissionDenied, xds.ReasonWrongNode, "test token of node %q, not %q", string(p), xds.NodeIDForMessage(n.GetId()))
	}
	return nil
}

func (p testPrincipal) String() string { return "xdstest:" + string(p) }

// DebugToken is the test token DebugAuth accepts ("Authorization: Bearer").
func DebugToken() string { return Token("xdstest-debug") }

// DebugAuth authorizes debug requests that carry DebugToken.
var DebugAuth xds.DebugAuthorizer = debugAuth{}

type debugAuth struct{}

func (debugAuth) AuthorizeDebug(r *http.Request) (string, error) {
	tok, err := xds.BearerToken(r.Header.Values("Authorization"))
	if err != nil {
		return "", err
	}
	sub, err := verify(tok)
	if err != nil {
		return "", err
	}
	if sub != "xdstest-debug" {
		return sub, xds.Refuse(codes.PermissionDenied, xds.ReasonForbidden, "%s may not read the debug endpoints", sub)
	}
	return sub, nil
}

// CAPool trusts the test CA (which signs every test server's certificate).
func CAPool() *x509.CertPool {
	keys()
	p := x509.NewCertPool()
	p.AddCert(testCA.Cert)
	return p
}

// CAPEM is the test CA's certificate.
func CAPEM() []byte {
	keys()
	return testCA.CertPEM
}

// ServerTLS is a test server's TLS configuration: a certificate of the
// test CA for localhost, the loopback addresses and host.
func ServerTLS(t testing.TB, host string) *tls.Config {
	t.Helper()
	keys()
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ip := net.ParseIP(host); ip != nil {
		ips = append(ips, ip)
	}
	is, err := servingcert.NewIssuer(testCA, []string{"localhost"}, ips, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return servingcert.ServerTLS(is)
}

// DialOptions are a client's: TLS verified with the test CA, and token as
// its bearer token ("" sends none).
func DialOptions(token string) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: CAPool(), MinVersion: tls.VersionTLS12}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer(token)))
	}
	return opts
}

// Bearer sends a fixed token as "authorization: Bearer <token>" (over TLS
// only, as grpc-go's own token credentials).
type Bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Bearer) RequireTransportSecurity() bool { return true }

func (b Bearer) String() string { return fmt.Sprintf("Bearer(%d bytes)", len(b)) }
