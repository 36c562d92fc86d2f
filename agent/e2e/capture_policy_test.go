//go:build linux

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestInboundCaptureByPolicy: the agent itself decides which pod ports the
// node Envoy captures — from the AuthorizationPolicies and Services it
// watches, by the controller's rule (translate/authz.Capture) — writes them
// to nm_inbound, and leaves those ports to the Envoy in the authorization
// gate; deleting the policy takes the capture away. The node Envoy's
// inbound listener is the Go stand-in of TestInboundCapture (no Envoy
// binary here), refusing what is not a GET as the RBAC of the policy would.
func TestInboundCaptureByPolicy(t *testing.T) {
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
	ns := env.Namespace(t, "e2e-capture-policy", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	for _, p := range []struct{ name, app string }{{"server", "server"}, {"client", "client"}} {
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The Service declares 8080 HTTP (port name), 9000 TCP.
	if _, err := env.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "tcp-echo", Port: 9000, TargetPort: intstr.FromInt32(9000)},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	server, client := n.addPod(ns, "server"), n.addPod(ns, "client")
	n.daemon(server.netns, server.cgroup, "serve", "server")
	proxy := n.startInbound(bpf.ProxyInboundSocketMark, bpf.ProxyInboundUpstreamMark)
	defer func() { proxy.stop() }()

	pol, err := bpf.LoadPolicy(bpf.LoadOptions{PinPath: filepath.Join(n.bpffs, "nodemesh", "maps")})
	if err != nil {
		t.Fatal(err)
	}
	defer pol.Close()
	serverIP := netip.MustParseAddr(server.ip)
	httpURL := "http://" + server.ip + ":8080/"
	serverHTTP := server.ip + ":8080"
	captures := func(want []netip.AddrPort) {
		t.Helper()
		eventually(t, 15*time.Second, fmt.Sprintf("nm_inbound = %v", want), func() error {
			got, err := pol.InboundCaptures()
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("nm_inbound = %v", got)
			}
			return nil
		})
	}
	get := func(t *testing.T, what, mode string, want string) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() error {
			out, err := n.exec(client, mode, httpURL, "1s")
			if err != nil || !strings.HasPrefix(out, want) {
				return fmt.Errorf("want %q…, got %v: %q", want, err, out)
			}
			return nil
		})
	}
	outer := t
	aps := dynamic.NewForConfigOrDie(env.Config).Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}).Namespace(ns)

	t.Run("no policy with HTTP facts: nothing captured", func(t *testing.T) {
		captures(nil)
		get(t, "client→server:8080 direct", "get", "200 hello from server to "+client.ip+":")
		if ev := proxy.events("accepted"); len(ev) != 0 {
			t.Errorf("the stand-in accepted %v", ev)
		}
	})

	t.Run("an ALLOW with methods: the agent captures the HTTP port and leaves it to the Envoy", func(t *testing.T) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": "get-only", "namespace": ns},
			"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "server"}}, "rules": []any{
				map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}, "ports": []any{"8080"}}}}},
				map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": []any{"9000"}}}}},
			}},
		}}
		if _, err := aps.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		outer.Cleanup(func() { aps.Delete(context.Background(), "get-only", metav1.DeleteOptions{}) })
		captures([]netip.AddrPort{netip.AddrPortFrom(serverIP, 8080)})
		// Through the stand-in, and past the server's authorization gate:
		// its upstream carries the client's address, which the projection
		// of a GET-only rule would refuse.
		get(t, "client→server:8080 GET through the stand-in", "get", "200 hello from server to "+client.ip+":")
		if !proxy.saw(client.ip, serverHTTP) {
			t.Fatalf("the stand-in did not see the client's connection: %v", proxy.events("accepted"))
		}
		get(t, "client→server:8080 POST refused by the stand-in's RBAC", "post", "403 ")
		// 9000 is not HTTP: L4, allowed by the port-only rule, not captured.
		if out, err := n.exec(client, "echo", server.ip+":9000", "2s"); err != nil || out != "hello" {
			t.Errorf("echo on 9000: %v: %q", err, out)
		}
	})

	ras := dynamic.NewForConfigOrDie(env.Config).Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "requestauthentications"}).Namespace(ns)
	t.Run("a RequestAuthentication alone captures the HTTP port too", func(t *testing.T) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
			"metadata": map[string]any{"name": "jwt", "namespace": ns},
			"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "server"}}, "jwtRules": []any{
				map[string]any{"issuer": "https://idp.example", "jwks": `{"keys":[]}`},
			}},
		}}
		if _, err := ras.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		outer.Cleanup(func() { ras.Delete(context.Background(), "jwt", metav1.DeleteOptions{}) })
		// (the AuthorizationPolicy above still captures it: delete that
		// first and the RequestAuthentication keeps the capture)
		withPolicy, err := pol.Policies()
		if err != nil {
			t.Fatal(err)
		}
		if err := aps.Delete(ctx, "get-only", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Wait for the sync that no longer has the policy: its port-9000
		// allow (the server isolated by it) leaves the policy map. Only
		// then does the capture below say what the RequestAuthentication
		// alone decides, not what was left from before.
		eventually(t, 15*time.Second, "the agent synced without the AuthorizationPolicy", func() error {
			got, err := pol.Policies()
			if err != nil {
				return err
			}
			if maps.Equal(got, withPolicy) {
				return fmt.Errorf("policy map unchanged (%d entries)", len(got))
			}
			return nil
		})
		captures([]netip.AddrPort{netip.AddrPortFrom(serverIP, 8080)})
		if err := ras.Delete(ctx, "jwt", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("with neither, the capture goes away", func(t *testing.T) {
		captures(nil)
		accepted := len(proxy.events("accepted"))
		get(t, "client→server:8080 POST direct", "post", "200 ")
		if got := len(proxy.events("accepted")); got != accepted {
			t.Errorf("the stand-in accepted a connection after the capture went: %v", proxy.events("accepted"))
		}
	})
}
