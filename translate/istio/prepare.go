package istio

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Labels and names of the opt-in contract (ARCHITECTURE.md).
const (
	DataplaneModeLabel = api.DataplaneModeLabel
	DataplaneModeValue = api.DataplaneModeNodemesh
	DataplaneModeNone  = api.DataplaneModeNone
	SidecarContainer   = input.SidecarContainer
)

// Prepared is a translation of one Bag: the default class's model (shared by
// every node) plus what is needed to compute any other source class's
// routing. It is not safe for concurrent use.
type Prepared struct {
	t *translator
	// Base is the model of the default class: every cluster and endpoint, the
	// route configurations and the listener a node gets before its own
	// classes are added.
	Base *ir.Model
	// sourceLabels are the distinct selectors of sourceLabels matches: the
	// only pod labels that can make two clients see different routing.
	sourceLabels []map[string]string
	classes      map[string]*ClassRouting
	// routingNamespaces are the namespaces whose clients can see routing
	// of their own (see routingNamespaces); clients of any other namespace
	// see what a client without a namespace sees.
	routingNamespaces map[string]bool
	// exactClasses turns the routingNamespaces shortcut off (tests prove
	// the shortcut changes nothing).
	exactClasses bool
	// endpointAt indexes Base.Endpoints by cluster name (WithEndpoints);
	// after Compact it only says which clusters have assignments.
	endpointAt map[string]int
	// mtls are the clusters with Istio mTLS (IstioMTLS).
	mtls map[string]*ir.IstioMTLS
	// baseRoutes are the digests of the default class's route
	// configurations, by name, once Compact has dropped them.
	baseRoutes map[string][sha256.Size]byte
}

// Compact drops what only the first build of the default class needs — its
// clusters, endpoints and route configurations, the bulk of a large mesh's
// model — once the caller has built them (the controller keeps their
// encodings). What stays is what classes, nodes and endpoint updates need:
// the translator's indexes, the listener, and the route configurations'
// names and content digests. After Compact, Node leaves the default class's
// route configurations out (IsBaseRoute tells them), and WithEndpoints
// returns the recomputed assignments without a full list in Base.
func (p *Prepared) Compact() {
	if p.baseRoutes != nil {
		return
	}
	p.endpointIndex()
	p.baseRoutes = make(map[string][sha256.Size]byte, len(p.Base.RouteConfigs))
	for _, rc := range p.Base.RouteConfigs {
		p.baseRoutes[rc.Name] = digest(rc)
	}
	m := *p.Base
	m.Clusters, m.Endpoints, m.RouteConfigs = nil, nil, nil
	p.Base = &m
}

// IsBaseRoute says whether a route configuration is the default class's.
func (p *Prepared) IsBaseRoute(name string) bool {
	if p.baseRoutes != nil {
		_, ok := p.baseRoutes[name]
		return ok
	}
	return slices.ContainsFunc(p.Base.RouteConfigs, func(rc ir.RouteConfig) bool { return rc.Name == name })
}

// sameAsBase says whether a route configuration computed for a class is the
// default class's.
func (p *Prepared) sameAsBase(rc *ir.RouteConfig, base map[string]*ir.RouteConfig) bool {
	if p.baseRoutes != nil {
		d, ok := p.baseRoutes[rc.Name]
		return ok && d == digest(*rc)
	}
	b := base[rc.Name]
	return b != nil && reflect.DeepEqual(*b, *rc)
}

// Prepare indexes a Bag and translates the default class.
func Prepare(bag *input.Bag, opts Options) *Prepared {
	if bag == nil {
		bag = &input.Bag{}
	}
	t := &translator{opts: opts.withDefaults(), bag: bag, drMemo: map[drKey]*mergedDR{}}
	t.indexServices()
	t.indexServiceEntries()
	t.reportIgnoredKinds()
	t.indexEndpoints()
	t.indexDestinationRules()
	t.indexVirtualServices()
	routing := t.routingNamespaces()
	// Only a routing namespace can see another DestinationRule than the
	// default class (routingNamespaces), so only those get cluster
	// variants: the cost follows the configuration, not the namespaces.
	for _, ns := range t.optedInNamespaces() {
		if routing[ns] {
			t.classNamespaces = append(t.classNamespaces, ns)
		}
	}

	def := DefaultClass()
	m := &ir.Model{SourceClasses: []ir.SourceClass{def.ir()}}
	t.buildClusters(m)
	m.RouteConfigs = t.routeConfigs(def)
	m.Listeners = []ir.Listener{t.listener(def)}
	sortModel(m)
	var mtls map[string]*ir.IstioMTLS
	for i := range m.Clusters {
		if c := &m.Clusters[i]; c.IstioMTLS != nil {
			if mtls == nil {
				mtls = map[string]*ir.IstioMTLS{}
			}
			mtls[c.Name] = c.IstioMTLS
		}
	}
	return &Prepared{t: t, Base: m, sourceLabels: t.sourceLabels(), classes: map[string]*ClassRouting{},
		routingNamespaces: routing, exactClasses: t.opts.PerProxy, mtls: mtls}
}

// routingNamespaces lists the namespaces whose clients can be routed
// differently from a client without a namespace. A class's namespace enters
// translation in exactly four places, and each is checked here:
//   - short host names: a client's own namespace's Service wins a name
//     several namespaces use (routeConfigs);
//   - sourceNamespace matches of VirtualService rules (Class.sourceMatch);
//   - DestinationRule precedence: a rule in the client's namespace comes
//     before the Service's (destinationRule), which changes something only
//     when it applies to a host of another namespace;
//   - exportTo of VirtualServices, DestinationRules and Services: the
//     namespaces named (or ".") see what the default class does not.
//
// Any other namespace's class gets the default class's routing (plus what
// its labels select) without computing it again: on a node with pods of
// many namespaces that is most of the work of a push.
func (t *translator) routingNamespaces() map[string]bool {
	out := map[string]bool{}
	byName := map[string]string{} // short name → first namespace seen
	for _, s := range t.serviceList {
		if s.entry != nil {
			continue // an entry's host has no short name
		}
		if first, ok := byName[s.name]; !ok {
			byName[s.name] = s.namespace
		} else if first != s.namespace {
			out[first], out[s.namespace] = true, true
		}
	}
	for _, vs := range t.vss {
		for _, h := range vs.obj.Spec.Http {
			for _, m := range h.Match {
				if m.GetSourceNamespace() != "" {
					out[m.GetSourceNamespace()] = true
				}
			}
		}
		for _, r := range vs.obj.Spec.Tcp {
			for _, m := range r.Match {
				if m.GetSourceNamespace() != "" {
					out[m.GetSourceNamespace()] = true
				}
			}
		}
	}
	// exportTo: a namespace a resource is exported to by name (or ".")
	// sees it, the default class does not.
	named := func(e exportSet) {
		if !e.public() {
			for _, ns := range e {
				out[ns] = true
			}
		}
	}
	for _, vs := range t.vss {
		named(vs.exportTo)
	}
	for _, s := range t.serviceList {
		named(s.exportTo)
	}
	for ns, nd := range t.drsByNS {
		for _, drs := range nd.exact {
			for _, dr := range drs {
				named(dr.exportTo)
			}
		}
		for _, dr := range nd.wildcard {
			named(dr.exportTo)
		}
		if ns == t.opts.RootNamespace {
			out[ns] = true // its clients look at its private rules first
		}
		for host := range nd.exact {
			if s := t.services[host]; s != nil && s.namespace != ns {
				out[ns] = true
			}
		}
		for _, dr := range nd.wildcard {
			for _, s := range t.serviceList {
				if s.namespace != ns && hostMatches(s.fqdn, dr.host) {
					out[ns] = true
					break
				}
			}
		}
	}
	return out
}

// optedInNamespaces are the namespaces whose pods can be node clients
// (NodeClasses), sorted.
func (t *translator) optedInNamespaces() []string {
	var out []string
	for _, ns := range t.bag.Namespaces {
		if ns.Labels[DataplaneModeLabel] == DataplaneModeValue {
			out = append(out, ns.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// routingClass is the class whose routing cl sees: cl itself, or, when its
// namespace cannot change anything (routingNamespaces), the class of its
// labels alone — the default class when it has none.
func (p *Prepared) routingClass(cl *Class) *Class {
	if p.exactClasses || cl.Namespace == "" || p.routingNamespaces[cl.Namespace] {
		return cl
	}
	if len(cl.Labels) == 0 {
		return DefaultClass()
	}
	return &Class{Name: classID("", cl.Labels), Labels: cl.Labels}
}

// Diagnostics are the findings so far: of the default class, and of every
// class computed since.
func (p *Prepared) Diagnostics() ir.Diagnostics {
	out := slices.Clone(p.t.diags)
	for _, d := range p.t.epDiags {
		out = append(out, d...)
	}
	return out.Sort()
}

// sourceLabels collects the distinct selectors of sourceLabels matches.
func (t *translator) sourceLabels() []map[string]string {
	var out []map[string]string
	add := func(sel map[string]string) {
		if len(sel) > 0 && !slices.ContainsFunc(out, func(have map[string]string) bool { return maps.Equal(have, sel) }) {
			out = append(out, sel)
		}
	}
	for _, vs := range t.vss {
		for _, h := range vs.obj.Spec.Http {
			for _, m := range h.Match {
				add(m.SourceLabels)
			}
		}
		for _, r := range vs.obj.Spec.Tcp {
			for _, m := range r.Match {
				add(m.SourceLabels)
			}
		}
	}
	return out
}

// ClassRouting is what a source class sees differently from the default
// class: the route configurations and listener filter chains that differ,
// renamed after the class. Chains carry no source prefixes yet; a node fills
// in the addresses of its own pods of the class.
type ClassRouting struct {
	Class        ir.SourceClass
	RouteConfigs []ir.RouteConfig
	FilterChains []ir.FilterChain
}

// ClassFor returns the class of a client pod: its namespace and the labels
// of the sourceLabels selectors it matches. That is all routing can tell
// apart — a selector matches those labels exactly when it matches all of the
// pod's — so pods whose labels no selector matches share their namespace's
// class whatever their labels are.
func (p *Prepared) ClassFor(pod *input.Pod) *Class {
	c := &Class{Namespace: pod.Namespace}
	for _, sel := range p.sourceLabels {
		if !labelsMatch(sel, pod.Labels) {
			continue
		}
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		maps.Copy(c.Labels, sel)
	}
	c.Name = classID(c.Namespace, c.Labels)
	return c
}

// contentID is a short, stable digest of a value's JSON form.
func contentID(v any) string {
	data, err := json.Marshal(v)
	if err != nil { // IR values always marshal; stay total anyway
		data = fmt.Appendf(nil, "%#v", v)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:8]
}

// digest is a value's content digest (its JSON form; IR values have no
// unexported or skipped fields, so equal digests mean equal values).
func digest(v any) [sha256.Size]byte {
	data, err := json.Marshal(v)
	if err != nil {
		data = fmt.Appendf(nil, "%#v", v)
	}
	return sha256.Sum256(data)
}

// classID names a class stably: the namespace, plus a short hash of the
// relevant labels when there are any.
func classID(ns string, labels map[string]string) string {
	if len(labels) == 0 {
		return ns
	}
	h := sha256.New()
	for _, k := range sortedKeys(labels) {
		h.Write([]byte(k + "=" + labels[k] + "\n"))
	}
	return ns + "-" + hex.EncodeToString(h.Sum(nil))[:8]
}

// Routing computes (once per class) how a class's routing differs from the
// default class.
func (p *Prepared) Routing(cl *Class) *ClassRouting {
	if r, ok := p.classes[cl.Name]; ok {
		return r
	}
	r := &ClassRouting{Class: cl.ir()}
	r.Class.SourcePrefixes = nil
	if rc := p.routingClass(cl); rc != cl {
		if rc.Name != DefaultClassName {
			shared := p.Routing(rc)
			r.RouteConfigs, r.FilterChains = shared.RouteConfigs, shared.FilterChains
		}
		p.classes[cl.Name] = r
		return r
	}
	rename := map[string]string{}
	base := map[string]*ir.RouteConfig{}
	for i := range p.Base.RouteConfigs {
		base[p.Base.RouteConfigs[i].Name] = &p.Base.RouteConfigs[i]
	}
	for _, rc := range p.t.routeConfigs(cl) {
		if p.sameAsBase(&rc, base) {
			continue
		}
		// Named after the content, so that classes that see the same routing
		// share one route configuration and one filter chain.
		name := rc.Name + "~" + contentID(rc.VirtualHosts)
		rename[rc.Name] = name
		rc.Name = name
		r.RouteConfigs = append(r.RouteConfigs, rc)
	}
	baseChains := map[string]*ir.FilterChain{}
	for i := range p.Base.Listeners[0].FilterChains {
		fc := &p.Base.Listeners[0].FilterChains[i]
		baseChains[fc.Name] = fc
	}
	for _, fc := range p.t.listener(cl).FilterChains {
		if fc.HTTP != nil {
			if n, ok := rename[fc.HTTP.RouteConfigName]; ok {
				h := *fc.HTTP
				h.RouteConfigName = n
				fc.HTTP = &h
			}
		}
		if b := baseChains[fc.Name]; b != nil && reflect.DeepEqual(*b, fc) {
			continue
		}
		fc.Name += "~" + contentID(fc)
		r.FilterChains = append(r.FilterChains, fc)
	}
	p.classes[cl.Name] = r
	return r
}

// NodeClasses groups a node's client pods into source classes. A pod is a
// client of the node Envoy when it runs on the node, in a namespace labelled
// istio.io/dataplane-mode=nodemesh, is not opted out (the same label set to
// none), has no Istio sidecar and has an address on the pod network.
func (p *Prepared) NodeClasses(node string) []*Class {
	optedIn := map[string]bool{}
	for _, ns := range p.t.bag.Namespaces {
		optedIn[ns.Name] = ns.Labels[DataplaneModeLabel] == DataplaneModeValue
	}
	byName := map[string]*Class{}
	for _, pod := range p.t.bag.Pods {
		if pod.NodeName != node || !optedIn[pod.Namespace] || !IsNodeClient(pod) {
			continue
		}
		cl := p.ClassFor(pod)
		if have := byName[cl.Name]; have != nil {
			cl = have
		} else {
			byName[cl.Name] = cl
		}
		for _, ip := range pod.IPs {
			if pfx := hostPrefix(ip); pfx != "" {
				cl.SourcePrefixes = append(cl.SourcePrefixes, pfx)
			}
		}
	}
	out := slices.Collect(maps.Values(byName))
	for _, cl := range out {
		slices.Sort(cl.SourcePrefixes)
		cl.SourcePrefixes = slices.Compact(cl.SourcePrefixes)
	}
	slices.SortFunc(out, func(a, b *Class) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// IsNodeClient reports whether a pod's traffic goes through the node Envoy
// (namespace opt-in aside): it is not opted out, has no Istio sidecar, is not
// on the host network, is running and has an address.
func IsNodeClient(pod *input.Pod) bool {
	if pod.Labels[DataplaneModeLabel] == DataplaneModeNone || pod.HostNetwork || pod.DeletionTimestamp != nil || pod.Sidecar {
		return false
	}
	if pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed {
		return false
	}
	return len(pod.IPs) > 0
}

// Node assembles the model a node is served: the default class's, plus the
// route configurations and filter chains of its classes (after Compact, the
// default class's clusters, endpoints and route configurations are left
// out). Classes that see the
// same routing share them; each such chain matches the addresses of all the
// node's pods in those classes.
func (p *Prepared) Node(classes []*Class) *ir.Model {
	m := *p.Base
	m.RouteConfigs = slices.Clone(p.Base.RouteConfigs)
	l := p.Base.Listeners[0]
	l.FilterChains = slices.Clone(l.FilterChains)
	m.SourceClasses = slices.Clone(p.Base.SourceClasses)
	haveRC := map[string]bool{}
	chains := map[string]*ir.FilterChain{}
	for _, cl := range classes {
		if len(cl.SourcePrefixes) == 0 {
			continue
		}
		r := p.Routing(cl)
		sc := r.Class
		sc.SourcePrefixes = cl.SourcePrefixes
		m.SourceClasses = append(m.SourceClasses, sc)
		for _, rc := range r.RouteConfigs {
			if !haveRC[rc.Name] {
				haveRC[rc.Name] = true
				m.RouteConfigs = append(m.RouteConfigs, rc)
			}
		}
		for _, fc := range r.FilterChains {
			if have := chains[fc.Name]; have != nil {
				have.Match.SourcePrefixes = append(have.Match.SourcePrefixes, cl.SourcePrefixes...)
				continue
			}
			fc.Match.SourcePrefixes = slices.Clone(cl.SourcePrefixes)
			chains[fc.Name] = &fc
		}
	}
	for _, fc := range chains {
		slices.Sort(fc.Match.SourcePrefixes)
		l.FilterChains = append(l.FilterChains, *fc)
	}
	sortChains(l.FilterChains)
	m.Listeners = []ir.Listener{l}
	sortModel(&m)
	return &m
}
