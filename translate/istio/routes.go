package istio

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// httpPorts groups the Services that have an HTTP (or protocol-sniffed) port
// by port number.
func (t *translator) httpPorts() map[uint32][]*service {
	out := map[uint32][]*service{}
	for _, s := range t.serviceList {
		for _, p := range s.ports {
			if p.protocol.IsHTTP() || p.protocol == ir.ProtocolUnknown {
				out[p.port] = append(out[p.port], s)
			}
		}
	}
	return out
}

// routeConfigs builds one route configuration per HTTP destination port,
// named after the port as Istio names a sidecar's outbound routes. Each Service
// with that port gets a virtual host; its routes come from the VirtualService
// that claims it, or a default route when there is none; a final allow_any
// virtual host passes unknown hosts through (outboundTrafficPolicy ALLOW_ANY).
func (t *translator) routeConfigs(cl *Class) []ir.RouteConfig {
	var out []ir.RouteConfig
	byPort := t.httpPorts()
	type vsPort struct {
		vs   *vsInfo
		port uint32
	}
	memo := map[vsPort]struct {
		routes  []ir.Route
		applies bool
	}{}
	vsOf := t.vsFor(cl.Namespace)
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		// A Service not exported to the class's namespace has no virtual
		// host: its requests take the allow_any virtual host, as on a
		// sidecar that does not know it (Istio's IsServiceVisible).
		svcs := slices.DeleteFunc(slices.Clone(byPort[port]), func(s *service) bool { return !t.serviceVisible(s, cl.Namespace) })
		shortNames := map[string]int{}
		for _, s := range svcs {
			if s.entry == nil { // an entry's name is its host: no short name
				shortNames[s.name]++
			}
		}
		rc := ir.RouteConfig{Name: ir.RouteConfigName(port)}
		seen := map[string]string{} // domain → virtual host
		for _, s := range svcs {
			vh := ir.VirtualHost{Name: ir.VirtualHostName(s.fqdn, port)}
			// A short name means the client's own namespace's Service; one no
			// other Service on the port shares is unambiguous for every
			// class, so classes only differ from the default class where
			// names collide.
			shortOK := cl.Namespace == s.namespace || (shortNames[s.name] == 1 && !t.opts.PerProxy)
			for _, d := range t.domains(s, port, shortOK) {
				if prev, dup := seen[d]; dup {
					t.diags.Warnf(ir.CodeConflict, s.ref, "", "domain %q of virtual host %s is already used by %s; it is left out", d, vh.Name, prev)
					continue
				}
				seen[d] = vh.Name
				vh.Domains = append(vh.Domains, d)
			}
			if vs := vsOf[s]; vs != nil {
				key := vsPort{vs, port}
				r, done := memo[key]
				if !done {
					r.routes, r.applies = t.vsRoutes(vs, port, cl)
					if r.applies && len(r.routes) == 0 && !t.hasError(vs.ref) {
						// Every rule meant for this port was left out, by
						// warnings only (a destination declared by a
						// ServiceEntry, an unsupported field): the virtual
						// host answers 404 rather than route where the
						// VirtualService does not say. That is an error, not
						// a warning that is easy to miss.
						t.diags.Errorf(ir.CodeInvalidValue, vs.ref, "",
							"none of its rules for port %d can be served (see the warnings on its rules): its hosts have no route on that port and refuse every request (404)", port)
					}
					memo[key] = r
				}
				if r.applies {
					vh.Routes, vh.Origin = slices.Clone(r.routes), &vs.ref
				}
			}
			if vh.Origin == nil {
				vh.Routes = []ir.Route{t.defaultRoute(s, port, cl)}
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
		slices.SortFunc(rc.VirtualHosts, func(a, b ir.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
		rc.VirtualHosts = append(rc.VirtualHosts, t.catchAllVirtualHost())
		out = append(out, rc)
	}
	return out
}

// hasError reports whether an error was reported on a resource.
func (t *translator) hasError(ref ir.ResourceRef) bool {
	for _, d := range t.diags {
		if d.Severity == ir.SeverityError && d.Resource == ref {
			return true
		}
	}
	return false
}

// domains lists the Host values a Service answers to on a port: the FQDN
// (also with a trailing dot), the short name when the client can use it,
// name.namespace.svc and name.namespace, and the ClusterIP — each with and
// without ":<port>".
func (t *translator) domains(s *service, port uint32, shortOK bool) []string {
	p := ":" + strconv.FormatUint(uint64(port), 10)
	if s.entry != nil {
		return t.entryDomains(s, p)
	}
	names := []string{s.fqdn, s.fqdn + "."}
	if shortOK {
		names = append(names, s.name)
	}
	names = append(names, s.name+"."+s.namespace+".svc", s.name+"."+s.namespace)
	if s.vip != "" {
		names = append(names, s.vip)
	}
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		out = append(out, n, n+p)
	}
	return out
}

// defaultRoute is what a Service without a VirtualService gets (Istio's
// BuildDefaultHTTPOutboundRoute): everything to outbound|port||host, no
// timeout, the default retry policy, and the DestinationRule's hash policy.
func (t *translator) defaultRoute(s *service, port uint32, cl *Class) ir.Route {
	fwd := &ir.ForwardAction{
		Destinations: []ir.WeightedDestination{{Cluster: t.clusterName(s, port, "", cl)}},
		Retry:        retryPolicy(nil, false),
	}
	if h := t.destinationRule(s, cl.Namespace).consistentHash(port, ""); h != nil {
		fwd.HashPolicies = []ir.HashPolicy{hashPolicy(h)}
	}
	return ir.Route{
		Name:      ir.DefaultRouteName,
		Match:     ir.RouteMatch{Path: ir.PathMatch{Prefix: "/"}},
		Forward:   fwd,
		Decorator: ir.TraceOperation(s.fqdn, port, "/*"),
	}
}

// vsRoutes is Istio's BuildHTTPRoutesForVirtualService for one port and
// class: one route per match, in order; matches for other ports or other
// clients are skipped; nothing after the first catch-all is emitted. applies
// reports whether any rule is meant for this port and class — when none is,
// the Service keeps its default route, as in Istio.
func (t *translator) vsRoutes(vs *vsInfo, port uint32, cl *Class) (routes []ir.Route, applies bool) {
	spec := &vs.obj.Spec
	// catchAll stops emission for this class; universal says the catch-all
	// holds for every client, which makes later rules truly unreachable.
	catchAll, universal := false, false
	for i, h := range spec.Http {
		// src is where the rule is written: vs, or a delegate (delegate.go).
		src, path, bad := vs.rule(i)
		if catchAll {
			if universal {
				t.diags.Warnf(ir.CodeUnreachable, src.ref, string(path), "this rule can never match: an earlier rule matches every request")
			}
			continue
		}
		if len(h.Match) == 0 {
			applies, catchAll, universal = true, true, true
			if !bad {
				if r, ok := t.httpRoute(src, path, h, nil, port, cl); ok {
					routes = append(routes, r)
				}
			}
			continue
		}
		for j, mt := range h.Match {
			if mt.Port != 0 && mt.Port != port {
				continue
			}
			if !cl.httpMatch(mt) {
				t.sourceSelectorNote(src, path.Field("match").Index(j), mt.Gateways, mt.SourceLabels, mt.SourceNamespace)
				continue
			}
			applies = true
			m := translateMatch(mt)
			if !bad {
				if r, ok := t.httpRoute(src, path, h, mt, port, cl); ok {
					routes = append(routes, r)
				}
			}
			if isCatchAll(m) {
				catchAll = true
				universal = len(mt.SourceLabels) == 0 && mt.SourceNamespace == "" && len(mt.Gateways) == 0
				break
			}
		}
	}
	return routes, applies
}

func (t *translator) sourceSelectorNote(vs *vsInfo, field ir.Path, gateways []string, labels map[string]string, ns string) {
	switch {
	case len(gateways) > 0:
		t.diags.Infof(ir.CodeGatewayOnly, vs.ref, string(field), "this match applies to gateways %v only, not to the mesh", gateways)
	default:
		var who []string
		if len(labels) > 0 {
			who = append(who, "with labels "+formatLabels(labels))
		}
		if ns != "" {
			who = append(who, "in namespace "+ns)
		}
		t.diags.Infof(ir.CodeSourceSelector, vs.ref, string(field),
			"this match applies only to clients %s; nodemesh evaluates it per source class, and the default class (no labels, no namespace) does not match",
			strings.Join(who, " and "))
	}
}

// formatLabels renders labels as a selector: app=web,version=v2.
func formatLabels(labels map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// httpRoute is Istio's translateRoute for one match of one rule.
func (t *translator) httpRoute(vs *vsInfo, path ir.Path, h *networking.HTTPRoute, mt *networking.HTTPMatchRequest, port uint32, cl *Class) (ir.Route, bool) {
	name := h.Name
	if mt != nil && mt.Name != "" {
		name += "." + mt.Name
	}
	r := ir.Route{Name: name, Origin: &vs.ref, OriginField: string(path), Match: translateMatch(mt)}
	if mt != nil {
		r.StatPrefix = mt.StatPrefix
	}
	var authority string
	r.Headers, authority = headerOps(h.Headers)
	switch {
	case h.Redirect != nil:
		r.Redirect = translateRedirect(h.Redirect, port)
	case h.DirectResponse != nil:
		r.DirectResponse = translateDirectResponse(h.DirectResponse)
	default:
		fwd, ok := t.forwardAction(vs, path, h, authority, port, cl, &r.Headers)
		if !ok {
			return ir.Route{}, false
		}
		r.Forward = fwd
	}
	r.Decorator = decorator(&r, vs.obj.Name, port)
	r.Fault = translateFault(h.Fault)
	r.CORS = translateCORS(h.CorsPolicy)
	return r, true
}

// decorator is Istio's GetRouteOperation: <host>:<port><path> for a single
// destination, <vs-name>:<port><path> otherwise.
func decorator(r *ir.Route, vsName string, port uint32) string {
	path := "/*"
	switch m := r.Match.Path; {
	case m.Exact != "":
		path = m.Exact
	case m.Regex != "":
		path = m.Regex
	default:
		path = m.Prefix + "*"
	}
	if f := r.Forward; f != nil && !f.Weighted && len(f.Destinations) == 1 {
		if p, _, host, ok := ir.ParseOutboundClusterName(f.Destinations[0].Cluster); ok {
			return ir.TraceOperation(host, p, path)
		}
	}
	return ir.TraceOperation(vsName, port, path)
}

// entryDomains are the Host values of a ServiceEntry host (Istio's
// generateVirtualHostDomains for an External-registry service): the host
// (also with a trailing dot, as the pinned istiod emits it) and its
// addresses that are IPs, with and without the port. A host of
// the cluster domain (name.namespace.svc.<domain>) also answers to
// name.namespace.svc and name.namespace, as GenerateAltVirtualHosts makes
// them for a client of the same domain; the bare name is left out, since
// which namespace it means depends on the client.
func (t *translator) entryDomains(s *service, p string) []string {
	names := []string{s.fqdn, s.fqdn + "."} // istiod also emits the absolute name
	if rest, ok := strings.CutSuffix(s.fqdn, ".svc."+t.opts.ClusterDomain); ok && !isWildcard(s.fqdn) && strings.Count(rest, ".") == 1 {
		names = append(names, rest+".svc", rest)
	}
	names = append(names, s.entry.ips...)
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		if strings.Contains(n, ":") {
			n = "[" + n + "]" // an IPv6 address, as Istio's IPv6Compliant writes it
		}
		out = append(out, n, n+p)
	}
	return out
}

// catchAllVirtualHost is Istio's BuildCatchAllVirtualHost
// (pilot/pkg/networking/core/httproute.go): allow_any to
// PassthroughCluster, or under REGISTRY_ONLY block_all, a direct 502.
func (t *translator) catchAllVirtualHost() ir.VirtualHost {
	if t.opts.registryOnly() {
		return ir.VirtualHost{
			Name:    ir.BlockAllVirtualHost,
			Domains: []string{"*"},
			Routes: []ir.Route{{
				Name:           ir.BlockAllVirtualHost,
				Match:          ir.RouteMatch{Path: ir.PathMatch{Prefix: "/"}},
				DirectResponse: &ir.DirectResponse{Status: 502},
			}},
		}
	}
	return ir.VirtualHost{
		Name:    ir.AllowAnyVirtualHost,
		Domains: []string{"*"},
		Routes: []ir.Route{{
			Name:    ir.AllowAnyVirtualHost,
			Match:   ir.RouteMatch{Path: ir.PathMatch{Prefix: "/"}},
			Forward: &ir.ForwardAction{Destinations: []ir.WeightedDestination{{Cluster: ir.PassthroughCluster}}},
		}},
	}
}
