package migration

import (
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// callGraph records which namespace calls which, from what the manifests
// say about callers: client-side VirtualServices and DestinationRules (in
// the caller's namespace, for a host of another), sourceNamespace matches,
// Sidecar egress hosts, AuthorizationPolicy sources, and Service names in
// workloads' environment and arguments. Traffic itself is not observed.
func (a *analysis) callGraph() {
	edge := func(from, to string) {
		if from == "" || to == "" || from == to || to == "*" || to == "~" {
			return
		}
		if a.graph[from] == nil {
			a.graph[from] = map[string]bool{}
		}
		a.graph[from][to] = true
	}
	svcNS := func(host, ns string) string {
		if s := a.serviceOf(host, ns); s != "" {
			return s
		}
		return ""
	}
	for _, vs := range a.inv.Bag.VirtualServices {
		for _, h := range vs.Spec.Http {
			for _, m := range h.Match {
				if m.SourceNamespace != "" {
					for _, host := range vs.Spec.Hosts {
						edge(m.SourceNamespace, svcNS(host, vs.Namespace))
					}
				}
			}
			for _, r := range h.Route {
				edge(vs.Namespace, svcNS(r.GetDestination().GetHost(), vs.Namespace))
			}
		}
		for _, t := range vs.Spec.Tcp {
			for _, r := range t.Route {
				edge(vs.Namespace, svcNS(r.GetDestination().GetHost(), vs.Namespace))
			}
		}
	}
	for _, dr := range a.inv.Bag.DestinationRules {
		edge(dr.Namespace, svcNS(dr.Spec.Host, dr.Namespace))
	}
	for _, sc := range a.inv.Sidecars {
		for _, e := range sc.Spec.Egress {
			for _, h := range e.Hosts {
				if ns, _, ok := strings.Cut(h, "/"); ok && ns != "." {
					edge(sc.Namespace, ns)
				}
			}
		}
	}
	for _, ap := range a.inv.AuthorizationPolicies {
		for caller := range callerNamespaces(ap) {
			edge(caller, ap.Namespace)
		}
	}
	for _, w := range a.inv.Workloads {
		for to := range a.envCalls(w.Ref.Namespace, &w.Template.Spec) {
			edge(w.Ref.Namespace, to)
		}
	}
}

// serviceOf resolves a host as Istio does (a short name is the namespace's
// own) and returns the namespace of the Service it names.
func (a *analysis) serviceOf(host, ns string) string {
	domain := a.opts.Istio.ClusterDomain
	if domain == "" {
		domain = ir.DefaultClusterDomain
	}
	host = strings.TrimSuffix(host, ".")
	for _, s := range a.inv.Bag.Services {
		fqdn := s.Name + "." + s.Namespace + ".svc." + domain
		switch host {
		case fqdn, s.Name + "." + s.Namespace, s.Name + "." + s.Namespace + ".svc":
			return s.Namespace
		case s.Name:
			if s.Namespace == ns {
				return s.Namespace
			}
		}
	}
	return ""
}

// order groups the reported namespaces so that every namespace comes after
// (or with) the namespaces it calls: servers move before their clients,
// which is the direction that keeps STRICT servers and identity-based
// policies working. Namespaces that call each other move together.
func (a *analysis) order(r *Report) [][]string {
	var nodes []string
	for _, n := range r.Namespaces {
		nodes = append(nodes, n.Name)
	}
	in := func(n string) bool { return slices.Contains(nodes, n) }
	// Tarjan's strongly connected components, then levels by longest path.
	index, low, onStack := map[string]int{}, map[string]int{}, map[string]bool{}
	comp := map[string]int{}
	var stack []string
	var comps [][]string
	next := 0
	var visit func(string)
	visit = func(v string) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range sortedSet(a.graph[v], v) {
			if !in(w) {
				continue
			}
			if _, seen := index[w]; !seen {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var c []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp[w] = len(comps)
				c = append(c, w)
				if w == v {
					break
				}
			}
			comps = append(comps, c)
		}
	}
	for _, n := range nodes {
		if _, seen := index[n]; !seen {
			visit(n)
		}
	}
	// Tarjan emits components callees first, so one pass computes levels.
	level := make([]int, len(comps))
	for ci, c := range comps {
		for _, v := range c {
			for w := range a.graph[v] {
				if in(w) && comp[w] != ci {
					level[ci] = max(level[ci], level[comp[w]]+1)
				}
			}
		}
	}
	var out [][]string
	for ci, c := range comps {
		for len(out) <= level[ci] {
			out = append(out, nil)
		}
		out[level[ci]] = append(out[level[ci]], c...)
	}
	for _, g := range out {
		slices.Sort(g)
	}
	return out
}
