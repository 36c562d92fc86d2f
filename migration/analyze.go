package migration

import (
	"maps"
	"slices"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Options tune analysis.
type Options struct {
	// Namespaces limits the report to these namespaces (all namespaces with
	// workloads or Istio resources when empty, system namespaces aside).
	Namespaces []string
	// Istio are the translator's options (cluster domain, root namespace).
	Istio istio.Options
}

func (o Options) rootNamespace() string {
	if o.Istio.RootNamespace == "" {
		return DefaultRootNS
	}
	return o.Istio.RootNamespace
}

// systemNamespaces are never proposed for migration.
var systemNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, api.DefaultNamespace: true,
}

// analysis is one run of Analyze.
type analysis struct {
	inv    *Inventory
	opts   Options
	result *translate.Result
	// byNS collects findings by namespace.
	byNS map[string][]Finding
	// graph is who calls whom, by namespace.
	graph map[string]map[string]bool
	// strict are the analysed namespaces with STRICT ports, by the first
	// PeerAuthentication deciding one (peerAuthentications).
	strict map[string]ir.ResourceRef
}

// Analyze judges every namespace of the inventory: what the translator
// reports about its resources, the migration checks, route parity for its
// client workloads, a verdict, and the order namespaces can move in.
func Analyze(inv *Inventory, opts Options) *Report {
	a := &analysis{inv: inv, opts: opts, byNS: map[string][]Finding{}, graph: map[string]map[string]bool{}, strict: map[string]ir.ResourceRef{}}
	a.result = translate.Translate(inv.Bag, inv.Diagnostics, translate.Options{Istio: opts.Istio})
	a.translatorFindings()
	a.supportedFindings()
	a.policyFindings()
	a.workloadFindings()
	a.callGraph()
	a.strictCallees()
	a.strictCallers()
	a.identityCallers()
	a.parityFindings()

	r := &Report{}
	for _, ns := range a.namespaces() {
		fs := sortFindings(a.byNS[ns])
		if fs == nil {
			fs = []Finding{}
		}
		n := NamespaceReport{Name: ns, Verdict: verdictOf(fs), Findings: fs, Inventory: a.inventoryOf(ns)}
		n.Calls = sortedSet(a.graph[ns], ns)
		for from, to := range a.graph {
			if from != ns && to[ns] {
				n.CalledBy = append(n.CalledBy, from)
			}
		}
		slices.Sort(n.CalledBy)
		r.Namespaces = append(r.Namespaces, n)
	}
	r.Order = a.order(r)
	return r
}

func sortedSet(s map[string]bool, except string) []string {
	var out []string
	for k := range s {
		if k != except {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// namespaces are the namespaces to report: those asked for, or every
// namespace that has something to move.
func (a *analysis) namespaces() []string {
	if len(a.opts.Namespaces) > 0 {
		out := slices.Clone(a.opts.Namespaces)
		slices.Sort(out)
		return slices.Compact(out)
	}
	set := map[string]bool{}
	add := func(ns string) {
		if ns != "" && !systemNamespaces[ns] && ns != a.opts.rootNamespace() {
			set[ns] = true
		}
	}
	for _, p := range a.inv.Bag.Pods {
		add(p.Namespace)
	}
	for _, s := range a.inv.Bag.Services {
		add(s.Namespace)
	}
	for _, w := range a.inv.Workloads {
		add(w.Ref.Namespace)
	}
	for _, vs := range a.inv.Bag.VirtualServices {
		add(vs.Namespace)
	}
	for _, dr := range a.inv.Bag.DestinationRules {
		add(dr.Namespace)
	}
	for ns := range a.byNS {
		add(ns)
	}
	return slices.Sorted(maps.Keys(set))
}

func (a *analysis) add(ns string, f Finding) {
	a.byNS[ns] = append(a.byNS[ns], f)
}

// addAt adds a finding about an object, located when it was read from a file.
func (a *analysis) addAt(ns string, ref ir.ResourceRef, field string, level Level, code, msg, fix string) {
	f := Finding{Resource: resourceOf(ref), Field: field, Level: level, Code: code, Message: msg, Fix: fix}
	if src := a.inv.Bag.Sources[ref]; src != nil && src.File != "" {
		f.File, f.Line = src.File, src.LineOf(field)
	}
	a.add(ns, f)
}

func (a *analysis) inventoryOf(ns string) NamespaceInventory {
	out := NamespaceInventory{Dataplane: "none", Resources: map[string]int{}}
	if obj := a.inv.namespace(ns); obj != nil {
		out.Injection, out.Revision = obj.Labels[InjectionLabel], obj.Labels[RevisionLabel]
		switch mode := obj.Labels[api.DataplaneModeLabel]; {
		case mode == api.DataplaneModeNodemesh:
			out.Dataplane = "nodemesh"
		case mode == api.DataplaneModeAmbient:
			out.Dataplane = "ambient"
		case out.Injection == api.IstioInjectionEnabled || out.Revision != "":
			out.Dataplane = "sidecar"
		}
	}
	for _, p := range a.inv.podsOf(ns) {
		out.Pods++
		if p.Sidecar {
			out.SidecarPods++
		}
	}
	if out.Dataplane == "none" && out.SidecarPods > 0 {
		out.Dataplane = "sidecar"
	}
	for _, w := range a.inv.workloadsOf(ns) {
		out.Workloads = append(out.Workloads, w.Ref.Kind+"/"+w.Ref.Name)
	}
	count := func(kind string, n int) {
		if n > 0 {
			out.Resources[kind] = n
		}
	}
	b := a.inv.Bag
	count("VirtualService", countNS(b.VirtualServices, ns))
	count("DestinationRule", countNS(b.DestinationRules, ns))
	count("ServiceEntry", countNS(b.ServiceEntries, ns))
	count("Gateway", countNS(b.Gateways, ns))
	count("Service", countNS(b.Services, ns))
	count("AuthorizationPolicy", countNS(a.inv.AuthorizationPolicies, ns))
	count("PeerAuthentication", countNS(a.inv.PeerAuthentications, ns))
	count("RequestAuthentication", countNS(a.inv.RequestAuthentications, ns))
	count("EnvoyFilter", countNS(a.inv.EnvoyFilters, ns))
	count("Sidecar", countNS(a.inv.Sidecars, ns))
	count("WasmPlugin", countNS(a.inv.WasmPlugins, ns))
	count("Telemetry", countNS(a.inv.Telemetries, ns))
	if len(out.Resources) == 0 {
		out.Resources = nil
	}
	return out
}

func countNS[T interface{ GetNamespace() string }](objs []T, ns string) int {
	n := 0
	for _, o := range objs {
		if o.GetNamespace() == ns {
			n++
		}
	}
	return n
}

// translatedKinds are the kinds whose verdicts come from the translator.
var translatedKinds = map[string]bool{
	"VirtualService": true, "DestinationRule": true, "ServiceEntry": true, "Gateway": true,
	"Service": true, "EndpointSlice": true, "Pod": true, "Namespace": true,
}

// translatorFindings turns the translator's diagnostics into verdicts: one
// source of truth for what nodemesh does with Istio's routing resources.
func (a *analysis) translatorFindings() {
	for _, d := range a.result.Diagnostics {
		level, fix, keep := judge(d)
		if !keep {
			continue
		}
		if d.Code == ir.CodeIgnoredKind && !translatedKinds[d.Resource.Kind] {
			continue // other kinds: migration checks below, or not Istio's
		}
		f := Finding{Resource: resourceOf(d.Resource), Field: d.Field, Level: level, Code: string(d.Code),
			Message: d.Message, Fix: fix, File: d.File, Line: d.Line}
		if f.File == "" {
			f.Line = 0
		}
		a.add(d.Resource.Namespace, f)
	}
}

// judge maps a diagnostic to a level and a fix; keep is false for
// diagnostics that say nothing about the move.
func judge(d ir.Diagnostic) (level Level, fix string, keep bool) {
	switch d.Code {
	case ir.CodeDuplicate, ir.CodeNoEndpoints:
		if d.Severity == ir.SeverityInfo {
			return "", "", false
		}
	case ir.CodeGatewayOnly:
		return Supported, "", true
	case ir.CodeIgnoredKind:
		switch d.Resource.Kind {
		case "Gateway":
			return Supported, "", true
		case "ServiceEntry":
			return Changed, "clients on nodemesh reach these hosts as passthrough traffic: routing and TLS origination for them need the ServiceEntry support tracked in docs/parity.md; keep clients that depend on it on sidecars", true
		}
		return "", "", false
	case ir.CodeSourceSelector:
		return Changed, "check the route-parity findings of the client workloads; keep the selected labels on every pod that must see this routing", true
	case ir.CodeChangedBehavior:
		return Changed, "review the difference (docs/parity.md); change the resource if the new behaviour is not wanted", true
	}
	if d.Severity == ir.SeverityInfo {
		return "", "", false
	}
	switch d.Code {
	case ir.CodeUnsupportedField:
		return Unsupported, "remove the field, or keep the namespace on sidecars until nodemesh supports it", true
	case ir.CodeConflict:
		if d.Severity == ir.SeverityWarning {
			return Changed, "give each host (and domain) exactly one VirtualService", true
		}
	case ir.CodeUnreachable:
		return Changed, "remove the rule or move it before the rule that matches everything", true
	case ir.CodeNoEndpoints:
		return Changed, "make the subset's labels match the pods' labels", true
	case ir.CodeAmbiguousHostname:
		return Changed, "use the fully qualified host name (name.namespace.svc.cluster.local)", true
	}
	if d.Severity == ir.SeverityError {
		return Unsupported, "correct the resource: nodemesh leaves the rule out, where a sidecar would send requests to a cluster that does not exist (503 NC)", true
	}
	return Changed, "review the difference (docs/parity.md)", true
}

// supportedFindings records a "supported" verdict for every routing
// resource the translator had nothing to say about.
func (a *analysis) supportedFindings() {
	mentioned := map[ir.ResourceRef]bool{}
	for _, d := range a.result.Diagnostics {
		if d.Severity != ir.SeverityInfo || d.Code == ir.CodeSourceSelector || d.Code == ir.CodeChangedBehavior {
			mentioned[d.Resource] = true
		}
	}
	add := func(ref ir.ResourceRef, msg string) {
		if !mentioned[ref] {
			a.addAt(ref.Namespace, ref, "", Supported, "Translated", msg, "")
		}
	}
	for _, vs := range a.inv.Bag.VirtualServices {
		add(input.Ref("VirtualService", vs), "translated with Istio's semantics; the node Envoy serves the same routes")
	}
	for _, dr := range a.inv.Bag.DestinationRules {
		add(input.Ref("DestinationRule", dr), "translated with Istio's semantics; the node Envoy's clusters carry the same policies")
	}
}

// hasLabels reports whether selector labels all appear in labels.
func hasLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
