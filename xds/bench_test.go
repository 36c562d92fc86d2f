package xds_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate/istio"
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
		g := xds.NewGeneration(1, time.Now(), bag, nil, istio.Options{})
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
				g := xds.NewGeneration(1, time.Now(), bag, nil, istio.Options{})
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
	g := xds.NewGeneration(1, time.Now(), bag, nil, istio.Options{})
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
