//go:build linux

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestPeerAuthentication is PeerAuthentication on a migrated (meshed) pod,
// enforced by the agent in the eBPF maps, on real TCP, with Istio's CRDs in
// a real API server. The peers: a pod of the cluster (an attested workload
// identity), an address outside the cluster (an "outside" netns routed
// through the node: WORLD), and the node itself (HOST: kubelet probes).
//
//   - STRICT (namespace-level): the outside is refused on every port, the
//     pod and the node connect;
//   - PERMISSIVE: everyone connects;
//   - STRICT namespace with a workload policy whose portLevelMtls DISABLEs
//     9090: the outside reaches 9090 only;
//   - deleting the policies opens everything again.
func TestPeerAuthentication(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	if err := env.InstallIstioCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	buildBinaries(t, n.bin)
	ns := env.Namespace(t, "e2e-peerauthn", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	for _, name := range []string{"server", "client"} {
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: n.name, AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The outside: 198.18.61.2, linked to the node by ext0 (198.18.61.1),
	// routed to the pods through the node.
	outside := n.id + "-outside"
	run(t, "ip", "netns", "add", outside)
	t.Cleanup(func() { _ = execRun("ip", "netns", "del", outside) })
	run(t, "ip", "-n", outside, "link", "set", "lo", "up")
	run(t, "ip", "-n", n.netnsName("node"), "link", "add", "ext0", "type", "veth", "peer", "name", "ext0", "netns", outside)
	run(t, "ip", "-n", n.netnsName("node"), "addr", "add", "198.18.61.1/24", "dev", "ext0")
	run(t, "ip", "-n", n.netnsName("node"), "link", "set", "ext0", "up")
	run(t, "ip", "-n", outside, "addr", "add", "198.18.61.2/24", "dev", "ext0")
	run(t, "ip", "-n", outside, "link", "set", "ext0", "up")
	run(t, "ip", "-n", outside, "route", "add", n.podCIDR, "via", "198.18.61.1")

	n.startAgent()
	server, client := n.addPod(ns, "server"), n.addPod(ns, "client")
	n.daemon(server.netns, server.cgroup, "listenports", "8080", "9090")
	type peer struct {
		name, netns, cgroup string
	}
	world := peer{"outside", outside, filepath.Join(n.cgroupRoot, "outside")}
	inMesh := peer{"client pod", client.netns, client.cgroup}
	host := peer{"node", n.netnsName("node"), filepath.Join(n.cgroupRoot, "host")}
	reach := func(from peer, port int, want bool) {
		t.Helper()
		target := fmt.Sprintf("%s:%d", server.ip, port)
		eventually(t, 15*time.Second, fmt.Sprintf("%s→server:%d", from.name, port), func() error {
			out, err := n.execIn(from.netns, from.cgroup, "connect", target, "700ms")
			switch {
			case want && err != nil:
				return fmt.Errorf("want allowed, got %v: %s", err, out)
			case !want && err == nil:
				return fmt.Errorf("want denied, got through: %s", out)
			}
			return nil
		})
	}
	pas := dynamic.NewForConfigOrDie(env.Config).Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}).Namespace(ns)
	apply := func(name string, spec map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec":     spec,
		}}
		old, err := pas.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			u.SetResourceVersion(old.GetResourceVersion())
			_, err = pas.Update(ctx, u, metav1.UpdateOptions{})
		} else {
			_, err = pas.Create(ctx, u, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	remove := func(name string) {
		t.Helper()
		if err := pas.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("no policy: everyone connects", func(t *testing.T) {
		reach(world, 8080, allowed)
		reach(world, 9090, allowed)
		reach(inMesh, 8080, allowed)
	})
	t.Run("STRICT refuses the outside and admits the pod and the node", func(t *testing.T) {
		apply("default", map[string]any{"mtls": map[string]any{"mode": "STRICT"}})
		reach(world, 8080, denied)
		reach(world, 9090, denied)
		reach(inMesh, 8080, allowed)
		reach(inMesh, 9090, allowed)
		reach(host, 8080, allowed)
	})
	t.Run("PERMISSIVE admits everyone", func(t *testing.T) {
		apply("default", map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}})
		reach(world, 8080, allowed)
		reach(world, 9090, allowed)
		reach(inMesh, 8080, allowed)
	})
	t.Run("port-level DISABLE opens that port only", func(t *testing.T) {
		apply("default", map[string]any{"mtls": map[string]any{"mode": "STRICT"}})
		reach(world, 9090, denied)
		apply("server", map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "server"}},
			"portLevelMtls": map[string]any{"9090": map[string]any{"mode": "DISABLE"}}})
		reach(world, 9090, allowed)
		reach(world, 8080, denied)
		reach(inMesh, 8080, allowed)
	})
	t.Run("deleting the policies opens everything", func(t *testing.T) {
		remove("server")
		remove("default")
		reach(world, 8080, allowed)
		reach(world, 9090, allowed)
	})
	t.Run("DEL leaves nothing behind", func(t *testing.T) {
		// The outside's link is ours, not a pod's: gone first.
		run(t, "ip", "-n", outside, "link", "del", "ext0")
		pods := []*pod{server, client}
		for _, p := range pods {
			if _, err := n.cni("DEL", p); err != nil {
				t.Fatalf("DEL %s: %v", p.name, err)
			}
		}
		n.checkEmpty(t, pods)
	})
}
