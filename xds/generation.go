package xds

import (
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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
	prepared *istio.Prepared
	base     *envoy.Resources
	refs     *envoy.Refs
	diags    ir.Diagnostics
	hash     *hasher
	// shared resource sets of the default class
	clusters, endpoints, routes *resourceSet
	// class route configurations built so far, by name
	classRoutes map[string]*routev3.RouteConfiguration
	grpc        *Config
}

// NewGeneration translates a Bag for every node.
func NewGeneration(id int64, changed time.Time, bag *input.Bag, decodeDiags ir.Diagnostics, opts istio.Options) *Generation {
	p := istio.Prepare(bag, opts)
	base, xdiags := envoy.Build(p.Base)
	g := &Generation{
		ID: id, Changed: changed, prepared: p, base: base, refs: envoy.RefsOf(base),
		hash: newHasher(), classRoutes: map[string]*routev3.RouteConfiguration{},
	}
	g.diags = append(append(slices.Clone(decodeDiags), p.Diagnostics()...), xdiags...)
	bag.Locate(g.diags)
	g.diags = g.diags.Sort()
	g.clusters = g.hash.set(toResources(base.Clusters))
	g.endpoints = g.hash.set(toResources(base.Endpoints))
	g.routes = g.hash.set(toResources(base.Routes))
	return g
}

// Diagnostics are the findings of the translation (of the default class and
// of every class computed since).
func (g *Generation) Diagnostics() ir.Diagnostics {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.diags)
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
	g.mu.Lock()
	classes := g.prepared.NodeClasses(node)
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
		g.diags = append(g.diags, diags...)
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
	part, _ := envoy.BuildPart(&ir.Model{Listeners: m.Listeners}, &refs)

	cfg := &Config{Node: node, Kind: EnvoyNode, Generation: g.ID, Classes: m.SourceClasses}
	cfg.Resources = envoy.Resources{
		Listeners: part.Listeners,
		Routes:    g.base.Routes,
		Clusters:  g.base.Clusters,
		Endpoints: g.base.Endpoints,
	}
	routeSet := g.routes
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
		cfg.Resources.Routes = nil
		for _, r := range append(slices.Clone(g.base.Routes), routes...) {
			if used[r.GetName()] {
				cfg.Resources.Routes = append(cfg.Resources.Routes, r)
			}
		}
		routeSet = g.hash.set(toResources(cfg.Resources.Routes))
	}
	cfg.Snapshot = snapshot(map[string]*resourceSet{
		resourcev3.ListenerType: g.hash.set(toResources(part.Listeners)),
		resourcev3.RouteType:    routeSet,
		resourcev3.ClusterType:  g.clusters,
		resourcev3.EndpointType: g.endpoints,
	})
	return cfg
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

func resourceName(r types.Resource) string { return cachev3.GetResourceName(r) }

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
