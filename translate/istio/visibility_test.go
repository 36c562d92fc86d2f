package istio

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// visibilityBase is the mesh of the visibility tests: api in namespace a
// (pods v1 and v2), clients in a, b and c, and the root namespace; all
// opted in, so each namespace can be a class.
const visibilityBase = `
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: c, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: a}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-v1, namespace: a, labels: {app: api, version: v1}}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-v2, namespace: a, labels: {app: api, version: v2}}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.3}
`

const apiHost = "api.a.svc.cluster.local"

// visibilityBag is the base mesh plus extra documents.
func visibilityBag(t *testing.T, extra string) *input.Bag {
	t.Helper()
	l := input.NewLoader("default")
	l.LoadBytes("mesh.yaml", []byte(visibilityBase+"\n---\n"+extra))
	if ds := l.Diagnostics(); ds.HasErrors() {
		t.Fatalf("input: %v", ds)
	}
	return l.Bag()
}

// dr is a DestinationRule for api with a subset named after it.
func dr(ns, name, host, exportTo string) string {
	s := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\n" +
		"spec:\n  host: \"" + host + "\"\n  subsets: [{name: " + name + ", labels: {version: v1}}]\n"
	if exportTo != "" {
		s += "  exportTo: " + exportTo + "\n"
	}
	return s + "---\n"
}

// vs is a VirtualService for api that sends everything to its own name
// as a header (the route tells which VirtualService a class sees).
func vs(ns, name, exportTo string) string {
	s := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: " + ns + "}\n" +
		"spec:\n  hosts: [" + apiHost + "]\n  http: [{route: [{destination: {host: " + apiHost + "}}]}]\n"
	if exportTo != "" {
		s += "  exportTo: " + exportTo + "\n"
	}
	return s + "---\n"
}

// The DestinationRule each client namespace sees for api, against Istio's
// PushContext.destinationRule (pilot/pkg/model/push_context.go) with the
// exportTo indexes of setDestinationRules. "" is the default class (no
// namespace); "-" means no DestinationRule.
func TestDestinationRuleVisibility(t *testing.T) {
	cases := map[string]struct {
		input string
		opts  Options
		want  map[string]string // client namespace → DestinationRule
	}{
		"client namespace first": {
			input: dr("b", "byb", apiHost, "") + dr("a", "bya", apiHost, ""),
			want:  map[string]string{"": "a/bya", "a": "a/bya", "b": "b/byb", "c": "a/bya"},
		},
		"client namespace rule with exportTo dot": {
			input: dr("b", "byb", apiHost, `["."]`),
			want:  map[string]string{"": "-", "a": "-", "b": "b/byb", "c": "-"},
		},
		"private rule in the service namespace": {
			input: dr("a", "bya", apiHost, `["."]`),
			want:  map[string]string{"": "-", "a": "a/bya", "b": "-", "c": "-"},
		},
		// Istio's namespaceLocal holds a rule exported to ".", "*" or its
		// own namespace: exported to b only, a's own clients do not see it.
		"exported by name": {
			input: dr("a", "bya", apiHost, `["b"]`),
			want:  map[string]string{"": "-", "a": "-", "b": "a/bya", "c": "-"},
		},
		"exported to star": {
			input: dr("a", "bya", apiHost, `["*"]`),
			want:  map[string]string{"": "a/bya", "a": "a/bya", "b": "a/bya", "c": "a/bya"},
		},
		// The most specific exported rule of the Service's namespace is
		// not exported to c: a less specific one does not replace it
		// (getExportedDestinationRuleFromNamespace), c falls to the root.
		"most specific not exported hides the wildcard": {
			input: dr("a", "exact", apiHost, `["b"]`) + dr("a", "wild", "*.a.svc.cluster.local", "") + dr("istio-system", "mesh", "*.local", ""),
			want:  map[string]string{"": "istio-system/mesh", "a": "a/wild", "b": "a/exact", "c": "istio-system/mesh"},
		},
		"root namespace public": {
			input: dr("istio-system", "mesh", "*.local", ""),
			want:  map[string]string{"": "istio-system/mesh", "a": "istio-system/mesh", "b": "istio-system/mesh", "istio-system": "istio-system/mesh"},
		},
		// A private root rule applies to the root namespace's own clients
		// only (rootNamespaceLocal).
		"root namespace private": {
			input: dr("istio-system", "mesh", "*.local", `["."]`),
			want:  map[string]string{"": "-", "a": "-", "b": "-", "istio-system": "istio-system/mesh"},
		},
		"mesh default dot": {
			input: dr("a", "bya", apiHost, "") + dr("c", "byc", apiHost, `["*"]`),
			opts:  Options{DefaultDestinationRuleExportTo: []string{"."}},
			want:  map[string]string{"": "-", "a": "a/bya", "b": "-", "c": "c/byc"},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := Prepare(visibilityBag(t, c.input), c.opts)
			s := p.t.services[apiHost]
			for ns, want := range c.want {
				got := p.t.destinationRule(s, ns).ID()
				if got == "" {
					got = "-"
				}
				if got != want {
					t.Errorf("client namespace %q sees %s, want %s", ns, got, want)
				}
			}
		})
	}
}

// A DestinationRule in the client's namespace shapes that client's
// clusters (Istio applies it to the sidecar's outbound|8080|v1|api
// cluster): subsets are defined for the class's routes, which point at the
// class's variant of the cluster, and the variant carries the rule's
// traffic policy; the default class's clusters keep Istio's names and the
// rule it sees.
func TestClientNamespaceDestinationRuleShapesClusters(t *testing.T) {
	bag := visibilityBag(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-for-b, namespace: b}
spec:
  host: api.a.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 7}}
    outlierDetection: {consecutive5xxErrors: 3}
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-v1, namespace: b}
spec:
  hosts: [api.a.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: api.a.svc.cluster.local, subset: v1}}]}]
`)
	p := Prepare(bag, Options{})
	if ds := p.Diagnostics(); ds.HasErrors() {
		t.Errorf("diagnostics: %v", ds)
	}
	clusters := map[string]ir.Cluster{}
	for _, c := range p.Base.Clusters {
		clusters[c.Name] = c
	}
	istioName := ir.OutboundClusterName(8080, "", apiHost)
	if c, ok := clusters[istioName]; !ok || c.LoadBalancer.Policy != ir.LBLeastRequest || c.Outlier != nil {
		t.Errorf("Istio-named cluster %s: %+v, want the default class's (least request, no outlier detection)", istioName, c)
	}
	if _, ok := clusters[ir.OutboundClusterName(8080, "v1", apiHost)]; ok {
		t.Errorf("the default class sees no subset v1, yet it has Istio's cluster for it")
	}

	var b *Class
	for _, cl := range p.NodeClasses("node-0") {
		if cl.Namespace == "b" {
			b = cl
		}
	}
	if b == nil {
		t.Fatal("no class for namespace b")
	}
	r := p.Routing(b)
	cluster := ""
	for _, rc := range r.RouteConfigs {
		for _, vh := range rc.VirtualHosts {
			if vh.Name == ir.VirtualHostName(apiHost, 8080) && len(vh.Routes) > 0 && vh.Routes[0].Forward != nil {
				cluster = vh.Routes[0].Forward.Destinations[0].Cluster
			}
		}
	}
	c, ok := clusters[cluster]
	if !ok {
		t.Fatalf("class b routes api to %q, which is not a cluster (have %v)", cluster, clusterNames(p.Base.Clusters))
	}
	if c.Subset != "v1" || c.LoadBalancer.Policy != ir.LBRoundRobin || c.CircuitBreaker.MaxConnections != 7 || c.Outlier == nil {
		t.Errorf("class b's cluster %s: subset %q, %+v, outlier %v; want subset v1 with b's rule (round robin, 7 connections, outlier detection)",
			cluster, c.Subset, c.LoadBalancer, c.Outlier)
	}
	if !strings.HasPrefix(cluster, "outbound|8080|v1~") || !strings.HasSuffix(cluster, "|"+apiHost) {
		t.Errorf("class b's cluster is named %s, want outbound|8080|v1~<tag>|%s", cluster, apiHost)
	}
	var eps []string
	for _, ce := range p.Base.Endpoints {
		if ce.Cluster == cluster {
			for _, e := range ce.Endpoints {
				eps = append(eps, e.Address)
			}
		}
	}
	if !slices.Equal(eps, []string{"10.244.0.1"}) {
		t.Errorf("class b's subset cluster has endpoints %v, want api-v1's only", eps)
	}
	// The endpoint-only path recomputes the variant's assignment too.
	_, changed, ok := p.WithEndpoints(bag, []string{"a/api"})
	if !ok || !slices.ContainsFunc(changed, func(ce ir.ClusterEndpoints) bool { return ce.Cluster == cluster }) {
		t.Errorf("WithEndpoints (ok %v) did not recompute %s", ok, cluster)
	}
}

func clusterNames(cs []ir.Cluster) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// The VirtualService that routes api for each client namespace, against
// Istio's virtualServiceIndex (initVirtualServices) and
// VirtualServicesForGateway: private, then exported by name, then public.
func TestVirtualServiceVisibility(t *testing.T) {
	cases := map[string]struct {
		input string
		opts  Options
		want  map[string]string // client namespace → VirtualService ("-": none)
	}{
		"exportTo dot": {
			input: vs("a", "private", `["."]`),
			want:  map[string]string{"": "-", "a": "private", "b": "-", "c": "-"},
		},
		"exportTo a named namespace": {
			input: vs("a", "tob", `["b"]`),
			want:  map[string]string{"": "-", "a": "-", "b": "tob", "c": "-"},
		},
		"exportTo star": {
			input: vs("a", "public", `["*"]`),
			want:  map[string]string{"": "public", "a": "public", "b": "public", "c": "public"},
		},
		"private before exported before public": {
			input: vs("a", "public", "") + vs("c", "toB", `["b"]`) + vs("b", "own", `["."]`),
			want:  map[string]string{"": "public", "a": "public", "b": "own", "c": "public"},
		},
		"exported before public": {
			input: vs("a", "public", "") + vs("c", "tob", `["b"]`),
			want:  map[string]string{"": "public", "b": "tob", "c": "public"},
		},
		"mesh default dot": {
			input: vs("a", "nodefault", ""),
			opts:  Options{DefaultVirtualServiceExportTo: []string{"."}},
			want:  map[string]string{"": "-", "a": "nodefault", "b": "-"},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := Prepare(visibilityBag(t, c.input), c.opts)
			s := p.t.services[apiHost]
			for ns, want := range c.want {
				got := "-"
				if v := p.t.vsFor(ns)[s]; v != nil {
					got = v.obj.Name
				}
				if got != want {
					t.Errorf("client namespace %q is routed by %s, want %s", ns, got, want)
				}
				// The route configuration agrees.
				cl := &Class{Name: ns, Namespace: ns}
				if ns == "" {
					cl = DefaultClass()
				}
				origin := "-"
				for _, rc := range p.t.routeConfigs(cl) {
					for _, vh := range rc.VirtualHosts {
						if vh.Name == ir.VirtualHostName(apiHost, 8080) && vh.Origin != nil {
							origin = vh.Origin.Name
						}
					}
				}
				if origin != want {
					t.Errorf("client namespace %q: the route configuration's virtual host comes from %s, want %s", ns, origin, want)
				}
			}
		})
	}
}

// The Service's networking.istio.io/exportTo annotation (and the mesh's
// defaultServiceExportTo) decide which clients have a virtual host for it
// (Istio's IsServiceVisible); the others pass through as on a sidecar that
// does not know the Service.
func TestServiceExportTo(t *testing.T) {
	cases := map[string]struct {
		annotation string
		opts       Options
		want       map[string]bool
	}{
		"none":         {want: map[string]bool{"": true, "a": true, "b": true}},
		"dot":          {annotation: ".", want: map[string]bool{"": false, "a": true, "b": false}},
		"named":        {annotation: "b, c", want: map[string]bool{"": false, "a": false, "b": true, "c": true}},
		"star":         {annotation: "*", want: map[string]bool{"": true, "a": true, "b": true}},
		"tilde":        {annotation: "~", want: map[string]bool{"": false, "a": false, "b": false}},
		"mesh default": {opts: Options{DefaultServiceExportTo: []string{"."}}, want: map[string]bool{"": false, "a": true, "b": false}},
		"annotation wins over the mesh default": {annotation: "*", opts: Options{DefaultServiceExportTo: []string{"."}},
			want: map[string]bool{"": true, "b": true}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			bag := visibilityBag(t, "")
			if c.annotation != "" {
				bag.Services[0].Annotations = map[string]string{serviceExportToAnnotation: c.annotation}
			}
			p := Prepare(bag, c.opts)
			for ns, want := range c.want {
				cl := &Class{Name: ns, Namespace: ns}
				if ns == "" {
					cl = DefaultClass()
				}
				got := false
				for _, rc := range p.t.routeConfigs(cl) {
					for _, vh := range rc.VirtualHosts {
						got = got || vh.Name == ir.VirtualHostName(apiHost, 8080)
					}
				}
				if got != want {
					t.Errorf("client namespace %q has a virtual host for api: %v, want %v", ns, got, want)
				}
			}
		})
	}
}

// exportTo values Istio's validation rejects make the resource invalid:
// an error, and the resource is ignored (it would not exist in Istio).
func TestExportToValidation(t *testing.T) {
	cases := map[string]struct {
		exportTo string
		valid    bool
	}{
		"dot":                  {`["."]`, true},
		"star":                 {`["*"]`, true},
		"namespaces":           {`[".", "b", "c"]`, true},
		"tilde":                {`["~"]`, false},
		"star and another":     {`["*", "b"]`, false},
		"dot and own":          {`[".", "a"]`, false},
		"duplicate":            {`["b", "b"]`, false},
		"not a namespace name": {`["Not_A_Namespace"]`, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := Prepare(visibilityBag(t, dr("a", "rule", apiHost, c.exportTo)+vs("a", "route", c.exportTo)), Options{})
			for _, kind := range []string{"DestinationRule", "VirtualService"} {
				bad := slices.ContainsFunc(p.Diagnostics(), func(d ir.Diagnostic) bool {
					return d.Severity == ir.SeverityError && d.Resource.Kind == kind && d.Field == "spec.exportTo"
				})
				if bad == c.valid {
					t.Errorf("%s with exportTo %s: error %v, want %v", kind, c.exportTo, bad, !c.valid)
				}
			}
			kept := p.t.destinationRule(p.t.services[apiHost], "b").ID() != "" || len(p.t.vss) > 0
			if !c.valid && kept {
				t.Errorf("an invalid resource was kept")
			}
		})
	}
}

// The routingNamespaces shortcut stays exact with exportTo: namespaces
// that a VirtualService, DestinationRule or Service names (or whose "."
// they use) compute their routing; any other namespace's class gets the
// default class's, and that is what the full computation gives it.
func TestRoutingClassShortcutExportTo(t *testing.T) {
	extra := `
apiVersion: v1
kind: Namespace
metadata: {name: d, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Pod
metadata: {name: client-c, namespace: c}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: client-d, namespace: d}
spec: {nodeName: node-0, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: c, annotations: {networking.istio.io/exportTo: "."}}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8080}]
---
` + vs("a", "tob", `["b"]`) + dr("a", "toc", apiHost, `["c"]`) + dr("a", "all", apiHost, "")
	fast, exact := Prepare(visibilityBag(t, extra), Options{}), Prepare(visibilityBag(t, extra), Options{})
	exact.exactClasses = true
	shortcuts := 0
	for _, cl := range fast.NodeClasses("node-0") {
		if fast.routingClass(cl) != cl {
			shortcuts++
		}
		if f, e := fast.Routing(cl), exact.Routing(cl); !reflect.DeepEqual(f, e) {
			t.Errorf("class %s: the shortcut gives\n%+v\nthe full computation\n%+v", cl.Name, f, e)
		}
	}
	if shortcuts == 0 {
		t.Error("no class took the shortcut: the test proves nothing")
	}
	if got, want := slices.Sorted(maps.Keys(fast.routingNamespaces)), []string{"b", "c"}; !slices.Equal(got, want) {
		t.Errorf("routing namespaces %v, want %v", got, want)
	}
}

// A VirtualService that a class sees but whose destination Service is not
// exported to it: Istio's proxy has no cluster for it (503 NC); nodemesh
// leaves the rule out for that class, as for a missing host, and never
// sends the class to the hidden Service.
func TestDestinationNotExportedToClass(t *testing.T) {
	bag := visibilityBag(t, `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: c}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: c}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: api.a.svc.cluster.local}}]}]
`)
	for _, s := range bag.Services {
		if s.Name == "api" {
			s.Annotations = map[string]string{serviceExportToAnnotation: "."}
		}
	}
	p := Prepare(bag, Options{})
	webVH := ir.VirtualHostName("web.c.svc.cluster.local", 8080)
	for ns, want := range map[string]bool{"a": true, "b": false, "": false} {
		cl := &Class{Name: ns, Namespace: ns}
		if ns == "" {
			cl = DefaultClass()
		}
		toAPI := false
		for _, rc := range p.t.routeConfigs(cl) {
			for _, vh := range rc.VirtualHosts {
				for _, r := range vh.Routes {
					if vh.Name == webVH && r.Forward != nil && strings.HasSuffix(r.Forward.Destinations[0].Cluster, "|"+apiHost) {
						toAPI = true
					}
				}
			}
		}
		if toAPI != want {
			t.Errorf("clients of namespace %q routed from web to api: %v, want %v", ns, toAPI, want)
		}
	}
}

// A TCP Service not exported to a class: its connections pass through, as
// on a sidecar that has no listener for it; the classes that see it are
// proxied to its cluster.
func TestTCPServiceExportTo(t *testing.T) {
	bag := visibilityBag(t, `
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a, annotations: {networking.istio.io/exportTo: "."}}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: tcp, port: 5432}]
`)
	p := Prepare(bag, Options{})
	for ns, want := range map[string]string{"a": ir.OutboundClusterName(5432, "", "db.a.svc.cluster.local"), "b": ir.PassthroughCluster, "": ir.PassthroughCluster} {
		cl := &Class{Name: ns, Namespace: ns}
		if ns == "" {
			cl = DefaultClass()
		}
		got := "-"
		for _, fc := range p.t.listener(cl).FilterChains {
			if fc.Name == ir.TCPFilterChainName("10.96.0.12", 5432) {
				got = fc.TCP.Destinations[0].Cluster
			}
		}
		if got != want {
			t.Errorf("clients of namespace %q: db's chain goes to %s, want %s", ns, got, want)
		}
	}
}

// TestServiceEntryExportTo: a ServiceEntry's hosts are visible per source
// class as its exportTo (or the mesh's defaultServiceExportTo) says, as a
// Service's are: the HTTP virtual host and the SNI chain of a TLS port.
// "~" alone is valid on an entry (Istio's ValidateExportTo); a value Istio
// rejects makes the entry an error, left out.
func TestServiceEntryExportTo(t *testing.T) {
	const host = "pay.example.com"
	entry := func(exportTo string) string {
		s := "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: pay, namespace: a}\n" +
			"spec:\n  hosts: [" + host + "]\n  location: MESH_EXTERNAL\n  resolution: DNS\n" +
			"  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: tls, protocol: TLS}]\n"
		if exportTo != "" {
			s += "  exportTo: " + exportTo + "\n"
		}
		return s
	}
	cases := map[string]struct {
		exportTo string
		opts     Options
		want     map[string]bool
		invalid  bool
	}{
		"none":                  {want: map[string]bool{"": true, "a": true, "b": true}},
		"dot":                   {exportTo: `["."]`, want: map[string]bool{"": false, "a": true, "b": false}},
		"named":                 {exportTo: `["b"]`, want: map[string]bool{"": false, "a": false, "b": true}},
		"tilde":                 {exportTo: `["~"]`, want: map[string]bool{"": false, "a": false, "b": false}},
		"mesh default":          {opts: Options{DefaultServiceExportTo: []string{"."}}, want: map[string]bool{"": false, "a": true, "b": false}},
		"star with others":      {exportTo: `["*", "b"]`, invalid: true, want: map[string]bool{"": false, "a": false, "b": false}},
		"tilde with a name too": {exportTo: `["~", "b"]`, invalid: true, want: map[string]bool{"": false, "a": false, "b": false}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			l := input.NewLoader("default")
			l.LoadBytes("se.yaml", []byte(entry(c.exportTo)))
			bag := l.Bag()
			p := Prepare(bag, c.opts)
			if got := p.t.diags.HasErrors(); got != c.invalid {
				t.Errorf("errors %v, want %v: %v", got, c.invalid, p.t.diags)
			}
			for ns, want := range c.want {
				cl := &Class{Name: ns, Namespace: ns}
				if ns == "" {
					cl = DefaultClass()
				}
				vhost := false
				for _, rc := range p.t.routeConfigs(cl) {
					for _, vh := range rc.VirtualHosts {
						vhost = vhost || vh.Name == ir.VirtualHostName(host, 80)
					}
				}
				sni := false
				for _, fc := range p.t.listener(cl).FilterChains {
					sni = sni || slices.Contains(fc.Match.ServerNames, host)
				}
				if vhost != want || sni != want {
					t.Errorf("client namespace %q: virtual host %v, SNI chain %v, want %v", ns, vhost, sni, want)
				}
			}
		})
	}
}
