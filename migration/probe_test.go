package migration

import (
	"errors"
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
	if msg, _ := os.ReadFile(out); strings.TrimSpace(string(msg)) != "done 1 1" {
		t.Errorf("termination message %q, want %q", msg, "done 1 1")
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
