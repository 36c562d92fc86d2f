package identity

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

// TestSweep: an identity is collected only after it has been unused for
// the whole grace period; being used again resets the clock.
func TestSweep(t *testing.T) {
	used := KeyOf("shop", "", map[string]string{"app": "web"})
	idle := KeyOf("shop", "", map[string]string{"app": "old"})
	back := KeyOf("shop", "", map[string]string{"app": "back"})
	ids := []Stored{{Identity: Identity{ID: 300, Key: used}}, {Identity: Identity{ID: 500, Key: idle}}, {Identity: Identity{ID: 400, Key: back}}}
	inUse := map[string]bool{used.String(): true}
	c := &Collector{Grace: 10 * time.Minute}
	t0 := time.Unix(1000, 0)
	sweep := func(at time.Duration) []bpf.Identity {
		var out []bpf.Identity
		for _, s := range c.Sweep(t0.Add(at), ids, func(k Key) bool { return inUse[k.String()] }) {
			out = append(out, s.ID)
		}
		return out
	}
	if got := sweep(0); len(got) != 0 {
		t.Errorf("first sweep collected %v: nothing has been unused for the grace period", got)
	}
	if got := sweep(9 * time.Minute); len(got) != 0 {
		t.Errorf("collected %v before the grace period ended", got)
	}
	inUse[back.String()] = true // a pod with that key again
	if got := sweep(9*time.Minute + 30*time.Second); len(got) != 0 {
		t.Errorf("collected %v", got)
	}
	delete(inUse, back.String())
	if got := sweep(10 * time.Minute); len(got) != 1 || got[0] != 500 {
		t.Errorf("at the grace period: collected %v, want [500] (400 was used 30s ago)", got)
	}
	if got := sweep(20*time.Minute + 30*time.Second); len(got) != 2 || got[0] != 400 || got[1] != 500 {
		t.Errorf("collected %v, want [400 500], lowest first", got)
	}
	// An object that went away is forgotten; if it comes back, its clock
	// starts again.
	ids = ids[:1]
	sweep(21 * time.Minute)
	ids = append(ids, Stored{Identity: Identity{ID: 500, Key: idle}})
	if got := sweep(22 * time.Minute); len(got) != 0 {
		t.Errorf("a re-created identity was collected at once: %v", got)
	}
}

// TestCollectAgainstAPI: Delete removes only the object Sweep saw (a
// re-created one with the same number stays), and Ensure re-creates an
// identity, refusing a number another key holds.
func TestCollectAgainstAPI(t *testing.T) {
	dc := kubeClient(t)
	ctx := context.Background()
	a := &Allocator{Client: dc}
	ns := "gc-" + metav1.Now().Format("150405.000")
	k := KeyOf(ns, "", map[string]string{"app": "gone"})
	id, err := a.Allocate(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	name := strconv.FormatUint(uint64(id), 10)
	res := dc.Resource(v1alpha1.IdentityResource)
	obj, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := Stored{Identity: Identity{ID: id, Key: k}, UID: obj.GetUID()}

	// Deleted and re-created by an agent after the sweep: stays.
	if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Ensure(ctx, id, k); err != nil {
		t.Fatalf("Ensure after deletion: %v", err)
	}
	c := &Collector{Allocator: a, Grace: time.Minute}
	deleted, err := c.Delete(ctx, []Stored{seen})
	if err != nil || len(deleted) != 0 {
		t.Fatalf("Delete of a stale sweep: deleted %v, %v; want nothing", deleted, err)
	}
	if _, err := res.Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the re-created identity was deleted: %v", err)
	}

	// The object Sweep saw: deleted.
	obj, _ = res.Get(ctx, name, metav1.GetOptions{})
	deleted, err = c.Delete(ctx, []Stored{{Identity: seen.Identity, UID: obj.GetUID()}})
	if err != nil || len(deleted) != 1 || deleted[0] != id {
		t.Fatalf("Delete: %v, %v; want [%d]", deleted, err, id)
	}
	if _, err := res.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after Delete: %v", err)
	}

	// Ensure refuses a number another key took meanwhile.
	other := KeyOf(ns, "", map[string]string{"app": "other"})
	if _, err := res.Create(ctx, Object(id, other), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Ensure(ctx, id, k); !errors.Is(err, ErrTaken) {
		t.Fatalf("Ensure of a number another key holds: %v, want ErrTaken", err)
	}
	if err := a.Ensure(ctx, id, other); err != nil {
		t.Fatalf("Ensure by the holder: %v", err)
	}
	_ = res.Delete(ctx, name, metav1.DeleteOptions{})
}
