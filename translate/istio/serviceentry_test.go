package istio

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

var seEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func serviceEntry(name string, age time.Duration, spec *networking.ServiceEntry) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(seEpoch.Add(-age))}}
	proto.Merge(&se.Spec, spec)
	return se
}

func httpEntry(hosts ...string) *networking.ServiceEntry {
	return &networking.ServiceEntry{Hosts: hosts, Resolution: networking.ServiceEntry_NONE,
		Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}}
}

func vsTo(name string, hosts []string, dest string) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(seEpoch)}}
	vs.Spec.Hosts = hosts
	vs.Spec.Http = []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: dest}}}}}
	return vs
}

// render is the whole result of a translation, for comparing runs.
func renderTranslation(t *testing.T, bag *input.Bag, opts Options) string {
	t.Helper()
	m, diags := Translate(bag, opts)
	for i := range diags { // positions come from files; these bags have none
		diags[i].File, diags[i].Line = "", 0
	}
	data, err := json.Marshal(struct {
		M *ir.Model
		D ir.Diagnostics
	}{m, diags})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func diagsAt(diags ir.Diagnostics, ref ir.ResourceRef, field string) []string {
	var out []string
	for _, d := range diags {
		if d.Resource == ref && d.Field == field {
			out = append(out, d.Message)
		}
	}
	return out
}

// Issue 15 §1: a host covered by two wildcard ServiceEntries was credited
// to one of them in map order. Istio picks the most specific pattern
// (MostSpecificHostMatch, pilot/pkg/model/config.go), whatever the order
// of the input; a pattern two entries declare belongs to the older one
// (configCompareByCreationTime).
func TestWildcardEntryMostSpecific(t *testing.T) {
	tests := map[string]struct {
		entries []*networkingv1.ServiceEntry
		host    string
		want    string // the entry the diagnostic names
	}{
		"longer suffix wins": {
			entries: []*networkingv1.ServiceEntry{
				serviceEntry("broad", time.Hour, httpEntry("*.example.com")),
				serviceEntry("narrow", time.Minute, httpEntry("*.api.example.com")),
				serviceEntry("other", 2*time.Hour, httpEntry("*.com")),
			},
			host: "v1.api.example.com",
			want: "ServiceEntry default/narrow",
		},
		"longer suffix wins, whatever the names sort as": {
			entries: []*networkingv1.ServiceEntry{
				serviceEntry("a", time.Hour, httpEntry("*.example.com")),
				serviceEntry("z", time.Minute, httpEntry("*.zz.example.com")),
			},
			host: "v1.zz.example.com",
			want: "ServiceEntry default/z",
		},
		"same pattern: the older entry": {
			entries: []*networkingv1.ServiceEntry{
				serviceEntry("young", time.Minute, httpEntry("*.example.com")),
				serviceEntry("old", time.Hour, httpEntry("*.example.com")),
			},
			host: "v1.example.com",
			want: "ServiceEntry default/old",
		},
		"same pattern and age: by name": {
			entries: []*networkingv1.ServiceEntry{
				serviceEntry("b", time.Hour, httpEntry("*.example.com")),
				serviceEntry("a", time.Hour, httpEntry("*.example.com")),
			},
			host: "v1.example.com",
			want: "ServiceEntry default/a",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var first string
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 20 {
				entries := slices.Clone(tc.entries)
				rng.Shuffle(len(entries), func(a, b int) { entries[a], entries[b] = entries[b], entries[a] })
				// One VirtualService names the host in hosts, one as a
				// destination (of the Service web it routes).
				bag := &input.Bag{ServiceEntries: entries, Services: []*corev1.Service{k8sService("web", "10.96.0.1", 80)},
					VirtualServices: []*networkingv1.VirtualService{vsTo("vs", []string{tc.host}, tc.host), vsTo("web", []string{"web"}, tc.host)}}
				_, diags := Translate(bag, Options{})
				for _, at := range []struct{ vs, field string }{{"vs", "spec.hosts[0]"}, {"web", "spec.http[0].route[0].destination.host"}} {
					msgs := diagsAt(diags, ir.ResourceRef{Kind: "VirtualService", Namespace: "default", Name: at.vs}, at.field)
					if len(msgs) != 1 || !strings.Contains(msgs[0], tc.want) {
						t.Fatalf("order %d: %s %s: diagnostics %q, want one naming %s", i, at.vs, at.field, msgs, tc.want)
					}
				}
				out := renderTranslation(t, bag, Options{})
				if i == 0 {
					first = out
				} else if out != first {
					t.Fatalf("order %d: the translation differs from the first order's", i)
				}
			}
		})
	}
}

// A host two entries declare is served once, by the older entry; the
// younger is told. A Kubernetes Service's host is never taken by an entry.
func TestEntryHostConflicts(t *testing.T) {
	old := serviceEntry("old", time.Hour, httpEntry("api.example.com"))
	young := serviceEntry("young", time.Minute, httpEntry("api.example.com"))
	young.Spec.Resolution = networking.ServiceEntry_DNS
	shadow := serviceEntry("shadow", time.Hour, httpEntry("web.default.svc.cluster.local"))
	bag := &input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{young, shadow, old}, Services: []*corev1.Service{k8sService("web", "10.96.0.1", 80)}}
	m, diags := Translate(bag, Options{})
	c := clusterNamed(m, "outbound|80||api.example.com")
	if c == nil || c.Discovery != ir.DiscoveryOriginalDst {
		t.Fatalf("api.example.com: cluster %+v, want the older entry's (resolution NONE: ORIGINAL_DST)", c)
	}
	if msgs := diagsAt(diags, ir.ResourceRef{Kind: "ServiceEntry", Namespace: "default", Name: "young"}, "spec.hosts[0]"); len(msgs) != 1 || !strings.Contains(msgs[0], "ServiceEntry default/old") {
		t.Errorf("young entry: diagnostics %q, want a conflict naming the older entry", msgs)
	}
	if c := clusterNamed(m, "outbound|80||web.default.svc.cluster.local"); c == nil || c.Discovery != ir.DiscoveryEDS || c.Service.Name != "web" {
		t.Errorf("web: cluster %+v, want the Kubernetes Service's", c)
	}
	if msgs := diagsAt(diags, ir.ResourceRef{Kind: "ServiceEntry", Namespace: "default", Name: "shadow"}, "spec.hosts[0]"); len(msgs) != 1 {
		t.Errorf("shadowing entry: diagnostics %q, want a conflict", msgs)
	}
}

func k8sService(name, ip string, port int32) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{{Name: "http", Port: port}}}}
}

func clusterNamed(m *ir.Model, name string) *ir.Cluster {
	for i := range m.Clusters {
		if m.Clusters[i].Name == name {
			return &m.Clusters[i]
		}
	}
	return nil
}

// Istio's convertResolution for a sidecar, and the endpoints each
// resolution gets (convertServiceEntryToInstances).
func TestEntryResolution(t *testing.T) {
	tests := map[string]struct {
		spec      *networking.ServiceEntry
		discovery ir.Discovery
		lb        ir.LBPolicy
		// assignment: the DNS cluster's endpoints or the EDS ones.
		assignment []ir.Endpoint
		origDst    uint32
	}{
		"NONE": {
			spec:      httpEntry("a.example"),
			discovery: ir.DiscoveryOriginalDst, lb: ir.LBClusterProvided,
		},
		"NONE with targetPort": {
			spec: &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_NONE,
				Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}}},
			discovery: ir.DiscoveryOriginalDst, lb: ir.LBClusterProvided, origDst: 8080,
		},
		"DNS without endpoints resolves the host": {
			spec: &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_DNS,
				Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8443}}},
			discovery: ir.DiscoveryStrictDNS, lb: ir.LBLeastRequest,
			assignment: []ir.Endpoint{{Address: "a.example", Port: 8443}},
		},
		"DNS with endpoints": {
			spec: &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_DNS,
				Ports:     []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Endpoints: []*networking.WorkloadEntry{{Address: "b.example", Ports: map[string]uint32{"http": 81}, Weight: 2}, {Address: "c.example"}}},
			discovery: ir.DiscoveryStrictDNS, lb: ir.LBLeastRequest,
			assignment: []ir.Endpoint{{Address: "b.example", Port: 81, Weight: 2}, {Address: "c.example", Port: 80}},
		},
		"DNS_ROUND_ROBIN": {
			spec: &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_DNS_ROUND_ROBIN,
				Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}},
			discovery: ir.DiscoveryLogicalDNS, lb: ir.LBLeastRequest,
			assignment: []ir.Endpoint{{Address: "a.example", Port: 80}},
		},
		"STATIC": {
			spec: &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_STATIC,
				Ports:     []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 9090}},
				Endpoints: []*networking.WorkloadEntry{{Address: "192.0.2.1", Locality: "r/z/s"}}},
			discovery: ir.DiscoveryEDS, lb: ir.LBLeastRequest,
			assignment: []ir.Endpoint{{Address: "192.0.2.1", Port: 9090, Zone: "z"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, diags := Translate(&input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("e", 0, tc.spec)}}, Options{})
			if diags.HasErrors() {
				t.Fatalf("errors: %v", diags)
			}
			c := clusterNamed(m, "outbound|80||a.example")
			if c == nil {
				t.Fatal("no cluster outbound|80||a.example")
			}
			if c.Discovery != tc.discovery || c.LoadBalancer.Policy != tc.lb || c.OriginalDstPort != tc.origDst {
				t.Errorf("cluster: discovery %s lb %s port override %d, want %s %s %d", c.Discovery, c.LoadBalancer.Policy, c.OriginalDstPort, tc.discovery, tc.lb, tc.origDst)
			}
			got := c.LoadAssignment
			if c.Discovery == ir.DiscoveryEDS {
				for _, ce := range m.Endpoints {
					if ce.Cluster == c.Name {
						got = ce.Endpoints
					}
				}
			}
			if !slices.Equal(got, tc.assignment) {
				t.Errorf("endpoints %+v, want %+v", got, tc.assignment)
			}
		})
	}
}

// What Istio's validation rejects is an error and the entry is left out:
// nothing of it is served. Resolutions and fields nodemesh cannot
// translate are warnings that name them.
func TestEntryValidation(t *testing.T) {
	port := []*networking.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}
	tests := map[string]struct {
		spec     *networking.ServiceEntry
		severity ir.Severity
		field    string
	}{
		"no hosts":              {&networking.ServiceEntry{Ports: port}, ir.SeverityError, "spec.hosts"},
		"no ports":              {&networking.ServiceEntry{Hosts: []string{"a.example"}}, ir.SeverityError, "spec.ports"},
		"bad address":           {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Addresses: []string{"nope"}}, ir.SeverityError, "spec.addresses[0]"},
		"inner wildcard":        {&networking.ServiceEntry{Hosts: []string{"a.*.example"}, Ports: port}, ir.SeverityError, "spec.hosts[0]"},
		"STATIC with host name": {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Resolution: networking.ServiceEntry_STATIC, Endpoints: []*networking.WorkloadEntry{{Address: "b.example"}}}, ir.SeverityError, "spec.endpoints[0].address"},
		"DNS wildcard":          {&networking.ServiceEntry{Hosts: []string{"*.example"}, Ports: port, Resolution: networking.ServiceEntry_DNS}, ir.SeverityError, "spec.hosts[0]"},
		"DNS_ROUND_ROBIN two endpoints": {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Resolution: networking.ServiceEntry_DNS_ROUND_ROBIN,
			Endpoints: []*networking.WorkloadEntry{{Address: "b.example"}, {Address: "c.example"}}}, ir.SeverityError, "spec.endpoints"},
		"empty workloadSelector": {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Resolution: networking.ServiceEntry_STATIC, WorkloadSelector: &networking.WorkloadSelector{}}, ir.SeverityError, "spec.workloadSelector.labels"},
		"unix endpoint":          {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Resolution: networking.ServiceEntry_STATIC, Endpoints: []*networking.WorkloadEntry{{Address: "unix:///sock"}}}, ir.SeverityError, "spec.endpoints[0].address"},
		"DYNAMIC_DNS":            {&networking.ServiceEntry{Hosts: []string{"a.example"}, Ports: port, Resolution: networking.ServiceEntry_DYNAMIC_DNS}, ir.SeverityWarning, "spec.resolution"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, diags := Translate(&input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("e", 0, tc.spec)}}, Options{})
			found := false
			for _, d := range diags {
				if d.Field == tc.field && d.Severity == tc.severity {
					found = true
				}
			}
			if !found {
				t.Errorf("no %s at %s in %v", tc.severity, tc.field, diags)
			}
			for _, c := range m.Clusters {
				if c.Service != nil {
					t.Errorf("cluster %s of a rejected entry", c.Name)
				}
			}
		})
	}
}

// An entry naming a Service's ClusterIP and port must not take that
// Service's traffic: the Service keeps its address chain and its Host
// domains, whatever the names sort as, and the entry is the conflict.
func TestEntryCannotTakeServiceAddress(t *testing.T) {
	spec := &networking.ServiceEntry{Hosts: []string{"a.example"}, Addresses: []string{"10.96.0.1"}, Resolution: networking.ServiceEntry_NONE,
		Ports: []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP"}, {Number: 80, Name: "http", Protocol: "HTTP"}}}
	svc := k8sService("payments", "10.96.0.1", 5432)
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http", Port: 80})
	svc.Spec.Ports[0].Name = "tcp"
	m, diags := Translate(&input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("grab", 0, spec)}, Services: []*corev1.Service{svc}}, Options{})
	var chain *ir.FilterChain
	for i, fc := range m.Listeners[0].FilterChains {
		if fc.Match.DestinationPort == 5432 && slices.Contains(fc.Match.DestinationPrefixes, "10.96.0.1/32") {
			chain = &m.Listeners[0].FilterChains[i]
		}
	}
	if chain == nil || chain.TCP.Destinations[0].Cluster != "outbound|5432||payments.default.svc.cluster.local" {
		t.Errorf("chain of 10.96.0.1:5432: %+v, want the Service's", chain)
	}
	for _, rc := range m.RouteConfigs {
		for _, vh := range rc.VirtualHosts {
			if slices.Contains(vh.Domains, "10.96.0.1") && vh.Name != "payments.default.svc.cluster.local:80" {
				t.Errorf("virtual host %s answers the Service's address", vh.Name)
			}
		}
	}
	if msgs := diagsAt(diags, ir.ResourceRef{Kind: "ServiceEntry", Namespace: "default", Name: "grab"}, "spec.ports[0]"); len(msgs) == 0 {
		t.Error("no conflict reported on the entry")
	}
}

// DNS_ROUND_ROBIN whose workloadSelector selects no ready Pod: Envoy
// rejects a LOGICAL_DNS cluster without an endpoint (and the CDS update
// with it), so the cluster is an empty STRICT_DNS one.
func TestLogicalDNSWithoutEndpoints(t *testing.T) {
	spec := &networking.ServiceEntry{Hosts: []string{"a.example"}, Resolution: networking.ServiceEntry_DNS_ROUND_ROBIN,
		Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "none"}}}
	m, _ := Translate(&input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("e", 0, spec)}}, Options{})
	c := clusterNamed(m, "outbound|80||a.example")
	if c == nil || c.Discovery != ir.DiscoveryStrictDNS || len(c.LoadAssignment) != 0 {
		t.Errorf("cluster %+v, want an empty STRICT_DNS cluster", c)
	}
}

// An entry's name is its host: a dotless host does not count as a second
// Service of that short name, so the Service keeps its short domain.
func TestEntryHostIsNoShortName(t *testing.T) {
	m, _ := Translate(&input.Bag{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("e", 0, httpEntry("web"))},
		Services: []*corev1.Service{k8sService("web", "10.96.0.1", 80)}}, Options{})
	if d := domainsOf(m.RouteConfigs, "80", "web.default.svc.cluster.local:80"); !slices.Contains(d, "web") {
		t.Errorf("Service web's domains %v lack its short name", d)
	}
}
