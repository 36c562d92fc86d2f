//go:build linux

package e2e

import (
	"context"
	"fmt"
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

// TestInboundCaptureForMTLS: with --istio-mtls the agent captures the pod
// port a DestinationRule ISTIO_MUTUAL names (read through the API server,
// decided by the controller's rule) — and only captures it: the
// authorization gate keeps its L4 decisions there, so the node Envoy's
// upstream connection, which carries the client's address, is refused by
// an AuthorizationPolicy DENY of that client as the client itself would
// be. The stand-in of TestInboundCapture plays the Envoy (it sees the
// connection, its upstream fails). Deleting the rule takes the capture
// away.
func TestInboundCaptureForMTLS(t *testing.T) {
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
	n.agentArgs = append(n.agentArgs, "--istio-mtls")
	buildBinaries(t, n.bin)
	ns := env.Namespace(t, "e2e-capture-mtls", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	for _, p := range []struct{ name, app string }{{"server", "server"}, {"client", "client"}} {
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(env.Config)
	// The client is denied 8080 at L4 (no HTTP fact: nothing to capture).
	aps := dyn.Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}).Namespace(ns)
	if _, err := aps.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "deny-client", "namespace": ns},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "server"}}, "action": "DENY", "rules": []any{
			map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/" + ns + "/sa/default"}}}},
				"to": []any{map[string]any{"operation": map[string]any{"ports": []any{"8080"}}}}},
		}},
	}}, metav1.CreateOptions{}); err != nil {
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
	refusedFor := func(what string) {
		t.Helper()
		if out, err := n.exec(client, "get", httpURL, "2s"); err == nil && strings.HasPrefix(out, "200 ") {
			t.Fatalf("%s: the denied client got %q", what, out)
		}
	}

	captures(nil)
	refusedFor("no DestinationRule (direct)")

	drs := dyn.Resource(schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}).Namespace(ns)
	if _, err := drs.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "server", "namespace": ns},
		"spec":     map[string]any{"host": "server", "trafficPolicy": map[string]any{"tls": map[string]any{"mode": "ISTIO_MUTUAL"}}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	captures([]netip.AddrPort{netip.AddrPortFrom(serverIP, 8080)})
	// Through the stand-in, whose upstream (the client's address) the gate
	// still refuses: the port is captured, not left to the Envoy.
	eventually(t, 15*time.Second, "the stand-in's upstream for the client refused", func() error {
		out, err := n.exec(client, "get", httpURL, "5s")
		if err == nil && strings.HasPrefix(out, "200 ") {
			return fmt.Errorf("the denied client got %q", out)
		}
		if !proxy.saw(client.ip, server.ip+":8080") {
			return fmt.Errorf("the stand-in did not see the client's connection: %v", proxy.events("accepted"))
		}
		for _, e := range proxy.events("upstream-error") {
			if len(e) > 0 && strings.HasPrefix(e[0], client.ip+":") {
				return nil
			}
		}
		return fmt.Errorf("no refused upstream for the client: %v", proxy.events("upstream-error"))
	})

	if err := drs.Delete(ctx, "server", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	captures(nil)
}
