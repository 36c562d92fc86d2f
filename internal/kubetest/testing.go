package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

var (
	shared     *Env
	sharedErr  error
	sharedOnce sync.Once
	// private is the environment this test binary started, if any.
	private *Env
	// dedicated are the environments Dedicated started, by key.
	dedicatedMu sync.Mutex
	dedicated   = map[string]*Env{}
)

// Main runs the tests of a package that uses Get and stops the environment
// the package started, if it started one. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	envs := []*Env{private}
	for _, e := range dedicated {
		envs = append(envs, e)
	}
	for _, e := range envs {
		if e == nil {
			continue
		}
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest: stop:", err)
		}
		os.RemoveAll(e.dir)
	}
	os.Exit(code)
}

// Dedicated returns an API server of this test binary's own for key (with
// Istio's CRDs), started on first use and stopped by Main: for benchmarks,
// whose figures must not depend on what other tests left in a shared one.
// It skips like Get when the binaries are missing.
func Dedicated(t testing.TB, key string) *Env {
	t.Helper()
	return dedicatedEnv(t, key, false)
}

// DedicatedKCM is Dedicated with kube-controller-manager, for tests that
// need Deployments to get ReplicaSets and Pods (no kubelet runs: the Pods
// never start unless the test sets their status). It skips when the
// kube-controller-manager binary is missing (WITH_KCM=1 make kube-binaries).
func DedicatedKCM(t testing.TB, key string) *Env {
	t.Helper()
	return dedicatedEnv(t, key, true)
}

func dedicatedEnv(t testing.TB, key string, withKCM bool) *Env {
	t.Helper()
	dedicatedMu.Lock()
	defer dedicatedMu.Unlock()
	if e := dedicated[key]; e != nil {
		return e
	}
	e := startEnv(t, withKCM)
	dedicated[key] = e
	return e
}

// Private returns an API server (with Istio's CRDs) of the calling test's
// own, stopped when the test ends: for tests that compare everything in a
// cluster with something else, so that nothing but what they create may be
// in it. It skips like Get when the binaries are missing.
func Private(t testing.TB) *Env {
	t.Helper()
	e := startEnv(t, false)
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("kubetest: stop: %v", err)
		}
		os.RemoveAll(e.dir)
	})
	return e
}

// startEnv starts an API server with Istio's CRDs; the caller stops it.
func startEnv(t testing.TB, withKCM bool) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	removeStale()
	dir, err := os.MkdirTemp("", "nodemesh-kube-")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(ctx, Options{Dir: dir, WithKCM: withKCM})
	if err == nil {
		err = e.InstallIstioCRDs(ctx)
	}
	if err != nil {
		if e != nil {
			e.Stop() // started, but the CRDs could not be installed
		}
		os.RemoveAll(dir)
		if errors.Is(err, ErrNoBinaries) && !required() {
			t.Skipf("skipping: no Kubernetes API server: %v", err)
		}
		t.Fatalf("Kubernetes API server: %v", err)
	}
	return e
}

// required reports whether tests must fail rather than skip without an API.
func required() bool { return os.Getenv("NODEMESH_KUBE") == "required" }

// Get returns the shared environment of this test binary with Istio's CRDs
// installed, starting one if needed (see the package documentation). It
// skips the test when there is no API server and no binaries to start one.
func Get(t testing.TB) *Env {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = acquire() })
	if sharedErr != nil {
		if errors.Is(sharedErr, ErrNoBinaries) && !required() {
			t.Skipf("skipping: no Kubernetes API server: %v", sharedErr)
		}
		t.Fatalf("Kubernetes API server: %v", sharedErr)
	}
	return shared
}

func acquire() (*Env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var e *Env
	var err error
	switch kc := os.Getenv("NODEMESH_KUBECONFIG"); {
	case kc != "":
		e, err = Connect(ctx, kc)
	default:
		if root, rerr := repoRoot(); rerr == nil {
			if kc := filepath.Join(root, "_output/kube/kubeconfig"); fileExists(kc) {
				if e, err = Connect(ctx, kc); err != nil {
					e, err = nil, nil // stale: start our own
				}
			}
		}
		if e == nil {
			removeStale()
			dir, derr := os.MkdirTemp("", "nodemesh-kube-")
			if derr != nil {
				return nil, derr
			}
			e, err = Start(ctx, Options{Dir: dir, WithKCM: os.Getenv("NODEMESH_KUBE_KCM") == "1"})
			if err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
			private = e
		}
	}
	if err != nil {
		return nil, err
	}
	if err := e.InstallIstioCRDs(ctx); err != nil {
		return nil, fmt.Errorf("install Istio CRDs: %w", err)
	}
	return e, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Namespace creates a namespace with a unique name starting with prefix and
// deletes it when the test ends.
func (e *Env) Namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	name := strings.ToLower(prefix) + "-" + rand.String(5)
	ctx := context.Background()
	_, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Without kube-controller-manager the namespace stays Terminating; its
		// name is unique, so that does not disturb other tests.
		e.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// removeStale deletes the directories of private environments whose test
// binary was killed (its processes died with it; see Start).
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "nodemesh-kube-*"))
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "pids"))
		if err != nil {
			continue // starting right now, or not ours
		}
		alive := false
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var name string
			var pid int
			if _, err := fmt.Sscanf(line, "%s %d", &name, &pid); err == nil {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
					alive = true
				}
			}
		}
		if !alive {
			os.RemoveAll(d)
		}
	}
}
