//go:build linux

package agent

import (
	"testing"
	"time"
)

// TestTCXUpgradesNext: pods move to tcx when CNI calls have been quiet, or
// once overdue even while they are not, oldest first.
func TestTCXUpgradesNext(t *testing.T) {
	const quiet, maxDelay = 200 * time.Millisecond, 2 * time.Second
	u := newTCXUpgrades()
	now := time.Unix(1000, 0)
	if k, w := u.next(now, quiet, maxDelay); k != "" || w != 0 {
		t.Fatalf("nothing pending: got %q, %v", k, w)
	}
	u.pending["a"] = now.Add(-100 * time.Millisecond)
	u.pending["b"] = now.Add(-50 * time.Millisecond)

	// A call ended 150ms ago: 50ms more of quiet.
	u.lastCNI.Store(now.Add(-150 * time.Millisecond).UnixNano())
	if k, w := u.next(now, quiet, maxDelay); k != "" || w != 50*time.Millisecond {
		t.Errorf("not quiet yet: got %q, %v; want wait 50ms", k, w)
	}
	// A call in flight: a full quiet period, at most until overdue.
	done := u.cniCall()
	if k, w := u.next(now, quiet, maxDelay); k != "" || w != quiet {
		t.Errorf("call in flight: got %q, %v; want wait %v", k, w, quiet)
	}
	if k, w := u.next(now.Add(1850*time.Millisecond), quiet, maxDelay); k != "" || w != 50*time.Millisecond {
		t.Errorf("call in flight, 50ms before overdue: got %q, %v", k, w)
	}
	if k, _ := u.next(now.Add(1900*time.Millisecond), quiet, maxDelay); k != "a" {
		t.Errorf("overdue while busy: got %q, want the oldest, a", k)
	}
	done()
	if k, w := u.next(time.Now().Add(quiet), quiet, maxDelay); k != "a" || w != 0 {
		t.Errorf("quiet: got %q, %v; want a now", k, w)
	}
	u.drop("a")
	if k, _ := u.next(time.Now().Add(quiet), quiet, maxDelay); k != "b" {
		t.Errorf("after a: got %q, want b", k)
	}
	if u.len() != 1 {
		t.Errorf("pending: %d, want 1", u.len())
	}
}
