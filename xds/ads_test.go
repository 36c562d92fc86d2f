package xds_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

var allTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// served is a node's controller-side state with a generation provider.
type served struct {
	cache   *xds.Cache
	metrics *xds.Metrics
	gen     atomic.Pointer[xds.Generation]
	addr    string
}

func serveGenerations(t *testing.T, g *xds.Generation) *served {
	s := &served{metrics: xds.NewMetrics(nil)}
	s.gen.Store(g)
	s.cache = xds.NewCache(nil, s.metrics)
	s.cache.Provider = func(n *corev3.Node) *xds.Config { return s.gen.Load().ForNode(n.GetId(), xds.KindOf(n)) }
	s.addr = xdstest.Serve(t, s.cache)
	return s
}

func (s *served) push(t *testing.T, g *xds.Generation, nodes ...string) {
	t.Helper()
	s.gen.Store(g)
	for _, n := range nodes {
		if err := s.cache.Push(g.ForNode(n, xds.EnvoyNode), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *served) status(t *testing.T, node string) xds.NodeStatus {
	t.Helper()
	for _, st := range s.cache.Status() {
		if st.Node == node {
			return st
		}
	}
	t.Fatalf("no status for node %s", node)
	return xds.NodeStatus{}
}

// waitStatus waits until the controller's status of a node satisfies cond.
func (s *served) waitStatus(t *testing.T, node string, cond func(xds.NodeStatus) bool) xds.NodeStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.status(t, node)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: status not reached in 10s: %+v", node, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func responses(c *xdstest.ADSClient) map[string]int {
	out := map[string]int{}
	for _, t := range allTypes {
		out[t] = c.State(t).Responses
	}
	return out
}

// settle waits a little for anything in flight to arrive.
func settle() { time.Sleep(300 * time.Millisecond) }

// acked waits until the client holds version of every type in want.
func acked(t *testing.T, ctx context.Context, c *xdstest.ADSClient, want map[string]string) {
	t.Helper()
	err := c.Wait(ctx, func(s xdstest.States) bool {
		for typ, v := range want {
			if s[typ].Version != v && !(v == "" && s[typ].ACKs > 0) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("waiting for versions %v: %v", want, err)
	}
}

func versions(cfg *xds.Config) map[string]string {
	out := map[string]string{}
	for _, t := range allTypes {
		out[t] = cfg.Version(t)
	}
	return out
}

// TestEnvoyNodeADS plays a node Envoy (state of the world and delta): it
// receives the listener with its filter chains and everything the listener
// and clusters name; a VirtualService change sends route configurations
// only; an EndpointSlice change sends the affected endpoints only; a
// rejected configuration leaves the node on what it accepted, is counted and
// is not sent again.
func TestEnvoyNodeADS(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "state of the world", true: "delta"}[delta], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(40+map[bool]int{false: 0, true: 10}[delta]))
			gen1 := generation(t, 1, b.Bag())
			s := serveGenerations(t, gen1)
			// While rejecting, the node refuses route configurations other
			// than the ones it holds (as an Envoy refuses new content it
			// cannot load, and takes its own back).
			var rejecting atomic.Pointer[map[string]*anypb.Any]
			reject := func(typeURL string, next map[string]*anypb.Any) string {
				good := rejecting.Load()
				if typeURL != resourcev3.RouteType || good == nil {
					return ""
				}
				if len(next) != len(*good) {
					return "test: route configuration rejected"
				}
				for n, a := range next {
					if !proto.Equal(a, (*good)[n]) {
						return "test: route configuration rejected"
					}
				}
				return ""
			}
			c, err := xdstest.NewADSClient(ctx, s.addr, &corev3.Node{Id: "node-1"}, delta, reject)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			want1 := gen1.ForNode("node-1", xds.EnvoyNode)
			acked(t, ctx, c, versions(want1))
			l := &listenerv3.Listener{}
			ls := c.State(resourcev3.ListenerType).Resources
			if len(ls) != 1 {
				t.Fatalf("want one listener, got %d", len(ls))
			}
			for _, a := range ls {
				if err := a.UnmarshalTo(l); err != nil {
					t.Fatal(err)
				}
			}
			if len(l.GetFilterChains()) == 0 {
				t.Errorf("listener %s has no filter chains", l.GetName())
			}
			routes := slices.Sorted(func(yield func(string) bool) {
				for n := range c.State(resourcev3.RouteType).Resources {
					if !yield(n) {
						return
					}
				}
			})
			if wantRoutes := slices.Sorted(slices.Values(translate.RouteConfigNames(l))); !slices.Equal(routes, wantRoutes) {
				t.Errorf("route configurations: got %v, want those the listener names %v", routes, wantRoutes)
			}
			if n, want := len(c.State(resourcev3.ClusterType).Resources), len(resourcesOf(t, want1).Clusters); n != want {
				t.Errorf("clusters: got %d, want %d", n, want)
			}
			if n, want := len(c.State(resourcev3.EndpointType).Resources), len(resourcesOf(t, want1).Endpoints); n != want {
				t.Errorf("endpoints: got %d, want %d", n, want)
			}
			// The controller sees the ACKs (they may still be in flight).
			st := s.waitStatus(t, "node-1", func(st xds.NodeStatus) bool {
				for _, typ := range allTypes {
					if st.Acked[typ] != st.Sent[typ] || st.Sent[typ] == "" {
						return false
					}
				}
				return true
			})
			for _, typ := range allTypes {
				if st.Acked[typ] != want1.Version(typ) {
					t.Errorf("%s: controller records acked %q, want %q", typ, st.Acked[typ], want1.Version(typ))
				}
			}

			// A VirtualService change: only route configurations move.
			before := responses(c)
			gen2 := generation(t, 2, withVS(b.Objects, "reviews", b.VirtualService(t, xdstest.ReviewsAllV3)))
			s.push(t, gen2, "node-1")
			want2 := gen2.ForNode("node-1", xds.EnvoyNode)
			acked(t, ctx, c, versions(want2))
			settle()
			after := responses(c)
			for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType} {
				if after[typ] != before[typ] {
					t.Errorf("%s: %d responses after a VirtualService change, want none", typ, after[typ]-before[typ])
				}
			}
			if after[resourcev3.RouteType] != before[resourcev3.RouteType]+1 {
				t.Errorf("route configurations: %d responses after a VirtualService change, want 1", after[resourcev3.RouteType]-before[resourcev3.RouteType])
			}
			if delta {
				if got := c.State(resourcev3.RouteType).LastResources; !slices.Equal(got, []string{"9080"}) {
					t.Errorf("delta: route configurations sent %v, want only 9080", got)
				}
			}

			// An EndpointSlice change: only the endpoints of the affected
			// clusters (delta), or of the type (state of the world).
			before = responses(c)
			bag3 := withVS(b.Objects, "reviews", b.VirtualService(t, xdstest.ReviewsAllV3))
			moveRatings(bag3)
			gen3 := generation(t, 3, bag3)
			s.push(t, gen3, "node-1")
			want3 := gen3.ForNode("node-1", xds.EnvoyNode)
			if want3.Version(resourcev3.EndpointType) == want2.Version(resourcev3.EndpointType) {
				t.Fatal("moving a ratings endpoint did not change the endpoints")
			}
			acked(t, ctx, c, versions(want3))
			settle()
			after = responses(c)
			for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType} {
				if after[typ] != before[typ] {
					t.Errorf("%s: %d responses after an EndpointSlice change, want none", typ, after[typ]-before[typ])
				}
			}
			if after[resourcev3.EndpointType] != before[resourcev3.EndpointType]+1 {
				t.Errorf("endpoints: %d responses after an EndpointSlice change, want 1", after[resourcev3.EndpointType]-before[resourcev3.EndpointType])
			}
			if delta {
				want := []string{"outbound|9080|v1|ratings.bookinfo.svc.cluster.local", "outbound|9080||ratings.bookinfo.svc.cluster.local"}
				slices.Sort(want)
				if got := c.State(resourcev3.EndpointType).LastResources; !slices.Equal(got, want) {
					t.Errorf("delta: endpoints sent %v, want only %v", got, want)
				}
			}

			// The node rejects the next route configuration.
			good := c.State(resourcev3.RouteType).Resources
			rejecting.Store(&good)
			before = responses(c)
			gen4 := generation(t, 4, withVS(bag3.Objects(), "reviews", nil))
			s.push(t, gen4, "node-1")
			rejected := gen4.ForNode("node-1", xds.EnvoyNode).Version(resourcev3.RouteType)
			if err := c.Wait(ctx, func(st xdstest.States) bool { return st[resourcev3.RouteType].NACKs > 0 }); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond) // a NACK storm would send thousands by now
			after = responses(c)
			// State of the world: the rejected set, once. Delta: the rejected
			// resources, then the accepted ones again (the controller moves
			// the node back; the node already has them).
			maxResp := 1
			if delta {
				maxResp = 2
			}
			if n := after[resourcev3.RouteType] - before[resourcev3.RouteType]; n < 1 || n > maxResp {
				t.Errorf("route configuration responses after a rejection: %d, want 1..%d", n, maxResp)
			}
			if n := c.State(resourcev3.RouteType).NACKs; n != 1 {
				t.Errorf("NACKs: %d, want 1", n)
			}
			if n := testutil.ToFloat64(s.metrics.NACKs.WithLabelValues("RouteConfiguration")); n != 1 {
				t.Errorf("nodemesh_xds_nacks_total{type=RouteConfiguration} = %v, want 1", n)
			}
			st = s.waitStatus(t, "node-1", func(st xds.NodeStatus) bool { return st.Rejected[resourcev3.RouteType] != "" })
			if st.Rejected[resourcev3.RouteType] != rejected {
				t.Errorf("controller records rejected version %q, want %q", st.Rejected[resourcev3.RouteType], rejected)
			}
			if v := s.cache.Served("node-1").GetVersion(resourcev3.RouteType); v != want3.Version(resourcev3.RouteType) {
				t.Errorf("node served route version %q after the NACK, want the accepted %q", v, want3.Version(resourcev3.RouteType))
			}
			if v := c.State(resourcev3.RouteType).Version; !delta && v != want3.Version(resourcev3.RouteType) {
				t.Errorf("node holds route version %q, want the accepted %q", v, want3.Version(resourcev3.RouteType))
			}

			// The same content again (a new generation from an unrelated
			// change): not resent.
			before = responses(c)
			s.push(t, generation(t, 5, withVS(bag3.Objects(), "reviews", nil)), "node-1")
			settle()
			if n := responses(c)[resourcev3.RouteType] - before[resourcev3.RouteType]; n != 0 {
				t.Errorf("rejected content resent %d times", n)
			}

			// New content is tried, and accepted once the node accepts it.
			rejecting.Store(nil)
			gen6 := generation(t, 6, b.Bag())
			s.push(t, gen6, "node-1")
			acked(t, ctx, c, versions(gen6.ForNode("node-1", xds.EnvoyNode)))
			s.waitStatus(t, "node-1", func(st xds.NodeStatus) bool {
				return len(st.Rejected) == 0 && st.Acked[resourcev3.RouteType] == st.Sent[resourcev3.RouteType]
			})
		})
	}
}

// moveRatings changes the ratings EndpointSlice's endpoint address.
func moveRatings(bag *translate.Bag) {
	for i, es := range bag.EndpointSlices {
		if es.Labels[discoveryv1.LabelServiceName] != "ratings" {
			continue
		}
		es = es.DeepCopy()
		es.Endpoints[0].Addresses = []string{fmt.Sprintf("127.0.0.%d", 250)}
		bag.EndpointSlices[i] = es
	}
}

// resourcesOf decodes a configuration's resources.
func resourcesOf(t testing.TB, cfg *xds.Config) *translate.Resources {
	t.Helper()
	r, err := cfg.Resources()
	if err != nil {
		t.Fatal(err)
	}
	return r
}
