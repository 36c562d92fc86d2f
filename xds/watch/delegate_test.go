package watch_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestControllerDelegateVirtualService: a root VirtualService for reviews
// delegates everything to a delegate VirtualService (no hosts). grpc-go's
// xDS client follows the delegate's rules; a change to the delegate alone
// (the root untouched) re-routes reviews, and deleting the delegate drops
// the root's rule (reviews falls back to its default route) with a
// Delegate Event on the root.
func TestControllerDelegateVirtualService(t *testing.T) {
	env, ctx, ns, b := bookinfoIn(t, 3*time.Minute)
	vsClient := env.Istio.NetworkingV1().VirtualServices(ns)
	root, err := vsClient.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root.Spec = *b.VirtualService(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - delegate: {name: reviews-team}
`).Spec.DeepCopy()
	if _, err := vsClient.Update(ctx, root, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	delegate := b.VirtualService(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-team, namespace: {{.Namespace}}}
spec:
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v3}
`)
	if _, err := vsClient.Create(ctx, delegate, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	c := startController(t, env.Config, 20*time.Millisecond)
	client := xdstest.NewGRPCClient(t, c.addr, "grpc-"+ns)
	reviews := client.Dial(b.Target("reviews"))
	xdstest.WaitRouting(t, ctx, reviews, 30*time.Second, "jason routed to v2 by the delegate", xdstest.Only("reviews-v2"), "end-user", "jason")
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "everyone else to v3 by the delegate", xdstest.Only("reviews-v3"))

	// The controller's start-up translations are over (the first one, and
	// the one RequestAuthentications add once their informer lists): from
	// here only the delegate's update can make a full translation, so the
	// routing below cannot come from another change that happened to
	// re-read the delegate.
	full := c.metrics.Translations.WithLabelValues("full")
	waitFor(t, 20*time.Second, "the start-up translations", func() bool { return testutil.ToFloat64(full) >= 2 })

	// Only the delegate changes.
	delegate, err = vsClient.Get(ctx, "reviews-team", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delegate.Spec.Http[1].Route[0].Destination.Subset = "v1"
	if _, err := vsClient.Update(ctx, delegate, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "everyone else to v1 after the delegate's update", xdstest.Only("reviews-v1"))

	if err := vsClient.Delete(ctx, "reviews-team", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "default route over v1, v2 and v3 without the delegate", func(t xdstest.Tally) bool {
		return t["reviews-v1"] > 0 && t["reviews-v2"] > 0 && t["reviews-v3"] > 0 && t["reviews-v1"]+t["reviews-v2"]+t["reviews-v3"] == t.Total()
	}, "end-user", "jason")
	ev := waitEvent(t, ctx, env, ns, "VirtualService", "reviews", "Delegate")
	if !strings.Contains(ev.Message, "reviews-team") {
		t.Errorf("event: %q", ev.Message)
	}
}
