package identity

import (
	"context"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func TestKeyOf(t *testing.T) {
	tests := map[string]struct {
		a, b Key
		same bool
	}{
		"rollout labels ignored": {
			a:    KeyOf("ns", "sa", map[string]string{"app": "web", "pod-template-hash": "abc"}),
			b:    KeyOf("ns", "sa", map[string]string{"app": "web", "pod-template-hash": "def"}),
			same: true,
		},
		"statefulset pod name ignored": {
			a:    KeyOf("ns", "", map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}),
			b:    KeyOf("ns", "default", map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-1"}),
			same: true,
		},
		"label value matters":     {a: KeyOf("ns", "sa", map[string]string{"app": "web"}), b: KeyOf("ns", "sa", map[string]string{"app": "api"})},
		"namespace matters":       {a: KeyOf("a", "sa", nil), b: KeyOf("b", "sa", nil)},
		"service account matters": {a: KeyOf("a", "x", nil), b: KeyOf("a", "y", nil)},
		// A separator in a value must not make two label sets look alike.
		"no ambiguity": {a: KeyOf("a", "s", map[string]string{"x": "1", "y": "2"}), b: KeyOf("a", "s", map[string]string{"x": "1\x00y=2"})},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.a.Hash() == tc.b.Hash(); got != tc.same {
				t.Errorf("same hash = %v, want %v (%q vs %q)", got, tc.same, tc.a, tc.b)
			}
			if got := tc.a.Equal(tc.b); got != tc.same {
				t.Errorf("Equal = %v, want %v", got, tc.same)
			}
		})
	}
}

func TestHashStable(t *testing.T) {
	// The hash is part of the cluster's state: it must never change between
	// versions for the same key.
	k := KeyOf("default", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v2"})
	if got, want := k.Hash(), "0773b06a"; got[:8] != want || len(got) != 63 {
		t.Errorf("hash of %q = %s, want %s… (63 characters)", k, got, want)
	}
	for attempt := range 100 {
		c := Candidate(k.Hash(), attempt)
		if c < First || c >= Limit {
			t.Fatalf("candidate %d out of range", c)
		}
		if c != Candidate(k.Hash(), attempt) {
			t.Fatal("candidate not deterministic")
		}
	}
}

func kubeClient(t *testing.T) dynamic.Interface {
	t.Helper()
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return dc
}

// TestAllocateConcurrent: agents on different nodes allocating the same key
// at the same time get the same number; different keys get different ones.
func TestAllocateConcurrent(t *testing.T) {
	dc := kubeClient(t)
	ns := "ident-" + t.Name()[len(t.Name())-4:] + metav1.Now().Format("150405")
	keys := []Key{
		KeyOf(ns, "a", map[string]string{"app": "one"}),
		KeyOf(ns, "a", map[string]string{"app": "two"}),
		KeyOf(ns, "b", map[string]string{"app": "one"}),
	}
	const agents = 4
	got := make([][]bpf.Identity, agents)
	var wg sync.WaitGroup
	for n := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &Allocator{Client: dc}
			for _, k := range keys {
				id, err := a.Allocate(context.Background(), k)
				if err != nil {
					t.Error(err)
					return
				}
				got[n] = append(got[n], id)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[bpf.Identity]bool{}
	for i := range keys {
		for n := 1; n < agents; n++ {
			if got[n][i] != got[0][i] {
				t.Errorf("key %d: agent %d got %d, agent 0 got %d", i, n, got[n][i], got[0][i])
			}
		}
		if seen[got[0][i]] {
			t.Errorf("number %d given to two keys", got[0][i])
		}
		seen[got[0][i]] = true
	}
}

// TestAllocateCollision: when a key's first candidate is taken by another
// key, it gets the next candidate, and finds it again later.
func TestAllocateCollision(t *testing.T) {
	dc := kubeClient(t)
	k := KeyOf("collide-"+metav1.Now().Format("150405.000"), "sa", map[string]string{"app": "x"})
	squatter := KeyOf("squatter", "sa", map[string]string{"n": k.Hash()[:10]})
	if _, err := dc.Resource(v1alpha1.IdentityResource).Create(context.Background(), Object(Candidate(k.Hash(), 0), squatter), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := &Allocator{Client: dc}
	id, err := a.Allocate(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if want := Candidate(k.Hash(), 1); id != want {
		t.Errorf("got %d, want the second candidate %d", id, want)
	}
	again, err := a.Allocate(context.Background(), k)
	if err != nil || again != id {
		t.Errorf("second allocation %d (%v), want %d", again, err, id)
	}
}
