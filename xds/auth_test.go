package xds_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// twoNodes is a cache serving node-a and node-b each a cluster of its own
// ("only-node-a", "only-node-b"), so a response shows whose it is.
func twoNodes(t *testing.T) *xds.Cache {
	t.Helper()
	cache := xds.NewCache(nil, nil)
	for _, n := range []string{"node-a", "node-b"} {
		c := &clusterv3.Cluster{
			Name: "only-" + n, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		}
		if err := cache.Push(xds.NewConfig(n, xds.EnvoyNode, translate.Resources{Clusters: []*clusterv3.Cluster{c}}), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return cache
}

func openADS(t *testing.T, ctx context.Context, addr string, delta bool, opts ...grpc.DialOption) *xdstest.RawADS {
	t.Helper()
	s, err := xdstest.OpenRawADS(ctx, addr, delta, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var envoyNode, grpcNode = xdstest.EnvoyNode, xdstest.GRPCNode

// TestXDSRefusesUnauthenticatedClients reproduces the attacks on the ADS
// port — a client without credentials, with credentials that are not a
// token of ours, with another node's token, or that switches its stream
// to another node after being served its own — on both protocols: each
// stream ends with the gRPC code naming why, no configuration of a node
// it may not have arrives, and the refusal is counted by reason.
func TestXDSRefusesUnauthenticatedClients(t *testing.T) {
	reg := prometheus.NewRegistry()
	am := xds.NewAuthMetrics(reg)
	var logs xdstest.SyncBuffer
	cache := twoNodes(t)
	addr, stop := xdstest.ServeWith(t, cache, "127.0.0.1:0", xds.ServerOptions{
		Auth: xdstest.Auth, TLS: xdstest.ServerTLS(t, "127.0.0.1"), Metrics: am,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	t.Cleanup(stop)

	for name, tc := range map[string]struct {
		token string
		// first, then (if set) a later request's node.
		first, later *corev3.Node
		// own is what the client may receive before the refusal (its own
		// node's cluster), if anything.
		own    string
		code   codes.Code
		reason string
	}{
		"no token":                    {"", envoyNode("node-b"), nil, "", codes.Unauthenticated, xds.ReasonNoToken},
		"not a token of ours":         {"eyJhbGciOiJub25lIn0.eyJzdWIiOiJub2RlLWIifQ.", envoyNode("node-b"), nil, "", codes.Unauthenticated, xds.ReasonRejected},
		"expired token":               {xdstest.ExpiredToken("node-b"), envoyNode("node-b"), nil, "", codes.Unauthenticated, xds.ReasonBadToken},
		"another node's token":        {xdstest.Token("node-a"), envoyNode("node-b"), nil, "", codes.PermissionDenied, xds.ReasonWrongNode},
		"first request without node":  {xdstest.Token("node-b"), nil, nil, "", codes.PermissionDenied, xds.ReasonNoNode},
		"switch to another node":      {xdstest.Token("node-a"), envoyNode("node-a"), envoyNode("node-b"), "only-node-a", codes.PermissionDenied, xds.ReasonNodeSwitch},
		"switch to a gRPC client":     {xdstest.Token("node-a"), envoyNode("node-a"), grpcNode("node-a"), "only-node-a", codes.PermissionDenied, xds.ReasonNodeSwitch},
		"same node again is no issue": {xdstest.Token("node-a"), envoyNode("node-a"), envoyNode("node-a"), "only-node-a", codes.OK, ""},
	} {
		for _, delta := range []bool{false, true} {
			proto := "sotw"
			if delta {
				proto = "delta"
			}
			t.Run(name+"/"+proto, func(t *testing.T) {
				before := 0.0
				if tc.reason != "" {
					before = testutil.ToFloat64(am.Refusals.WithLabelValues("xds", tc.reason))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s := openADS(t, ctx, addr, delta, xdstest.DialOptions(tc.token)...)
				var end func()
				if tc.code == codes.OK {
					// No refusal: the stream stays open (a further response
					// would only come with a change); end it.
					end = cancel
				}
				got, err := s.Attempt(tc.first, tc.later, end)
				want := tc.code
				if tc.code == codes.OK {
					want = codes.Canceled
				}
				for _, n := range got {
					if n != tc.own {
						t.Errorf("received %s's cluster %q", strings.TrimPrefix(n, "only-"), n)
					}
				}
				if status.Code(err) != want {
					t.Fatalf("stream ended with %v, want %v", err, want)
				}
				if tc.reason != "" {
					if d := testutil.ToFloat64(am.Refusals.WithLabelValues("xds", tc.reason)) - before; d != 1 {
						t.Errorf("refusals{reason=%q} went up by %v, want 1", tc.reason, d)
					}
					if msg := status.Convert(err).Message(); msg == "" {
						t.Error("a refusal without a message")
					}
				}
			})
		}
	}
	// The node of a refused client is named neither in the metrics nor in
	// more log lines than one per client and reason.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "endpoint" && l.GetName() != "reason" || strings.Contains(l.GetValue(), "node-a") || strings.Contains(l.GetValue(), "node-b") {
					t.Errorf("metric label %s=%q", l.GetName(), l.GetValue())
				}
			}
		}
	}
	if n := strings.Count(logs.String(), "reason=no-token"); n != 1 {
		t.Errorf("no-token refusals of one client logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestXDSRefusalsAreThrottledInTheLog: a client retrying without
// credentials a hundred times is logged once; every attempt is counted.
func TestXDSRefusalsAreThrottledInTheLog(t *testing.T) {
	am := xds.NewAuthMetrics(nil)
	var logs xdstest.SyncBuffer
	addr, stop := xdstest.ServeWith(t, twoNodes(t), "127.0.0.1:0", xds.ServerOptions{
		Auth: xdstest.Auth, TLS: xdstest.ServerTLS(t, "127.0.0.1"), Metrics: am, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := xdstest.Dial(addr, xdstest.DialOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	for range 100 {
		s, err := c.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("node-a"), TypeUrl: resourcev3.ClusterType})
		if _, err := s.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream without a token: %v", err)
		}
	}
	if got := testutil.ToFloat64(am.Refusals.WithLabelValues("xds", xds.ReasonNoToken)); got != 100 {
		t.Errorf("counted %v refusals, want 100", got)
	}
	if n := strings.Count(logs.String(), "client refused"); n != 1 {
		t.Errorf("logged %d refusals, want 1:\n%s", n, logs.String())
	}
}

// TestXDSFetchRefused: the services' unary Fetch methods (REST-style xDS)
// would answer outside the stream's node checks; they are refused even
// with a valid token.
func TestXDSFetchRefused(t *testing.T) {
	addr := xdstest.Serve(t, twoNodes(t))
	conn, err := xdstest.Dial(addr, xdstest.DialOptions(xdstest.Token("node-a"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out discoveryv3.DiscoveryResponse
	for _, method := range []string{
		"/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters",
		"/envoy.service.listener.v3.ListenerDiscoveryService/FetchListeners",
	} {
		err := conn.Invoke(ctx, method, &discoveryv3.DiscoveryRequest{Node: envoyNode("node-a")}, &out)
		if status.Code(err) != codes.Unimplemented || len(out.GetResources()) > 0 {
			t.Errorf("%s: %v, %d resources; want Unimplemented and none", method, err, len(out.GetResources()))
		}
	}
}

// TestXDSServerNeedsAuthenticator: there is no unauthenticated server.
func TestXDSServerNeedsAuthenticator(t *testing.T) {
	if _, err := xds.NewServer(context.Background(), xds.NewCache(nil, nil), xds.ServerOptions{}); err == nil {
		t.Fatal("NewServer without an authenticator succeeded")
	}
}

// TestXDSClientsOverTLS: a client must verify the server's certificate:
// with another CA the handshake fails and nothing is served.
func TestXDSClientsOverTLS(t *testing.T) {
	addr := xdstest.Serve(t, twoNodes(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// grpc-go's default: the system roots, which do not have the test CA.
	conn, err := xdstest.Dial(addr, grpc.WithTransportCredentials(systemTLS()), grpc.WithPerRPCCredentials(xdstest.Bearer(xdstest.Token("node-a"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got []string
	str, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err == nil {
		_ = str.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode("node-a"), TypeUrl: resourcev3.ClusterType})
		var r *discoveryv3.DiscoveryResponse
		if r, err = str.Recv(); err == nil {
			got = append(got, r.String())
		}
	}
	if status.Code(err) != codes.Unavailable || len(got) > 0 || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("client with the wrong CA: %v, received %v; want an Unavailable certificate error and nothing", err, got)
	}
	// The same client with the right CA is served.
	ok := openADS(t, ctx, addr, false, xdstest.DialOptions(xdstest.Token("node-a"))...)
	if err := ok.RequestClusters(envoyNode("node-a")); err != nil {
		t.Fatal(err)
	}
	if names, err := ok.Next(); err != nil || !slices.Equal(names, []string{"only-node-a"}) {
		t.Fatalf("client with the right CA: %v, %v", names, err)
	}
}
