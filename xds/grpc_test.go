package xds_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// generation translates a bag, failing the test on any diagnostic.
func generation(t *testing.T, id int64, bag *translate.Bag) *xds.Generation {
	t.Helper()
	g := xds.NewGeneration(id, time.Now(), bag, nil, translate.Options{})
	if d := g.Diagnostics(); len(d) > 0 {
		t.Fatalf("translation diagnostics:\n%v", d)
	}
	return g
}

// withVS replaces (or, with vs nil, removes) the VirtualService of that name.
func withVS(objs []any, name string, vs *networkingv1.VirtualService) *translate.Bag {
	bag := &translate.Bag{}
	for _, o := range objs {
		if v, ok := o.(*networkingv1.VirtualService); ok && v.Name == name {
			continue
		}
		bag.Add(o)
	}
	if vs != nil {
		bag.Add(vs)
	}
	bag.Sort()
	return bag
}

// TestGRPCClientFollowsRouting serves bookinfo's routing to grpc-go's xDS
// client and checks what its calls do, then updates and removes the reviews
// VirtualService and sees traffic move.
func TestGRPCClientFollowsRouting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(20))
	var gen atomic.Pointer[xds.Generation]
	gen.Store(generation(t, 1, b.Bag()))
	cache := xds.NewCache(nil, nil)
	cache.Provider = func(n *corev3.Node) *xds.Config { return gen.Load().ForNode(n.GetId(), xds.KindOf(n)) }
	client := xdstest.NewGRPCClient(t, xdstest.Serve(t, cache), "grpc-client-1")

	xdstest.CheckBookinfo(t, ctx, b, client)
	reviews := client.Dial(b.Target("reviews"))

	push := func(g *xds.Generation) {
		gen.Store(g)
		if err := cache.Push(g.ForNode("grpc-client-1", xds.GRPCNode), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	push(generation(t, 2, withVS(b.Objects, "reviews", b.VirtualService(t, xdstest.ReviewsAllV3))))
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "all reviews traffic on v3 after the update", xdstest.Only("reviews-v3"))

	// Without a VirtualService, the default route balances over every
	// reviews pod.
	push(generation(t, 3, withVS(b.Objects, "reviews", nil)))
	tally := xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "default route over v1, v2 and v3 after the delete", func(t xdstest.Tally) bool {
		return t["reviews-v1"] > 0 && t["reviews-v2"] > 0 && t["reviews-v3"] > 0 && t["reviews-v1"]+t["reviews-v2"]+t["reviews-v3"] == t.Total()
	})
	t.Logf("default route: %v", tally)
	if !slices.Contains(cache.Nodes(), "grpc-client-1") {
		t.Errorf("connected nodes %v lack grpc-client-1", cache.Nodes())
	}
}

// TestGRPCClientNACK gives grpc-go a route configuration it rejects
// (num_retries 0; Envoy would take it): the client keeps routing with the
// configuration it had, the controller counts one NACK, puts the client back
// on its accepted version and does not resend — and a good configuration
// afterwards goes through.
func TestGRPCClientNACK(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(60))
	gen := generation(t, 1, b.Bag())
	metrics := xds.NewMetrics(nil)
	cache := xds.NewCache(nil, metrics)
	var nacks atomic.Int32
	cache.OnNACK = func(n xds.NACK) {
		nacks.Add(1)
		if n.Node != "grpc-client-1" || n.TypeURL != resourcev3.RouteType || len(n.Resources) == 0 || !strings.Contains(n.Detail, "retr") {
			t.Errorf("unexpected NACK report %+v", n)
		}
	}
	const node = "grpc-client-1"
	good := gen.ForNode(node, xds.GRPCNode)
	if err := cache.Push(good, time.Now()); err != nil {
		t.Fatal(err)
	}
	client := xdstest.NewGRPCClient(t, xdstest.Serve(t, cache), node)
	reviews := client.Dial(b.Target("reviews"))
	xdstest.WaitRouting(t, ctx, reviews, 20*time.Second, "jason routed to reviews-v2", xdstest.Only("reviews-v2"), "end-user", "jason")

	// The same resources with every reviews route sent to v3 and a retry
	// policy gRPC refuses.
	bad := resourcesOf(t, good)
	routes := bad.Routes
	bad.Routes = nil
	for _, rc := range routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if a := r.GetRoute(); a != nil {
					a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "outbound|9080|v3|reviews.bookinfo.svc.cluster.local"}
					a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(0)}
				}
			}
		}
		bad.Routes = append(bad.Routes, rc)
	}
	pushes := func() float64 { return testutil.ToFloat64(metrics.Pushes.WithLabelValues("RouteConfiguration")) }
	before := pushes()
	if err := cache.Push(xds.NewConfig(node, xds.GRPCNode, *bad), time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for nacks.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // a NACK storm sends thousands of responses a second
	if n := nacks.Load(); n != 1 {
		t.Fatalf("NACKs reported: %d, want 1", n)
	}
	if n := testutil.ToFloat64(metrics.NACKs.WithLabelValues("RouteConfiguration")); n != 1 {
		t.Errorf("nodemesh_xds_nacks_total{type=RouteConfiguration} = %v, want 1", n)
	}
	if n := pushes() - before; n != 1 {
		t.Errorf("route configuration responses since the bad push: %v, want 1", n)
	}
	if v := cache.Served(node).GetVersion(resourcev3.RouteType); v != good.Version(resourcev3.RouteType) {
		t.Errorf("served route version %q, want the accepted %q", v, good.Version(resourcev3.RouteType))
	}
	if tally := xdstest.Calls(ctx, reviews, 20, "end-user", "jason"); tally["reviews-v2"] != 20 {
		t.Errorf("after the rejection the client must keep its routing: %v", tally)
	}

	// A good configuration afterwards is sent and followed.
	gen2 := generation(t, 2, withVS(b.Objects, "reviews", b.VirtualService(t, xdstest.ReviewsAllV3)))
	if err := cache.Push(gen2.ForNode(node, xds.GRPCNode), time.Now()); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "all reviews traffic on v3", xdstest.Only("reviews-v3"), "end-user", "jason")
}
