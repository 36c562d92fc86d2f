package translate

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// syntheticMesh is the benchmark mesh of the translator issue: n Services
// with one HTTP port, each with a VirtualService (a header match plus a
// 2-way weighted split, retries and a timeout), a DestinationRule with 3
// subsets, and 30 endpoints (10 per subset).
func syntheticMesh(n int) *input.Bag {
	bag := &input.Bag{}
	for i := range n {
		name := "svc-" + strconv.Itoa(i)
		ns := "ns-" + strconv.Itoa(i%50)
		bag.Services = append(bag.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.%d.%d.%d", 96+i/65536, i/256%256, i%256),
				Selector:  map[string]string{"app": name},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 8080}},
			},
		})
		for p := range 30 {
			bag.Pods = append(bag.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name + "-" + strconv.Itoa(p), Namespace: ns,
					Labels: map[string]string{"app": name, "version": "v" + strconv.Itoa(p%3+1)}},
				Spec:   corev1.PodSpec{NodeName: "node-" + strconv.Itoa(p%10)},
				Status: corev1.PodStatus{PodIP: fmt.Sprintf("10.%d.%d.%d", 128+(i*30+p)/65536, (i*30+p)/256%256, (i*30+p)%256)},
			})
		}
		bag.DestinationRules = append(bag.DestinationRules, &networkingv1.DestinationRule{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: networking.DestinationRule{Host: name, Subsets: []*networking.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
				{Name: "v3", Labels: map[string]string{"version": "v3"}},
			}},
		})
		bag.VirtualServices = append(bag.VirtualServices, &networkingv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: networking.VirtualService{Hosts: []string{name}, Http: []*networking.HTTPRoute{
				{
					Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
						"end-user": {MatchType: &networking.StringMatch_Exact{Exact: "jason"}}}}},
					Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: name, Subset: "v3"}}},
				},
				{
					Route: []*networking.HTTPRouteDestination{
						{Destination: &networking.Destination{Host: name, Subset: "v1"}, Weight: 80},
						{Destination: &networking.Destination{Host: name, Subset: "v2"}, Weight: 20},
					},
					Timeout: durationpb.New(3 * time.Second),
					Retries: &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(time.Second), RetryOn: "5xx,reset"},
				},
			}},
		})
	}
	bag.Sort()
	return bag
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
