package xds

import (
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nodemesh/nodemesh/translate"
)

// TestClusterSetsByIdentitySet: with Istio mTLS, a node's clusters depend on
// its set of client identities only. node-3 and node-4 run pods of the same
// identities at different addresses: different listeners (their chains
// match their own pods), one cluster set, computed once; node-1's clients
// have other identities: its own set.
func TestClusterSetsByIdentitySet(t *testing.T) {
	bag, diags, err := translate.Load([]string{"../translate/testdata/nodes/source-classes.in.yaml", "testdata/same-classes-two-nodes.yaml"}, nil, "default")
	if err != nil || diags.HasErrors() {
		t.Fatalf("load: %v %v", err, diags)
	}
	g := NewGeneration(1, time.Now(), bag, nil, translate.Options{Istio: translate.IstioOptions{IstioMTLS: true}})
	n3, n4, n1 := g.ForNode("node-3", EnvoyNode), g.ForNode("node-4", EnvoyNode), g.ForNode("node-1", EnvoyNode)
	if n3.Version(resourcev3.ListenerType) == n4.Version(resourcev3.ListenerType) {
		t.Error("node-3 and node-4 share a listener: their chains must match their own pods")
	}
	if n3.sets[resourcev3.ClusterType] != n4.sets[resourcev3.ClusterType] {
		t.Error("node-3 and node-4 have the same identities but not the same cluster set")
	}
	if n3.sets[resourcev3.ClusterType] == g.clusters {
		t.Error("node-3 is served the shared clusters")
	}
	if n1.Version(resourcev3.ClusterType) == n3.Version(resourcev3.ClusterType) {
		t.Error("node-1 has other identities but node-3's clusters")
	}
	if len(g.clusterSets) != 2 {
		t.Errorf("%d cluster sets computed, want 2 (one per identity set)", len(g.clusterSets))
	}
	k3, k4 := g.t.NodeClasses("node-3"), g.t.NodeClasses("node-4")
	if k3.Key == k4.Key || k3.ClusterKey != k4.ClusterKey || k3.ClusterKey == "" {
		t.Errorf("keys: node-3 %q/%q, node-4 %q/%q", k3.Key, k3.ClusterKey, k4.Key, k4.ClusterKey)
	}
}
