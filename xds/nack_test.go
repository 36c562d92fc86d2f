package xds_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

var modes = []struct {
	name  string
	delta bool
}{{"state of the world", false}, {"delta", true}}

// rejectRoutes NACKs every route configuration response.
func rejectRoutes(typeURL string, _ map[string]*anypb.Any) string {
	if typeURL == resourcev3.RouteType {
		return "test: route configuration rejected"
	}
	return ""
}

// routeVersions is what a client holds of the route configurations: the
// type's version in state of the world, the resources' in delta.
func routeVersions(c *xdstest.ADSClient, delta bool) string {
	s := c.State(resourcev3.RouteType)
	if !delta {
		return s.Version
	}
	return fmt.Sprint(s.Versions)
}

// bookinfoServed serves the first of bookinfoSteps (backends on loopback
// addresses from first) with a minute for the test.
func bookinfoServed(t *testing.T, first int) (context.Context, *xdstest.Bookinfo, []*xds.Generation, *served) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(first))
	steps := bookinfoSteps(t, b)
	return ctx, b, steps, serveGenerations(t, steps[0])
}

// bookinfoSteps are generations that differ in their route configurations
// only: each has content of its own.
func bookinfoSteps(t *testing.T, b *xdstest.Bookinfo) []*xds.Generation {
	t.Helper()
	var out []*xds.Generation
	for i, vs := range []string{"", xdstest.ReviewsAllV3, xdstest.ReviewsWeighted(50)} {
		bag := b.Bag()
		if vs != "" {
			bag = withVS(b.Objects, "reviews", b.VirtualService(t, vs))
		}
		out = append(out, generation(t, int64(i+1), bag))
	}
	for i := range out {
		for j := range i {
			if out[i].ForNode("node-1", xds.EnvoyNode).Version(resourcev3.RouteType) == out[j].ForNode("node-1", xds.EnvoyNode).Version(resourcev3.RouteType) {
				t.Fatalf("steps %d and %d have the same route configurations", j, i)
			}
		}
	}
	return out
}

// TestSpoofedNACKCannotPinAnotherStream: a second stream claiming the same
// node ID rejects every route configuration, and answers first (the real
// node is slow to ACK). Its rejections must not touch the real node's
// stream: it ends on the routes it accepted, not the ones before. (With
// NACK state per node ID, the spoofed NACK put the node back on the
// previous routes and the real node's next request was answered with them.)
func TestSpoofedNACKCannotPinAnotherStream(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx, _, steps, s := bookinfoServed(t, 100)
			var slow atomic.Bool
			real, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, m.delta, func(typeURL string, _ map[string]*anypb.Any) string {
				if typeURL == resourcev3.RouteType && slow.Load() {
					time.Sleep(300 * time.Millisecond) // the spoofed NACK gets there first
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			defer real.Close()
			acked(t, ctx, real, versions(steps[0].ForNode("node-1", xds.EnvoyNode)))
			spoof, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, m.delta, rejectRoutes)
			if err != nil {
				t.Fatal(err)
			}
			defer spoof.Close()
			if err := spoof.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.ListenerType].ACKs > 0 }); err != nil {
				t.Fatal(err)
			}
			slow.Store(true)
			for i, g := range steps[1:] {
				nacks := spoof.State(resourcev3.RouteType).NACKs
				s.push(t, g, "node-1")
				want := g.ForNode("node-1", xds.EnvoyNode)
				acked(t, ctx, real, versions(want))
				if err := spoof.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > nacks }); err != nil {
					t.Fatal(err)
				}
				settle()
				if st := real.State(resourcev3.RouteType); !m.delta && st.Version != want.Version(resourcev3.RouteType) {
					t.Errorf("step %d: the real node runs route version %s after the spoofed NACK, want %s", i+1, st.Version, want.Version(resourcev3.RouteType))
				}
				if err := real.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs == 0 }); err != nil {
					t.Fatal(err)
				}
			}
			// What the real node holds is what the controller serves it
			// (delta compares resources' versions).
			final := routeVersions(real, m.delta)
			settle()
			if again := routeVersions(real, m.delta); again != final {
				t.Errorf("the real node's routes moved after the last push: %s, then %s", final, again)
			}
			if m.delta {
				want := steps[len(steps)-1].ForNode("node-1", xds.EnvoyNode)
				res, err := want.Resources()
				if err != nil {
					t.Fatal(err)
				}
				got := real.State(resourcev3.RouteType).Resources
				for _, rc := range res.Routes {
					if a := got[rc.GetName()]; a == nil {
						t.Errorf("the real node lost route configuration %s", rc.GetName())
					}
				}
				if n := real.State(resourcev3.RouteType).Changes; n != len(steps) {
					t.Errorf("the real node's routes changed %d times for %d pushes (reverted by the spoofed NACKs?)", n, len(steps))
				}
			}
		})
	}
}

// TestRejectedContentNeverResent: content A is rejected, then B, then A
// comes back — neither is sent again, even in generations that change
// other types (the "same configuration" shortcut does not hide the check).
func TestRejectedContentNeverResent(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx, b, steps, s := bookinfoServed(t, 110)
			// While rejecting, the node refuses route configurations other
			// than the ones it holds (as an Envoy refuses new content, and
			// takes its own back).
			var rejecting atomic.Pointer[map[string]*anypb.Any]
			c, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, m.delta, func(typeURL string, r map[string]*anypb.Any) string {
				if good := rejecting.Load(); good != nil && !sameResources(r, *good) {
					return rejectRoutes(typeURL, r)
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			acked(t, ctx, c, versions(steps[0].ForNode("node-1", xds.EnvoyNode)))
			good := c.State(resourcev3.RouteType).Resources
			rejecting.Store(&good)
			// A, then B: each sent once, rejected.
			for i, g := range steps[1:] {
				before := c.State(resourcev3.RouteType).NACKs
				s.push(t, g, "node-1")
				if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > before }); err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
			}
			settle()
			// A again, with other endpoints (so not the same
			// configuration as any before), then B again.
			for i, g := range steps[1:] {
				before := responses(c)
				bag := g.ForNode("node-1", xds.EnvoyNode)
				moved := endpointsMoved(t, b, i)
				if moved.ForNode("node-1", xds.EnvoyNode).Version(resourcev3.RouteType) != bag.Version(resourcev3.RouteType) {
					t.Fatal("the moved generation has other routes")
				}
				s.push(t, moved, "node-1")
				acked(t, ctx, c, map[string]string{resourcev3.EndpointType: moved.ForNode("node-1", xds.EnvoyNode).Version(resourcev3.EndpointType)})
				settle()
				if n := responses(c)[resourcev3.RouteType] - before[resourcev3.RouteType]; n != 0 {
					t.Errorf("rejected route content %c sent %d more times", 'A'+i, n)
				}
			}
			if v := c.State(resourcev3.RouteType).Version; !m.delta && v != steps[0].ForNode("node-1", xds.EnvoyNode).Version(resourcev3.RouteType) {
				t.Errorf("node runs route version %s, want the one it accepted", v)
			}
			if n := c.State(resourcev3.RouteType).NACKs; n != 2 {
				t.Errorf("%d NACKs, want 2 (A and B once each)", n)
			}
		})
	}
}

func sameResources(a, b map[string]*anypb.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for n, r := range a {
		if !proto.Equal(r, b[n]) {
			return false
		}
	}
	return true
}

// endpointsMoved is bookinfo step i+1's routing with the ratings endpoint
// moved (a generation of its own with the same routes).
func endpointsMoved(t *testing.T, b *xdstest.Bookinfo, i int) *xds.Generation {
	t.Helper()
	vs := []string{xdstest.ReviewsAllV3, xdstest.ReviewsWeighted(50)}[i]
	bag := withVS(b.Objects, "reviews", b.VirtualService(t, vs))
	moveRatings(bag)
	return generation(t, int64(10+i), bag)
}

// TestRestartThenNACKKeepsRoutes: after a controller restart, a node that
// resumes without needing anything of a type (so acknowledges nothing of
// it to this controller) rejects the next route configuration; an endpoint
// push that follows must not serve it less than it holds. (The rejection
// used to put the type back on an empty set, and the endpoint push then
// sent "remove 9080": the node lost every route.)
func TestRestartThenNACKKeepsRoutes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(120))
			steps := bookinfoSteps(t, b)
			start := func(addr string, g *xds.Generation) (*served, func()) {
				s := &served{metrics: xds.NewMetrics(nil)}
				s.gen.Store(g)
				s.cache = xds.NewCache(nil, s.metrics)
				s.cache.Provider = func(n *corev3.Node) *xds.Config { return s.gen.Load().ForNode(n.GetId(), xds.KindOf(n)) }
				var stop func()
				s.addr, stop = xdstest.ServeAt(t, s.cache, addr)
				t.Cleanup(stop)
				return s, stop
			}
			s1, stop1 := start("127.0.0.1:0", steps[0])
			// While rejecting, the node refuses route configurations it
			// does not hold (new content) and accepts anything else — a
			// removal included, as Envoy would.
			var rejecting atomic.Pointer[map[string]*anypb.Any]
			c, err := xdstest.NewADSClient(ctx, s1.addr, &corev3.Node{Id: "node-1"}, m.delta, func(typeURL string, r map[string]*anypb.Any) string {
				good := rejecting.Load()
				if good == nil || typeURL != resourcev3.RouteType {
					return ""
				}
				for n, res := range r {
					if (*good)[n] == nil || !proto.Equal(res, (*good)[n]) {
						return "test: new route configuration rejected"
					}
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			acked(t, ctx, c, versions(steps[0].ForNode("node-1", xds.EnvoyNode)))
			held := c.State(resourcev3.RouteType)
			if len(held.Resources) == 0 {
				t.Fatal("the node holds no route configuration")
			}

			stop1()
			s2, _ := start(s1.addr, steps[0])
			if err := c.Wait(ctx, func(xdstest.States) bool { return c.Reconnects() > 0 }); err != nil {
				t.Fatal(err)
			}
			waitConnected(t, s2, "node-1")
			settle()
			good := held.Resources
			rejecting.Store(&good)
			nacks := c.State(resourcev3.RouteType).NACKs
			s2.push(t, steps[1], "node-1")
			if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > nacks }); err != nil {
				t.Fatal(err)
			}
			settle()
			// An endpoint change: the routes served stay what the node
			// holds.
			moved := endpointsMoved(t, b, 0)
			s2.push(t, moved, "node-1")
			acked(t, ctx, c, map[string]string{resourcev3.EndpointType: moved.ForNode("node-1", xds.EnvoyNode).Version(resourcev3.EndpointType)})
			settle()
			got := c.State(resourcev3.RouteType)
			for name := range held.Resources {
				if got.Resources[name] == nil {
					t.Errorf("the node lost route configuration %s (removed: %v)", name, got.LastRemoved)
				}
			}
			if !m.delta && got.Version != held.Version {
				t.Errorf("the node runs route version %s, want the one it held, %s", got.Version, held.Version)
			}
			if m.delta && fmt.Sprint(got.Versions) != fmt.Sprint(held.Versions) {
				t.Errorf("the node holds route versions %v, want the ones it held, %v", got.Versions, held.Versions)
			}
			// New content is tried again once the node accepts it.
			rejecting.Store(nil)
			s2.push(t, steps[2], "node-1")
			acked(t, ctx, c, versions(steps[2].ForNode("node-1", xds.EnvoyNode)))
		})
	}
}

func waitConnected(t *testing.T, s *served, node string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(s.cache.Nodes(), node) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not connect", node)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNACKEverythingIsBounded: an Envoy restarted (or upgraded) under the
// same node ID rejects everything, including what its predecessor accepted.
// Its stream must get a bounded number of responses — the predecessor's
// acceptance says nothing about what it runs. (It used to be put back on
// the predecessor's version, which it rejects again: ~1,500 responses per
// second.)
func TestNACKEverythingIsBounded(t *testing.T) {
	for _, m := range modes {
		for _, overlap := range []bool{false, true} {
			name := m.name + map[bool]string{false: ", predecessor gone", true: ", predecessor still connected"}[overlap]
			t.Run(name, func(t *testing.T) {
				ctx, _, steps, s := bookinfoServed(t, 130)
				old, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, m.delta, nil)
				if err != nil {
					t.Fatal(err)
				}
				acked(t, ctx, old, versions(steps[0].ForNode("node-1", xds.EnvoyNode)))
				if overlap {
					defer old.Close()
				} else {
					old.Close()
					waitGone(t, s, "node-1")
				}
				all := func(string, map[string]*anypb.Any) string { return "test: everything rejected" }
				c, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, m.delta, all)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := c.Wait(ctx, func(st xdstest.States) bool {
					return st[resourcev3.ClusterType].NACKs > 0 && st[resourcev3.ListenerType].NACKs > 0
				}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second) // a storm sends thousands in this time
				total := 0
				for _, n := range responses(c) {
					total += n
				}
				// Clusters and listeners once each: nothing accepted, so no
				// endpoints or route configurations are asked for.
				if total > 2 {
					t.Errorf("%d responses to a stream that rejects everything, want 2 (%v)", total, responses(c))
				}
				// A push of new content is tried once more, no more.
				s.push(t, steps[1], "node-1")
				time.Sleep(500 * time.Millisecond)
				total = 0
				for _, n := range responses(c) {
					total += n
				}
				if total > 3 {
					t.Errorf("%d responses after a route change, want at most 3 (%v)", total, responses(c))
				}
				if overlap {
					// The predecessor was never disturbed.
					want := steps[1].ForNode("node-1", xds.EnvoyNode)
					acked(t, ctx, old, versions(want))
				}
			})
		}
	}
}

func waitGone(t *testing.T, s *served, node string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(s.cache.Nodes(), node) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still connected", node)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// anyNode authenticates every stream and lets it claim any node: the
// cache's own limits are tested behind it (the server's authenticator
// refuses most of these earlier; the cache does not rely on it).
type anyNode struct{}

func (anyNode) Authenticate(context.Context, string) (xds.Principal, error) { return anyNode{}, nil }
func (anyNode) AuthorizeNode(*corev3.Node) error                            { return nil }
func (anyNode) String() string                                              { return "any node" }

// TestNodeLimits: what a client sends as its node is bounded, a stream
// keeps the node it opened with, and a node is forgotten when its last
// stream goes.
func TestNodeLimits(t *testing.T) {
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(140))
	g := generation(t, 1, b.Bag())
	cache := xds.NewCache(nil, nil)
	cache.Provider = func(n *corev3.Node) *xds.Config { return g.ForNode(n.GetId(), xds.KindOf(n)) }
	addr, stop := xdstest.ServeWith(t, cache, "127.0.0.1:0", xds.ServerOptions{Auth: anyNode{}, TLS: xdstest.ServerTLS(t, "127.0.0.1")})
	t.Cleanup(stop)
	conn, err := xdstest.Dial(addr, append(xdstest.DialOptions("any"), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	bigMeta, err := structpb.NewStruct(map[string]any{"junk": strings.Repeat("x", xds.MaxNodeBytes)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		node *corev3.Node
		want string
	}{
		{"3 MB node ID", &corev3.Node{Id: strings.Repeat("n", 3<<20)}, "node ID of 3145728 bytes"},
		{"node ID over the limit", &corev3.Node{Id: strings.Repeat("n", xds.MaxNodeIDBytes+1)}, "at most 1024"},
		{"large metadata", &corev3.Node{Id: "node-1", Metadata: bigMeta}, "node message of"},
	} {
		for _, m := range modes {
			t.Run(tc.name+", "+m.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var err error
				if m.delta {
					var st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
					if st, err = ads.DeltaAggregatedResources(ctx); err == nil {
						if err = st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: tc.node, TypeUrl: resourcev3.ClusterType}); err == nil {
							_, err = st.Recv()
						}
					}
				} else {
					var st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
					if st, err = ads.StreamAggregatedResources(ctx); err == nil {
						if err = st.Send(&discoveryv3.DiscoveryRequest{Node: tc.node, TypeUrl: resourcev3.ClusterType}); err == nil {
							_, err = st.Recv()
						}
					}
				}
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
					t.Errorf("stream ended with %v, want InvalidArgument: …%s…", err, tc.want)
				}
			})
		}
	}
	// The cache itself, whatever the server in front of it checks: a
	// stream's first request names a node, and a stream keeps it.
	if err := cache.OnStreamRequest(1000, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("first request without a node: %v, want InvalidArgument", err)
	}
	if err := cache.OnStreamDeltaRequest(1000, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("first delta request without a node: %v, want InvalidArgument", err)
	}
	if err := cache.OnStreamRequest(1001, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	err = cache.OnStreamRequest(1001, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "node-2"}, TypeUrl: resourcev3.ListenerType})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cannot change its node ID") {
		t.Errorf("node changed on the stream: %v, want InvalidArgument", err)
	}
	cache.OnStreamClosed(1001, nil)
	deadline := time.Now().Add(10 * time.Second)
	for len(cache.Known()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := cache.Known(); len(k) > 0 {
		t.Errorf("%d nodes kept after their streams closed", len(k))
	}
}

// TestNodeForgottenWhenStreamsClose: clients with distinct node IDs that
// connect and go leave no state behind (it used to stay until the next
// push: 25,000 node states after 20,000 cycles). BenchmarkNodeChurn
// measures the memory.
func TestNodeForgottenWhenStreamsClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(150))
	s := serveGenerations(t, generation(t, 1, b.Bag()))
	for i := range 20 {
		for _, m := range modes {
			c, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: fmt.Sprintf("churn-%d-%v", i, m.delta)}, m.delta, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.ListenerType].ACKs > 0 }); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.cache.Known()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := s.cache.Known(); len(k) > 0 {
		t.Errorf("%d nodes kept after their streams closed (%s, …)", len(k), k[0])
	}
}

// TestNACKReportsAreBounded: a client's rejections reach logs and Events at
// most once per interval per stream and type, counted in between, and its
// text is bounded and escaped.
func TestNACKReportsAreBounded(t *testing.T) {
	ctx, b, _, s := bookinfoServed(t, 160)
	var reports atomic.Int64
	var last atomic.Pointer[xds.NACK]
	s.cache.OnNACK = func(n xds.NACK) {
		reports.Add(1)
		last.Store(&n)
	}
	detail := "bad\n\x1b[31mred\x00" + strings.Repeat("é", 4000)
	c, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, false, func(typeURL string, _ map[string]*anypb.Any) string {
		if typeURL == resourcev3.RouteType {
			return detail
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > 0 }); err != nil {
		t.Fatal(err)
	}
	// Every push of new content is rejected once; only the first is
	// reported within the interval.
	for i := range 6 {
		s.push(t, generation(t, int64(20+i), withVS(b.Objects, "reviews", b.VirtualService(t, xdstest.ReviewsWeighted(10+i)))), "node-1")
		n := c.State(resourcev3.RouteType).NACKs
		if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > n }); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	if n := reports.Load(); n != 1 {
		t.Errorf("%d rejections reported for 7 within the interval, want 1", n)
	}
	n := last.Load()
	if n == nil {
		t.Fatal("no report")
	}
	if strings.ContainsAny(n.Detail, "\n\x1b\x00") {
		t.Errorf("control characters reach the report: %q", n.Detail)
	}
	if !strings.HasPrefix(n.Detail, `bad\n\x1b[31mred\x00`) {
		t.Errorf("detail %q: want the text with control characters escaped", n.Detail[:40])
	}
	if len(n.Detail) > 520 {
		t.Errorf("detail of %d bytes reported, want it bounded", len(n.Detail))
	}
}
