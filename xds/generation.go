package xds

import (
	"maps"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
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
// the cluster, as it is served: the translator's generation
// (translate.Generation) computes it, this keeps it encoded — the default
// class's resources once, shared by every node; each node's listener and
// class route configurations once per distinct set of source classes, shared
// by the nodes with that set. It is safe for concurrent use.
type Generation struct {
	// ID increases with every generation of a controller.
	ID int64
	// Changed is when the first change folded into this generation happened;
	// push latency is measured from it.
	Changed time.Time

	t *translate.Generation

	mu sync.Mutex
	// The shared configuration (the default class), encoded: a generation
	// keeps no messages (see wire).
	listeners, clusters, endpoints, routes *resourceSet
	// classRoutes are the class route configurations built so far.
	classRoutes *resourceSet
	// nodeParts are the listener and route configurations of nodes, by the
	// source classes they serve (nodes with the same classes share them).
	nodeParts map[string]*nodePart
	// clusterSets are the cluster sets of nodes with Istio mTLS, by their
	// client identity set (translate.NodeClasses.ClusterKey): a node whose
	// pods change but whose identities do not keeps its clusters.
	clusterSets map[string]*resourceSet
	grpc        *Config
	// serveDiags are problems of serving, not of translation (an encoding
	// that does not decode).
	serveDiags ir.Diagnostics
}

// nodePart is what depends on a node's source classes.
type nodePart struct {
	classes               []ir.SourceClass
	listenerSet, routeSet *resourceSet
	// clusterSet is the shared clusters; with Istio mTLS and client
	// identities on the node, the shared ones with the node's versions of
	// those that carry Istio mTLS (one of clusterSets); with an inbound
	// listener, its clusters added (a new set: the cached one is kept).
	clusterSet *resourceSet
}

// NewGeneration translates a Bag for every node. decodeDiags are the
// diagnostics of reading it.
func NewGeneration(id int64, changed time.Time, bag *translate.Bag, decodeDiags ir.Diagnostics, opts translate.Options) *Generation {
	t, shared := translate.New(bag, decodeDiags, opts)
	// The model's clusters, endpoints and route configurations are kept
	// only as encodings from here on.
	t.Compact()
	g := &Generation{
		ID: id, Changed: changed, t: t,
		classRoutes: encodeSet[types.Resource](nil), nodeParts: map[string]*nodePart{}, clusterSets: map[string]*resourceSet{},
	}
	g.listeners = encodeSet(shared.Listeners)
	g.clusters = encodeSet(shared.Clusters)
	g.endpoints = encodeSet(shared.Endpoints)
	g.routes = encodeSet(shared.Routes)
	return g
}

// WithEndpoints is the generation after g when only the endpoints of some
// Services changed (their EndpointSlices, or their Pods' readiness; keys
// are "namespace/name"): only those Services' assignments are recomputed,
// built, validated and encoded; clusters, route configurations, node
// listeners and class routing are g's. It returns nil when the shortcut does
// not apply (see translate.Generation.WithEndpoints): use NewGeneration.
func (g *Generation) WithEndpoints(id int64, changed time.Time, bag *translate.Bag, services []string) *Generation {
	// Under g's lock, so that the node parts taken along and the
	// diagnostics of building them (in g.t) are of the same moment.
	g.mu.Lock()
	t, replaced, ok := g.t.WithEndpoints(bag, services)
	if !ok {
		g.mu.Unlock()
		return nil
	}
	n := &Generation{
		ID: id, Changed: changed, t: t,
		listeners: g.listeners, clusters: g.clusters, routes: g.routes,
		classRoutes: g.classRoutes, nodeParts: maps.Clone(g.nodeParts), serveDiags: slices.Clone(g.serveDiags),
		// (the clusters are g's, so are their node versions)
		clusterSets: maps.Clone(g.clusterSets),
	}
	g.mu.Unlock()
	n.endpoints = with(g.endpoints, replaced)
	return n
}

// Diagnostics are the findings of the translation: of the input, the
// default class and every class and node part computed since.
func (g *Generation) Diagnostics() ir.Diagnostics {
	out := g.t.Diagnostics()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.serveDiags) == 0 {
		return out
	}
	return append(out, g.serveDiags...).Sort()
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
func (c *Config) Resources() (*translate.Resources, error) {
	return snapshotResources(c.Snapshot)
}

func snapshotResources(s *cachev3.Snapshot) (*translate.Resources, error) {
	r := &translate.Resources{}
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
		resourcev3.ClusterType:  np.clusterSet,
		resourcev3.EndpointType: g.endpoints,
	})
	c.Generation, c.Classes = g.ID, np.classes
	return c
}

// nodePart computes (or finds) the listener and route configurations of a
// node.
func (g *Generation) nodePart(node string) *nodePart {
	nc := g.t.NodeClasses(node)
	g.mu.Lock()
	if np, ok := g.nodeParts[nc.Key]; ok {
		g.mu.Unlock()
		return np
	}
	part := g.t.NodePart(nc)
	var fresh []string
	for _, n := range part.ClassRoutes {
		if _, ok := g.classRoutes.items[n]; !ok {
			fresh = append(fresh, n)
		}
	}
	if len(fresh) > 0 {
		// A new set: the previous one may be shared by a later generation
		// (WithEndpoints).
		g.classRoutes = with(g.classRoutes, part.BuildRoutes(fresh))
	}
	classRoutes := g.classRoutes
	g.mu.Unlock()
	// Listeners are most of a node's work: built outside the lock, so that
	// nodes are computed in parallel.
	listeners, uses := part.BuildListeners(func(n string) bool {
		_, ok := classRoutes.items[n] // (one that failed to build is not there)
		return ok
	})
	// The inbound listener (pods whose authorization needs HTTP facts) and
	// its clusters are the node's own.
	in := part.BuildInbound()
	np := &nodePart{classes: part.Classes, listenerSet: encodeSet(append(listeners, in.Listeners...)), routeSet: g.routes, clusterSet: g.clusters}
	if names := part.MTLSClusterNames(); len(names) > 0 {
		np.clusterSet = g.mtlsClusters(nc.ClusterKey, part, names)
	}
	if len(in.Clusters) > 0 {
		np.clusterSet = with(np.clusterSet, in.Clusters)
	}
	// Serve exactly the route configurations the listener uses (see
	// BuildListeners): the shared set when it is that.
	used := make(map[string]bool, len(uses))
	for _, n := range uses {
		used[n] = true
	}
	if len(part.ClassRoutes) > 0 || !sameNames(g.routes, used) {
		np.routeSet = subset(func(name string) bool { return used[name] }, g.routes, classRoutes)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if have, ok := g.nodeParts[nc.Key]; ok {
		return have // computed meanwhile by another node with the same classes
	}
	g.nodeParts[nc.Key] = np
	return np
}

// mtlsClusters is the shared cluster set with a node's versions of the
// clusters named (see translate.NodePart.MTLSClusters), computed once per
// identity set (key). A shared cluster that does not decode stays as it is
// (no client certificate) and is reported.
func (g *Generation) mtlsClusters(key string, part *translate.NodePart, names []string) *resourceSet {
	g.mu.Lock()
	set, ok := g.clusterSets[key]
	g.mu.Unlock()
	if ok {
		return set
	}
	shared := make([]*clusterv3.Cluster, 0, len(names))
	for _, n := range names {
		it, ok := g.clusters.items[n]
		if !ok {
			continue // withheld by validation
		}
		m, err := decode(it.Resource)
		if err != nil {
			g.mu.Lock()
			g.serveDiags.Errorf(ir.CodeInvalidValue, ir.ResourceRef{Kind: "Cluster", Name: n}, "", "%v", err)
			g.mu.Unlock()
			continue
		}
		shared = append(shared, m.(*clusterv3.Cluster))
	}
	set = with(g.clusters, part.MTLSClusters(shared))
	g.mu.Lock()
	defer g.mu.Unlock()
	if have, ok := g.clusterSets[key]; ok {
		return have // computed meanwhile by a node with the same identities
	}
	g.clusterSets[key] = set
	return set
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
func NewConfig(node string, kind NodeKind, r translate.Resources) *Config {
	return newConfig(node, kind, map[string]*resourceSet{
		resourcev3.ListenerType: encodeSet(r.Listeners),
		resourcev3.RouteType:    encodeSet(r.Routes),
		resourcev3.ClusterType:  encodeSet(r.Clusters),
		resourcev3.EndpointType: encodeSet(r.Endpoints),
	})
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
