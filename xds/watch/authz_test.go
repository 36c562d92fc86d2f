package watch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/watch"
)

// authzPolicy decodes an AuthorizationPolicy manifest of namespace ns.
func authzPolicy(t *testing.T, ns, manifest string) *securityv1.AuthorizationPolicy {
	t.Helper()
	ap := &securityv1.AuthorizationPolicy{}
	if err := yaml.Unmarshal([]byte(manifest), ap); err != nil {
		t.Fatalf("decode %q: %v", manifest, err)
	}
	ap.Namespace = ns
	return ap
}

// policyEvents are the controller's Events on one AuthorizationPolicy.
func policyEvents(t *testing.T, ctx context.Context, env *kubetest.Env, ns, name string) []corev1.Event {
	t.Helper()
	evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fmt.Sprintf("involvedObject.kind=AuthorizationPolicy,involvedObject.name=%s", name),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.Source.Component == watch.EventComponent {
			out = append(out, e)
		}
	}
	return out
}

// wantEvent waits for an Event of a type and reason on a policy whose
// message has every substring.
func wantEvent(t *testing.T, ctx context.Context, env *kubetest.Env, ns, name, typ, reason string, substrings ...string) corev1.Event {
	t.Helper()
	var last []corev1.Event
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		last = policyEvents(t, ctx, env, ns, name)
		for _, e := range last {
			if e.Type != typ || e.Reason != reason {
				continue
			}
			ok := true
			for _, s := range substrings {
				ok = ok && strings.Contains(e.Message, s)
			}
			if ok {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got []string
	for _, e := range last {
		got = append(got, fmt.Sprintf("%s %s %q (x%d)", e.Type, e.Reason, e.Message, e.Count))
	}
	t.Fatalf("no %s %s Event on AuthorizationPolicy %s/%s with %q within 20s; events: %s", typ, reason, ns, name, substrings, strings.Join(got, "; "))
	return corev1.Event{}
}

// emitted is how many times the controller reported Events of a reason on
// a policy (the recorder folds a repeated Event into its Count).
func emitted(t *testing.T, ctx context.Context, env *kubetest.Env, ns, name, reason string) int32 {
	t.Helper()
	var n int32
	for _, e := range policyEvents(t, ctx, env, ns, name) {
		if e.Reason == reason {
			n += max(e.Count, 1)
		}
	}
	return n
}

// TestAuthorizationPolicyStatus: the controller reports, as Events on each
// AuthorizationPolicy, where it runs — in eBPF on the nodes of the meshed
// pods it selects, left to the sidecars of sidecar pods, nowhere for pods
// outside the mesh or when it selects none — what its rules deny more
// (an L7 rule run as its L4 projection, CUSTOM denied instead of asked)
// and its translation errors; a resync that changes nothing reports
// nothing again, and a degradation edited away is forgotten, so it is
// reported again when it comes back.
func TestAuthorizationPolicyStatus(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	meshed := env.Namespace(t, "authz-meshed", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	outside := env.Namespace(t, "authz-outside", nil)
	nodeA, nodeB := "node-a-"+meshed, "node-b-"+meshed
	pods := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: meshed, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-2", Namespace: meshed, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeB, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Namespace: meshed, Labels: map[string]string{"app": "legacy"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "legacy"}, {Name: api.IstioProxyContainer, Image: "proxyv2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain-1", Namespace: outside, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "web"}}}},
	}
	for _, p := range pods {
		if _, err := env.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_ = startController(t, env.Config, 20*time.Millisecond)

	policies := map[string]string{
		meshed + "/web-l4": `
metadata: {name: web-l4}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]`,
		meshed + "/web-get": `
metadata: {name: web-get}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{to: [{operation: {methods: [GET]}}]}]`,
		meshed + "/legacy": `
metadata: {name: legacy}
spec:
  selector: {matchLabels: {app: legacy}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]`,
		meshed + "/nothing": `
metadata: {name: nothing}
spec:
  selector: {matchLabels: {app: none-such}}`,
		meshed + "/ext": `
metadata: {name: ext}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {ports: ["8080"]}}]}]`,
		meshed + "/bad-key": `
metadata: {name: bad-key}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{from: [{source: {namespaces: [legacy]}}], when: [{key: request.bogus, values: [x]}]}]`,
		outside + "/plain": `
metadata: {name: plain}
spec:
  rules: [{from: [{source: {namespaces: [shop]}}]}]`,
	}
	aps := env.Istio.SecurityV1()
	for key, m := range policies {
		ns, _, _ := strings.Cut(key, "/")
		if _, err := aps.AuthorizationPolicies(ns).Create(ctx, authzPolicy(t, ns, m), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", key, err)
		}
	}

	normal, warning := corev1.EventTypeNormal, corev1.EventTypeWarning
	nodes := "on nodes " + nodeA + ", " + nodeB
	for name, c := range map[string]struct {
		ns, typ, reason string
		want            []string
	}{
		"meshed pods: eBPF on their nodes": {meshed + "/web-l4", normal, watch.ReasonEnforced, []string{"enforced in eBPF for 2 pods " + nodes}},
		"sidecar pods: left to them":       {meshed + "/legacy", normal, watch.ReasonLeftToSidecars, []string{"left to the sidecars of 1 pod"}},
		"no pod":                           {meshed + "/nothing", normal, watch.ReasonNoPods, []string{"no pod selected"}},
		"outside the mesh":                 {outside + "/plain", normal, watch.ReasonOutsideMesh, []string{"1 pod outside the mesh: nobody authorizes them"}},
		"L7 rule: enforced":                {meshed + "/web-get", normal, watch.ReasonEnforced, []string{"enforced in eBPF for 2 pods " + nodes}},
		"L7 rule: its L4 projection":       {meshed + "/web-get", warning, watch.ReasonDeniesMore, []string{"spec.rules[0]", "runs as its L4 projection", "never matches"}},
		"CUSTOM: denied":                   {meshed + "/ext", warning, watch.ReasonDeniesMore, []string{"spec.action", "CUSTOM", `"opa"`, "denied"}},
		"CUSTOM: enforced":                 {meshed + "/ext", normal, watch.ReasonEnforced, []string{"2 pods"}},
		"unknown when key: error":          {meshed + "/bad-key", warning, "InvalidValue", []string{"spec.rules[0].when[0].key", "request.bogus"}},
	} {
		t.Run(name, func(t *testing.T) {
			ns, n, _ := strings.Cut(c.ns, "/")
			wantEvent(t, ctx, env, ns, n, c.typ, c.reason, c.want...)
		})
	}
	if t.Failed() {
		return
	}

	// settle makes a change the controller must report and waits for it:
	// Events are recorded in order, so everything reported before it has
	// reached the API server by then.
	marks := 0
	settle := func() {
		t.Helper()
		marks++
		name := fmt.Sprintf("mark-%d", marks)
		m := fmt.Sprintf("metadata: {name: %s}\nspec: {selector: {matchLabels: {app: %s}}}", name, name)
		if _, err := aps.AuthorizationPolicies(meshed).Create(ctx, authzPolicy(t, meshed, m), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		wantEvent(t, ctx, env, meshed, name, normal, watch.ReasonNoPods)
	}
	steady := map[string]string{"web-l4": watch.ReasonEnforced, "web-get": watch.ReasonDeniesMore, "ext": watch.ReasonDeniesMore, "bad-key": "InvalidValue", "nothing": watch.ReasonNoPods}

	// A resync that changes nothing: a policy touched (new resource
	// version, same spec) and a full translation (a Service created).
	touch := func(name string, edit func(*securityv1.AuthorizationPolicy)) {
		t.Helper()
		ap, err := aps.AuthorizationPolicies(meshed).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(ap)
		if _, err := aps.AuthorizationPolicies(meshed).Update(ctx, ap, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	touch("web-l4", func(ap *securityv1.AuthorizationPolicy) { ap.Labels = map[string]string{"touched": "yes"} })
	if _, err := env.Client.CoreV1().Services(meshed).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	settle()
	for name, reason := range steady {
		if n := emitted(t, ctx, env, meshed, name, reason); n != 1 {
			t.Errorf("%s: %s reported %d times across an unchanged resync, want once", name, reason, n)
		}
	}

	// The L7 rule edited away: the degradation is no longer reported (a
	// resync does not repeat it) ...
	touch("web-get", func(ap *securityv1.AuthorizationPolicy) {
		authzPolicy(t, meshed, "spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {ports: ['8080']}}]}]}").Spec.DeepCopyInto(&ap.Spec)
	})
	settle()
	touch("web-l4", func(ap *securityv1.AuthorizationPolicy) { ap.Labels = map[string]string{"touched": "again"} })
	settle()
	if n := emitted(t, ctx, env, meshed, "web-get", watch.ReasonDeniesMore); n != 1 {
		t.Errorf("web-get without its L7 rule: DeniesMore reported %d times, want still once", n)
	}
	// ... and, forgotten, it is reported again when it comes back.
	touch("web-get", func(ap *securityv1.AuthorizationPolicy) {
		authzPolicy(t, meshed, policies[meshed+"/web-get"]).Spec.DeepCopyInto(&ap.Spec)
	})
	settle()
	if n := emitted(t, ctx, env, meshed, "web-get", watch.ReasonDeniesMore); n != 2 {
		t.Errorf("web-get with its L7 rule back: DeniesMore reported %d times, want twice", n)
	}

	// A sidecar pod moving to nodemesh (recreated without its sidecar)
	// moves the policy's enforcement into eBPF.
	if err := env.Client.CoreV1().Pods(meshed).Delete(ctx, "legacy-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	moved := pods[2].DeepCopy()
	moved.Spec.Containers = moved.Spec.Containers[:1]
	if _, err := env.Client.CoreV1().Pods(meshed).Create(ctx, moved, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, ctx, env, meshed, "legacy", normal, watch.ReasonEnforced, "enforced in eBPF for 1 pod on node "+nodeA)
}

// TestAuthorizationPolicyStatusWithoutCRD: without Istio's security CRDs
// the controller serves xDS as before; once they are installed it watches
// AuthorizationPolicies and PeerAuthentications and reports them.
func TestAuthorizationPolicyStatusWithoutCRD(t *testing.T) {
	env := kubetest.Private(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	crds, err := apiextclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range []string{"authorizationpolicies.security.istio.io", "peerauthentications.security.istio.io"} {
		if err := crds.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, crd, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the CRD gone from discovery", func() bool {
			_, err := crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd, metav1.GetOptions{})
			return err != nil
		})
	}
	ns := env.Namespace(t, "authz-late", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	c := startControllerWith(t, env.Config, watch.Options{Debounce: 20 * time.Millisecond, AuthzDiscoveryPeriod: 100 * time.Millisecond})
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready without the AuthorizationPolicy CRD: %v", err)
	}

	if err := env.InstallIstioCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	// Creating the policy can race with the CRD becoming servable.
	waitFor(t, 30*time.Second, "a policy created", func() bool {
		_, err := env.Istio.SecurityV1().AuthorizationPolicies(ns).Create(ctx,
			authzPolicy(t, ns, "metadata: {name: late}\nspec: {}"), metav1.CreateOptions{})
		return err == nil
	})
	wantEvent(t, ctx, env, ns, "late", corev1.EventTypeNormal, watch.ReasonNoPods, "no pod selected")
	// PeerAuthentications too, on their own watch.
	waitFor(t, 30*time.Second, "a PeerAuthentication created", func() bool {
		_, err := env.Istio.SecurityV1().PeerAuthentications(ns).Create(ctx, &securityv1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns}}, metav1.CreateOptions{})
		return err == nil
	})
	wantPeerAuthnEvent(t, ctx, env, ns, "late", corev1.EventTypeNormal, watch.ReasonNoPods, "decides for no pod")
}
