//go:build linux

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestAuthorizationPolicyL4 is the L4 part of Istio's AuthorizationPolicy
// enforced by the agent in the eBPF maps, on real TCP between pods
// networked by the CNI binary, with Istio's CRDs in a real API server:
//
//   - an ALLOW from principal cluster.local/ns/A/sa/client on port 8080:
//     the pod running as that service account connects, a pod of another
//     service account of the same namespace is refused, and so is the
//     client on another port; deleting the policy restores access;
//   - a DENY from namespace B while a NetworkPolicy allows B: B is refused
//     (the gates are separate: the NetworkPolicy's allow does not override
//     the AuthorizationPolicy), A still connects; deleting the DENY lets B
//     in again.
func TestAuthorizationPolicyL4(t *testing.T) {
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
	nsA := env.Namespace(t, "e2e-authz-a", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}) // Istio authorizes meshed pods only
	nsB := env.Namespace(t, "e2e-authz-b", nil)
	for _, p := range []struct{ ns, name, sa, app string }{
		{nsA, "server", "server", "server"},
		{nsA, "client", "client", "client"},
		{nsA, "other", "other", "client"},
		{nsB, "bclient", "bclient", "client"},
	} {
		if _, err := env.Client.CoreV1().ServiceAccounts(p.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: p.sa}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Client.CoreV1().Pods(p.ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec: corev1.PodSpec{NodeName: n.name, ServiceAccountName: p.sa, AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n.startAgent()
	server, client, other, bclient := n.addPod(nsA, "server"), n.addPod(nsA, "client"), n.addPod(nsA, "other"), n.addPod(nsB, "bclient")
	n.daemon(server.netns, server.cgroup, "listenports", "8080", "9090")
	reach := func(what string, p *pod, port int, want bool) {
		t.Helper()
		target := fmt.Sprintf("%s:%d", server.ip, port)
		eventually(t, 15*time.Second, what, func() error {
			out, err := n.exec(p, "connect", target, "700ms")
			switch {
			case want && err != nil:
				return fmt.Errorf("want allowed, got %v: %s", err, out)
			case !want && err == nil:
				return fmt.Errorf("want denied, got through: %s", out)
			}
			return nil
		})
	}
	aps := dynamic.NewForConfigOrDie(env.Config).Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}).Namespace(nsA)
	create := func(name string, spec map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": name, "namespace": nsA},
			"spec":     spec,
		}}
		if _, err := aps.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(name string) {
		t.Helper()
		if err := aps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	server8080 := map[string]any{"matchLabels": map[string]any{"app": "server"}}

	t.Run("no policy: everyone connects", func(t *testing.T) {
		reach("client→server:8080", client, 8080, allowed)
		reach("other→server:8080", other, 8080, allowed)
		reach("bclient→server:9090", bclient, 9090, allowed)
	})
	t.Run("ALLOW from principal client on 8080", func(t *testing.T) {
		create("allow-client", map[string]any{"selector": server8080, "action": "ALLOW", "rules": []any{map[string]any{
			"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/" + nsA + "/sa/client"}}}},
			"to":   []any{map[string]any{"operation": map[string]any{"ports": []any{"8080"}}}},
		}}})
		reach("other (another service account)→server:8080", other, 8080, denied)
		reach("client→server:8080", client, 8080, allowed)
		reach("client→server:9090 (another port)", client, 9090, denied)
		reach("bclient→server:8080 (another namespace)", bclient, 8080, denied)
	})
	t.Run("deleting the ALLOW restores access", func(t *testing.T) {
		remove("allow-client")
		reach("other→server:8080", other, 8080, allowed)
		reach("client→server:9090", client, 9090, allowed)
	})
	nps := env.Client.NetworkingV1().NetworkPolicies(nsA)
	t.Run("DENY from namespace B wins over a NetworkPolicy allowing B", func(t *testing.T) {
		if _, err := nps.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-a-and-b"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{}},
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsB}}},
				}}},
			}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("bclient→server:8080 (the NetworkPolicy allows B)", bclient, 8080, allowed)
		create("deny-b", map[string]any{"selector": server8080, "action": "DENY", "rules": []any{map[string]any{
			"from": []any{map[string]any{"source": map[string]any{"namespaces": []any{nsB}}}},
		}}})
		reach("bclient→server:8080", bclient, 8080, denied)
		reach("bclient→server:9090", bclient, 9090, denied)
		reach("client→server:8080 (namespace A)", client, 8080, allowed)
	})
	t.Run("deleting the DENY lets B in again", func(t *testing.T) {
		remove("deny-b")
		reach("bclient→server:8080", bclient, 8080, allowed)
		if err := nps.Delete(ctx, "allow-a-and-b", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("DEL leaves nothing behind", func(t *testing.T) {
		pods := []*pod{server, client, other, bclient}
		for _, p := range pods {
			if _, err := n.cni("DEL", p); err != nil {
				t.Fatalf("DEL %s: %v", p.name, err)
			}
		}
		n.checkEmpty(t, pods)
	})
}
