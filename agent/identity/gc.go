package identity

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

// ErrTaken is returned by Ensure when the number is held by another key.
var ErrTaken = errors.New("identity number taken by another key")

// Ensure makes sure the Identity object of number id exists for key k —
// what an agent does for the identities its pods use, since the collector
// may have deleted one that became unused and then used again. It returns
// ErrTaken when the number now belongs to another key (the pod must then be
// allocated again).
func (a *Allocator) Ensure(ctx context.Context, id bpf.Identity, k Key) error {
	res := a.Client.Resource(v1alpha1.IdentityResource)
	_, err := res.Create(ctx, Object(id, k), metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing, err := res.Get(ctx, strconv.FormatUint(uint64(id), 10), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get identity %d: %w", id, err)
	}
	if other, ok := FromObject(existing); ok && other.Key.Equal(k) {
		return nil
	}
	return fmt.Errorf("%w: %d", ErrTaken, id)
}

// Collector deletes Identity objects no pod of the cluster has used for a
// grace period. It remembers since when each identity has been unused; a
// new collector (another agent won the election) starts counting again,
// which only delays a deletion.
type Collector struct {
	Allocator *Allocator
	// Grace is how long an identity must stay unused before it is deleted:
	// longer than an agent's resync, so that an agent that still uses an
	// identity (a pod the informers have not shown yet) re-creates it
	// before another key could take its number.
	Grace time.Duration

	unusedSince map[bpf.Identity]time.Time
}

// Stored is an Identity object as the collector sees it: its number, key
// and UID.
type Stored struct {
	Identity
	UID types.UID
}

// Sweep records which identities are unused at now and returns those that
// have been unused for the grace period, lowest number first. inUse tells
// whether a key is used by any pod of the cluster.
func (c *Collector) Sweep(now time.Time, ids []Stored, inUse func(Key) bool) []Stored {
	if c.unusedSince == nil {
		c.unusedSince = map[bpf.Identity]time.Time{}
	}
	seen := map[bpf.Identity]bool{}
	var out []Stored
	for _, id := range ids {
		seen[id.ID] = true
		if inUse(id.Key) {
			delete(c.unusedSince, id.ID)
			continue
		}
		since, ok := c.unusedSince[id.ID]
		if !ok {
			c.unusedSince[id.ID] = now
			continue
		}
		if now.Sub(since) >= c.Grace {
			out = append(out, id)
		}
	}
	for id := range c.unusedSince {
		if !seen[id] {
			delete(c.unusedSince, id) // gone
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Delete deletes what Sweep returned, each only if it is still the object
// Sweep saw (a UID precondition: an identity deleted and re-created by an
// agent meanwhile stays). It returns the numbers it deleted.
func (c *Collector) Delete(ctx context.Context, ids []Stored) ([]bpf.Identity, error) {
	res := c.Allocator.Client.Resource(v1alpha1.IdentityResource)
	var deleted []bpf.Identity
	var errs []error
	for _, id := range ids {
		uid := id.UID
		err := res.Delete(ctx, strconv.FormatUint(uint64(id.ID), 10), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil:
			deleted = append(deleted, id.ID)
			delete(c.unusedSince, id.ID)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			delete(c.unusedSince, id.ID)
		default:
			errs = append(errs, fmt.Errorf("delete identity %d: %w", id.ID, err))
		}
	}
	return deleted, errors.Join(errs...)
}
