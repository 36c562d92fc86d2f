package kubetest

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrNoIstiod is returned when pilot-discovery is not built.
var ErrNoIstiod = errors.New("istiod (pilot-discovery) is not built (run: make istiod)")

// IstiodBinary is where hack/istiod-build.sh puts pilot-discovery:
// $NODEMESH_ISTIOD_BIN, or $NODEMESH_CACHE/istio/<version>/pilot-discovery
// with the version the script pins (its ISTIO_VERSION line).
func IstiodBinary() (string, error) {
	if p := os.Getenv("NODEMESH_ISTIOD_BIN"); p != "" {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script, err := os.ReadFile(filepath.Join(root, "hack/istiod-build.sh"))
	if err != nil {
		return "", fmt.Errorf("read istiod build script: %w", err)
	}
	version := ""
	for _, line := range strings.Split(string(script), "\n") {
		if v, ok := strings.CutPrefix(line, "ISTIO_VERSION="); ok {
			version = strings.TrimSpace(v)
		}
	}
	if version == "" {
		return "", errors.New("hack/istiod-build.sh pins no ISTIO_VERSION")
	}
	kubeBin, err := BinDir() // $NODEMESH_CACHE/kube/v<k8s>: the cache is its grandparent
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(filepath.Dir(kubeBin)), "istio", version, "pilot-discovery"), nil
}

// IstiodOptions configure StartIstiod.
type IstiodOptions struct {
	// TrustedNodeAccounts are CA_TRUSTED_NODE_ACCOUNTS: namespace/name of
	// the ServiceAccounts allowed to impersonate identities of their node.
	TrustedNodeAccounts []string
}

// Istiod is a running istiod whose CA tests call.
type Istiod struct {
	// CAAddress is the CA's gRPC address (istiod's 15012), ServerName the
	// name its certificate carries (istiod.istio-system.svc).
	CAAddress, ServerName string
	// XDSAddress is istiod's plaintext xDS address (its 15010), which
	// serves proxies without authentication: parity tests ask it what it
	// emits for a sidecar.
	XDSAddress string
	// Roots is the mesh's root, read from the istio-ca-root-cert ConfigMap
	// istiod publishes; RootPEM the same, PEM.
	Roots   *x509.CertPool
	RootPEM []byte
}

// IstiodNamespace is where StartIstiod runs istiod (its CA Secret,
// istio-ca-secret, and the leases live there).
const IstiodNamespace = "istio-system"

// StartIstiod runs istiod (pilot-discovery) on 127.0.0.1 against e, with
// its self-signed CA, until the test ends. The minimal working set: the
// API's kubeconfig, POD_NAMESPACE, a mesh config (trust domain
// cluster.local), loopback ports for its listeners, Istio's CRDs (Get
// installs them) and CA_TRUSTED_NODE_ACCOUNTS. It skips without the binary
// unless NODEMESH_ISTIOD=required.
func (e *Env) StartIstiod(t testing.TB, o IstiodOptions) *Istiod {
	t.Helper()
	bin, err := IstiodBinary()
	if err == nil {
		if _, serr := os.Stat(bin); serr != nil {
			err = fmt.Errorf("%w: %v", ErrNoIstiod, serr)
		}
	}
	if err != nil {
		if os.Getenv("NODEMESH_ISTIOD") != "required" {
			t.Skipf("skipping: %v", err)
		}
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: IstiodNamespace}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh")
	if err := os.WriteFile(mesh, []byte("trustDomain: cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	logPath := filepath.Join(dir, "istiod.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "discovery", "--kubeconfig", e.Kubeconfig, "--meshConfig", mesh,
		"--networksConfig", filepath.Join(dir, "absent"),
		"--grpcAddr", addr(0), "--secureGRPCAddr", addr(1), "--httpAddr", addr(2), "--httpsAddr", addr(3),
		"--monitoringAddr", addr(4), "--ctrlz_port", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+IstiodNamespace,
		"CA_TRUSTED_NODE_ACCOUNTS="+strings.Join(o.TrustedNodeAccounts, ","))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start istiod: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			if raw, err := os.ReadFile(logPath); err == nil {
				lines := bytes.Split(raw, []byte("\n"))
				t.Logf("istiod log (last lines):\n%s", bytes.Join(lines[max(0, len(lines)-40):], []byte("\n")))
			}
		}
	})
	if err := waitHTTP(ctx, http.DefaultClient, "http://"+addr(2)+"/ready", 90*time.Second); err != nil {
		t.Fatalf("istiod not ready (log %s): %v", logPath, err)
	}
	var root []byte
	for root == nil {
		cm, err := e.Client.CoreV1().ConfigMaps(IstiodNamespace).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err == nil && cm.Data["root-cert.pem"] != "" {
			root = []byte(cm.Data["root-cert.pem"])
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("istiod published no istio-ca-root-cert: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatal("istio-ca-root-cert holds no certificate")
	}
	return &Istiod{CAAddress: addr(1), XDSAddress: addr(0), ServerName: "istiod." + IstiodNamespace + ".svc", Roots: pool, RootPEM: root}
}
