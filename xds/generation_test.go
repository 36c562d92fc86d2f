package xds_test

import (
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nodemesh/nodemesh/internal/meshgen"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
)

// TestWithEndpointsMatchesFullTranslation: an endpoint-only successor
// generation serves every node exactly what a full translation of the same
// cluster state serves (same versions), and differs from its predecessor
// only in endpoints.
func TestWithEndpointsMatchesFullTranslation(t *testing.T) {
	mesh := meshgen.New(meshgen.Options{Services: 30, PodsPerService: 6, Nodes: 3, Namespaces: 3, OptIn: true, EndpointSlices: true})
	g1 := xds.NewGeneration(1, time.Now(), mesh.Bag(), nil, translate.Options{})
	nodes := []string{"node-0", "node-1", "node-2", "node-without-pods"}
	before := map[string]*xds.Config{}
	for _, n := range nodes {
		before[n] = g1.ForNode(n, xds.EnvoyNode)
	}
	grpcBefore := g1.ForNode("grpc-client", xds.GRPCNode)

	es := mesh.EndpointSlices[11].DeepCopy()
	es.Endpoints = es.Endpoints[:4]
	mesh.EndpointSlices[11] = es
	svc := mesh.Services[11]
	bag := mesh.Bag()
	g2 := g1.WithEndpoints(2, time.Now(), bag, []string{svc.Namespace + "/" + svc.Name})
	if g2 == nil {
		t.Fatal("endpoint-only change refused")
	}
	full := xds.NewGeneration(2, time.Now(), bag, nil, translate.Options{})
	for _, n := range nodes {
		inc, want := g2.ForNode(n, xds.EnvoyNode), full.ForNode(n, xds.EnvoyNode)
		for _, typ := range allTypes {
			if inc.Version(typ) != want.Version(typ) {
				t.Errorf("%s %s: incremental version %s, full translation %s", n, typ, inc.Version(typ), want.Version(typ))
			}
			changed := inc.Version(typ) != before[n].Version(typ)
			if changed != (typ == resourcev3.EndpointType) {
				t.Errorf("%s %s: changed=%v after an endpoint-only change", n, typ, changed)
			}
		}
	}
	inc, want := g2.ForNode("grpc-client", xds.GRPCNode), full.ForNode("grpc-client", xds.GRPCNode)
	for _, typ := range allTypes {
		if inc.Version(typ) != want.Version(typ) {
			t.Errorf("gRPC %s: incremental version %s, full translation %s", typ, inc.Version(typ), want.Version(typ))
		}
		if changed := inc.Version(typ) != grpcBefore.Version(typ); changed != (typ == resourcev3.EndpointType) {
			t.Errorf("gRPC %s: changed=%v after an endpoint-only change", typ, changed)
		}
	}
	if g, w := g2.Diagnostics(), full.Diagnostics(); len(g) != len(w) {
		t.Errorf("diagnostics: %d incremental, %d full:\n%v\n%v", len(g), len(w), g, w)
	}
}
