package envoy

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Problem is an invalid part of an xDS resource. It names the smallest unit
// that can be withheld on its own.
type Problem struct {
	Type string // TypeListener, TypeRoute, TypeCluster or TypeEndpoint
	Name string
	// Index is the resource's position in its Resources list.
	Index int
	// Chain is the index of the listener's filter chain at fault, DefaultChain
	// for the default chain, or -1 when the listener itself is at fault;
	// FilterChain is its name.
	Chain       int
	FilterChain string
	// VHost is the index of the virtual host at fault (-1: none) and
	// VirtualHost its name; Route is the index of the route inside it (-1:
	// the virtual host itself).
	VHost       int
	VirtualHost string
	Route       int
	// Origin is the Istio resource the faulty part came from, when known.
	Origin  *ir.ResourceRef
	Message string
}

// DefaultChain stands for a listener's default filter chain in problems.
const DefaultChain = -2

func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", p.Type, p.Name)
	if p.Chain != -1 {
		fmt.Fprintf(&b, " filter chain %q", p.FilterChain)
	}
	if p.VHost >= 0 {
		fmt.Fprintf(&b, " virtual host %q", p.VirtualHost)
		if p.Route >= 0 {
			fmt.Fprintf(&b, " route %d", p.Route)
		}
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	return b.String()
}

type validatable interface{ ValidateAll() error }

// Validate checks resources the way Envoy would before accepting them, and
// more: see the package documentation. Resources are checked in parallel;
// problems come back in a stable order. It never modifies the resources
// (beyond restoring what it temporarily detaches).
func Validate(r *Resources) []Problem {
	return ValidateWith(r, nil)
}

// Refs are resources that the resources being validated may refer to
// without being validated again (a node's shared clusters, say).
type Refs struct {
	// Clusters are the clusters' discovery types, by name (not the
	// clusters: a controller keeps Refs of its configuration, which it
	// otherwise keeps only encoded).
	Clusters  map[string]clusterv3.Cluster_DiscoveryType
	Endpoints map[string]bool
	Routes    map[string]bool
}

// RefsOf indexes resources for ValidateWith.
func RefsOf(r *Resources) *Refs {
	refs := &Refs{
		Clusters:  make(map[string]clusterv3.Cluster_DiscoveryType, len(r.Clusters)),
		Endpoints: make(map[string]bool, len(r.Endpoints)),
		Routes:    make(map[string]bool, len(r.Routes)),
	}
	for _, c := range r.Clusters {
		refs.Clusters[c.GetName()] = c.GetType()
	}
	for _, e := range r.Endpoints {
		refs.Endpoints[e.GetClusterName()] = true
	}
	for _, rc := range r.Routes {
		refs.Routes[rc.GetName()] = true
	}
	return refs
}

// ValidateWith validates r; references may also resolve to extra.
func ValidateWith(r *Resources, extra *Refs) []Problem {
	v := &validator{own: RefsOf(r), extra: extra}
	if v.extra == nil {
		v.extra = &Refs{}
	}
	var tasks []func(c *checker)
	add := func(n int, name func(int) string, check func(c *checker, i int, dup bool)) {
		seen := make(map[string]bool, n)
		for i := 0; i < n; i++ {
			dup := seen[name(i)]
			seen[name(i)] = true
			tasks = append(tasks, func(c *checker) { check(c, i, dup) })
		}
	}
	add(len(r.Listeners), func(i int) string { return r.Listeners[i].GetName() },
		func(c *checker, i int, dup bool) { c.listener(i, r.Listeners[i], dup) })
	// A route configuration holds every virtual host of its port; check its
	// virtual hosts as separate tasks so that one big configuration does not
	// serialise the work.
	seenRC := map[string]bool{}
	for i, rc := range r.Routes {
		dup := seenRC[rc.GetName()]
		seenRC[rc.GetName()] = true
		tasks = append(tasks, func(c *checker) { c.routeConfig(i, rc, dup) })
		if dup {
			continue
		}
		names := map[string]bool{}
		for j, vh := range rc.VirtualHosts {
			dupVH := names[vh.GetName()]
			names[vh.GetName()] = true
			tasks = append(tasks, func(c *checker) { c.virtualHost(i, rc.GetName(), j, vh, dupVH) })
		}
	}
	add(len(r.Clusters), func(i int) string { return r.Clusters[i].GetName() },
		func(c *checker, i int, dup bool) { c.cluster(i, r.Clusters[i], dup) })
	add(len(r.Endpoints), func(i int) string { return r.Endpoints[i].GetClusterName() },
		func(c *checker, i int, dup bool) { c.endpoint(i, r.Endpoints[i], dup) })

	results := make([][]Problem, len(tasks))
	parallelWith(len(tasks),
		func() *checker {
			return &checker{validator: v, plans: map[protoreflect.MessageDescriptor][]protoreflect.FieldDescriptor{}}
		},
		func(c *checker, i int) {
			c.problems = nil
			tasks[i](c)
			results[i] = c.problems
		})
	var out []Problem
	for _, p := range results {
		out = append(out, p...)
	}
	return out
}

// validator holds what every check reads: the resources by name.
type validator struct {
	own, extra *Refs
}

// lookupCluster returns a cluster's discovery type.
func (v *validator) lookupCluster(name string) (clusterv3.Cluster_DiscoveryType, bool) {
	if t, ok := v.own.Clusters[name]; ok {
		return t, true
	}
	t, ok := v.extra.Clusters[name]
	return t, ok
}

func (v *validator) hasEndpoints(name string) bool {
	return v.own.Endpoints[name] || v.extra.Endpoints[name]
}

func (v *validator) hasRoute(name string) bool { return v.own.Routes[name] || v.extra.Routes[name] }

// checker checks one resource at a time; each worker has its own.
type checker struct {
	*validator
	problems []Problem
	// plans caches walkPlan without the shared map's synchronisation.
	plans map[protoreflect.MessageDescriptor][]protoreflect.FieldDescriptor
}

func (v *checker) plan(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	pl, ok := v.plans[md]
	if !ok {
		pl = walkPlan(md)
		v.plans[md] = pl
	}
	return pl
}

// walkPlan lists the message-valued fields of a type (singular, list or
// map) inside which a checked type can occur; the walk visits only those.
func walkPlan(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub != nil && checked(sub) {
			out = append(out, fd)
		}
	}
	return out
}

func (v *checker) add(p Problem, format string, args ...any) {
	p.Message = fmt.Sprintf(format, args...)
	v.problems = append(v.problems, p)
}

// deep runs protoc-gen-validate on m and on every message packed in an Any
// inside it, plus the checks PGV cannot express, and reports each failure.
func (v *checker) deep(p Problem, m proto.Message) {
	if vm, ok := m.(validatable); ok {
		if err := vm.ValidateAll(); err != nil {
			v.add(p, "%s", err)
		}
	}
	v.walk(p, m.ProtoReflect(), 0)
}

func (v *checker) walk(p Problem, m protoreflect.Message, depth int) {
	if depth > 64 {
		v.add(p, "message nests too deeply")
		return
	}
	for _, fd := range v.plan(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		val := m.Get(fd)
		switch {
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				v.message(p, l.Get(i).Message(), depth+1)
			}
		case fd.IsMap():
			val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				v.message(p, mv.Message(), depth+1)
				return true
			})
		default:
			v.message(p, val.Message(), depth+1)
		}
	}
}

// message checks one embedded message by type, then walks into it.
func (v *checker) message(p Problem, m protoreflect.Message, depth int) {
	switch x := m.Interface().(type) {
	case *anypb.Any:
		inner, err := x.UnmarshalNew()
		if err != nil {
			v.add(p, "cannot unpack %s: %v", x.GetTypeUrl(), err)
			return
		}
		v.deep(p, inner)
		return
	case *durationpb.Duration:
		if err := x.CheckValid(); err != nil {
			v.add(p, "invalid duration: %v", err)
		} else if x.AsDuration() < 0 {
			v.add(p, "duration %s is negative", x.AsDuration())
		}
		return
	case *typev3.FractionalPercent:
		if x.GetNumerator() > denominator(x.GetDenominator()) {
			v.add(p, "percentage %d/%d is above 100%%", x.GetNumerator(), denominator(x.GetDenominator()))
		}
		return
	case *matcherv3.RegexMatcher:
		if _, err := regexp.Compile(x.GetRegex()); err != nil {
			v.add(p, "regular expression %q does not compile: %v", x.GetRegex(), err)
		} else if n, _ := ir.RE2ProgramSize(x.GetRegex()); n > ir.RE2MaxProgramSize {
			v.add(p, "regular expression %q may compile to an RE2 program of %d instructions, over the node's re2.max_program_size.error_level %d", x.GetRegex(), n, ir.RE2MaxProgramSize)
		}
		return
	case *corev3.HeaderValueOption:
		// Envoy's HeaderParser: neither a pseudo-header nor Host may be
		// added or set, and the value's %VARIABLE% syntax must parse.
		k := x.GetHeader().GetKey()
		if !modifiableHeader(k) {
			v.add(p, "header %q: :-prefixed or host headers may not be modified", k)
		}
		if err := ir.HeaderFormatError(x.GetHeader().GetValue()); err != nil {
			v.add(p, "header %q value %q: %v", k, x.GetHeader().GetValue(), err)
		}
		return
	case *endpointv3.LbEndpoint:
		// The bulk of a node's config; only its metadata can hold a checked type.
		if x.GetMetadata() == nil {
			return
		}
	}
	v.walk(p, m, depth)
}

// modifiableHeader is Envoy's HeaderUtility::isModifiableHeader.
func modifiableHeader(name string) bool {
	return !strings.HasPrefix(name, ":") && !strings.EqualFold(name, "host")
}

// removals checks a *_headers_to_remove list (Envoy's HeaderParser).
func (v *checker) removals(p Problem, names []string) {
	for _, n := range names {
		if !modifiableHeader(n) {
			v.add(p, "header %q: :-prefixed or host headers may not be removed", n)
		}
	}
}

// weightLimit is Envoy's limit on the sum of weighted clusters' weights
// (RouteEntryImplBase and TcpProxy: the sum is kept in a uint32).
const weightLimit = math.MaxUint32

func denominator(d typev3.FractionalPercent_DenominatorType) uint32 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	default:
		return 100
	}
}

func (v *checker) listener(i int, l *listenerv3.Listener, dup bool) {
	p := Problem{Type: TypeListener, Name: l.GetName(), Index: i, Chain: -1, VHost: -1, Route: -1}
	if dup {
		v.add(p, "duplicate listener name")
		return
	}
	// Validate the listener without its chains so that a chain's fault is
	// reported against the chain alone.
	chains, def := l.FilterChains, l.DefaultFilterChain
	l.FilterChains, l.DefaultFilterChain = nil, nil
	v.deep(p, l)
	l.FilterChains, l.DefaultFilterChain = chains, def
	if api := l.GetApiListener().GetApiListener(); api != nil {
		h := &hcmv3.HttpConnectionManager{}
		if api.MessageIs(h) && api.UnmarshalTo(h) == nil {
			v.hcm(p, h)
		}
	}

	matches := map[string]string{}
	overlaps := sourceOverlaps(chains)
	names := map[string]bool{}
	for j, fc := range chains {
		cp := p
		cp.Chain, cp.FilterChain = j, fc.GetName()
		if fc.GetName() != "" && names[fc.GetName()] {
			v.add(cp, "duplicate filter chain name")
			continue
		}
		names[fc.GetName()] = true
		key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(fc.GetFilterChainMatch())
		if prev, dup := matches[string(key)]; dup {
			v.add(cp, "filter chain match is the same as chain %q's (Envoy rejects the listener)", prev)
			continue
		}
		matches[string(key)] = fc.GetName()
		if msg, ok := overlaps[j]; ok {
			v.add(cp, "%s", msg)
			continue
		}
		v.filterChain(cp, fc)
	}
	if def != nil {
		cp := p
		cp.Chain, cp.FilterChain = DefaultChain, def.GetName()
		v.filterChain(cp, def)
	}
}

// sourceOverlaps finds chains that Envoy rejects because they share a
// source prefix with an earlier chain whose other criteria are the same
// (the source step could not choose), by chain index. Chains are grouped by
// those other criteria first: a listener split by client identity holds
// thousands of source prefixes, but few per group.
func sourceOverlaps(chains []*listenerv3.FilterChain) map[int]string {
	groups := map[string][]int{}
	var order []string
	for j, fc := range chains {
		m := fc.GetFilterChainMatch()
		ranges := m.GetSourcePrefixRanges()
		if len(ranges) == 0 {
			continue
		}
		// (the listener is this task's own while it is checked)
		m.SourcePrefixRanges = nil
		rk, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		m.SourcePrefixRanges = ranges
		if _, ok := groups[string(rk)]; !ok {
			order = append(order, string(rk))
		}
		groups[string(rk)] = append(groups[string(rk)], j)
	}
	type sourceKey struct {
		prefix string
		bits   uint32
	}
	out := map[int]string{}
	for _, k := range order {
		members := groups[k]
		if len(members) < 2 {
			continue
		}
		seen := map[sourceKey]int{}
		for _, j := range members {
			for _, r := range chains[j].GetFilterChainMatch().GetSourcePrefixRanges() {
				sk := sourceKey{r.GetAddressPrefix(), r.GetPrefixLen().GetValue()}
				if prev, dup := seen[sk]; dup && prev != j {
					if _, have := out[j]; !have {
						out[j] = fmt.Sprintf("source prefix %s/%d is also chain %q's, with the same other criteria (Envoy rejects the listener)", sk.prefix, sk.bits, chains[prev].GetName())
					}
					continue
				}
				seen[sk] = j
			}
		}
	}
	return out
}

func (v *checker) filterChain(p Problem, fc *listenerv3.FilterChain) {
	v.deep(p, fc)
	if len(fc.GetFilters()) == 0 {
		v.add(p, "filter chain has no network filter")
	}
	for _, f := range fc.GetFilters() {
		a := f.GetTypedConfig()
		switch {
		case a.MessageIs(&hcmv3.HttpConnectionManager{}):
			h := &hcmv3.HttpConnectionManager{}
			if err := a.UnmarshalTo(h); err != nil {
				continue // reported by deep
			}
			v.hcm(p, h)
		case a.MessageIs(&tcpproxyv3.TcpProxy{}):
			t := &tcpproxyv3.TcpProxy{}
			if err := a.UnmarshalTo(t); err != nil {
				continue
			}
			v.tcpProxy(p, t)
		}
	}
}

func (v *checker) hcm(p Problem, h *hcmv3.HttpConnectionManager) {
	if rds := h.GetRds(); rds != nil && !v.hasRoute(rds.GetRouteConfigName()) {
		v.add(p, "route configuration %q does not exist", rds.GetRouteConfigName())
	}
	// An inline route configuration (the inbound listener's) is part of
	// the chain: its routes' clusters must exist like an RDS one's.
	for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if c := a.GetCluster(); c != "" {
				v.clusterRef(p, c)
			}
			for _, c := range a.GetWeightedClusters().GetClusters() {
				v.clusterRef(p, c.GetName())
			}
		}
	}
	filters := h.GetHttpFilters()
	for i, f := range filters {
		last := i == len(filters)-1
		if f.GetName() == filterRouter && !last {
			v.add(p, "the router filter must be the last HTTP filter")
		}
		if last && f.GetName() != filterRouter {
			v.add(p, "the last HTTP filter must be the router, not %q", f.GetName())
		}
	}
	if len(filters) == 0 {
		v.add(p, "HTTP connection manager has no router filter")
	}
}

func (v *checker) tcpProxy(p Problem, t *tcpproxyv3.TcpProxy) {
	if c := t.GetCluster(); c != "" {
		v.clusterRef(p, c)
	}
	if wc := t.GetWeightedClusters(); wc != nil {
		total := uint64(0)
		for _, c := range wc.GetClusters() {
			v.clusterRef(p, c.GetName())
			total += uint64(c.GetWeight())
		}
		if total == 0 {
			v.add(p, "weighted clusters have a total weight of 0")
		}
		if total > weightLimit {
			v.add(p, "weighted clusters' weights add up to %d, over %d", total, uint64(weightLimit))
		}
	}
}

func (v *checker) clusterRef(p Problem, name string) {
	if _, ok := v.lookupCluster(name); !ok {
		v.add(p, "cluster %q does not exist", name)
	}
}

func (v *checker) routeConfig(i int, rc *routev3.RouteConfiguration, dup bool) {
	p := Problem{Type: TypeRoute, Name: rc.GetName(), Index: i, Chain: -1, VHost: -1, Route: -1}
	if dup {
		v.add(p, "duplicate route configuration name")
		return
	}
	vhosts := rc.VirtualHosts
	rc.VirtualHosts = nil
	v.deep(p, rc)
	rc.VirtualHosts = vhosts
	v.removals(p, rc.GetRequestHeadersToRemove())
	v.removals(p, rc.GetResponseHeadersToRemove())

	// Envoy rejects a route configuration in which two virtual hosts share a
	// domain. (Only names and domains are read here; virtualHost tasks may be
	// checking the routes of the same virtual hosts concurrently.)
	domains := map[string]string{}
	for j, vh := range vhosts {
		vp := p
		vp.VHost, vp.VirtualHost = j, vh.GetName()
		for _, d := range vh.GetDomains() {
			if prev, dup := domains[strings.ToLower(d)]; dup && prev != vh.GetName() {
				v.add(vp, "domain %q is also a domain of virtual host %q (Envoy rejects duplicates)", d, prev)
			}
			domains[strings.ToLower(d)] = vh.GetName()
		}
	}
}

func (v *checker) virtualHost(i int, rcName string, j int, vh *routev3.VirtualHost, dup bool) {
	p := Problem{Type: TypeRoute, Name: rcName, Index: i, Chain: -1, VHost: j, VirtualHost: vh.GetName(), Route: -1}
	if dup {
		v.add(p, "duplicate virtual host name")
		return
	}
	routes := vh.Routes
	vh.Routes = nil
	v.deep(p, vh)
	vh.Routes = routes
	v.removals(p, vh.GetRequestHeadersToRemove())
	v.removals(p, vh.GetResponseHeadersToRemove())
	for k, r := range routes {
		rp := p
		rp.Route = k
		rp.Origin = origin(r.GetMetadata())
		v.route(rp, r)
	}
}

func (v *checker) route(p Problem, r *routev3.Route) {
	v.deep(p, r)
	v.removals(p, r.GetRequestHeadersToRemove())
	v.removals(p, r.GetResponseHeadersToRemove())
	a := r.GetRoute()
	if a == nil {
		if r.GetRedirect() == nil && r.GetDirectResponse() == nil {
			v.add(p, "route has no action")
		}
		return
	}
	switch {
	case a.GetCluster() != "":
		v.clusterRef(p, a.GetCluster())
	case a.GetWeightedClusters() != nil:
		total := uint64(0)
		for _, c := range a.GetWeightedClusters().GetClusters() {
			v.clusterRef(p, c.GetName())
			total += uint64(c.GetWeight().GetValue())
			v.removals(p, c.GetRequestHeadersToRemove())
			v.removals(p, c.GetResponseHeadersToRemove())
		}
		if total == 0 {
			v.add(p, "weighted clusters have a total weight of 0")
		}
		if total > weightLimit {
			v.add(p, "weighted clusters' weights add up to %d, over %d", total, uint64(weightLimit))
		}
	default:
		v.add(p, "route action names no cluster")
	}
	for _, m := range a.GetRequestMirrorPolicies() {
		v.clusterRef(p, m.GetCluster())
	}
	if rp := a.GetRetryPolicy(); rp != nil && rp.GetNumRetries() != nil && rp.GetNumRetries().GetValue() == 0 {
		v.add(p, "retry policy with 0 retries (omit the policy instead; gRPC clients reject it)")
	}
}

func (v *checker) cluster(i int, c *clusterv3.Cluster, dup bool) {
	p := Problem{Type: TypeCluster, Name: c.GetName(), Index: i, Chain: -1, VHost: -1, Route: -1, Origin: origin(c.GetMetadata())}
	if dup {
		v.add(p, "duplicate cluster name")
		return
	}
	v.deep(p, c)
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		if c.GetEdsClusterConfig() == nil {
			v.add(p, "EDS cluster without eds_cluster_config")
			break
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if !v.hasEndpoints(name) {
			v.add(p, "EDS cluster has no ClusterLoadAssignment %q (Envoy would wait for it forever)", name)
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
			v.add(p, "ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED")
		}
	}
	if m := c.GetTransportSocketMatcher(); m != nil {
		names := make([]string, 0, len(c.GetTransportSocketMatches()))
		for _, tsm := range c.GetTransportSocketMatches() {
			names = append(names, tsm.GetName())
		}
		for _, msg := range socketMatcherProblems(names, matcherSocketNames(m)) {
			v.add(p, "%s", msg)
		}
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_MAGLEV:
		if ts := c.GetMaglevLbConfig().GetTableSize(); ts != nil && !prime(ts.GetValue()) {
			v.add(p, "maglev table size %d is not a prime number", ts.GetValue())
		}
	case clusterv3.Cluster_RING_HASH:
		rh := c.GetRingHashLbConfig()
		if lo, hi := rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue(); hi != 0 && lo > hi {
			v.add(p, "ring hash minimum size %d exceeds the maximum %d", lo, hi)
		}
	}
}

func prime(n uint64) bool {
	if n < 2 {
		return false
	}
	for i := uint64(2); i*i <= n; i++ {
		if n%i == 0 {
			return false
		}
	}
	return true
}

func (v *checker) endpoint(i int, e *endpointv3.ClusterLoadAssignment, dup bool) {
	p := Problem{Type: TypeEndpoint, Name: e.GetClusterName(), Index: i, Chain: -1, VHost: -1, Route: -1}
	if dup {
		v.add(p, "duplicate ClusterLoadAssignment")
		return
	}
	if t, ok := v.lookupCluster(e.GetClusterName()); !ok || t != clusterv3.Cluster_EDS {
		v.add(p, "no EDS cluster %q uses this assignment", e.GetClusterName())
	}
	v.deep(p, e)
	for _, loc := range e.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if _, err := netip.ParseAddr(sa.GetAddress()); err != nil {
				v.add(p, "endpoint address %q is not an IP address", sa.GetAddress())
			}
		}
	}
}

// origin reads filter_metadata.istio.config back into a resource reference.
func origin(md *corev3.Metadata) *ir.ResourceRef {
	s := md.GetFilterMetadata()["istio"]
	if s == nil {
		return nil
	}
	if cfg := s.GetFields()["config"].GetStringValue(); cfg != "" {
		if ref, ok := ir.ParseConfigPath(cfg); ok {
			return &ref
		}
	}
	if svcs := s.GetFields()["services"].GetListValue().GetValues(); len(svcs) > 0 {
		f := svcs[0].GetStructValue().GetFields()
		return &ir.ResourceRef{Kind: "Service", Namespace: f["namespace"].GetStringValue(), Name: f["name"].GetStringValue()}
	}
	return nil
}

// checkedTypes are the messages the walk looks at itself.
var checkedTypes = map[protoreflect.FullName]bool{
	"google.protobuf.Any":                    true,
	"google.protobuf.Duration":               true,
	"envoy.type.v3.FractionalPercent":        true,
	"envoy.type.matcher.v3.RegexMatcher":     true,
	"envoy.config.core.v3.HeaderValueOption": true,
}

// reach caches, per message type, whether a checked type can occur inside it;
// the walk skips the subtrees where none can (most of an endpoint list).
var reach sync.Map // protoreflect.FullName → bool

func checked(md protoreflect.MessageDescriptor) bool {
	if v, ok := reach.Load(md.FullName()); ok {
		return v.(bool)
	}
	r := reaches(md, map[protoreflect.FullName]bool{})
	reach.Store(md.FullName(), r)
	return r
}

func reaches(md protoreflect.MessageDescriptor, visiting map[protoreflect.FullName]bool) bool {
	if checkedTypes[md.FullName()] {
		return true
	}
	if visiting[md.FullName()] {
		return false
	}
	visiting[md.FullName()] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsMap() {
			fd = fd.MapValue()
		}
		if sub := fd.Message(); sub != nil && reaches(sub, visiting) {
			return true
		}
	}
	return false
}
