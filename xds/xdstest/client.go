package xdstest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds" // registers the xDS resolver and balancers
)

// GRPCClient is a proxyless gRPC client whose xDS client is bootstrapped at
// a control plane: a real, independent xDS consumer.
type GRPCClient struct {
	t        testing.TB
	resolver resolver.Builder
}

// Bootstrap is the gRPC xDS bootstrap for a node of the given ID talking to
// the control plane at addr over TLS verified with the CA in caFile,
// authenticated by the JWT in tokenFile — gRFC A65 channel credentials and
// A97 call credentials, what a proxyless application's bootstrap has in a
// cluster (README). The node metadata marks it a proxyless gRPC client
// (GENERATOR=grpc, as Istio's agent does).
func Bootstrap(addr, nodeID, caFile, tokenFile string) []byte {
	b, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      addr,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]any{"ca_certificate_file": caFile}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]any{"jwt_token_file": tokenFile}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       nodeID,
			"metadata": map[string]any{"GENERATOR": "grpc"},
		},
	})
	return b
}

// NewGRPCClient makes a client with its own xDS client (its own ADS stream,
// node ID nodeID) to a control plane of Serve at addr, with the test CA
// and the node's test token.
func NewGRPCClient(t testing.TB, addr, nodeID string) *GRPCClient {
	t.Helper()
	dir := t.TempDir()
	ca, tok := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	if err := os.WriteFile(ca, CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok, []byte(Token(nodeID)), 0o600); err != nil {
		t.Fatal(err)
	}
	return NewGRPCClientWith(t, Bootstrap(addr, nodeID, ca, tok))
}

// NewGRPCClientWith makes a client whose xDS client reads bootstrap.
func NewGRPCClientWith(t testing.TB, bootstrap []byte) *GRPCClient {
	t.Helper()
	r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("xDS resolver: %v", err)
	}
	return &GRPCClient{t: t, resolver: r}
}

// Dial opens a channel to xds:///target (host:port as in the listener name);
// it is closed when the test ends.
func (c *GRPCClient) Dial(target string) testgrpc.TestServiceClient {
	c.t.Helper()
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(c.resolver))
	if err != nil {
		c.t.Fatalf("dial %s: %v", target, err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// Result is the outcome of one call.
type Result struct {
	Backend string // ServerId of the backend that answered; "" on error
	Code    codes.Code
	Err     error
	Elapsed time.Duration
}

// Call makes one UnaryCall with the given metadata (key, value pairs).
func Call(ctx context.Context, c testgrpc.TestServiceClient, md ...string) Result {
	start := time.Now()
	resp, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, md...), &testgrpc.SimpleRequest{})
	r := Result{Code: status.Code(err), Err: err, Elapsed: time.Since(start)}
	if err == nil {
		r.Backend = resp.GetServerId()
	}
	return r
}

// Tally counts outcomes: backend name, or the status code's name for errors.
type Tally map[string]int

// lastError is the last error Calls saw, for messages.
var lastError atomic.Value

// LastError returns the last call error seen by Calls.
func LastError() string {
	if v, ok := lastError.Load().(string); ok {
		return v
	}
	return ""
}

func (t Tally) String() string {
	keys := slices.Sorted(maps.Keys(t))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, t[k])
	}
	return strings.Join(parts, " ")
}

// Total is the number of calls counted.
func (t Tally) Total() int {
	n := 0
	for _, v := range t {
		n += v
	}
	return n
}

// Calls makes n calls and tallies them.
func Calls(ctx context.Context, c testgrpc.TestServiceClient, n int, md ...string) Tally {
	t := Tally{}
	for range n {
		r := Call(ctx, c, md...)
		if r.Code == codes.OK {
			t[r.Backend]++
		} else {
			t[r.Code.String()]++
			lastError.Store(r.Err.Error())
		}
	}
	return t
}

// Eventually calls until cond holds for a tally of n calls or the timeout
// passes; it returns the last tally and whether cond held.
func Eventually(ctx context.Context, c testgrpc.TestServiceClient, timeout time.Duration, n int, cond func(Tally) bool, md ...string) (Tally, bool) {
	deadline := time.Now().Add(timeout)
	for {
		t := Calls(ctx, c, n, md...)
		if cond(t) {
			return t, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return t, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
