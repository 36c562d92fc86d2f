package istio

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// domainsOf returns the domains of a virtual host of a route configuration.
func domainsOf(rcs []ir.RouteConfig, rc, vh string) []string {
	for _, r := range rcs {
		if r.Name != rc {
			continue
		}
		for _, v := range r.VirtualHosts {
			if v.Name == vh {
				return v.Domains
			}
		}
	}
	return nil
}

// A namespace's class sees the default class's routing unless something
// depends on the client: with Service names unique across the mesh, every
// class shares the default class's route configurations and filter chains.
func TestClassesShareDefaultRouting(t *testing.T) {
	mesh := meshgen.New(meshgen.Options{Services: 12, PodsPerService: 2, Nodes: 2, Namespaces: 3, OptIn: true})
	p := Prepare(mesh.Bag(), Options{})
	classes := p.NodeClasses("node-0")
	if len(classes) != 3 {
		t.Fatalf("node-0 has %d classes, want one per namespace", len(classes))
	}
	for _, cl := range classes {
		r := p.Routing(cl)
		if len(r.RouteConfigs) != 0 || len(r.FilterChains) != 0 {
			t.Errorf("class %s: %d route configurations and %d filter chains of its own, want none", cl.Name, len(r.RouteConfigs), len(r.FilterChains))
		}
	}
	m := p.Node(classes)
	if len(m.RouteConfigs) != len(p.Base.RouteConfigs) || len(m.Listeners[0].FilterChains) != len(p.Base.Listeners[0].FilterChains) {
		t.Error("the node's model is not the default class's")
	}
}

// A short name is the client's own namespace's Service: where two
// namespaces have a Service of the same name, each namespace's class gets
// its own route configuration resolving the name to its Service, and the
// default class (no namespace) has no short name for either.
func TestClassShortNames(t *testing.T) {
	a := meshgen.New(meshgen.Options{Services: 2, PodsPerService: 1, Nodes: 1, Namespaces: 2, OptIn: true, Prefix: "a"})
	b := meshgen.New(meshgen.Options{Services: 1, PodsPerService: 1, Nodes: 1, Namespaces: 1, OptIn: true, Prefix: "b"})
	bag := &input.Bag{}
	for _, o := range slices.Concat(a.Objects(), b.Objects()) {
		bag.Add(o)
	}
	bag.Sort()
	// svc-0 lives in a-0 and b-0; svc-1 only in a-1.
	p := Prepare(bag, Options{})
	compactedNodesMatch(t, bag, "node-0")
	vh0a, vh0b, vh1 := "svc-0.a-0.svc.cluster.local:8080", "svc-0.b-0.svc.cluster.local:8080", "svc-1.a-1.svc.cluster.local:8080"

	if d := domainsOf(p.Base.RouteConfigs, "8080", vh0a); slices.Contains(d, "svc-0") {
		t.Errorf("default class resolves the ambiguous short name: %v", d)
	}
	if d := domainsOf(p.Base.RouteConfigs, "8080", vh1); !slices.Contains(d, "svc-1") {
		t.Errorf("default class lacks the unambiguous short name: %v", d)
	}

	byNS := map[string]*ClassRouting{}
	for _, cl := range p.NodeClasses("node-0") {
		byNS[cl.Namespace] = p.Routing(cl)
	}
	for ns, want := range map[string]string{"a-0": vh0a, "b-0": vh0b} {
		r := byNS[ns]
		if r == nil || len(r.RouteConfigs) != 1 {
			t.Fatalf("class of %s: want one route configuration of its own, got %+v", ns, r)
		}
		rcs := r.RouteConfigs
		for _, vh := range []string{vh0a, vh0b} {
			if got := slices.Contains(domainsOf(rcs, rcs[0].Name, vh), "svc-0"); got != (vh == want) {
				t.Errorf("class of %s: short name svc-0 on %s is %v", ns, vh, got)
			}
		}
		if d := domainsOf(rcs, rcs[0].Name, vh1); !slices.Contains(d, "svc-1") {
			t.Errorf("class of %s lacks the unambiguous short name svc-1: %v", ns, d)
		}
	}
	// a-1 has no colliding name of its own: it sees the default routing.
	if r := byNS["a-1"]; r == nil || len(r.RouteConfigs) != 0 {
		t.Errorf("class of a-1: want the default routing, got %+v", r)
	}
}

// crossNamespace is a mesh where namespaces matter for routing in each of
// the ways a class's namespace enters translation, next to namespaces where
// it does not: a DestinationRule in "clients" for a host in "shop" (client
// namespace precedence), a wildcard one in "ops", a sourceNamespace match
// naming "canary", and plain namespaces with and without labelled pods.
const crossNamespace = `
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.1.10, selector: {app: api}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.1.20, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-from-clients, namespace: clients}
spec:
  host: api.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: ops}
spec:
  host: "*.shop.svc.cluster.local"
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-op}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{sourceNamespace: canary}]
    route: [{destination: {host: api, subset: v2}}]
  - match: [{sourceLabels: {track: beta}}]
    route: [{destination: {host: api, subset: v2}}]
  - route: [{destination: {host: api, subset: v1}}]
`

func crossNamespacePods() []any {
	var out []any
	i := 0
	for _, ns := range []string{"shop", "clients", "ops", "canary", "plain", "other"} {
		out = append(out, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{DataplaneModeLabel: DataplaneModeValue}}})
		for _, labels := range []map[string]string{{"app": "c"}, {"app": "c", "track": "beta"}} {
			i++
			out = append(out, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "c-" + strconv.Itoa(i), Namespace: ns, Labels: labels},
				Spec:       corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "app"}}},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0." + strconv.Itoa(i)},
			})
		}
	}
	return out
}

// The shortcut for namespaces that cannot change routing (routingClass)
// gives every class exactly the routing the full computation gives it.
func TestRoutingClassShortcut(t *testing.T) {
	cases := map[string]func() *input.Bag{
		"meshgen": func() *input.Bag {
			return meshgen.New(meshgen.Options{Services: 30, PodsPerService: 4, Nodes: 2, Namespaces: 5, OptIn: true, EndpointSlices: true}).Bag()
		},
		"cross-namespace": func() *input.Bag {
			l := input.NewLoader("default")
			l.LoadBytes("cross.yaml", []byte(crossNamespace))
			bag := l.Bag()
			for _, o := range crossNamespacePods() {
				bag.Add(o)
			}
			bag.Sort()
			return bag
		},
		"source-classes golden": func() *input.Bag {
			l := input.NewLoader("default")
			if err := l.LoadPath("../testdata/nodes/source-classes.in.yaml"); err != nil {
				t.Fatal(err)
			}
			return l.Bag()
		},
	}
	shortcuts := 0
	for name, bag := range cases {
		t.Run(name, func(t *testing.T) {
			fast, exact := Prepare(bag(), Options{}), Prepare(bag(), Options{})
			exact.exactClasses = true
			for _, node := range []string{"node-0", "node-1", "node-2"} {
				for _, cl := range fast.NodeClasses(node) {
					if fast.routingClass(cl) != cl {
						shortcuts++
					}
					f, e := fast.Routing(cl), exact.Routing(cl)
					if !reflect.DeepEqual(f, e) {
						t.Errorf("%s, class %s: the shortcut gives\n%+v\nthe full computation\n%+v", node, cl.Name, f, e)
					}
				}
				if f, e := fast.Node(fast.NodeClasses(node)), exact.Node(exact.NodeClasses(node)); !reflect.DeepEqual(f, e) {
					t.Errorf("%s: node models differ", node)
				}
			}
		})
	}
	if shortcuts == 0 {
		t.Error("no class took the shortcut: the test proves nothing")
	}
}

func TestRoutingNamespaces(t *testing.T) {
	l := input.NewLoader("default")
	l.LoadBytes("cross.yaml", []byte(crossNamespace))
	p := Prepare(l.Bag(), Options{})
	got := slices.Sorted(maps.Keys(p.routingNamespaces))
	// shop's own DestinationRule is for its own host: shop clients see what
	// everyone sees.
	if want := []string{"canary", "clients", "ops"}; !slices.Equal(got, want) {
		t.Errorf("routing namespaces %v, want %v", got, want)
	}
}

// A sourceLabels match on one app splits only that app's pods off: pods
// whose labels take no part in any match stay in their namespace's class
// (and so share the default class's routing), however many distinct label
// values the cluster has.
func TestSourceLabelsClasses(t *testing.T) {
	mesh := meshgen.New(meshgen.Options{Services: 40, PodsPerService: 3, Nodes: 1, Namespaces: 2, OptIn: true})
	l := input.NewLoader("default")
	l.LoadBytes("vs.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-0, namespace: ns-0}
spec:
  hosts: [svc-0]
  http:
  - match: [{sourceLabels: {app: svc-2, version: v1}}]
    route: [{destination: {host: svc-0, subset: v2}}]
  - route: [{destination: {host: svc-0, subset: v1}}]
`))
	bag := &input.Bag{}
	for _, o := range mesh.Objects() {
		bag.Add(o)
	}
	for _, vs := range l.Bag().VirtualServices {
		bag.Add(vs) // replaces the mesh's own svc-0 VirtualService
	}
	bag.Sort()
	p := Prepare(bag, Options{})
	compactedNodesMatch(t, bag, "node-0")
	var got []string
	routed := 0
	for _, cl := range p.NodeClasses("node-0") {
		got = append(got, cl.Name)
		if r := p.Routing(cl); len(r.RouteConfigs) > 0 {
			routed++
			if cl.Namespace != "ns-0" || cl.Labels["app"] != "svc-2" || cl.Labels["version"] != "v1" {
				t.Errorf("class %s (%v) has routing of its own", cl.Name, cl.Labels)
			}
		}
	}
	// ns-0, ns-1, and svc-2's v1 pods (svc-2 lives in ns-0).
	if len(got) != 3 || routed != 1 {
		t.Errorf("classes %v (%d with routing of their own), want 3 (1)", got, routed)
	}
}

// compactedNodesMatch checks that a compacted translation gives nodes what a
// full one does, less the default class's clusters, endpoints and route
// configurations (which the caller keeps built), and that the route
// configurations it leaves out are exactly the default class's.
func compactedNodesMatch(t *testing.T, bag *input.Bag, nodes ...string) {
	t.Helper()
	full, compact := Prepare(bag, Options{}), Prepare(bag, Options{})
	compact.Compact()
	if compact.Base.Clusters != nil || compact.Base.Endpoints != nil || compact.Base.RouteConfigs != nil {
		t.Error("Compact kept the default class's clusters, endpoints or route configurations")
	}
	for _, node := range nodes {
		want := full.Node(full.NodeClasses(node))
		got := compact.Node(compact.NodeClasses(node))
		var own []ir.RouteConfig
		for _, rc := range want.RouteConfigs {
			if !compact.IsBaseRoute(rc.Name) {
				own = append(own, rc)
			} else if !full.IsBaseRoute(rc.Name) {
				t.Errorf("%s: %s is a class's route configuration, the compacted translation says it is the default class's", node, rc.Name)
			}
		}
		if !reflect.DeepEqual(got.RouteConfigs, own) {
			t.Errorf("%s: compacted class route configurations %v, want %v", node, names(got.RouteConfigs), names(own))
		}
		if !reflect.DeepEqual(got.Listeners, want.Listeners) || !reflect.DeepEqual(got.SourceClasses, want.SourceClasses) {
			t.Errorf("%s: compacted listener or source classes differ", node)
		}
	}
}

func names(rcs []ir.RouteConfig) []string {
	var out []string
	for _, rc := range rcs {
		out = append(out, rc.Name)
	}
	return out
}
