package kubetest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { Main(m) }

// TestEnvironment checks what every other suite relies on: a reachable API
// server that reports its version, Istio's CRDs serving VirtualServices, and
// per-test namespaces.
func TestEnvironment(t *testing.T) {
	env := Get(t)
	v, err := env.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != "1" || v.GitVersion == "" || v.GitVersion == "v0.0.0-master+$Format:%H$" {
		t.Errorf("server version %+v is not stamped", v)
	}
	ns := env.Namespace(t, "kubetest", nil)
	ctx := context.Background()
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns},
		Spec: networking.VirtualService{Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{{
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}}},
		}}},
	}
	if _, err := env.Istio.NetworkingV1().VirtualServices(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VirtualService: %v", err)
	}
	got, err := env.Istio.NetworkingV1().VirtualServices(ns).Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Http[0].Route[0].Destination.Subset != "v1" {
		t.Errorf("round trip lost the spec: %v", got.Spec.String())
	}
}

// TestDetachedStop is what make kube-up / kube-down do: a detached
// environment records the PIDs of its processes and StopDir ends exactly
// those. (The PID file once held -1 for every process: kube-down stopped
// nothing.)
func TestDetachedStop(t *testing.T) {
	if _, err := BinDir(); err != nil {
		if required() {
			t.Fatal(err)
		}
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := Start(ctx, Options{Dir: dir, Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { StopDir(dir) })
	data, err := os.ReadFile(filepath.Join(dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		pid, err := strconv.Atoi(f[len(f)-1])
		if err != nil || pid <= 0 {
			t.Fatalf("pids file line %q: not a process ID", line)
		}
		if !runs(pid, f[0]) {
			t.Fatalf("pids file line %q: process %d does not run %s", line, pid, f[0])
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("pids file records %d processes, want etcd and kube-apiserver:\n%s", len(pids), data)
	}
	if _, err := env.Client.Discovery().ServerVersion(); err != nil {
		t.Fatal(err)
	}
	if err := StopDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		// Detached processes are not this process's children: once they
		// end, /proc no longer has them (init reaps them).
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && processExists(pid) {
			time.Sleep(50 * time.Millisecond)
		}
		if processExists(pid) {
			t.Errorf("process %d still runs after StopDir", pid)
		}
	}
}

// processExists says whether pid is a live process (a zombie waiting for
// whoever inherited it to reap it has ended).
func processExists(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}
