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
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestPolicyExactness is the two review defects of the L3/L4 policy, on
// real TCP between pods networked by the CNI binary: an endPort range wider
// than 1,024 ports (1024-65535) allows its ports and only them, and two
// pods of one StatefulSet — one identity, since the pod-name label is not
// part of identities — selected by different NetworkPolicies each get
// exactly their own allows.
func TestPolicyExactness(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	buildBinaries(t, n.bin)
	ns := env.Namespace(t, "e2e-exact", nil)
	const podName = "statefulset.kubernetes.io/pod-name"
	for name, lbls := range map[string]map[string]string{
		"db-0":   {"app": "db", podName: "db-0"},
		"db-1":   {"app": "db", podName: "db-1"},
		"client": {"app": "client"},
	} {
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n.startAgent()
	db0, db1, client := n.addPod(ns, "db-0"), n.addPod(ns, "db-1"), n.addPod(ns, "client")
	for _, p := range []*pod{db0, db1} {
		n.daemon(p.netns, p.cgroup, "listenports", "80", "1023", "1024", "40000", "65535")
	}
	reach := func(what string, p *pod, target string, want bool) {
		t.Helper()
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
	to := func(p *pod, port int) string { return fmt.Sprintf("%s:%d", p.ip, port) }

	t.Run("one identity, no policy: all reachable", func(t *testing.T) {
		eps := n.snapshot(t).Endpoints
		var ids []bpf.Identity
		for _, ep := range eps {
			ids = append(ids, ep.Identity)
		}
		for _, port := range []int{80, 40000} {
			reach("client→db-0", client, to(db0, port), allowed)
			reach("client→db-1", client, to(db1, port), allowed)
		}
		t.Logf("endpoint keys without policy: %v", ids)
	})

	policies := env.Client.NetworkingV1().NetworkPolicies(ns)
	tcp := corev1.ProtocolTCP
	onPod := func(name, pod string, port int32, endPort *int32) *networkingv1.NetworkPolicy {
		p := intstr.FromInt32(port)
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{podName: pod}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p, EndPort: endPort}},
				}},
			}}
	}
	end := int32(65535)
	t.Run("endPort 1024-65535 on db-0, port 80 on db-1: each pod its own allows", func(t *testing.T) {
		if _, err := policies.Create(ctx, onPod("db-0-ephemeral", "db-0", 1024, &end), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := policies.Create(ctx, onPod("db-1-http", "db-1", 80, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→db-0:40000 (in the range)", client, to(db0, 40000), allowed)
		reach("client→db-0:1024 (first of the range)", client, to(db0, 1024), allowed)
		reach("client→db-0:65535 (last of the range)", client, to(db0, 65535), allowed)
		reach("client→db-0:80 (outside the range)", client, to(db0, 80), denied)
		reach("client→db-0:1023 (just below the range)", client, to(db0, 1023), denied)
		reach("client→db-1:80 (its own policy)", client, to(db1, 80), allowed)
		reach("client→db-1:40000 (db-0's range, not db-1's)", client, to(db1, 40000), denied)
		reach("db-1→db-0:40000 (not a client)", db1, to(db0, 40000), denied)

		// Both pods have one identity but entries of their own.
		s := n.snapshot(t)
		keys := map[bpf.Identity]bool{}
		for _, ep := range s.Endpoints {
			keys[ep.Identity] = true
		}
		if len(keys) != len(s.Endpoints) {
			t.Errorf("endpoints share policy keys: %+v", s.Endpoints)
		}
		if len(s.Ranges) == 0 {
			t.Errorf("no port range entries written")
		}
	})
	t.Run("the policies go: everything reachable again", func(t *testing.T) {
		for _, name := range []string{"db-0-ephemeral", "db-1-http"} {
			if err := policies.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		reach("client→db-0:80", client, to(db0, 80), allowed)
		reach("client→db-1:40000", client, to(db1, 40000), allowed)
	})
	t.Run("DEL leaves nothing behind", func(t *testing.T) {
		for _, p := range []*pod{db0, db1, client} {
			if _, err := n.cni("CHECK", p); err != nil {
				t.Errorf("CHECK %s: %v", p.name, err)
			}
			if _, err := n.cni("DEL", p); err != nil {
				t.Fatalf("DEL %s: %v", p.name, err)
			}
		}
		n.checkEmpty(t, []*pod{db0, db1, client})
	})
}
