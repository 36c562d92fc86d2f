package xds_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// benchMesh is the controller benchmarks' mesh (see xds/watch): n Services
// in 20 opted-in namespaces with 3 Pods each over 100 nodes.
func benchMesh(n int) *meshgen.Mesh {
	return meshgen.New(meshgen.Options{Services: n, PodsPerService: 3, Nodes: 100, Namespaces: 20, OptIn: true, EndpointSlices: true})
}

// BenchmarkGeneration: translating a 1,000-Service cluster and computing
// the configuration of each of its 100 nodes.
func BenchmarkGeneration(b *testing.B) {
	bag := benchMesh(1000).Bag()
	b.ReportAllocs()
	for b.Loop() {
		g := xds.NewGeneration(1, time.Now(), bag, nil, translate.Options{})
		for i := range 100 {
			g.ForNode("node-"+strconv.Itoa(i), xds.EnvoyNode)
		}
	}
}

// BenchmarkGenerationMemory: the heap a generation keeps once it has
// computed the configuration of 100 nodes (the input excluded), after a
// collection: what a controller holds per generation, without its informer
// caches and per-stream state.
func BenchmarkGenerationMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("services="+strconv.Itoa(n), func(b *testing.B) {
			bag := benchMesh(n).Bag()
			var retained float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				g := xds.NewGeneration(1, time.Now(), bag, nil, translate.Options{})
				cfgs := make([]*xds.Config, 0, 100)
				for i := range 100 {
					cfgs = append(cfgs, g.ForNode("node-"+strconv.Itoa(i), xds.EnvoyNode))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				retained = float64(after.HeapAlloc-before.HeapAlloc) / 1e6
				runtime.KeepAlive(g) // the controller keeps its current generation
				runtime.KeepAlive(cfgs)
			}
			b.ReportMetric(retained, "retained-MB")
		})
	}
}

// BenchmarkInitialSync: 100 node Envoys (delta xDS) connect to a cache
// holding a 1,000-Service generation and receive everything.
func BenchmarkInitialSync(b *testing.B) {
	bag := benchMesh(1000).Bag()
	g := xds.NewGeneration(1, time.Now(), bag, nil, translate.Options{})
	for b.Loop() {
		b.StopTimer()
		cache := xds.NewCache(nil, nil)
		cache.Provider = func(n *corev3.Node) *xds.Config { return g.ForNode(n.GetId(), xds.KindOf(n)) }
		addr, stop := xdstest.ServeAt(b, cache, "127.0.0.1:0")
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		var clients []*xdstest.ADSClient
		for i := range 100 {
			c, err := xdstest.NewLightADSClient(ctx, addr, &corev3.Node{Id: "node-" + strconv.Itoa(i)}, true)
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
		}
		for _, c := range clients {
			if err := c.Wait(ctx, xdstest.AllACKed); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		for _, c := range clients {
			c.Close()
		}
		cancel()
		stop()
		b.StartTimer()
	}
}

// BenchmarkNodeChurn: clients with distinct node IDs (of the longest length
// allowed) open a state-of-the-world or delta stream, receive their
// clusters and go, 20,000 times per iteration; reported is what the
// controller keeps afterwards — node states, live heap and resident memory
// after a collection. (Before nodes were forgotten with their last stream,
// 20,000 cycles left 25,502 node states and 706 MB resident.)
func BenchmarkNodeChurn(b *testing.B) {
	const cycles = 20000
	bk := xdstest.NewBookinfo(b, "bookinfo", xdstest.Loopback(170))
	g := xds.NewGeneration(1, time.Now(), bk.Bag(), nil, translate.Options{})
	c := xds.NewCache(nil, nil)
	c.Provider = func(n *corev3.Node) *xds.Config { return g.ForNode(n.GetId(), xds.KindOf(n)) }
	addr := xdstest.Serve(b, c)
	// TLS; each stream presents its own node's token.
	conn, err := xdstest.Dial(addr, xdstest.DialOptions("")...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	pad := strings.Repeat("x", xds.MaxNodeIDBytes-32)
	ctx := context.Background()
	var n int
	cycle := func() {
		n++
		node := &corev3.Node{Id: fmt.Sprintf("churn-%d-%s", n, pad)}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		creds := grpc.PerRPCCredentials(xdstest.Bearer(xdstest.Token(node.GetId())))
		if n%2 == 0 {
			s, err := ads.DeltaAggregatedResources(sctx, creds)
			if err == nil {
				err = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
			}
			if err == nil {
				_, err = s.Recv()
			}
			if err != nil {
				b.Fatal(err)
			}
			return
		}
		s, err := ads.StreamAggregatedResources(sctx, creds)
		if err == nil {
			err = s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
		}
		if err == nil {
			_, err = s.Recv()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	rssBefore := rssMB(b)
	for b.Loop() {
		for range cycles {
			cycle()
		}
	}
	// Streams close asynchronously on the server.
	deadline := time.Now().Add(10 * time.Second)
	for len(c.Known()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var ms runtime.MemStats
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(len(c.Known())), "nodes-kept")
	b.ReportMetric(float64(ms.HeapAlloc)/1e6, "heap-MB")
	b.ReportMetric(rssMB(b), "rss-MB")
	b.ReportMetric(rssBefore, "rss-before-MB")
}

// rssMB is the process's resident memory (VmRSS), in MB.
func rssMB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1000
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
