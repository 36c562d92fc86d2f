package istio

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// forwardAction builds the route action of a rule with destinations
// (Istio's applyHTTPRouteDestination). headers receives a single
// destination's header operations, which Istio merges into the route's.
func (t *translator) forwardAction(vs *vsInfo, path ir.Path, h *networking.HTTPRoute, authority string, port uint32, cl *Class, headers *ir.HeaderOps) (*ir.ForwardAction, bool) {
	fwd := &ir.ForwardAction{}
	if h.Timeout != nil {
		fwd.Timeout = ir.Duration(h.Timeout.AsDuration())
	}
	if rw := h.Rewrite; rw != nil {
		if rr := rw.UriRegexRewrite; rr != nil {
			fwd.RegexRewrite = &ir.RegexRewrite{Pattern: rr.Match, Substitution: rr.Rewrite}
		} else if rw.Uri != "" {
			fwd.PrefixRewrite = rw.Uri
		}
		if rw.Authority != "" {
			authority = rw.Authority
		}
	}
	fwd.HostRewrite = authority
	if !t.mirrors(vs, path, h, port, cl, fwd) {
		return nil, false
	}
	if len(h.Route) == 1 {
		d := h.Route[0]
		cluster, svc, ok := t.resolveDestination(vs, path.Field("route").Index(0).Field("destination"), d.Destination, port, cl)
		if !ok {
			return nil, false
		}
		ops, auth := headerOps(d.Headers)
		headers.Append(ops)
		if auth != "" && fwd.HostRewrite == "" {
			fwd.HostRewrite = auth
		}
		fwd.Destinations = []ir.WeightedDestination{{Cluster: cluster}}
		hash := t.destinationHash(svc, d.Destination, cl)
		if hash != nil {
			fwd.HashPolicies = append(fwd.HashPolicies, hashPolicy(hash))
		}
		fwd.Retry = retryPolicy(h.Retries, hash != nil)
		return fwd, true
	}
	fwd.Weighted = true
	for j, d := range h.Route {
		if d.Weight == 0 {
			continue // Istio drops zero weights when there are several destinations
		}
		cluster, svc, ok := t.resolveDestination(vs, path.Field("route").Index(j).Field("destination"), d.Destination, port, cl)
		if !ok {
			return nil, false
		}
		ops, auth := headerOps(d.Headers)
		fwd.Destinations = append(fwd.Destinations, ir.WeightedDestination{Cluster: cluster, Weight: uint32(d.Weight), Headers: ops, HostRewrite: auth})
		if hash := t.destinationHash(svc, d.Destination, cl); hash != nil {
			fwd.HashPolicies = append(fwd.HashPolicies, hashPolicy(hash))
		}
	}
	fwd.Retry = retryPolicy(h.Retries, false)
	return fwd, true
}

// resolveDestination names the cluster of a destination (Istio's
// GetDestinationCluster): the port is destination.port, else the Service's
// only port, else the port being routed. A destination that names no Service,
// port or subset is an error and leaves the rule out.
func (t *translator) resolveDestination(vs *vsInfo, field ir.Path, dst *networking.Destination, port uint32, cl *Class) (string, *service, bool) {
	host := resolveHost(dst.GetHost(), vs.namespace, t.opts.ClusterDomain)
	s := t.services[host]
	if s == nil {
		if se, ok := t.externalHost(host); ok {
			// Istio names a cluster after the destination host, which no
			// cluster of the wildcard entry has: its requests fail too.
			t.diags.Warnf(ir.CodeUnsupportedField, vs.ref, string(field.Field("host")),
				"%s is only covered by the wildcard host %q of %s; a destination must name the entry's host; the rule is left out", host, se.fqdn, se.ref)
		} else {
			t.diags.Errorf(ir.CodeHostNotFound, vs.ref, string(field.Field("host")), "no Service %s; the rule is left out", host)
		}
		return "", nil, false
	}
	if !t.serviceVisible(s, cl.Namespace) {
		// Istio's proxy has no cluster for a Service not exported to it:
		// the route would fail (503 NC). As for a missing host, the rule
		// is left out for this class.
		who := "the default class (no namespace: it sees Services exported to \"*\" only)"
		if cl.Namespace != "" {
			who = "clients of namespace " + cl.Namespace
		}
		t.diags.Warnf(ir.CodeHostNotFound, vs.ref, string(field.Field("host")),
			"%s is not exported to %s (its %s annotation); the rule is left out for them", s.fqdn, who, serviceExportToAnnotation)
		return "", nil, false
	}
	switch {
	case dst.Port != nil:
		port = dst.Port.Number
	case len(s.ports) == 1:
		port = s.ports[0].port
	}
	if s.portByNumber(port) == nil {
		if dst.Port == nil {
			t.diags.Errorf(ir.CodePortNotFound, vs.ref, string(field),
				"%s has several ports and none is %d; set destination.port; the rule is left out", s.fqdn, port)
		} else {
			t.diags.Errorf(ir.CodePortNotFound, vs.ref, string(field.Field("port")), "%s has no port %d; the rule is left out", s.fqdn, port)
		}
		return "", nil, false
	}
	if dst.Subset != "" {
		dr := t.destinationRule(s, cl.Namespace)
		if dr.subset(dst.Subset) == nil {
			t.diags.Errorf(ir.CodeSubsetNotFound, vs.ref, string(field.Field("subset")),
				"subset %q of %s is not defined by any DestinationRule%s; the rule is left out", dst.Subset, s.fqdn, knownSubsets(dr))
			return "", nil, false
		}
	}
	return t.clusterName(s, port, dst.Subset, cl), s, true
}

func knownSubsets(dr *mergedDR) string {
	if dr == nil || len(dr.subsets) == 0 {
		return ""
	}
	names := make([]string, 0, len(dr.subsets))
	for _, s := range dr.subsets {
		names = append(names, s.name)
	}
	slices.Sort(names)
	return " (defined: " + strings.Join(names, ", ") + ")"
}

// destinationHash finds the consistent hash a DestinationRule sets for a
// destination. Port-level settings only count when the destination names its
// port, as in Istio's hashForHTTPDestination.
func (t *translator) destinationHash(s *service, dst *networking.Destination, cl *Class) *networking.LoadBalancerSettings_ConsistentHashLB {
	dr := t.destinationRule(s, cl.Namespace)
	return dr.consistentHash(dst.GetPort().GetNumber(), dst.GetSubset())
}

func hashPolicy(h *networking.LoadBalancerSettings_ConsistentHashLB) ir.HashPolicy {
	switch k := h.HashKey.(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return ir.HashPolicy{Header: k.HttpHeaderName}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := &ir.HashCookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if ttl := k.HttpCookie.GetTtl(); ttl != nil {
			c.TTL = ir.D(ttl.AsDuration())
		}
		for _, a := range k.HttpCookie.GetAttributes() {
			c.Attributes = append(c.Attributes, ir.Header{Name: a.Name, Value: a.Value})
		}
		return ir.HashPolicy{Cookie: c}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		return ir.HashPolicy{SourceIP: k.UseSourceIp}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return ir.HashPolicy{QueryParam: k.HttpQueryParameterName}
	}
	return ir.HashPolicy{}
}

// mirrors adds Istio's request mirror policies (mirror + mirrorPercentage,
// or mirrors[]); 100 % when no percentage is given, none when it is 0.
func (t *translator) mirrors(vs *vsInfo, path ir.Path, h *networking.HTTPRoute, port uint32, cl *Class, fwd *ir.ForwardAction) bool {
	add := func(field ir.Path, dst *networking.Destination, pct float64) bool {
		if pct <= 0 {
			return true
		}
		cluster, _, ok := t.resolveDestination(vs, field, dst, port, cl)
		if ok {
			fwd.Mirrors = append(fwd.Mirrors, ir.Mirror{Cluster: cluster, Percent: pct})
		}
		return ok
	}
	if h.Mirror != nil {
		pct := 100.0
		switch {
		case h.MirrorPercentage != nil:
			pct = h.MirrorPercentage.Value
		case h.MirrorPercent != nil: // deprecated, still honoured
			pct = float64(h.MirrorPercent.Value)
		}
		if !add(path.Field("mirror"), h.Mirror, pct) {
			return false
		}
	}
	for j, m := range h.Mirrors {
		pct := 100.0
		if m.Percentage != nil {
			pct = m.Percentage.Value
		}
		if !add(path.Field("mirrors").Index(j).Field("destination"), m.Destination, pct) {
			return false
		}
	}
	return true
}
