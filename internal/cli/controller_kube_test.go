package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/internal/kubetest"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestControllerCommand runs 'nodemesh-controller run' against the API
// server and reads a node's configuration with 'nodemesh proxy-config'
// through the API server's service proxy, as a user would; then stops the
// controller as SIGTERM does.
func TestControllerCommand(t *testing.T) {
	env := kubetest.Get(t)
	host := xdstest.HostAddress(t)(0)
	ns := env.Namespace(t, "nodemesh-system", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := "node-" + ns
	if _, err := env.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })

	monPort := freePort(t, host)
	o := &controllerOptions{
		kube: KubeFlags{Kubeconfig: env.Kubeconfig}, xdsAddress: "127.0.0.1:0", monitoringAddress: net.JoinHostPort(host, strconv.Itoa(monPort)),
		debounce: 20 * time.Millisecond, maxDebounce: time.Second, clusterDomain: "cluster.local", rootNamespace: "istio-system",
		logLevel: "warn", logFormat: "text", shutdownGrace: 2 * time.Second,
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- runController(runCtx, o, IO{Out: &logs, ErrOut: &logs}) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("controller did not stop within 10s of its context ending")
		}
	}()
	base := fmt.Sprintf("http://%s", o.monitoringAddress)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready in 30s (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The controller's Service, backed by this process standing in for the
	// controller's pod (the API server proxies only to pod addresses).
	port := int32(monPort)
	if _, err := env.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller-0", Namespace: ns, Labels: map[string]string{"app": "nodemesh-controller"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "controller", Image: "nodemesh/controller"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host, PodIPs: []corev1.PodIP{{IP: host}}},
	}); err != nil {
		t.Fatal(err)
	}
	podRef := &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "nodemesh-controller-0"}
	if _, err := env.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http-monitoring", Port: 15014}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Endpoints(ns).Create(ctx, &corev1.Endpoints{ //nolint:staticcheck // the API server's service proxy resolves Endpoints
		ObjectMeta: metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: host, TargetRef: podRef}}, Ports: []corev1.EndpointPort{{Name: "http-monitoring", Port: port}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "http-monitoring"
	if _, err := env.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "nodemesh-controller", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "nodemesh-controller"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, TargetRef: podRef}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}); err != nil {
		t.Fatal(err)
	}
	var code int
	var out, errOut string
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, out, errOut = run(t, "", "proxy-config", "listeners", "--node", node, "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns)
		if code == ExitOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != ExitOK || !strings.Contains(out, "virtualOutbound") {
		t.Fatalf("proxy-config through the API server: exit %d\n%s\n%s\ncontroller logs:\n%s", code, out, errOut, logs.String())
	}
	code, _, errOut = run(t, "", "proxy-config", "--node", "no-such-node", "--kubeconfig", env.Kubeconfig, "--controller-namespace", ns)
	if code != ExitFindings || !strings.Contains(errOut, "no-such-node") {
		t.Errorf("unknown node through the API server: exit %d, %s", code, errOut)
	}
}
