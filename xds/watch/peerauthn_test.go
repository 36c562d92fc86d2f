package watch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/watch"
)

// wantPeerAuthnEvent waits for an Event of a type and reason on a
// PeerAuthentication whose message has every substring.
func wantPeerAuthnEvent(t *testing.T, ctx context.Context, env *kubetest.Env, ns, name, typ, reason string, substrings ...string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.kind=PeerAuthentication,involvedObject.name=%s", name),
		})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range evs.Items {
			if e.Source.Component != watch.EventComponent {
				continue
			}
			got = append(got, fmt.Sprintf("%s %s %q", e.Type, e.Reason, e.Message))
			if e.Type != typ || e.Reason != reason {
				continue
			}
			ok := true
			for _, s := range substrings {
				ok = ok && strings.Contains(e.Message, s)
			}
			if ok {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s %s Event on PeerAuthentication %s/%s with %q within 20s; events: %s", typ, reason, ns, name, substrings, strings.Join(got, "; "))
}

// TestPeerAuthenticationStatus: the controller reports, as Events on each
// PeerAuthentication, for which pods it decides the mode and where that is
// enforced — STRICT in eBPF on the meshed pods' nodes, saying how it
// differs from Istio; nothing to enforce for a port-level DISABLE; left to
// sidecars; nobody for pods outside the mesh; no pod when a narrower policy
// decides or none is selected — and what istiod ignores (a second
// namespace-level policy) as a Warning.
func TestPeerAuthenticationStatus(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	meshed := env.Namespace(t, "pa-meshed", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	outside := env.Namespace(t, "pa-outside", nil)
	nodeA, nodeB := "node-a-"+meshed, "node-b-"+meshed
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: meshed, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-2", Namespace: meshed, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeB, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Namespace: meshed, Labels: map[string]string{"app": "legacy"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "legacy"}, {Name: api.IstioProxyContainer, Image: "proxyv2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain-1", Namespace: outside, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
	} {
		if _, err := env.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_ = startController(t, env.Config, 20*time.Millisecond)

	// In order: the oldest namespace-level policy wins (ties: the first
	// name), so "default" is created first and "zz-second" is ignored.
	for _, m := range []struct{ ns, manifest string }{
		{meshed, `{metadata: {name: default}, spec: {mtls: {mode: STRICT}}}`},
		{meshed, `{metadata: {name: zz-second}, spec: {mtls: {mode: DISABLE}}}`},
		{meshed, `{metadata: {name: web-9090}, spec: {selector: {matchLabels: {app: web}}, portLevelMtls: {"9090": {mode: DISABLE}}}}`},
		{meshed, `{metadata: {name: nothing}, spec: {selector: {matchLabels: {app: none-such}}, mtls: {mode: STRICT}}}`},
		{outside, `{metadata: {name: plain}, spec: {mtls: {mode: STRICT}}}`},
	} {
		pa := &securityv1.PeerAuthentication{}
		if err := yaml.Unmarshal([]byte(m.manifest), pa); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Istio.SecurityV1().PeerAuthentications(m.ns).Create(ctx, pa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	normal, warning := corev1.EventTypeNormal, corev1.EventTypeWarning
	for name, c := range map[string]struct {
		ns, policy, typ, reason string
		want                    []string
	}{
		"STRICT: eBPF on the meshed pods' nodes, and what differs": {meshed, "default", normal, watch.ReasonEnforced,
			[]string{"STRICT enforced in eBPF for 2 pods on nodes " + nodeA + ", " + nodeB, "without mTLS on the wire", "left to the sidecars of 1 pod"}},
		"port-level DISABLE: nothing to enforce": {meshed, "web-9090", normal, watch.ReasonNotEnforced, []string{"no STRICT port for 2 pods"}},
		"a second namespace-level policy is ignored": {meshed, "zz-second", warning, "Conflict",
			[]string{"ignored: the namespace-level PeerAuthentication default is older"}},
		"no pod selected":  {meshed, "nothing", normal, watch.ReasonNoPods, []string{"decides for no pod"}},
		"outside the mesh": {outside, "plain", normal, watch.ReasonOutsideMesh, []string{"1 pod outside the mesh: nobody authenticates them"}},
	} {
		t.Run(name, func(t *testing.T) {
			wantPeerAuthnEvent(t, ctx, env, c.ns, c.policy, c.typ, c.reason, c.want...)
		})
	}
}
