package xds_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestRestartKeepsVersions restarts the control plane under connected
// clients: they reconnect, and the new controller — translating the same
// cluster state — has the same versions, so nodes that resume with what they
// hold are sent nothing (no configuration churn), and gRPC calls carry on.
func TestRestartKeepsVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(70))
	start := func(addr string) (*xds.Cache, string, func()) {
		gen := generation(t, 1, b.Bag())
		c := xds.NewCache(nil, nil)
		c.Provider = func(n *corev3.Node) *xds.Config { return gen.ForNode(n.GetId(), xds.KindOf(n)) }
		addr, stop := xdstest.ServeAt(t, c, addr)
		t.Cleanup(stop)
		return c, addr, stop
	}
	cache1, addr, stop1 := start("127.0.0.1:0")

	sotw, err := xdstest.NewADSClient(ctx, addr, &corev3.Node{Id: "node-1"}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sotw.Close()
	delta, err := xdstest.NewADSClient(ctx, addr, &corev3.Node{Id: "node-2"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer delta.Close()
	grpcClient := xdstest.NewGRPCClient(t, addr, "grpc-client-1")
	reviews := grpcClient.Dial(b.Target("reviews"))
	xdstest.WaitRouting(t, ctx, reviews, 20*time.Second, "jason routed to reviews-v2", xdstest.Only("reviews-v2"), "end-user", "jason")
	for _, c := range []*xdstest.ADSClient{sotw, delta} {
		if err := c.Wait(ctx, xdstest.AllACKed); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the last ACKs reach the controller
	before := map[string]xds.NodeStatus{}
	for _, st := range cache1.Status() {
		before[st.Node] = st
	}
	count := func(c *xdstest.ADSClient, f func(xdstest.TypeState) int) map[string]int {
		out := map[string]int{}
		for _, typ := range allTypes {
			out[typ] = f(c.State(typ))
		}
		return out
	}
	changes := func(s xdstest.TypeState) int { return s.Changes }
	received := func(s xdstest.TypeState) int { return s.Received }
	changesSotW, receivedDelta := count(sotw, changes), count(delta, received)

	stop1()
	cache2, _, _ := start(addr)
	for _, c := range []*xdstest.ADSClient{sotw, delta} {
		if err := c.Wait(ctx, func(xdstest.States) bool { return c.Reconnects() > 0 }); err != nil {
			t.Fatal(err)
		}
	}
	// gRPC reconnects with backoff; its calls go on meanwhile.
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(cache2.Nodes(), "grpc-client-1") && time.Now().Before(deadline) {
		if tally := xdstest.Calls(ctx, reviews, 1, "end-user", "jason"); tally["reviews-v2"] != 1 {
			t.Fatalf("call during the restart: %v (%s)", tally, xdstest.LastError())
		}
		time.Sleep(20 * time.Millisecond)
	}
	xdstest.WaitRouting(t, ctx, reviews, 20*time.Second, "jason routed to reviews-v2 after the restart", xdstest.Only("reviews-v2"), "end-user", "jason")
	time.Sleep(500 * time.Millisecond)

	after := map[string]xds.NodeStatus{}
	for _, st := range cache2.Status() {
		after[st.Node] = st
	}
	for _, node := range []string{"node-1", "node-2", "grpc-client-1"} {
		if !after[node].Connected {
			t.Errorf("%s did not reconnect", node)
		}
		for _, typ := range allTypes {
			if b, a := before[node].Sent[typ], after[node].Sent[typ]; a != b || a == "" {
				t.Errorf("%s %s: version %q before the restart, %q after", node, typ, b, a)
			}
		}
	}
	// A new state-of-the-world stream is answered in full (go-control-plane
	// does not know what the node holds) but with the same versions; delta
	// streams resume from initial_resource_versions and get no resource (the
	// wildcard types get the empty first response the protocol requires).
	changesAfter, receivedAfter := count(sotw, changes), count(delta, received)
	for _, typ := range allTypes {
		if changesAfter[typ] != changesSotW[typ] {
			t.Errorf("state of the world: %s changed %d times across the restart, want 0", typ, changesAfter[typ]-changesSotW[typ])
		}
		if n := receivedAfter[typ] - receivedDelta[typ]; n != 0 {
			t.Errorf("delta: %d %s resources sent after the restart, want 0 (unchanged)", n, typ)
		}
	}
}
