package xds

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

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
	refs     *envoy.Refs
	// decodeDiags and buildDiags are the input's and the shared
	// configuration's; partDiags those of parts built since (class route
	// configurations, node listeners, the gRPC view).
	decodeDiags, buildDiags, partDiags ir.Diagnostics
	// The shared configuration (the default class), encoded: a generation
	// keeps no messages (see wire).
	listeners, clusters, endpoints, routes *resourceSet
	// classRoutes are the class route configurations built so far.
	classRoutes *resourceSet
	// nodeParts are the listener and route configurations of nodes, by the
	// source classes they serve (nodes with the same classes share them).
	nodeParts map[string]*nodePart
	grpc      *Config
}

// nodePart is what depends on a node's source classes.
type nodePart struct {
	classes               []ir.SourceClass
	listenerSet, routeSet *resourceSet
}

// NewGeneration translates a Bag for every node.
func NewGeneration(id int64, changed time.Time, bag *input.Bag, decodeDiags ir.Diagnostics, opts istio.Options) *Generation {
	p := istio.Prepare(bag, opts)
	base, xdiags := envoy.Build(p.Base)
	g := &Generation{
		ID: id, Changed: changed, bag: bag, prepared: p, refs: envoy.RefsOf(base),
		classRoutes: encodeSet[types.Resource](nil), nodeParts: map[string]*nodePart{},
		decodeDiags: decodeDiags, buildDiags: xdiags,
	}
	// The model's clusters, endpoints and route configurations are kept
	// only as encodings from here on.
	p.Compact()
	g.listeners = encodeSet(base.Listeners)
	g.clusters = encodeSet(base.Clusters)
	g.endpoints = encodeSet(base.Endpoints)
	g.routes = encodeSet(base.Routes)
	return g
}

// WithEndpoints is the generation after g when only the endpoints of some
// Services changed (their EndpointSlices, or their Pods' readiness; keys
// are "namespace/name"): only those Services' assignments are recomputed,
// built, validated and encoded; clusters, route configurations, node
// listeners and class routing are g's. It returns nil when the shortcut does
// not apply (see istio.Prepared.WithEndpoints): use NewGeneration.
func (g *Generation) WithEndpoints(id int64, changed time.Time, bag *input.Bag, services []string) *Generation {
	g.mu.Lock()
	p, ces, ok := g.prepared.WithEndpoints(bag, services)
	g.mu.Unlock()
	if !ok {
		return nil
	}
	part, diags := envoy.BuildPart(&ir.Model{Endpoints: ces}, g.refs)
	var replaced []*endpointv3.ClusterLoadAssignment
	for _, cla := range part.Endpoints {
		if _, ok := g.endpoints.items[cla.GetClusterName()]; ok {
			replaced = append(replaced, cla)
		}
	}
	n := &Generation{
		ID: id, Changed: changed, bag: bag, prepared: p, refs: g.refs,
		decodeDiags: g.decodeDiags, listeners: g.listeners, clusters: g.clusters, routes: g.routes,
	}
	g.mu.Lock()
	n.buildDiags = append(slices.Clone(g.buildDiags), diags...)
	n.partDiags = slices.Clone(g.partDiags)
	n.classRoutes = g.classRoutes
	n.nodeParts = maps.Clone(g.nodeParts)
	g.mu.Unlock()
	n.endpoints = with(g.endpoints, replaced)
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

// Config is what one node is served.
type Config struct {
	Node       string
	Kind       NodeKind
	Generation int64
	// Classes are the node's source classes (Envoy nodes).
	Classes  []ir.SourceClass
	Snapshot *cachev3.Snapshot
	// sets are the resource sets the snapshot was made of, by type (nil
	// for configurations made otherwise).
	sets map[string]*resourceSet
}

// newConfig makes a node's configuration of resource sets.
func newConfig(node string, kind NodeKind, sets map[string]*resourceSet) *Config {
	return &Config{Node: node, Kind: kind, Snapshot: snapshot(sets), sets: sets}
}

// Version is the snapshot version of a type.
func (c *Config) Version(typeURL string) string { return c.Snapshot.GetVersion(typeURL) }

// Resources decodes the snapshot's resources (for debugging and tests),
// each type sorted by name.
func (c *Config) Resources() (*envoy.Resources, error) {
	return snapshotResources(c.Snapshot)
}

func snapshotResources(s *cachev3.Snapshot) (*envoy.Resources, error) {
	r := &envoy.Resources{}
	for typeURL, add := range map[string]func(types.Resource){
		resourcev3.ListenerType: func(m types.Resource) { r.Listeners = append(r.Listeners, m.(*listenerv3.Listener)) },
		resourcev3.RouteType:    func(m types.Resource) { r.Routes = append(r.Routes, m.(*routev3.RouteConfiguration)) },
		resourcev3.ClusterType:  func(m types.Resource) { r.Clusters = append(r.Clusters, m.(*clusterv3.Cluster)) },
		resourcev3.EndpointType: func(m types.Resource) { r.Endpoints = append(r.Endpoints, m.(*endpointv3.ClusterLoadAssignment)) },
	} {
		ms, err := decodeItems(s.GetResourcesAndTTL(typeURL))
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			add(m)
		}
	}
	return r, nil
}

// ForNode computes a node's configuration.
func (g *Generation) ForNode(node string, kind NodeKind) *Config {
	if kind == GRPCNode {
		return g.forGRPC(node)
	}
	np := g.nodePart(node)
	c := newConfig(node, EnvoyNode, map[string]*resourceSet{
		resourcev3.ListenerType: np.listenerSet,
		resourcev3.RouteType:    np.routeSet,
		resourcev3.ClusterType:  g.clusters,
		resourcev3.EndpointType: g.endpoints,
	})
	c.Generation, c.Classes = g.ID, np.classes
	return c
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
	var own []string // the class route configurations of the node
	for _, rc := range m.RouteConfigs {
		if g.isBaseRoute(rc.Name) {
			continue
		}
		own = append(own, rc.Name)
		if _, ok := g.classRoutes.items[rc.Name]; !ok {
			fresh = append(fresh, rc)
		}
	}
	if len(fresh) > 0 {
		built, diags := envoy.BuildPart(&ir.Model{RouteConfigs: fresh}, g.refs)
		g.partDiags = append(g.partDiags, diags...)
		// A new set: the previous one may be shared by a later generation
		// (WithEndpoints).
		g.classRoutes = with(g.classRoutes, built.Routes)
	}
	classRoutes := g.classRoutes
	g.mu.Unlock()
	// The node's listener refers to the shared route configurations and to
	// those of its classes.
	refs := *g.refs
	refs.Routes = make(map[string]bool, len(g.refs.Routes)+len(own))
	for k := range g.refs.Routes {
		refs.Routes[k] = true
	}
	for _, n := range own {
		if _, ok := classRoutes.items[n]; ok {
			refs.Routes[n] = true // (one that failed to build is not there)
		}
	}
	part, diags := envoy.BuildPart(&ir.Model{Listeners: m.Listeners}, &refs)

	np := &nodePart{classes: m.SourceClasses, listenerSet: encodeSet(part.Listeners), routeSet: g.routes}
	// Serve exactly the route configurations the listener uses: Envoy asks
	// for those, and in ADS mode a type is only answered when the request
	// names all of its resources.
	used := map[string]bool{}
	for _, l := range part.Listeners {
		for _, n := range envoy.RouteConfigNames(l) {
			used[n] = true
		}
	}
	if len(own) > 0 || !sameNames(g.routes, used) {
		np.routeSet = subset(func(name string) bool {
			_, base := g.routes.items[name]
			return used[name] && (base || slices.Contains(own, name))
		}, g.routes, classRoutes)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partDiags = append(g.partDiags, diags...)
	if have, ok := g.nodeParts[key]; ok {
		return have // computed meanwhile by another node with the same classes
	}
	g.nodeParts[key] = np
	return np
}

// sameNames says whether a set holds exactly the names given.
func sameNames(s *resourceSet, names map[string]bool) bool {
	if len(s.items) != len(names) {
		return false
	}
	for n := range names {
		if _, ok := s.items[n]; !ok {
			return false
		}
	}
	return true
}

// NewConfig makes a node's configuration from resources directly (tests,
// tools); versions are content hashes as for generations.
func NewConfig(node string, kind NodeKind, r envoy.Resources) *Config {
	return newConfig(node, kind, map[string]*resourceSet{
		resourcev3.ListenerType: encodeSet(r.Listeners),
		resourcev3.RouteType:    encodeSet(r.Routes),
		resourcev3.ClusterType:  encodeSet(r.Clusters),
		resourcev3.EndpointType: encodeSet(r.Endpoints),
	})
}

func (g *Generation) isBaseRoute(name string) bool { return g.prepared.IsBaseRoute(name) }

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
	return map[string]Size{
		"Listener":              {Bytes: g.listeners.bytes(), Items: len(g.listeners.items)},
		"RouteConfiguration":    {Bytes: g.routes.bytes(), Items: len(g.routes.items)},
		"Cluster":               {Bytes: g.clusters.bytes(), Items: len(g.clusters.items)},
		"ClusterLoadAssignment": {Bytes: g.endpoints.bytes(), Items: len(g.endpoints.items)},
	}
}
