package migration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestProbeScript runs the probe Pod's script with this machine's sh and
// curl: an app's 500 (and an app's own 503) is connectivity; a refused
// connection, a server that never answers and the node Envoy's answer that
// it reached no upstream are failures, named in the termination message.
func TestProbeScript(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken app", http.StatusInternalServerError)
	}))
	defer app.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	// What Envoy answers when it cannot reach the application.
	envoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "envoy")
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
	}))
	defer envoy.Close()
	envoyAddr := strings.TrimPrefix(envoy.URL, "http://")
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	busyAddr := strings.TrimPrefix(busy.URL, "http://")

	out := filepath.Join(t.TempDir(), "termination-log")
	cmd := exec.Command("sh", "-c", probeScript, "nodemesh-probe", appAddr, refused, silent.Addr().String(), envoyAddr, busyAddr)
	cmd.Env = append(os.Environ(), "OUT="+out, "TIMEOUT=1")
	stdout, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("script: %v, want exit 1\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), appAddr+" 500 0") {
		t.Errorf("stdout lacks the app's 500:\n%s", stdout)
	}
	msg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := parseProbeOutput(string(msg))
	if !got.done || got.answered != 2 || got.targets != 5 || len(got.failed) != 3 {
		t.Fatalf("termination message %q parsed as %+v", msg, got)
	}
	if r := got.failed[refused]; r.exit != 7 || r.code != "000" {
		t.Errorf("refused: %+v, want curl exit 7", r)
	}
	if r := got.failed[silent.Addr().String()]; r.exit != 28 {
		t.Errorf("silent server: %+v, want curl exit 28 (timeout)", r)
	}
	if r := got.failed[envoyAddr]; r.exit != envoyNoHealthyUpstream || !strings.Contains(r.failure(), "no healthy upstream") {
		t.Errorf("Envoy's local reply: %+v (%s), want a failure saying no healthy upstream", r, r.failure())
	}
	if !strings.Contains(string(stdout), busyAddr+" 503 0") {
		t.Errorf("stdout lacks the application's own 503:\n%s", stdout)
	}

	// All answer: exit 0, only the done line.
	cmd = exec.Command("sh", "-c", probeScript, "nodemesh-probe", appAddr)
	cmd.Env = append(os.Environ(), "OUT="+out, "TIMEOUT=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v\n%s", err, b)
	}
	if msg, _ := os.ReadFile(out); strings.TrimSpace(string(msg)) != "done 1 1\nproxy none 0" {
		t.Errorf("termination message %q, want %q", msg, "done 1 1\nproxy none 0")
	}
}

// TestProbeProxyRecord: the probe reads the node proxy's own record after
// its requests — the stand-in's connections from the probe pod's address,
// or Envoy's outbound requests counted after minus before — and report
// accepts only a record that counts every answered target.
func TestProbeProxyRecord(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	var envoyReads int
	for name, tc := range map[string]struct {
		record    func() string
		wantKind  string
		wantCount int
	}{
		"stand-in carried the probe pod": {record: func() string {
			return "nodemesh_standin_proxy_connections_total{source=\"10.244.0.9\",destination=\"10.96.0.5:80\"} 2\n" +
				"nodemesh_standin_proxy_connections_total{source=\"10.244.0.90\",destination=\"10.96.0.5:80\"} 7\n"
		}, wantKind: "stand-in", wantCount: 2},
		"stand-in never saw the probe pod": {record: func() string {
			return "nodemesh_standin_proxy_connections_total{source=\"10.244.0.90\",destination=\"10.96.0.5:80\"} 7\n"
		}, wantKind: "envoy", wantCount: 0},
		"envoy counted the requests": {record: func() string {
			envoyReads++
			n := 10 + 3*(envoyReads-1) // before: 10, after: 13
			return fmt.Sprintf("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|9080||details.shop.svc.cluster.local\"} %d\n"+
				"envoy_cluster_upstream_rq_total{envoy_cluster_name=\"inbound|9080||\"} 50\n", n)
		}, wantKind: "envoy", wantCount: 3},
	} {
		t.Run(name, func(t *testing.T) {
			envoyReads = 0
			proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/stats/prometheus" {
					http.NotFound(w, r)
					return
				}
				io.WriteString(w, tc.record())
			}))
			defer proxy.Close()
			out := filepath.Join(t.TempDir(), "termination-log")
			cmd := exec.Command("sh", "-c", probeScript, "nodemesh-probe", appAddr)
			cmd.Env = append(os.Environ(), "OUT="+out, "TIMEOUT=2", "POD_IP=10.244.0.9", "PROXY="+strings.TrimPrefix(proxy.URL, "http://"))
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("script: %v\n%s", err, b)
			}
			msg, _ := os.ReadFile(out)
			got := parseProbeOutput(string(msg))
			if got.proxy != tc.wantKind || got.proxyCount != tc.wantCount {
				t.Errorf("termination message %q: proxy %s %d, want %s %d", msg, got.proxy, got.proxyCount, tc.wantKind, tc.wantCount)
			}
		})
	}
	// The record unreachable: said so.
	out := filepath.Join(t.TempDir(), "termination-log")
	cmd := exec.Command("sh", "-c", probeScript, "nodemesh-probe", appAddr)
	cmd.Env = append(os.Environ(), "OUT="+out, "TIMEOUT=1", "POD_IP=10.244.0.9", "PROXY=127.0.0.1:1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v\n%s", err, b)
	}
	if msg, _ := os.ReadFile(out); !strings.Contains(string(msg), "proxy unreachable 0") {
		t.Errorf("termination message %q, want the record unreachable", msg)
	}
}

// TestProbeReportNeedsTheProxy: answers without the node proxy's record of
// them fail the verification, naming why.
func TestProbeReportNeedsTheProxy(t *testing.T) {
	p := &PodProbe{}
	targets := []ProbeTarget{{Service: "details", Port: 9080}, {Service: "reviews", Port: 9080}}
	pod := func(msg string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe"}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: probeContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: msg}}}}}}
	}
	for msg, want := range map[string]string{
		"done 2 2\nproxy stand-in 2":    "",
		"done 2 2\nproxy envoy 5":       "",
		"done 2 2\nproxy stand-in 1":    "recorded 1 of them",
		"done 2 2\nproxy envoy 0":       "did not go through it",
		"done 2 2\nproxy unreachable 0": "could not be read",
		"done 2 2":                      "could not be read",
	} {
		_, err := p.report("shop", targets, pod(msg))
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", msg, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v, want an error saying %q", msg, err, want)
		}
	}
}

// TestProbeTargets: HTTP by Istio's rules (appProtocol first, then the port
// name), HTTP/2 flagged, TCP and unnamed ports and ExternalName left out.
func TestProbeTargets(t *testing.T) {
	h2c, tcp := "kubernetes.io/h2c", "tcp"
	svc := func(name string, typ corev1.ServiceType, ports ...corev1.ServicePort) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Type: typ, Ports: ports}}
	}
	got := ProbeTargets([]corev1.Service{
		svc("web", "", corev1.ServicePort{Name: "http-web", Port: 80}, corev1.ServicePort{Name: "metrics", Port: 9090},
			corev1.ServicePort{Name: "x", Port: 81, AppProtocol: &h2c}),
		svc("db", "", corev1.ServicePort{Name: "mongo", Port: 27017}),
		svc("api", "", corev1.ServicePort{Name: "grpc", Port: 7070}, corev1.ServicePort{Name: "http", Port: 8080, AppProtocol: &tcp}),
		svc("ext", corev1.ServiceTypeExternalName, corev1.ServicePort{Name: "http", Port: 80}),
	})
	want := []ProbeTarget{{"api", 7070, true}, {"web", 80, false}, {"web", 81, true}}
	if len(got) != len(want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
