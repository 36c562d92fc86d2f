package translate

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/cncf/xds/go/udpa/type/v1" // TypedStruct in Istio's CDS
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
)

// shared is the workplace's reference folder; tests that read it skip when it
// is absent (a user's clone has none).
const shared = "../../shared"

func needShared(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(shared, "conformance")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("skipping: %s not present (conformance data lives outside the repository)", dir)
	}
	return dir
}

// oracleCase pairs Istio's own generated RDS/CDS with the inputs it came from.
type oracleCase struct {
	name   string
	dir    string
	inputs []string
}

func oracleCases(t *testing.T) []oracleCase {
	conf := needShared(t)
	bookinfo := filepath.Join(conf, "istio-bookinfo")
	base := []string{filepath.Join(bookinfo, "platform/kube/bookinfo.yaml"), filepath.Join(bookinfo, "networking/destination-rule-all.yaml")}
	cases := []oracleCase{
		{"bookinfo-baseline", "bookinfo-baseline", base},
		{"bookinfo-reviews-80-20", "bookinfo-reviews-80-20", append(slices.Clone(base), filepath.Join(bookinfo, "networking/virtual-service-reviews-80-20.yaml"))},
		{"bookinfo-reviews-test-v2", "bookinfo-reviews-test-v2", append(slices.Clone(base), filepath.Join(bookinfo, "networking/virtual-service-reviews-test-v2.yaml"))},
		{"bookinfo-ratings-test-delay", "bookinfo-ratings-test-delay", append(slices.Clone(base), filepath.Join(bookinfo, "networking/virtual-service-ratings-test-delay.yaml"))},
		{"bookinfo-ratings-test-abort", "bookinfo-ratings-test-abort", append(slices.Clone(base), filepath.Join(bookinfo, "networking/virtual-service-ratings-test-abort.yaml"))},
	}
	tasks, _ := filepath.Glob(filepath.Join(conf, "istio-oracle/tasks/*/input.yaml"))
	for _, in := range tasks {
		dir := filepath.Dir(in)
		cases = append(cases, oracleCase{"tasks/" + filepath.Base(dir), filepath.Join("tasks", filepath.Base(dir)), []string{in}})
	}
	for i := range cases {
		cases[i].dir = filepath.Join(conf, "istio-oracle", cases[i].dir)
	}
	return cases
}

func readProtoList[T proto.Message](t *testing.T, path string, newT func() T) []T {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, r := range raw {
		m := newT()
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(r, m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// TestIstioOracleRoutes checks that nodemesh makes the same routing decisions
// as Istio's own generator for the same inputs: the same route
// configurations, virtual hosts, route order, matches, destinations and
// weights, timeouts, retry policies, faults, metadata and decorators. The
// intended differences are listed in docs/parity.md and masked here by name.
func TestIstioOracleRoutes(t *testing.T) {
	for _, c := range oracleCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translateFiles(t, c.inputs)
			if res.HasErrors() {
				t.Fatalf("error diagnostics: %v", res.Diagnostics)
			}
			ours := map[string]*routev3.RouteConfiguration{}
			for _, rc := range res.XDS.Routes {
				ours[rc.GetName()] = rc
			}
			for _, want := range readProtoList(t, filepath.Join(c.dir, "rds.json"), func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} }) {
				if strings.HasPrefix(want.GetName(), "inbound|") {
					continue // sidecar inbound routes: a node Envoy has none (docs/parity.md)
				}
				got := ours[want.GetName()]
				if got == nil {
					t.Errorf("route configuration %q missing", want.GetName())
					continue
				}
				compareRouteConfig(t, want, got)
			}
		})
	}
}

func compareRouteConfig(t *testing.T, want, got *routev3.RouteConfiguration) {
	t.Helper()
	if d := cmp.Diff(want.GetValidateClusters(), got.GetValidateClusters(), protocmp.Transform()); d != "" {
		t.Errorf("%s validate_clusters: %s", want.GetName(), d)
	}
	if want.GetMaxDirectResponseBodySizeBytes().GetValue() != got.GetMaxDirectResponseBodySizeBytes().GetValue() {
		t.Errorf("%s max_direct_response_body_size_bytes differs", want.GetName())
	}
	gotVH := map[string]*routev3.VirtualHost{}
	var gotNames []string
	for _, vh := range got.GetVirtualHosts() {
		gotVH[vh.GetName()] = vh
		gotNames = append(gotNames, vh.GetName())
	}
	var wantNames []string
	for _, w := range want.GetVirtualHosts() {
		wantNames = append(wantNames, w.GetName())
		g := gotVH[w.GetName()]
		if g == nil {
			t.Errorf("virtual host %q missing", w.GetName())
			continue
		}
		// Istio lists each name once and relies on ignore_port_in_host_matching;
		// nodemesh also lists name:port (docs/parity.md). Addresses are left out
		// because the inputs have no ClusterIPs.
		for _, d := range w.GetDomains() {
			if _, err := netip.ParseAddr(d); err == nil {
				continue
			}
			if !slices.Contains(g.GetDomains(), d) {
				t.Errorf("virtual host %s lacks domain %q (has %v)", w.GetName(), d, g.GetDomains())
			}
		}
		if w.GetIncludeRequestAttemptCount() != g.GetIncludeRequestAttemptCount() {
			t.Errorf("virtual host %s include_request_attempt_count differs", w.GetName())
		}
		if d := cmp.Diff(w.GetRoutes(), g.GetRoutes(), protocmp.Transform()); d != "" {
			t.Errorf("virtual host %s routes differ from Istio's (-istio +nodemesh):\n%s", w.GetName(), d)
		}
	}
	if d := cmp.Diff(wantNames, gotNames); d != "" {
		t.Errorf("%s virtual hosts differ (-istio +nodemesh):\n%s", want.GetName(), d)
	}
}

// TestIstioOracleClusters checks cluster names, discovery, load balancing,
// circuit breakers, timeouts and metadata against Istio's CDS.
func TestIstioOracleClusters(t *testing.T) {
	for _, c := range oracleCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translateFiles(t, c.inputs)
			ours := map[string]*clusterv3.Cluster{}
			var ourNames []string
			for _, cl := range res.XDS.Clusters {
				ours[cl.GetName()] = cl
				ourNames = append(ourNames, cl.GetName())
			}
			var wantNames []string
			for _, want := range readProtoList(t, filepath.Join(c.dir, "cds.json"), func() *clusterv3.Cluster { return &clusterv3.Cluster{} }) {
				name := want.GetName()
				if strings.HasPrefix(name, "inbound") || name == "InboundPassthroughCluster" {
					continue // sidecar inbound clusters (docs/parity.md)
				}
				wantNames = append(wantNames, name)
				got := ours[name]
				if got == nil {
					t.Errorf("cluster %q missing", name)
					continue
				}
				// Auto-mTLS transport sockets are compared per client, with Istio
				// mTLS on, by TestIstioOracleTransportSockets (this translation has
				// it off); Istio's metadata-exchange filter is an Istio-proxy
				// feature a node Envoy does not use (docs/parity.md).
				w := proto.Clone(want).(*clusterv3.Cluster)
				w.TransportSocketMatches = nil
				w.Filters = nil
				if d := cmp.Diff(w, got, protocmp.Transform()); d != "" {
					t.Errorf("cluster %s differs from Istio's (-istio +nodemesh):\n%s", name, d)
				}
			}
			slices.Sort(wantNames)
			slices.Sort(ourNames)
			if d := cmp.Diff(wantNames, ourNames); d != "" {
				t.Errorf("cluster names differ (-istio +nodemesh):\n%s", d)
			}
		})
	}
}
