package translate

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// NodeClasses are a node's source classes: its client pods (on the node, in
// opted-in namespaces, without a sidecar) grouped by what routing can tell
// apart.
type NodeClasses struct {
	// Key identifies what a node's listener and route configurations depend
	// on — its classes and their pods' addresses, and with Istio mTLS its
	// client identities and their pods' addresses: nodes with the same key
	// are served the same listener and route configurations.
	Key string
	// ClusterKey identifies what a node's clusters depend on: with Istio
	// mTLS, the set of its client identities (not their addresses: a pod
	// that comes, goes or changes address changes the listener only);
	// otherwise "" (every node is served the shared clusters).
	ClusterKey string
	classes    []*istio.Class
	// identities are the client pods' workload identities and addresses
	// (with Istio mTLS only).
	identities []ir.ClientIdentity
	// inbound are the node's pods whose ports its inbound listener
	// captures (part of Key).
	inbound []inboundPod
}

// NodeClasses groups a node's client pods into source classes.
func (g *Generation) NodeClasses(node string) NodeClasses {
	g.mu.Lock()
	classes := g.prepared.NodeClasses(node)
	var ids []ir.ClientIdentity
	if g.prepared.IstioMTLS() != nil {
		ids = g.prepared.NodeIdentities(node)
	}
	bag := g.bag
	g.mu.Unlock()
	inKey, inbound := g.authz.inbound(bag, node)
	var b strings.Builder
	for _, c := range classes {
		b.WriteString(c.Name)
		b.WriteByte('=')
		b.WriteString(strings.Join(c.SourcePrefixes, ","))
		b.WriteByte(';')
	}
	// The listener's identity chains match the identities' addresses ("|"
	// and "=" appear in no SPIFFE ID or address).
	var ck strings.Builder
	for _, id := range ids {
		b.WriteByte('|')
		b.WriteString(id.SPIFFE)
		b.WriteByte('=')
		b.WriteString(strings.Join(id.Addresses, ","))
		ck.WriteByte('|')
		ck.WriteString(id.SPIFFE)
	}
	if inKey != "" {
		b.WriteString("|inbound:")
		b.WriteString(inKey)
	}
	return NodeClasses{Key: b.String(), ClusterKey: ck.String(), classes: classes, inbound: inbound, identities: ids}
}

// NodePart is what a node's configuration adds to the default class's: the
// route configurations of its source classes and its listener. Building it
// takes two steps so that a server can share class route configurations
// between nodes (and generations) under its own lock and build listeners
// in parallel: BuildRoutes, then BuildListeners.
type NodePart struct {
	g     *Generation
	model *ir.Model
	// Classes are the node's source classes, the default class first.
	Classes []ir.SourceClass
	// ClassRoutes are the names of its classes' route configurations (those
	// that differ from the default class's), named after their content so
	// that classes, nodes and generations that see the same routing share
	// them.
	ClassRoutes []string
	// Identities are the node's client identities and their addresses
	// (Istio mTLS only): the listener has a copy of its chains for each
	// (istio.Prepared.SplitByIdentity), and when there are any, the node's
	// clusters with Istio mTLS differ from the shared ones (MTLSClusters).
	Identities []ir.ClientIdentity
	inbound    []inboundPod
}

// NodePart computes a node's model from its classes.
func (g *Generation) NodePart(nc NodeClasses) *NodePart {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.prepared.Node(nc.classes)
	g.prepared.SplitByIdentity(m, nc.identities)
	np := &NodePart{g: g, model: m, Classes: m.SourceClasses, Identities: nc.identities, inbound: nc.inbound}
	for _, rc := range m.RouteConfigs {
		if !g.prepared.IsBaseRoute(rc.Name) {
			np.ClassRoutes = append(np.ClassRoutes, rc.Name)
		}
	}
	return np
}

// Model is the node's model: the default class's (without what Compact
// dropped) with its classes' route configurations and filter chains.
func (np *NodePart) Model() *ir.Model { return np.model }

// BuildRoutes builds and validates the class route configurations named
// (those of ClassRoutes the caller does not hold yet). One that fails
// validation is withheld and reported.
func (np *NodePart) BuildRoutes(names []string) []*routev3.RouteConfiguration {
	if len(names) == 0 {
		return nil
	}
	var rcs []ir.RouteConfig
	for _, rc := range np.model.RouteConfigs {
		// (a default-class one is never built again)
		if slices.Contains(names, rc.Name) && slices.Contains(np.ClassRoutes, rc.Name) {
			rcs = append(rcs, rc)
		}
	}
	built, diags := envoy.BuildPart(&ir.Model{RouteConfigs: rcs}, np.g.refs)
	np.g.addPartDiags(diags)
	return built.Routes
}

// BuildListeners builds and validates the node's listener. Its filter
// chains may refer to the default class's route configurations and to the
// class route configurations for which exists is true (those built and
// valid); a chain that refers to anything else is withheld and reported.
// routes are the names of the route configurations it refers to, sorted:
// exactly what the node must be served, since in ADS mode Envoy asks for
// those and a type is only answered when a request names all of its
// resources.
func (np *NodePart) BuildListeners(exists func(routeConfig string) bool) (listeners []*listenerv3.Listener, routes []string) {
	base := np.g.refs
	refs := *base
	refs.Routes = make(map[string]bool, len(base.Routes)+len(np.ClassRoutes))
	for k := range base.Routes {
		refs.Routes[k] = true
	}
	for _, n := range np.ClassRoutes {
		if exists(n) {
			refs.Routes[n] = true
		}
	}
	part, diags := envoy.BuildPart(&ir.Model{Listeners: np.model.Listeners}, &refs)
	np.g.addPartDiags(diags)
	for _, l := range part.Listeners {
		routes = append(routes, envoy.RouteConfigNames(l)...)
	}
	slices.Sort(routes)
	return part.Listeners, slices.Compact(routes)
}

// MTLSClusters are the node's versions of the shared clusters that carry
// Istio mTLS: each with a socket per client identity of the node and the
// matcher that picks it by the identity the listener decided. They depend
// on the node's identity set only (NodeClasses.ClusterKey). shared are the
// shared clusters (as New returned them, or decoded again; not modified);
// only those that carry Istio mTLS are read. It returns nil when the node
// has no client identity (the shared clusters are the node's). A cluster
// that cannot be built or fails validation is left as shared — no client
// certificate, which denies more — and reported.
func (np *NodePart) MTLSClusters(shared []*clusterv3.Cluster) []*clusterv3.Cluster {
	if len(np.Identities) == 0 {
		return nil
	}
	specs := np.g.prepared.IstioMTLS()
	spiffes := make([]string, len(np.Identities))
	for i, id := range np.Identities {
		spiffes[i] = id.SPIFFE
	}
	ids, err := envoy.NewMTLSIdentities(spiffes)
	var diags ir.Diagnostics
	if err != nil {
		diags.Errorf(ir.CodeInvalidValue, ir.ResourceRef{Kind: "Node"}, "", "Istio mTLS: %v; the node's clusters present no client certificate", err)
		np.g.addPartDiags(diags)
		return nil
	}
	out := make([]*clusterv3.Cluster, 0, len(specs))
	for _, c := range shared {
		m := specs[c.GetName()]
		if m == nil {
			continue
		}
		// Validated as the shared ones were, for what differs from them
		// (see envoy.WithIstioMTLS).
		nc, err := envoy.WithIstioMTLS(c, m, ids)
		if err != nil {
			diags.Errorf(ir.CodeInvalidValue, ir.ResourceRef{Kind: "Cluster", Name: c.GetName()}, "", "Istio mTLS: %v; the cluster presents no client certificate", err)
			continue
		}
		out = append(out, nc)
	}
	np.g.addPartDiags(diags)
	return out
}

// MTLSClusterNames are the names of the shared clusters MTLSClusters
// replaces for this node (none when the node has no client identity),
// sorted: what a caller that keeps clusters encoded decodes for it.
func (np *NodePart) MTLSClusterNames() []string {
	if len(np.Identities) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(np.g.prepared.IstioMTLS()))
}

// BuildInbound builds and validates the node's inbound listener and its
// clusters (Istio's inbound|PORT|| ORIGINAL_DST clusters): one filter
// chain per captured {pod, port} with the pod's RBAC. A node without
// captured pods gets none (empty Resources): no listener that could accept
// a connection nobody decided to capture.
func (np *NodePart) BuildInbound() *Resources {
	if len(np.inbound) == 0 {
		return &Resources{}
	}
	chains, diags := np.g.authz.chains(np.inbound)
	r, bdiags := envoy.BuildInbound(chains)
	np.g.addPartDiags(append(diags, bdiags...))
	return r
}

// ForNode is the whole configuration of one node, as a server assembles it
// from shared (what New returned) and the node's part: the default class's
// clusters and assignments, the node's listener, and the route
// configurations it uses. It builds every class route configuration again;
// servers that share them between nodes use NodePart.
func (g *Generation) ForNode(node string, shared *Resources) (*NodePart, *Resources) {
	np := g.NodePart(g.NodeClasses(node))
	classRoutes := np.BuildRoutes(np.ClassRoutes)
	built := map[string]bool{}
	for _, rc := range classRoutes {
		built[rc.GetName()] = true
	}
	listeners, uses := np.BuildListeners(func(n string) bool { return built[n] })
	in := np.BuildInbound()
	r := &Resources{Listeners: append(listeners, in.Listeners...), Clusters: shared.Clusters, Endpoints: shared.Endpoints}
	if mc := np.MTLSClusters(shared.Clusters); len(mc) > 0 {
		byName := make(map[string]*clusterv3.Cluster, len(mc))
		for _, c := range mc {
			byName[c.GetName()] = c
		}
		r.Clusters = make([]*clusterv3.Cluster, len(shared.Clusters))
		for i, c := range shared.Clusters {
			if n := byName[c.GetName()]; n != nil {
				c = n
			}
			r.Clusters[i] = c
		}
	}
	if len(in.Clusters) > 0 {
		// (after the shared ones, whose order is the translator's)
		r.Clusters = slices.Concat(r.Clusters, in.Clusters)
	}
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	for _, rc := range slices.Concat(shared.Routes, classRoutes) {
		if _, used := slices.BinarySearch(uses, rc.GetName()); used {
			r.Routes = append(r.Routes, rc)
		}
	}
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return np, r
}
