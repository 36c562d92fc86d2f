//go:build linux

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestIdentityCollection: the agent elected through the Lease deletes
// identities no pod uses once they have been unused for the grace period,
// keeps the ones its pods use, and re-creates a used identity that was
// deleted anyway. An API server of its own: collecting with a 1s grace in a
// shared one would delete other suites' identities.
func TestIdentityCollection(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Dedicated(t, "identity-gc")
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	ns := env.Namespace(t, "e2e-gc", nil)
	n.agentArgs = []string{"--namespace", ns, "--identity-gc-period", "300ms", "--identity-gc-grace", "1s"}
	buildBinaries(t, n.bin)
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app", Labels: map[string]string{"app": "app"}},
		Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dc := dynamic.NewForConfigOrDie(env.Config)
	alloc := &identity.Allocator{Client: dc}
	// An identity nobody uses any more (a workload that was deleted).
	unused, err := alloc.Allocate(ctx, identity.KeyOf(ns, "", map[string]string{"app": "deleted"}))
	if err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	n.addPod(ns, "app")
	used, err := alloc.Allocate(ctx, identity.KeyOf(ns, "", map[string]string{"app": "app"})) // finds the agent's
	if err != nil {
		t.Fatal(err)
	}
	res := dc.Resource(v1alpha1.IdentityResource)
	exists := func(id uint32) (bool, error) {
		_, err := res.Get(ctx, strconv.FormatUint(uint64(id), 10), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}

	eventually(t, 20*time.Second, "unused identity collected", func() error {
		if ok, err := exists(uint32(unused)); err != nil || ok {
			return fmt.Errorf("identity %d still there (%v)", unused, err)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // more than the grace period, several sweeps
	if ok, err := exists(uint32(used)); err != nil || !ok {
		t.Fatalf("the identity of a running pod was collected (%v)", err)
	}
	lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, agent.IdentityGCLease, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != n.name {
		t.Errorf("Lease %s: %v, want held by %s", agent.IdentityGCLease, err, n.name)
	}

	// Deleted while in use (a race with the collector, or by hand): the
	// agent re-creates the same number for the same key.
	if err := res.Delete(ctx, strconv.FormatUint(uint64(used), 10), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "used identity re-created", func() error {
		obj, err := res.Get(ctx, strconv.FormatUint(uint64(used), 10), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if id, ok := identity.FromObject(obj); !ok || !id.Key.Equal(identity.KeyOf(ns, "", map[string]string{"app": "app"})) {
			return fmt.Errorf("re-created with another key: %v", obj.Object["spec"])
		}
		return nil
	})
	body := httpGet(t, "http://"+n.metrics+"/metrics")
	if !strings.Contains(body, "nodemesh_agent_identities_collected_total 1") {
		t.Errorf("metrics: identities_collected_total is not 1")
	}
}
