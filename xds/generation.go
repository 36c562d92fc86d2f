package xds

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// NodeKind says what consumes a node's configuration.
type NodeKind int

const (
	// EnvoyNode is a node Envoy: one outbound listener with filter chains.
	EnvoyNode NodeKind = iota
	// GRPCNode is a proxyless gRPC client: api_listeners named after the
	// targets it dials, pointing at the same route configurations.
	GRPCNode
)

func (k NodeKind) String() string {
	if k == GRPCNode {
		return "grpc"
	}
	return "envoy"
}

// Generation is the configuration of every node computed from one state of
// the cluster. Building it translates and validates the shared part once;
// ForNode adds what one node needs. It is safe for concurrent use.
type Generation struct {
	// ID increases with every generation of a controller.
	ID int64
	// Changed is when the first change folded into this generation happened;
	// push latency is measured from it.
	Changed time.Time

	mu       sync.Mutex
	bag      *input.Bag
	prepared *istio.Prepared
	base     *envoy.Resources
	refs     *envoy.Refs
	hash     *hasher
	// decodeDiags and buildDiags are the input's and the shared
	// configuration's; partDiags those of parts built since (class route
	// configurations, node listeners, the gRPC view).
	decodeDiags, buildDiags, partDiags ir.Diagnostics
	// shared resource sets of the default class
	clusters, endpoints, routes *resourceSet
	// class route configurations built so far, by name
	classRoutes map[string]*routev3.RouteConfiguration
	// nodeParts are the listener and route configurations of nodes, by the
	// source classes they serve (nodes with the same classes share them).
	nodeParts map[string]*nodePart
	grpc      *Config
}

// nodePart is what depends on a node's source classes.
type nodePart struct {
	classes               []ir.SourceClass
	listeners             []*listenerv3.Listener
	routes                []*routev3.RouteConfiguration
	listenerSet, routeSet *resourceSet
}

// NewGeneration translates a Bag for every node.
func NewGeneration(id int64, changed time.Time, bag *input.Bag, decodeDiags ir.Diagnostics, opts istio.Options) *Generation {
	p := istio.Prepare(bag, opts)
	base, xdiags := envoy.Build(p.Base)
	g := &Generation{
		ID: id, Changed: changed, bag: bag, prepared: p, base: base, refs: envoy.RefsOf(base),
		hash: newHasher(), classRoutes: map[string]*routev3.RouteConfiguration{}, nodeParts: map[string]*nodePart{},
		decodeDiags: decodeDiags, buildDiags: xdiags,
	}
	g.clusters = g.hash.set(toResources(base.Clusters))
	g.endpoints = g.hash.set(toResources(base.Endpoints))
	g.routes = g.hash.set(toResources(base.Routes))
	return g
}

// WithEndpoints is the generation after g when only the endpoints of some
// Services changed (their EndpointSlices, or their Pods' readiness; keys
// are "namespace/name"): only those Services' assignments are recomputed,
// built, validated and hashed; clusters, route configurations, node
// listeners and class routing are g's. It returns nil when the shortcut does
// not apply (see istio.Prepared.WithEndpoints): use NewGeneration.
func (g *Generation) WithEndpoints(id int64, changed time.Time, bag *input.Bag, services []string) *Generation {
	g.mu.Lock()
	p, names, ok := g.prepared.WithEndpoints(bag, services)
	g.mu.Unlock()
	if !ok {
		return nil
	}
	at := make(map[string]int, len(g.base.Endpoints))
	for i, e := range g.base.Endpoints {
		at[e.GetClusterName()] = i
	}
	var ces []ir.ClusterEndpoints
	for _, ce := range p.Base.Endpoints {
		if slices.Contains(names, ce.Cluster) {
			ces = append(ces, ce)
		}
	}
	part, diags := envoy.BuildPart(&ir.Model{Endpoints: ces}, g.refs)
	base := *g.base
	base.Endpoints = slices.Clone(g.base.Endpoints)
	for _, cla := range part.Endpoints {
		if i, ok := at[cla.GetClusterName()]; ok {
			base.Endpoints[i] = cla
		}
	}
	n := &Generation{
		ID: id, Changed: changed, bag: bag, prepared: p, base: &base, refs: g.refs, hash: newHasher(),
		decodeDiags: g.decodeDiags, clusters: g.clusters, routes: g.routes,
	}
	g.mu.Lock()
	n.buildDiags = append(slices.Clone(g.buildDiags), diags...)
	n.partDiags = slices.Clone(g.partDiags)
	n.classRoutes = maps.Clone(g.classRoutes)
	n.nodeParts = maps.Clone(g.nodeParts)
	g.mu.Unlock()
	n.endpoints = g.endpoints.with(n.hash, toResources(part.Endpoints))
	return n
}

// Diagnostics are the findings of the translation: of the input, the
// default class and every class and node part computed since.
func (g *Generation) Diagnostics() ir.Diagnostics {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Concat(g.decodeDiags, g.prepared.Diagnostics(), g.buildDiags, g.partDiags)
	g.bag.Locate(out)
	return out.Sort()
}

// Base is the shared configuration (the default class).
func (g *Generation) Base() *envoy.Resources { return g.base }

func toResources[T types.Resource](s []T) []types.Resource {
	out := make([]types.Resource, len(s))
	for i, r := range s {
		out[i] = r
	}
	return out
}

// Config is what one node is served.
type Config struct {
	Node       string
	Kind       NodeKind
	Generation int64
	// Classes are the node's source classes (Envoy nodes).
	Classes  []ir.SourceClass
	Snapshot *cachev3.Snapshot
	// Resources are the snapshot's resources, for debugging and tests.
	Resources envoy.Resources
}

// Version is the snapshot version of a type.
func (c *Config) Version(typeURL string) string { return c.Snapshot.GetVersion(typeURL) }

// ForNode computes a node's configuration.
func (g *Generation) ForNode(node string, kind NodeKind) *Config {
	if kind == GRPCNode {
		return g.forGRPC(node)
	}
	np := g.nodePart(node)
	cfg := &Config{Node: node, Kind: EnvoyNode, Generation: g.ID, Classes: np.classes}
	cfg.Resources = envoy.Resources{
		Listeners: np.listeners,
		Routes:    np.routes,
		Clusters:  g.base.Clusters,
		Endpoints: g.base.Endpoints,
	}
	cfg.Snapshot = snapshot(map[string]*resourceSet{
		resourcev3.ListenerType: np.listenerSet,
		resourcev3.RouteType:    np.routeSet,
		resourcev3.ClusterType:  g.clusters,
		resourcev3.EndpointType: g.endpoints,
	})
	return cfg
}

// classesKey identifies what a node's listener and routes depend on: its
// classes and their pods' addresses.
func classesKey(classes []*istio.Class) string {
	var b strings.Builder
	for _, c := range classes {
		b.WriteString(c.Name)
		b.WriteByte('=')
		b.WriteString(strings.Join(c.SourcePrefixes, ","))
		b.WriteByte(';')
	}
	return b.String()
}

// nodePart computes (or finds) the listener and route configurations of a
// node.
func (g *Generation) nodePart(node string) *nodePart {
	g.mu.Lock()
	classes := g.prepared.NodeClasses(node)
	key := classesKey(classes)
	if np, ok := g.nodeParts[key]; ok {
		g.mu.Unlock()
		return np
	}
	m := g.prepared.Node(classes)
	var fresh []ir.RouteConfig
	var routes []*routev3.RouteConfiguration
	for _, rc := range m.RouteConfigs {
		if g.isBaseRoute(rc.Name) {
			continue
		}
		if r, ok := g.classRoutes[rc.Name]; ok {
			routes = append(routes, r)
		} else {
			fresh = append(fresh, rc)
		}
	}
	if len(fresh) > 0 {
		built, diags := envoy.BuildPart(&ir.Model{RouteConfigs: fresh}, g.refs)
		g.partDiags = append(g.partDiags, diags...)
		for _, r := range built.Routes {
			g.classRoutes[r.GetName()] = r
			routes = append(routes, r)
		}
	}
	g.mu.Unlock()
	// The node's listener refers to the shared route configurations and to
	// those of its classes.
	refs := *g.refs
	refs.Routes = make(map[string]bool, len(g.refs.Routes)+len(routes))
	for k := range g.refs.Routes {
		refs.Routes[k] = true
	}
	for _, r := range routes {
		refs.Routes[r.GetName()] = true
	}
	part, diags := envoy.BuildPart(&ir.Model{Listeners: m.Listeners}, &refs)

	np := &nodePart{classes: m.SourceClasses, listeners: part.Listeners, routes: g.base.Routes, routeSet: g.routes}
	// Serve exactly the route configurations the listener uses: Envoy asks
	// for those, and in ADS mode a type is only answered when the request
	// names all of its resources.
	used := map[string]bool{}
	for _, l := range part.Listeners {
		for _, n := range envoy.RouteConfigNames(l) {
			used[n] = true
		}
	}
	if len(routes) > 0 || len(used) != len(g.base.Routes) || !allUsed(g.base.Routes, used) {
		np.routes = nil
		for _, r := range append(slices.Clone(g.base.Routes), routes...) {
			if used[r.GetName()] {
				np.routes = append(np.routes, r)
			}
		}
		np.routeSet = g.hash.set(toResources(np.routes))
	}
	np.listenerSet = g.hash.set(toResources(part.Listeners))
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partDiags = append(g.partDiags, diags...)
	if have, ok := g.nodeParts[key]; ok {
		return have // computed meanwhile by another node with the same classes
	}
	g.nodeParts[key] = np
	return np
}

func allUsed(routes []*routev3.RouteConfiguration, used map[string]bool) bool {
	for _, r := range routes {
		if !used[r.GetName()] {
			return false
		}
	}
	return true
}

// NewConfig makes a node's configuration from resources directly (tests,
// tools); versions are content hashes as for generations.
func NewConfig(node string, kind NodeKind, r envoy.Resources) *Config {
	h := newHasher()
	return &Config{Node: node, Kind: kind, Resources: r, Snapshot: snapshot(map[string]*resourceSet{
		resourcev3.ListenerType: h.set(toResources(r.Listeners)),
		resourcev3.RouteType:    h.set(toResources(r.Routes)),
		resourcev3.ClusterType:  h.set(toResources(r.Clusters)),
		resourcev3.EndpointType: h.set(toResources(r.Endpoints)),
	})}
}

func (g *Generation) isBaseRoute(name string) bool {
	for _, rc := range g.prepared.Base.RouteConfigs {
		if rc.Name == name {
			return true
		}
	}
	return false
}

// snapshot assembles a go-control-plane snapshot with per-type content
// versions and a prebuilt per-resource version map (for delta xDS), so the
// cache never re-marshals shared resources per node.
func snapshot(sets map[string]*resourceSet) *cachev3.Snapshot {
	s := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	for typeURL, set := range sets {
		i := cachev3.GetResponseType(typeURL)
		s.Resources[i] = cachev3.Resources{Version: set.version, Items: set.items}
		s.VersionMap[typeURL] = set.versions
	}
	// Types a node is not given still need a (stable, empty) version map.
	for i := range s.Resources {
		typeURL, err := cachev3.GetResponseTypeURL(types.ResponseType(i))
		if err != nil {
			continue
		}
		if _, ok := s.VersionMap[typeURL]; !ok {
			s.VersionMap[typeURL] = map[string]string{}
		}
	}
	return s
}

func resourceName(r types.Resource) string { return cachev3.GetResourceName(unwrap(r)) }

// edsOnly keeps the clusters a gRPC client can use: EDS clusters.
func edsOnly(cs []*clusterv3.Cluster) []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	for _, c := range cs {
		if c.GetType() == clusterv3.Cluster_EDS {
			out = append(out, c)
		}
	}
	return out
}

// Size is the wire size and count of a type's resources.
type Size struct{ Bytes, Items int }

// Sizes are the sizes of the shared (default class) configuration by short
// type name, for metrics.
func (g *Generation) Sizes() map[string]Size {
	out := map[string]Size{}
	add := func(typ string, rs []types.Resource) {
		s := Size{Items: len(rs)}
		for _, r := range rs {
			s.Bytes += proto.Size(r)
		}
		out[typ] = s
	}
	add("Listener", toResources(g.base.Listeners))
	add("RouteConfiguration", toResources(g.base.Routes))
	add("Cluster", toResources(g.base.Clusters))
	add("ClusterLoadAssignment", toResources(g.base.Endpoints))
	return out
}
