package xds_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

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

// TestGenerationServesWhatTranslatePrints: for every node of the source-class
// fixtures, bookinfo and a generated mesh, what a generation serves (nodes
// computed one after another, sharing class route configurations, the
// model compacted, everything kept encoded) is what `nodemesh translate
// --node` prints, resource for resource. The same comparison from a real
// API server's objects is internal/cli's TestCLIAndControllerServeTheSame;
// this one needs none.
func TestGenerationServesWhatTranslatePrints(t *testing.T) {
	mesh := meshgen.New(meshgen.Options{Services: 30, PodsPerService: 4, Nodes: 3, Namespaces: 3, OptIn: true, EndpointSlices: true})
	cases := map[string]func(t *testing.T) *translate.Bag{
		"source-classes":          loadBag("../translate/testdata/nodes/source-classes.in.yaml"),
		"namespaces":              loadBag("../translate/testdata/services/namespaces.in.yaml"),
		"source-selectors":        loadBag("../translate/testdata/virtualservice/source-selectors.in.yaml"),
		"bookinfo+source-classes": loadBag("../samples/bookinfo", "../translate/testdata/nodes/source-classes.in.yaml"),
		"meshgen":                 func(*testing.T) *translate.Bag { return mesh.Bag() },
		"same classes, two nodes": loadBag("../translate/testdata/nodes/source-classes.in.yaml", "testdata/same-classes-two-nodes.yaml"),
	}
	// With Istio mTLS, nodes' clusters differ by their clients' identities.
	for name, bagOf := range cases {
		for _, mtls := range []bool{false, true} {
			testServesWhatTranslatePrints(t, fmt.Sprintf("%s mtls=%v", name, mtls), bagOf, translate.Options{Istio: translate.IstioOptions{IstioMTLS: mtls}})
		}
	}
}

func testServesWhatTranslatePrints(t *testing.T, name string, bagOf func(t *testing.T) *translate.Bag, opts translate.Options) {
	{
		t.Run(name, func(t *testing.T) {
			bag := bagOf(t)
			g := xds.NewGeneration(1, time.Now(), bag, nil, opts)
			nodes := []string{"node-without-pods"}
			for _, p := range bag.Pods {
				if p.NodeName != "" && !slices.Contains(nodes, p.NodeName) {
					nodes = append(nodes, p.NodeName)
				}
			}
			for _, node := range nodes {
				served, err := g.ForNode(node, xds.EnvoyNode).Resources()
				if err != nil {
					t.Fatal(err)
				}
				o := opts
				o.Node = node
				printed := translate.Translate(bag, nil, o).XDS
				for typ, pair := range map[string][2][]proto.Message{
					"Listener":              {messages(printed.Listeners), messages(served.Listeners)},
					"RouteConfiguration":    {messages(printed.Routes), messages(served.Routes)},
					"Cluster":               {messages(printed.Clusters), messages(served.Clusters)},
					"ClusterLoadAssignment": {messages(printed.Endpoints), messages(served.Endpoints)},
				} {
					if p, s := encodings(t, pair[0]), encodings(t, pair[1]); !maps.Equal(p, s) || len(p) == 0 && typ != "ClusterLoadAssignment" {
						t.Errorf("%s %s: printed %d, served %d resources, or their encodings differ", node, typ, len(p), len(s))
					}
				}
			}
		})
	}
}

func loadBag(paths ...string) func(t *testing.T) *translate.Bag {
	return func(t *testing.T) *translate.Bag {
		bag, diags, err := translate.Load(paths, nil, "default")
		if err != nil || diags.HasErrors() {
			t.Fatalf("load %v: %v %v", paths, err, diags)
		}
		return bag
	}
}

func messages[T proto.Message](s []T) []proto.Message {
	out := make([]proto.Message, len(s))
	for i, m := range s {
		out[i] = m
	}
	return out
}

// encodings are resources deterministically marshalled, by name.
func encodings(t *testing.T, ms []proto.Message) map[string]string {
	t.Helper()
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out[cachev3.GetResourceName(m)] = string(data)
	}
	return out
}

// TestNodeClustersCarryTheirClientsIdentities: with Istio mTLS, a node is
// served clusters with a socket for each identity of its client pods and no
// other's; nodes with the same identities at the same addresses share the
// cluster set; a node without client pods gets the shared clusters.
func TestNodeClustersCarryTheirClientsIdentities(t *testing.T) {
	bag := loadBag("../translate/testdata/nodes/source-classes.in.yaml", "testdata/same-classes-two-nodes.yaml")(t)
	g := xds.NewGeneration(1, time.Now(), bag, nil, translate.Options{Istio: translate.IstioOptions{IstioMTLS: true}})
	optedIn := map[string]bool{}
	for _, ns := range bag.Namespaces {
		optedIn[ns.Name] = ns.Labels["istio.io/dataplane-mode"] == "nodemesh"
	}
	want := map[string][]string{} // node → identities
	for _, p := range bag.Pods {
		if p.NodeName != "" && optedIn[p.Namespace] && len(p.IPs) > 0 && !p.Sidecar {
			id := "spiffe://cluster.local/ns/" + p.Namespace + "/sa/" + p.IdentityAccount()
			if !slices.Contains(want[p.NodeName], id) {
				want[p.NodeName] = append(want[p.NodeName], id)
			}
		}
	}
	if len(want) < 2 {
		t.Fatalf("the input has client pods on %d nodes, want several", len(want))
	}
	versions := map[string]string{}
	for node, ids := range want {
		c := g.ForNode(node, xds.EnvoyNode)
		versions[node] = c.Version(resourcev3.ClusterType)
		r, err := c.Resources()
		if err != nil {
			t.Fatal(err)
		}
		withMTLS := 0
		for _, cl := range r.Clusters {
			if cl.GetTransportSocketMatcher() == nil {
				continue
			}
			withMTLS++
			var got []string
			for _, m := range cl.GetTransportSocketMatches() {
				if id, ok := strings.CutPrefix(m.GetName(), "tlsMode-istio~"); ok {
					got = append(got, id)
				}
			}
			slices.Sort(got)
			w := slices.Sorted(slices.Values(ids))
			if !slices.Equal(got, w) {
				t.Fatalf("node %s cluster %s: identities %v, want %v", node, cl.GetName(), got, w)
			}
		}
		if withMTLS == 0 {
			t.Fatalf("node %s: no cluster with Istio mTLS", node)
		}
	}
	empty := g.ForNode("node-without-pods", xds.EnvoyNode).Version(resourcev3.ClusterType)
	for node, v := range versions {
		if v == empty {
			t.Errorf("node %s is served the clusters of a node without clients", node)
		}
	}
}
