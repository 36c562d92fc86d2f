package watch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// TestInvalidVirtualServiceKeepsDefaultRoute is issue 15's "an invalid
// rule must not empty a host", live: a VirtualService Istio's webhook would
// refuse (its only rule has a negative weight) is created in the API server
// for a host without one. Before, it claimed the host and left its virtual
// host with no route, so every call failed; now the controller rejects it
// whole, says so in an Event on it, and the node keeps serving the host's
// default route.
func TestInvalidVirtualServiceKeepsDefaultRoute(t *testing.T) {
	env, ctx, ns, b := bookinfoIn(t, 2*time.Minute)
	c := startController(t, env.Config, 20*time.Millisecond)
	client := xdstest.NewGRPCClient(t, c.addr, "grpc-"+ns)
	reviews := client.Dial(b.Target("reviews"))

	vsClient := env.Istio.NetworkingV1().VirtualServices(ns)
	if err := vsClient.Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	overAll := func(t xdstest.Tally) bool {
		return t["reviews-v1"] > 0 && t["reviews-v2"] > 0 && t["reviews-v3"] > 0 && t["reviews-v1"]+t["reviews-v2"]+t["reviews-v3"] == t.Total()
	}
	xdstest.WaitRouting(t, ctx, reviews, 30*time.Second, "default route over v1, v2 and v3 without a VirtualService", overAll)

	bad := b.VirtualService(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bad, namespace: {{.Namespace}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
      weight: -1
`)
	if _, err := vsClient.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The Event on the field comes from the generation that translated the
	// new VirtualService, so the node has been sent what follows from it.
	if _, err := eventWith(ctx, env, ns, "VirtualService", "reviews-bad", "weight must not be negative"); err != nil {
		t.Fatalf("no Event names the field at fault: %v", err)
	}
	xdstest.WaitRouting(t, ctx, reviews, 10*time.Second, "default route after the invalid VirtualService", overAll)
	// And it stays so: every call is answered by a reviews backend.
	if tally := xdstest.Calls(ctx, reviews, 60); !overAll(tally) {
		t.Errorf("reviews with an invalid VirtualService: %v (want the default route over v1, v2 and v3; last error: %s)", tally, xdstest.LastError())
	}
	ev, err := eventWith(ctx, env, ns, "VirtualService", "reviews-bad", "VirtualService is rejected")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != corev1.EventTypeWarning || ev.Source.Component != watch.EventComponent {
		t.Errorf("event: %s %s from %s: %q", ev.Type, ev.Reason, ev.Source.Component, ev.Message)
	}
}

// eventWith waits up to 20s for an Event on an object whose message
// contains text.
func eventWith(ctx context.Context, env *kubetest.Env, ns, kind, name, text string) (corev1.Event, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s", kind, name),
		})
		if err != nil {
			return corev1.Event{}, err
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, text) {
				return e, nil
			}
		}
		if time.Now().After(deadline) {
			var msgs []string
			for _, e := range evs.Items {
				msgs = append(msgs, e.Reason+": "+e.Message)
			}
			return corev1.Event{}, fmt.Errorf("no Event on %s %s/%s mentions %q within 20s (events: %q)", kind, ns, name, text, msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
