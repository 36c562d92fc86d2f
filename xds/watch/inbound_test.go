package watch_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/internal/rbaceval"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/xds/watch"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

// servedInboundHCM is the HTTP connection manager of the chain for
// addr:port on the node's served inbound listener; listener is false when
// the node has no inbound listener, and the manager nil when it has no
// chain for addr:port.
func servedInboundHCM(t *testing.T, s xdstest.States, addr string, port uint32) (h *hcmv3.HttpConnectionManager, listener bool) {
	t.Helper()
	a, ok := s[resourcev3.ListenerType].Resources[ir.InboundListenerName]
	if !ok {
		return nil, false
	}
	l := &listenerv3.Listener{}
	if err := a.UnmarshalTo(l); err != nil {
		t.Fatal(err)
	}
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		if m.GetDestinationPort().GetValue() != port || len(m.GetPrefixRanges()) == 0 || m.GetPrefixRanges()[0].GetAddressPrefix() != addr {
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		return h, true
	}
	return nil, true
}

// inboundDecision is what node's served inbound listener decides for a GET
// and a POST to addr:port from src: "none" when the node has no inbound
// listener, "no chain" when it has one without a chain for addr:port.
func inboundDecision(t *testing.T, s xdstest.States, addr string, port uint32, src string) string {
	t.Helper()
	h, listener := servedInboundHCM(t, s, addr, port)
	switch {
	case !listener:
		return "none"
	case h == nil:
		return "no chain"
	}
	var filters []*rbachttpv3.RBAC
	for _, f := range h.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.rbac" {
			r := &rbachttpv3.RBAC{}
			if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
				t.Fatal(err)
			}
			filters = append(filters, r)
		}
	}
	out := ""
	for _, method := range []string{"GET", "POST"} {
		ok, err := rbaceval.Allowed(filters, &rbaceval.Request{Method: method, Path: "/", Host: "web",
			Source: netip.MustParseAddr(src), DestinationPort: port})
		if err != nil {
			t.Fatal(err)
		}
		verdict := "deny"
		if ok {
			verdict = "allow"
		}
		out += fmt.Sprintf("%s=%s ", method, verdict)
	}
	if _, ok := s[resourcev3.ClusterType].Resources[fmt.Sprintf("inbound|%d||", port)]; !ok {
		out += "(no inbound cluster)"
	}
	return out
}

// TestInboundListenerServedPerNode: with a real API server, a pod with an
// HTTP-fact AuthorizationPolicy (bookinfo's productpage-viewer: GET only)
// on node A gets a chain on A's inbound listener and B gets no inbound
// listener; the served RBAC lets GET in and keeps POST out; the policy
// changed changes what the chain allows, and the policy removed removes the
// listener. Consumers are the raw ADS clients (Envoy's behaviour on the
// wire), one per node, each authenticated as its node.
func TestInboundListenerServedPerNode(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ns := env.Namespace(t, "inbound", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	nodeA, nodeB := "node-a-"+ns, "node-b-"+ns
	const webIP, clientIP = "10.99.0.10", "10.99.0.11"
	objs := []any{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeA}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeB}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}},
		}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: "web",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: webIP, PodIPs: []corev1.PodIP{{IP: webIP}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client-1", Namespace: ns, Labels: map[string]string{"app": "client"}},
			Spec:   corev1.PodSpec{NodeName: nodeB, Containers: []corev1.Container{{Name: "app", Image: "client"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: clientIP, PodIPs: []corev1.PodIP{{IP: clientIP}}}},
	}
	for _, o := range objs {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{nodeA, nodeB} {
			_ = env.Client.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{})
		}
	})
	aps := env.Istio.SecurityV1().AuthorizationPolicies(ns)
	viewer := authzPolicy(t, ns, `
metadata: {name: web-viewer}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - to:
    - operation: {methods: [GET]}
`)
	if _, err := aps.Create(ctx, viewer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := startController(t, env.Config, 20*time.Millisecond)
	clients := map[string]*xdstest.ADSClient{}
	for _, n := range []string{nodeA, nodeB} {
		ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: n}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ads.Close() })
		clients[n] = ads
	}
	// wait until both nodes' accepted configuration decides as wanted.
	wait := func(what, wantA, wantB string) {
		t.Helper()
		var gotA, gotB string
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		err := clients[nodeA].Wait(wctx, func(s xdstest.States) bool {
			gotA = inboundDecision(t, s, webIP, 8080, clientIP)
			return gotA == wantA
		})
		if err == nil {
			err = clients[nodeB].Wait(wctx, func(s xdstest.States) bool {
				gotB = inboundDecision(t, s, webIP, 8080, clientIP)
				return gotB == wantB
			})
		}
		if err != nil {
			t.Fatalf("%s: node A %q (want %q), node B %q (want %q): %v", what, gotA, wantA, gotB, wantB, err)
		}
	}
	wait("GET-only policy", "GET=allow POST=deny ", "none")

	cur, err := aps.Get(ctx, "web-viewer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Rules[0].To[0].Operation.Methods = []string{"POST"}
	if _, err := aps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the policy changed to POST only", "GET=deny POST=allow ", "none")

	if err := aps.Delete(ctx, "web-viewer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the policy removed", "none", "none")
}

// TestInboundTrustDomain: the controller's trust domain (--trust-domain,
// watch.Options.Istio.TrustDomain) is the one AuthorizationPolicy
// principals are matched in. A policy naming the client's principal in the
// mesh's domain admits it; were the principals put in Istio's default
// domain instead, the ALLOW would name nobody (and a DENY never fire).
func TestInboundTrustDomain(t *testing.T) {
	env := kubetest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ns := env.Namespace(t, "trustdomain", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	node := "node-td-" + ns
	const webIP, clientIP = "10.99.1.10", "10.99.1.11"
	objs := []any{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "web",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: webIP, PodIPs: []corev1.PodIP{{IP: webIP}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client-1", Namespace: ns, Labels: map[string]string{"app": "client"}},
			Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: "client", Containers: []corev1.Container{{Name: "app", Image: "client"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: clientIP, PodIPs: []corev1.PodIP{{IP: clientIP}}}},
	}
	for _, o := range objs {
		if _, err := env.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	ap := authzPolicy(t, ns, `
metadata: {name: client-gets}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["example.org/ns/`+ns+`/sa/client"]}
    to:
    - operation: {methods: [GET]}
`)
	if _, err := env.Istio.SecurityV1().AuthorizationPolicies(ns).Create(ctx, ap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opts := watch.Options{Debounce: 20 * time.Millisecond}
	opts.Istio.TrustDomain = "example.org"
	c := startControllerWith(t, env.Config, opts)
	ads, err := xdstest.NewADSClient(ctx, c.addr, &corev3.Node{Id: node}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ads.Close() })
	var got string
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := ads.Wait(wctx, func(s xdstest.States) bool {
		got = inboundDecision(t, s, webIP, 8080, clientIP)
		return got == "GET=allow POST=deny "
	}); err != nil {
		t.Fatalf("the client named in the mesh's trust domain: %q, want GET allowed, POST denied: %v", got, err)
	}
}
