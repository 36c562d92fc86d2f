package install

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestCheckCNI: the preflight says what nodemesh will be on the nodes —
// their CNI, standalone — and refuses a cluster where another CNI runs
// (nodemesh's conflist would sort first and split the nodes' pods between
// two networks), or where Istio's CNI would insert itself into it.
func TestCheckCNI(t *testing.T) {
	env := kubetest.Dedicated(t, "cni")
	ctx := context.Background()
	c := &Client{Kube: env.Client}
	ds := func(ns, name string) *appsv1.DaemonSet {
		labels := map[string]string{"app": name}
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}}}}}
	}
	check := func(step string, want CheckStatus, wantIn ...string) {
		t.Helper()
		r := c.checkCNI(ctx, CNIStandalone)
		if r.Status != want {
			t.Errorf("%s: status %s, want %s: %s", step, r.Status, want, r.Message)
		}
		for _, w := range wantIn {
			if !strings.Contains(r.Message+" "+r.Fix, w) {
				t.Errorf("%s: %q lacks %q", step, r.Message+" "+r.Fix, w)
			}
		}
	}
	check("no CNI, no node", Pass, "standalone", api.CNIConfFile)
	if r := c.checkCNI(ctx, CNIChained); r.Status != Warn {
		t.Errorf("chained with no primary CNI: %s %s, want a warning", r.Status, r.Message)
	}

	// nodemesh's own agent DaemonSet is no other CNI.
	if _, err := env.Client.AppsV1().DaemonSets("default").Create(ctx, ds("default", api.AgentName), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("nodemesh's own agent", Pass, "standalone")

	node, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ready-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("a Ready node: some CNI configuration exists", Warn, "ready-1", "standalone")

	if _, err := env.Client.AppsV1().DaemonSets("kube-system").Create(ctx, ds("kube-system", "calico-node"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("Calico runs", Fail, "Calico (kube-system/calico-node)", "agent.cni.mode=chained")
	if r := c.checkCNI(ctx, CNIChained); r.Status != Pass || !strings.Contains(r.Message, "chains after Calico") {
		t.Errorf("chained after Calico: %s %s", r.Status, r.Message)
	}
	if err := env.Client.AppsV1().DaemonSets("kube-system").Delete(ctx, "calico-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := env.Client.AppsV1().DaemonSets("kube-system").Create(ctx, ds("kube-system", "istio-cni-node"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("Istio CNI runs", Fail, "Istio CNI", api.CNIConfFile)
}
