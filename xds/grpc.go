package xds

import (
	"maps"
	"slices"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// forGRPC is the configuration of a proxyless gRPC client, shared by every
// such client of a generation (they see the default class); what differs
// from a node Envoy's is the translator's (translate.Generation.GRPC).
func (g *Generation) forGRPC(node string) *Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.grpc == nil {
		g.grpc = g.buildGRPC()
	}
	cfg := *g.grpc
	cfg.Node = node
	return &cfg
}

// buildGRPC builds the gRPC view from the shared configuration, decoded
// (a generation keeps only encodings). The assignments are served as they
// are (g.endpoints).
func (g *Generation) buildGRPC() *Config {
	shared, err := snapshotResources(snapshot(map[string]*resourceSet{
		resourcev3.RouteType: g.routes, resourcev3.ClusterType: g.clusters,
	}))
	if err != nil {
		// Encodings made by this process always decode.
		g.serveDiags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: "Generation"}, "", "gRPC configuration withheld: %v", err)
		shared = &translate.Resources{}
	}
	r := g.t.GRPC(shared, slices.Sorted(maps.Keys(g.endpoints.items)))
	cfg := newConfig("", GRPCNode, map[string]*resourceSet{
		resourcev3.ListenerType: encodeSet(r.Listeners),
		resourcev3.RouteType:    encodeSet(r.Routes),
		resourcev3.ClusterType:  encodeSet(r.Clusters),
		resourcev3.EndpointType: g.endpoints,
	})
	cfg.Generation = g.ID
	return cfg
}
