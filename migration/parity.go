package migration

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Route parity: for every client workload of a namespace, the routing its
// sidecar gives it (Istio's semantics for that one proxy: the resources
// visible to its namespace under exportTo and its Sidecar's egress hosts,
// short names resolved in its own namespace, and a source class of exactly
// its labels) is compared with what the node Envoy gives its source class
// once the namespace has moved. Both come from the translator.

// RouteDiff is one difference between a client's sidecar and the node Envoy.
type RouteDiff struct {
	// RouteConfig is the port's route configuration ("9080") or, for TCP,
	// the filter chain name.
	RouteConfig string
	VirtualHost string
	Sidecar     string
	Node        string
	// ShortName marks a difference in short host names alone (intended:
	// docs/parity.md).
	ShortName bool
}

// parity computes sidecar and node views lazily and caches them.
type parity struct {
	a    *analysis
	node *istio.Prepared
	// sidecar views by namespace and the Sidecar resource that applies.
	sidecar map[string]*istio.Prepared
}

func (a *analysis) parityFindings() {
	p := &parity{a: a, sidecar: map[string]*istio.Prepared{}}
	for _, ns := range a.namespaces() {
		for _, w := range a.inv.workloadsOf(ns) {
			diffs := p.compare(ns, w.Ref.Name, w.Template.Labels)
			var short []string
			for _, d := range diffs {
				if d.ShortName {
					short = append(short, d.VirtualHost)
					continue
				}
				a.addAt(ns, w.Ref, "routes."+d.RouteConfig+"."+d.VirtualHost, Changed, "RouteParity",
					fmt.Sprintf("route parity: its sidecar %s; the node Envoy %s", d.Sidecar, d.Node),
					"if the client relied on the sidecar's view (exportTo, Sidecar egress scoping), restrict the resource with a namespace-local VirtualService or keep the namespace on sidecars")
			}
			if len(short) > 0 {
				slices.Sort(short)
				short = slices.Compact(short)
				more := ""
				if len(short) > 5 {
					more = fmt.Sprintf(" and %d more", len(short)-5)
					short = short[:5]
				}
				a.addAt(ns, w.Ref, "routes", Changed, "RouteParityShortName",
					fmt.Sprintf("route parity: on the node Envoy the short names of other namespaces' Services also match the Host header (virtual hosts %s%s); its sidecar would pass such requests through. Only a client that sets Host: <short name> itself notices (docs/parity.md)", strings.Join(short, ", "), more),
					"nothing, unless the client sets such Host headers on purpose")
			}
		}
	}
}

// Parity compares, for one client (its namespace and pod labels), its
// sidecar's routing with the node Envoy's. It is what analysis reports as
// RouteParity findings.
func Parity(inv *Inventory, opts Options, namespace string, labels map[string]string) []RouteDiff {
	a := &analysis{inv: inv, opts: opts}
	p := &parity{a: a, sidecar: map[string]*istio.Prepared{}}
	return p.compare(namespace, "client", labels)
}

func (p *parity) compare(ns, client string, labels map[string]string) []RouteDiff {
	if p.node == nil {
		p.node = istio.Prepare(p.a.inv.Bag, p.a.opts.Istio)
	}
	sc := p.a.sidecarFor(ns, labels)
	key := ns
	if sc != nil {
		key += "/" + sc.Namespace + "/" + sc.Name
	}
	sp := p.sidecar[key]
	if sp == nil {
		o := p.a.opts.Istio
		o.PerProxy = true
		sp = istio.Prepare(visibleBag(p.a.inv.Bag, ns, sc), o)
		p.sidecar[key] = sp
	}
	pod := &input.Pod{Namespace: ns, Labels: labels}
	nodeClass := p.node.ClassFor(pod)
	sideClass := &istio.Class{Name: "sidecar~" + ns + "~" + client, Namespace: ns, Labels: maps.Clone(labels)}
	return diffViews(view(sp, sideClass), view(p.node, nodeClass))
}

// routingView is what a client sees: route configurations and TCP chains by
// name (class suffixes removed).
type routingView struct {
	routes map[string]ir.RouteConfig
	tcp    map[string]ir.FilterChain
}

func baseName(n string) string {
	name, _, _ := strings.Cut(n, "~")
	return name
}

func view(p *istio.Prepared, cl *istio.Class) routingView {
	v := routingView{routes: map[string]ir.RouteConfig{}, tcp: map[string]ir.FilterChain{}}
	for _, rc := range p.Base.RouteConfigs {
		v.routes[rc.Name] = rc
	}
	chains := func(fcs []ir.FilterChain) {
		for _, fc := range fcs {
			if fc.TCP != nil {
				fc.Name = baseName(fc.Name)
				fc.Match.SourcePrefixes = nil
				v.tcp[fc.Name] = fc
			}
		}
	}
	if len(p.Base.Listeners) > 0 {
		chains(p.Base.Listeners[0].FilterChains)
	}
	r := p.Routing(cl)
	for _, rc := range r.RouteConfigs {
		rc.Name = baseName(rc.Name)
		v.routes[rc.Name] = rc
	}
	chains(r.FilterChains)
	return v
}

func diffViews(side, node routingView) []RouteDiff {
	var out []RouteDiff
	for _, name := range slices.Sorted(maps.Keys(union(side.routes, node.routes))) {
		s, n := side.routes[name], node.routes[name]
		sv, nv := vhosts(s), vhosts(n)
		for _, vh := range slices.Sorted(maps.Keys(union(sv, nv))) {
			if vh == ir.AllowAnyVirtualHost {
				continue
			}
			a, inSide := sv[vh]
			b, inNode := nv[vh]
			d := RouteDiff{RouteConfig: name, VirtualHost: vh}
			switch {
			case !inSide:
				d.Sidecar, d.Node = "does not route "+vh+" (not visible to it: exportTo or Sidecar egress hosts)", "routes it with "+originOf(b)
			case !inNode:
				d.Sidecar, d.Node = "routes "+vh+" with "+originOf(a), "does not route it"
			case !sameRoutes(a.Routes, b.Routes):
				d.Sidecar, d.Node = "routes "+vh+" with "+originOf(a)+": "+summary(a.Routes), "routes it with "+originOf(b)+": "+summary(b.Routes)
			default:
				extraNode, extraSide := domainDiff(a.Domains, b.Domains)
				switch {
				case len(extraSide) > 0:
					d.Sidecar, d.Node = "answers "+vh+" also for "+strings.Join(extraSide, ", "), "does not"
				case len(extraNode) > 0:
					d.ShortName = true
					d.Sidecar, d.Node = "does not answer to "+strings.Join(extraNode, ", "), "does"
				default:
					continue
				}
			}
			out = append(out, d)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(union(side.tcp, node.tcp))) {
		s, inSide := side.tcp[name]
		n, inNode := node.tcp[name]
		if inSide && inNode && jsonEqual(s.TCP.Destinations, n.TCP.Destinations) {
			continue
		}
		d := RouteDiff{RouteConfig: name, VirtualHost: "tcp"}
		d.Sidecar, d.Node = tcpSummary(s, inSide), tcpSummary(n, inNode)
		out = append(out, d)
	}
	return out
}

func union[V any](a, b map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func vhosts(rc ir.RouteConfig) map[string]ir.VirtualHost {
	out := map[string]ir.VirtualHost{}
	for _, vh := range rc.VirtualHosts {
		out[vh.Name] = vh
	}
	return out
}

func originOf(vh ir.VirtualHost) string {
	if vh.Origin == nil {
		return "the default route"
	}
	return vh.Origin.String()
}

func sameRoutes(a, b []ir.Route) bool { return jsonEqual(a, b) }

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func summary(routes []ir.Route) string {
	var parts []string
	for _, r := range routes {
		var dst []string
		if r.Forward != nil {
			for _, d := range r.Forward.Destinations {
				w := ""
				if r.Forward.Weighted {
					w = " " + strconv.FormatUint(uint64(d.Weight), 10) + "%"
				}
				dst = append(dst, d.Cluster+w)
			}
		}
		name := r.Name
		if name == "" {
			name = "route"
		}
		parts = append(parts, name+" → "+strings.Join(dst, " + "))
	}
	return strings.Join(parts, "; ")
}

func tcpSummary(fc ir.FilterChain, ok bool) string {
	if !ok || fc.TCP == nil {
		return "passes it through unrouted"
	}
	var dst []string
	for _, d := range fc.TCP.Destinations {
		dst = append(dst, d.Cluster)
	}
	return "proxies it to " + strings.Join(dst, " + ")
}

// domainDiff returns the domains only the node has and only the sidecar
// has, ports aside (the node Envoy lists both forms by design).
func domainDiff(side, node []string) (extraNode, extraSide []string) {
	strip := func(ds []string) map[string]bool {
		out := map[string]bool{}
		for _, d := range ds {
			if i := strings.LastIndexByte(d, ':'); i > 0 && !strings.Contains(d[i:], "]") {
				if _, err := strconv.Atoi(d[i+1:]); err == nil {
					d = d[:i]
				}
			}
			out[d] = true
		}
		return out
	}
	s, n := strip(side), strip(node)
	for d := range n {
		if !s[d] {
			extraNode = append(extraNode, d)
		}
	}
	for d := range s {
		if !n[d] {
			extraSide = append(extraSide, d)
		}
	}
	slices.Sort(extraNode)
	slices.Sort(extraSide)
	return extraNode, extraSide
}

// sidecarFor returns the Sidecar resource that scopes a workload: one whose
// selector matches in its namespace, else its namespace's default, else the
// root namespace's default.
func (a *analysis) sidecarFor(ns string, labels map[string]string) *networkingv1.Sidecar {
	var nsDefault, rootDefault *networkingv1.Sidecar
	for _, sc := range a.inv.Sidecars {
		sel := sc.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Namespace == ns && len(sel) > 0 && hasLabels(sel, labels):
			return sc
		case sc.Namespace == ns && len(sel) == 0:
			nsDefault = sc
		case sc.Namespace == a.opts.rootNamespace() && len(sel) == 0:
			rootDefault = sc
		}
	}
	if nsDefault != nil {
		return nsDefault
	}
	return rootDefault
}

// exportedTo applies Istio's exportTo: empty or "*" is every namespace, "."
// the resource's own, "~" none.
func exportedTo(exportTo []string, own, client string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if own == client {
				return true
			}
		default:
			if e == client {
				return true
			}
		}
	}
	return false
}

// egressAllows applies a Sidecar's egress hosts ("namespace/dnsName") to a
// host defined in a namespace.
func egressAllows(sc *networkingv1.Sidecar, clientNS, ns, host string) bool {
	if sc == nil || len(sc.Spec.Egress) == 0 {
		return true
	}
	for _, e := range sc.Spec.Egress {
		for _, h := range e.Hosts {
			hns, dns, ok := strings.Cut(h, "/")
			if !ok {
				continue
			}
			switch hns {
			case "*":
			case ".":
				if ns != clientNS {
					continue
				}
			case "~":
				continue
			default:
				if hns != ns {
					continue
				}
			}
			if dns == "*" || dns == host || (strings.HasPrefix(dns, "*.") && strings.HasSuffix(host, dns[1:])) {
				return true
			}
		}
	}
	return false
}

const serviceExportTo = "networking.istio.io/exportTo"

// visibleBag is the part of a Bag a sidecar in ns sees.
func visibleBag(b *input.Bag, ns string, sc *networkingv1.Sidecar) *input.Bag {
	out := *b
	out.VirtualServices, out.DestinationRules, out.ServiceEntries, out.Services = nil, nil, nil, nil
	for _, vs := range b.VirtualServices {
		if !exportedTo(vs.Spec.ExportTo, vs.Namespace, ns) {
			continue
		}
		visible := false
		for _, h := range vs.Spec.Hosts {
			visible = visible || egressAllows(sc, ns, vs.Namespace, h) || egressAllows(sc, ns, vs.Namespace, fqdnOf(h, vs.Namespace))
		}
		if visible {
			out.VirtualServices = append(out.VirtualServices, vs)
		}
	}
	for _, dr := range b.DestinationRules {
		if exportedTo(dr.Spec.ExportTo, dr.Namespace, ns) {
			out.DestinationRules = append(out.DestinationRules, dr)
		}
	}
	for _, se := range b.ServiceEntries {
		if exportedTo(se.Spec.ExportTo, se.Namespace, ns) {
			out.ServiceEntries = append(out.ServiceEntries, se)
		}
	}
	for _, s := range b.Services {
		if serviceVisible(s, ns) && egressAllows(sc, ns, s.Namespace, fqdnOf(s.Name, s.Namespace)) {
			out.Services = append(out.Services, s)
		}
	}
	return &out
}

func serviceVisible(s *corev1.Service, ns string) bool {
	v, ok := s.Annotations[serviceExportTo]
	if !ok {
		return true
	}
	var list []string
	for _, e := range strings.Split(v, ",") {
		list = append(list, strings.TrimSpace(e))
	}
	return exportedTo(list, s.Namespace, ns)
}

func fqdnOf(host, ns string) string {
	if strings.Contains(host, ".") || host == "*" {
		return host
	}
	return host + "." + ns + ".svc." + ir.DefaultClusterDomain
}
