package translate

import (
	"slices"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// syntheticMesh is the benchmark mesh of the translator issue: n Services
// with one HTTP port, each with a VirtualService (a header match plus a
// 2-way weighted split, retries and a timeout), a DestinationRule with 3
// subsets, and 30 endpoints (10 per subset) from Pods on 10 nodes.
func syntheticMesh(n int) *input.Bag {
	return meshgen.New(meshgen.Options{Services: n, PodsPerService: 30, Nodes: 10}).Bag()
}

func xdsBytes(r *Result) int {
	n := 0
	for _, m := range r.XDS.Listeners {
		n += proto.Size(m)
	}
	for _, m := range r.XDS.Routes {
		n += proto.Size(m)
	}
	for _, m := range r.XDS.Clusters {
		n += proto.Size(m)
	}
	for _, m := range r.XDS.Endpoints {
		n += proto.Size(m)
	}
	return n
}

// BenchmarkTranslate measures Istio semantics, xDS construction and full
// validation for one node, from objects in memory (decoding is separate).
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("services="+strconv.Itoa(n), func(b *testing.B) {
			bag := syntheticMesh(n)
			res := Translate(bag, nil, Options{})
			if res.HasErrors() {
				b.Fatalf("synthetic mesh has errors: %v", res.Diagnostics[:1])
			}
			if got := len(res.XDS.Clusters); got != 4*n+2 {
				b.Fatalf("clusters = %d, want %d", got, 4*n+2)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res = Translate(bag, nil, Options{})
			}
			b.ReportMetric(float64(xdsBytes(res)), "xds-bytes")
			b.ReportMetric(float64(len(res.XDS.Clusters)), "clusters")
		})
	}
}

// BenchmarkTranslatePhases splits BenchmarkTranslate: Istio semantics (IR),
// then building and validating xDS from the IR.
func BenchmarkTranslatePhases(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		bag := syntheticMesh(n)
		b.Run("istio/services="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				istio.Translate(bag, istio.Options{})
			}
		})
		b.Run("envoy/services="+strconv.Itoa(n), func(b *testing.B) {
			m, _ := istio.Translate(bag, istio.Options{})
			b.ReportAllocs()
			for b.Loop() {
				envoy.Build(m)
			}
		})
	}
}

// BenchmarkDecode measures reading manifests: the bookinfo sample.
func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Load([]string{"../samples/bookinfo"}, nil, "default"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNodeIstioMTLS is the per-node cost of Istio mTLS for 1,000
// Services (4,000 clusters with their DestinationRule subsets) and 20
// client identities on the node, clients=100 (5 pods per identity;
// Kubernetes' default maximum is 110 pods per node) and clients=1000
// (meshgen's node-0):
//
//   - node: what a new node key costs — the node part, its listener (a
//     chain per identity of each chain that reaches a cluster with Istio
//     mTLS) and the node's versions of the clusters (NodePart.MTLSClusters,
//     validation included);
//   - listener: what a node whose pods change but whose identities do not
//     costs (its clusters are kept: they depend on the identity set only).
//
// With protocol=tcp every Service's port is TCP (a chain per Service, each
// split by identity) instead of HTTP (one chain for the port). Reported:
// listener-bytes and chains of the node's listener, node-cluster-bytes
// (the node's clusters) and shared-cluster-bytes (the shared ones).
func BenchmarkNodeIstioMTLS(b *testing.B) {
	for _, protocol := range []string{"http", "tcp"} {
		mesh := meshgen.New(meshgen.Options{Services: 1000, PodsPerService: 3, Nodes: 3, Namespaces: 20, OptIn: true})
		if protocol == "tcp" {
			for _, s := range mesh.Services {
				s.Spec.Ports[0].Name = "tcp"
			}
			mesh.VirtualServices = nil
		}
		bag := mesh.Bag()
		g, shared := New(bag, nil, Options{Istio: IstioOptions{IstioMTLS: true}})
		if d := g.Diagnostics(); d.HasErrors() {
			b.Fatalf("errors: %v", d)
		}
		g.Compact()
		all := g.NodeClasses("node-0")
		if len(all.identities) != 20 {
			b.Fatalf("identities = %d, want 20", len(all.identities))
		}
		for _, clients := range []int{100, 1000} {
			nc := all
			nc.identities = slices.Clone(all.identities)
			n := 0
			for i := range nc.identities {
				id := &nc.identities[i]
				id.Addresses = id.Addresses[:min(len(id.Addresses), clients/len(nc.identities))]
				n += len(id.Addresses)
			}
			if n != clients {
				b.Fatalf("client addresses = %d, want %d", n, clients)
			}
			exists := func(string) bool { return true }
			b.Run("protocol="+protocol+"/clients="+strconv.Itoa(clients)+"/node", func(b *testing.B) {
				var ls []*listenerv3.Listener
				var out []*clusterv3.Cluster
				b.ReportAllocs()
				for b.Loop() {
					np := g.NodePart(nc)
					ls, _ = np.BuildListeners(exists)
					out = np.MTLSClusters(shared.Clusters)
				}
				b.StopTimer()
				if len(out) != 4000 || len(ls) != 1 {
					b.Fatalf("node clusters = %d, want 4000; listeners %d", len(out), len(ls))
				}
				if d := g.Diagnostics(); d.HasErrors() {
					b.Fatalf("errors: %v", d)
				}
				size := func(cs []*clusterv3.Cluster) (n int) {
					for _, c := range cs {
						n += proto.Size(c)
					}
					return n
				}
				b.ReportMetric(float64(proto.Size(ls[0])), "listener-bytes")
				b.ReportMetric(float64(len(ls[0].GetFilterChains())), "chains")
				b.ReportMetric(float64(size(out)), "node-cluster-bytes")
				b.ReportMetric(float64(size(shared.Clusters)), "shared-cluster-bytes")
			})
			b.Run("protocol="+protocol+"/clients="+strconv.Itoa(clients)+"/listener", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					g.NodePart(nc).BuildListeners(exists)
				}
			})
		}
	}
}
