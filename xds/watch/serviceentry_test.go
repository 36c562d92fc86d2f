package watch_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// entries are ServiceEntries of every resolution, with hosts of their own
// namespace (the API server is shared).
func entries(ns string) []*networkingv1.ServiceEntry {
	se := func(name string, spec *networking.ServiceEntry) *networkingv1.ServiceEntry {
		o := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		proto.Merge(&o.Spec, spec)
		return o
	}
	h := func(prefix string) string { return prefix + "." + ns + ".example" }
	return []*networkingv1.ServiceEntry{
		se("dns", &networking.ServiceEntry{Hosts: []string{h("dns")}, Resolution: networking.ServiceEntry_DNS,
			Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}, {Number: 443, Name: "https", Protocol: "HTTPS"}}}),
		se("rr", &networking.ServiceEntry{Hosts: []string{h("rr")}, Resolution: networking.ServiceEntry_DNS_ROUND_ROBIN,
			Ports:     []*networking.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}},
			Endpoints: []*networking.WorkloadEntry{{Address: "lb.partner.example"}}}),
		se("static", &networking.ServiceEntry{Hosts: []string{h("static")}, Resolution: networking.ServiceEntry_STATIC,
			Location: networking.ServiceEntry_MESH_INTERNAL, Addresses: []string{"192.0.2.10"},
			Ports: []*networking.ServicePort{{Number: 5432, Name: "tcp-pg", Protocol: "TCP", TargetPort: 15432}, {Number: 8080, Name: "http", Protocol: "HTTP"}},
			Endpoints: []*networking.WorkloadEntry{
				{Address: "192.0.2.21", Locality: "r/z1", Weight: 3},
				{Address: "192.0.2.22", Locality: "r/z2", Ports: map[string]uint32{"http": 9080}},
			}}),
		se("none", &networking.ServiceEntry{Hosts: []string{"*." + h("none")}, Resolution: networking.ServiceEntry_NONE,
			Ports: []*networking.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}, {Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}}}),
	}
}

// xdsOf is what one proxy was sent, by type and name.
type xdsOf map[string]map[string]proto.Message

func collect(t *testing.T, ads *xdstest.ADSClient) xdsOf {
	t.Helper()
	out := xdsOf{}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		out[typ] = map[string]proto.Message{}
		for name, a := range ads.State(typ).Resources {
			m, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
			if err != nil {
				t.Fatalf("%s %s: %v", typ, name, err)
			}
			out[typ][name] = m
		}
	}
	return out
}

// endpointsOf renders an assignment as address:port*weight, sorted.
func endpointsOf(la *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, loc := range la.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d*%d", sa.GetAddress(), sa.GetPortValue(), max(1, lb.GetLoadBalancingWeight().GetValue())))
		}
	}
	slices.Sort(out)
	return out
}

// sniChains lists port/server_name of every filter chain that matches SNI,
// and prefix/port of every chain that matches a destination address, in
// any listener (Istio has one per port, nodemesh one for the node).
func chainMatches(lds map[string]proto.Message, hostSuffix string) []string {
	var out []string
	for _, m := range lds {
		l := m.(*listenerv3.Listener)
		port := l.GetAddress().GetSocketAddress().GetPortValue()
		for _, fc := range l.GetFilterChains() {
			fcm := fc.GetFilterChainMatch()
			p := port
			if fcm.GetDestinationPort() != nil {
				p = fcm.GetDestinationPort().GetValue()
			}
			for _, sn := range fcm.GetServerNames() {
				if strings.HasSuffix(sn, hostSuffix) {
					out = append(out, fmt.Sprintf("sni %s:%d", sn, p))
				}
			}
		}
		// Istio's listener for an entry address is named ADDRESS_PORT.
		if a := l.GetAddress().GetSocketAddress().GetAddress(); a == "192.0.2.10" {
			out = append(out, fmt.Sprintf("address %s/32:%d", a, port))
		}
		for _, fc := range l.GetFilterChains() {
			for _, r := range fc.GetFilterChainMatch().GetPrefixRanges() {
				if r.GetAddressPrefix() == "192.0.2.10" {
					out = append(out, fmt.Sprintf("address %s/%d:%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue(), fc.GetFilterChainMatch().GetDestinationPort().GetValue()))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestServiceEntryIstiodParity creates ServiceEntries of every resolution
// in the API server and asks both istiod (the pinned pilot-discovery, as a
// sidecar of the namespace) and the nodemesh controller (as a node) what
// they serve: the clusters of the entries' hosts (names, discovery types,
// DNS endpoints, EDS endpoints and weights, original-destination port
// overrides), the virtual hosts of their HTTP ports and the SNI and
// address filter chains of their TLS and TCP ports must be the same.
func TestServiceEntryIstiodParity(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := env.InstallIstioCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	istiod := env.StartIstiod(t, kubetest.IstiodOptions{})
	ns := env.Namespace(t, "se", nil)
	for _, se := range entries(ns) {
		if _, err := env.Create(ctx, se); err != nil {
			t.Fatalf("create ServiceEntry %s: %v", se.Name, err)
		}
	}
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	c := startController(t, env.Config, 20*time.Millisecond)

	suffix := "." + ns + ".example"
	ours, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	meta, err := structpb.NewStruct(map[string]any{"NAMESPACE": ns, "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.32.0", "INTERCEPTION_MODE": "REDIRECT"})
	if err != nil {
		t.Fatal(err)
	}
	// istiod's plaintext port: no TLS, no token.
	conn, err := xdstest.Dial(istiod.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	theirs := xdstest.NewADSClientConn(ctx, conn, &corev3.Node{
		Id: "sidecar~10.244.9.9~client." + ns + "~" + ns + ".svc.cluster.local", Metadata: meta,
	}, false, nil)
	defer theirs.Close()
	// Both have every entry cluster (and its endpoints, for EDS).
	want := []string{"outbound|80||dns" + suffix, "outbound|443||rr" + suffix, "outbound|5432||static" + suffix, "outbound|80||*.none" + suffix}
	haveAll := func(s xdstest.States) bool {
		for _, w := range want {
			if s[resourcev3.ClusterType].Resources[w] == nil {
				return false
			}
		}
		return s[resourcev3.EndpointType].Resources["outbound|5432||static"+suffix] != nil && s[resourcev3.RouteType].Resources["80"] != nil
	}
	for name, ads := range map[string]*xdstest.ADSClient{"nodemesh": ours, "istiod": theirs} {
		if err := ads.Wait(ctx, haveAll); err != nil {
			t.Fatalf("%s: %v (clusters %v)", name, err, slices.Sorted(maps.Keys(ads.State(resourcev3.ClusterType).Resources)))
		}
	}
	// istiod may still be adding endpoints; give it a moment to settle.
	time.Sleep(time.Second)
	got, exp := collect(t, ours), collect(t, theirs)

	for name, m := range exp[resourcev3.ClusterType] {
		if !strings.HasSuffix(name, suffix) {
			continue
		}
		ic := m.(*clusterv3.Cluster)
		oc, ok := got[resourcev3.ClusterType][name].(*clusterv3.Cluster)
		if !ok {
			t.Errorf("istiod has cluster %s, nodemesh does not", name)
			continue
		}
		if oc.GetType() != ic.GetType() {
			t.Errorf("%s: type %s, istiod %s", name, oc.GetType(), ic.GetType())
		}
		if o, i := oc.GetOriginalDstLbConfig().GetUpstreamPortOverride().GetValue(), ic.GetOriginalDstLbConfig().GetUpstreamPortOverride().GetValue(); o != i {
			t.Errorf("%s: upstream port override %d, istiod %d", name, o, i)
		}
		if o, i := oc.GetDnsLookupFamily(), ic.GetDnsLookupFamily(); ic.GetType() != clusterv3.Cluster_EDS && o != i {
			t.Errorf("%s: DNS lookup family %s, istiod %s", name, o, i)
		}
		oe, ie := endpointsOf(oc.GetLoadAssignment()), endpointsOf(ic.GetLoadAssignment())
		if ic.GetType() == clusterv3.Cluster_EDS {
			oe = endpointsOf(asCLA(got[resourcev3.EndpointType][name]))
			ie = endpointsOf(asCLA(exp[resourcev3.EndpointType][name]))
		}
		if !slices.Equal(oe, ie) {
			t.Errorf("%s: endpoints %v, istiod %v", name, oe, ie)
		}
	}
	for name := range got[resourcev3.ClusterType] {
		if strings.HasSuffix(name, suffix) && exp[resourcev3.ClusterType][name] == nil {
			t.Errorf("nodemesh has cluster %s, istiod does not", name)
		}
	}

	// Virtual hosts of the entries' HTTP ports: same names, and every
	// domain istiod gives is one of nodemesh's.
	for _, rc := range []string{"80", "8080"} {
		ovh, ivh := vhosts(got[resourcev3.RouteType][rc], suffix), vhosts(exp[resourcev3.RouteType][rc], suffix)
		if !slices.Equal(slices.Sorted(maps.Keys(ovh)), slices.Sorted(maps.Keys(ivh))) {
			t.Errorf("route %s: virtual hosts %v, istiod %v", rc, slices.Sorted(maps.Keys(ovh)), slices.Sorted(maps.Keys(ivh)))
		}
		for name, domains := range ivh {
			for _, d := range domains {
				if !slices.Contains(ovh[name], d) {
					t.Errorf("route %s virtual host %s: istiod's domain %q is not nodemesh's %v (istiod: %v)", rc, name, d, ovh[name], domains)
				}
			}
		}
	}
	if o, i := chainMatches(got[resourcev3.ListenerType], suffix), chainMatches(exp[resourcev3.ListenerType], suffix); !slices.Equal(o, i) {
		t.Errorf("filter chain matches %v, istiod %v", o, i)
	}
}

func asCLA(m proto.Message) *endpointv3.ClusterLoadAssignment {
	la, _ := m.(*endpointv3.ClusterLoadAssignment)
	return la
}

// vhosts are the virtual hosts of a route configuration whose name ends in
// suffix (and a port), with their domains.
func vhosts(m proto.Message, suffix string) map[string][]string {
	out := map[string][]string{}
	rc, _ := m.(*routev3.RouteConfiguration)
	for _, vh := range rc.GetVirtualHosts() {
		host, _, _ := strings.Cut(vh.GetName(), ":")
		if strings.HasSuffix(host, suffix) {
			out[vh.GetName()] = vh.GetDomains()
		}
	}
	return out
}

// TestServiceEntryWorkloadSelectorReadiness: a Pod a ServiceEntry selects
// becomes its endpoint when it turns ready, and stops being one when it
// turns unready. Only readiness changes, which the controller otherwise
// handles as an endpoint-only update of the Services selecting the Pod;
// the entry is no Service, so without a full translation its endpoints
// would stay stale.
func TestServiceEntryWorkloadSelectorReadiness(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.InstallIstioCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t, "sesel", nil)
	host := "legacy." + ns + ".internal"
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: ns}}
	proto.Merge(&se.Spec, &networking.ServiceEntry{Hosts: []string{host}, Resolution: networking.ServiceEntry_STATIC,
		Location: networking.ServiceEntry_MESH_INTERNAL, Addresses: []string{"240.0.0.10"},
		Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "legacy"}}})
	if _, err := env.Create(ctx, se); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Namespace: ns, Labels: map[string]string{"app": "legacy"}},
		Spec: corev1.PodSpec{NodeName: "nowhere", Containers: []corev1.Container{{Name: "app", Image: "example/legacy"}}}}
	created, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setReady := func(status corev1.ConditionStatus) {
		t.Helper()
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.7.7", PodIPs: []corev1.PodIP{{IP: "10.244.7.7"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
		if _, err := env.Client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady(corev1.ConditionFalse)
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	c := startController(t, env.Config, 20*time.Millisecond)
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ads.Close()
	cluster := "outbound|80||" + host
	endpoints := func(want ...string) func(xdstest.States) bool {
		return func(s xdstest.States) bool {
			a := s[resourcev3.EndpointType].Resources[cluster]
			if a == nil {
				return false
			}
			la := &endpointv3.ClusterLoadAssignment{}
			if err := a.UnmarshalTo(la); err != nil {
				return false
			}
			return slices.Equal(endpointsOf(la), want)
		}
	}
	if err := ads.Wait(ctx, endpoints()); err != nil {
		t.Fatalf("no empty assignment of %s while the Pod is unready: %v", cluster, err)
	}
	setReady(corev1.ConditionTrue)
	if err := ads.Wait(ctx, endpoints("10.244.7.7:8080*1")); err != nil {
		t.Fatalf("the ready Pod is not an endpoint of %s: %v", cluster, err)
	}
	setReady(corev1.ConditionFalse)
	if err := ads.Wait(ctx, endpoints()); err != nil {
		t.Fatalf("the unready Pod is still an endpoint of %s: %v", cluster, err)
	}
}
