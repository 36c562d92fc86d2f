package translate

import (
	"slices"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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

// BenchmarkNodeIstioMTLS is the per-node step of Istio mTLS: a node's
// versions of the shared clusters with a socket per client identity
// (NodePart.MTLSClusters, validation included) for 1,000 Services (4,000
// clusters with their DestinationRule subsets) and 20 identities on the
// node. The matcher maps every client address of the node, so the cost
// grows with clusters × client pods: clients=100 (5 pods per identity;
// Kubernetes' default maximum is 110 pods per node) and clients=1000
// (meshgen's node-0). node-cluster-bytes is the encoded size of the node's
// clusters, shared-cluster-bytes that of the shared ones.
func BenchmarkNodeIstioMTLS(b *testing.B) {
	bag := meshgen.New(meshgen.Options{Services: 1000, PodsPerService: 3, Nodes: 3, Namespaces: 20, OptIn: true}).Bag()
	g, shared := New(bag, nil, Options{Istio: IstioOptions{IstioMTLS: true}})
	g.Compact()
	nc := g.NodeClasses("node-0")
	if len(nc.identities) != 20 {
		b.Fatalf("identities = %d, want 20", len(nc.identities))
	}
	for _, clients := range []int{100, 1000} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			np := g.NodePart(nc)
			np.Identities = slices.Clone(np.Identities)
			n := 0
			for i := range np.Identities {
				id := &np.Identities[i]
				id.Addresses = id.Addresses[:min(len(id.Addresses), clients/len(np.Identities))]
				n += len(id.Addresses)
			}
			if n != clients {
				b.Fatalf("client addresses = %d, want %d", n, clients)
			}
			var out []*clusterv3.Cluster
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				out = np.MTLSClusters(shared.Clusters)
			}
			b.StopTimer()
			if len(out) != 4000 {
				b.Fatalf("node clusters = %d, want 4000", len(out))
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
			b.ReportMetric(float64(size(out)), "node-cluster-bytes")
			b.ReportMetric(float64(size(shared.Clusters)), "shared-cluster-bytes")
		})
	}
}
