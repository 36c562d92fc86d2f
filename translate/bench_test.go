package translate

import (
	"strconv"
	"testing"

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
