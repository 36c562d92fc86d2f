package translate

import (
	"cmp"
	"slices"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// Generation is the translation of one state of the cluster for every node:
// the default class's configuration, built and validated once (New returns
// it), and what any node's part needs (NodeClasses, NodePart) or an
// endpoint change needs (WithEndpoints). Its diagnostics accumulate as parts
// are built. It keeps no Envoy message: whoever serves the configuration
// keeps it (the controller keeps encodings, `nodemesh translate` prints it).
// It is safe for concurrent use.
type Generation struct {
	mu       sync.Mutex
	bag      *input.Bag
	prepared *istio.Prepared
	// refs are the names (and cluster types) of the default class's
	// resources: what node parts and assignments are validated against
	// without validating the shared configuration again.
	refs *envoy.Refs
	// decodeDiags and buildDiags are the input's and the default class's;
	// partDiags those of parts built since (class route configurations,
	// node listeners, the gRPC view).
	decodeDiags, buildDiags, partDiags ir.Diagnostics
	// authz are the authorization policies behind the nodes' inbound
	// listeners (nil: none).
	authz *authzState
}

// New translates a Bag: Istio semantics, then the default class's Envoy
// configuration, validated — every node's clusters, assignments and
// default route configurations, and the listener of a node without client
// pods. decodeDiags are the diagnostics of reading the bag (they are part
// of Diagnostics). The shared configuration is returned, not kept.
func New(bag *input.Bag, decodeDiags ir.Diagnostics, opts Options) (*Generation, *Resources) {
	p := istio.Prepare(bag, opts.Istio)
	shared, diags := envoy.Build(p.Base)
	ao := opts.Authz
	if ao.RootNamespace == "" {
		ao.RootNamespace = opts.Istio.RootNamespace
	}
	var mtls *inboundMTLS
	if opts.Istio.IstioMTLS {
		mtls = &inboundMTLS{trustDomain: cmp.Or(opts.Istio.TrustDomain, ir.DefaultTrustDomain), clusterDomain: cmp.Or(opts.Istio.ClusterDomain, ir.DefaultClusterDomain)}
	}
	return &Generation{bag: bag, prepared: p, refs: envoy.RefsOf(shared), decodeDiags: decodeDiags, buildDiags: diags,
		authz: newAuthzState(bag, ao, opts.JWKS, mtls)}, shared
}

// Compact drops the default class's model — its clusters, assignments and
// route configurations, most of a large mesh's — once the caller holds what
// New returned. Class routing then compares route configurations by content
// digest, and Model and NodePart.Model leave those parts out; what is built
// does not change (see istio.Prepared.Compact).
func (g *Generation) Compact() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.prepared.Compact()
}

// Model is the default class's model (without what Compact dropped).
func (g *Generation) Model() *ir.Model {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.prepared.Base
}

// WithEndpoints is the generation after g when only the endpoints of some
// Services changed (their EndpointSlices, or their Pods' readiness; keys are
// "namespace/name") and bag is the new state: only those Services'
// assignments are recomputed, built and validated. replaced are the new
// assignments of clusters g serves (g's others stay as they are); route
// configurations, node parts and class routing are g's. ok is false when
// the shortcut does not apply (see istio.Prepared.WithEndpoints): use New.
func (g *Generation) WithEndpoints(bag *input.Bag, services []string) (next *Generation, replaced []*endpointv3.ClusterLoadAssignment, ok bool) {
	g.mu.Lock()
	p, ces, ok := g.prepared.WithEndpoints(bag, services)
	buildDiags, partDiags := slices.Clone(g.buildDiags), slices.Clone(g.partDiags)
	g.mu.Unlock()
	if !ok {
		return nil, nil, false
	}
	part, diags := envoy.BuildPart(&ir.Model{Endpoints: ces}, g.refs)
	for _, cla := range part.Endpoints {
		if g.refs.Endpoints[cla.GetClusterName()] {
			replaced = append(replaced, cla)
		}
	}
	next = &Generation{
		bag: bag, prepared: p, refs: g.refs, decodeDiags: g.decodeDiags,
		buildDiags: append(buildDiags, diags...), partDiags: partDiags,
		// Only endpoints changed: policies, pods' addresses and labels and
		// Services are g's (xds/watch translates anew for any of those).
		authz: g.authz,
	}
	return next, replaced, true
}

// Diagnostics are the findings of the translation so far: of the input, the
// default class, and every class, node part and gRPC view built since,
// located in their files when read from files, sorted, without duplicates.
func (g *Generation) Diagnostics() ir.Diagnostics {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Concat(g.decodeDiags, g.prepared.Diagnostics(), g.buildDiags, g.partDiags)
	g.bag.Locate(out)
	return out.Sort()
}

// addPartDiags records the diagnostics of a part built since New.
func (g *Generation) addPartDiags(ds ir.Diagnostics) {
	if len(ds) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partDiags = append(g.partDiags, ds...)
}

// GRPC is the configuration of proxyless gRPC clients (every one sees the
// default class): shared are the default class's route configurations and
// clusters (as New returned them, or decoded again; not modified) and
// assignments the names of its assignments, which gRPC clients are served
// as they are. See envoy.GRPC for what differs from a node Envoy's.
func (g *Generation) GRPC(shared *Resources, assignments []string) *Resources {
	r, diags := envoy.GRPC(shared, assignments)
	g.addPartDiags(diags)
	return r
}
