//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodemesh/nodemesh/bpf"
)

// Attaching the policy programs: cls_bpf on ADD, tcx soon after.
//
// A tcx attach costs an RCU grace period: the kernel swaps the device's
// program array and waits for readers to leave the old one, holding the
// RTNL lock (8–16 ms each on these machines, 12 ms typical; see
// docs/design/datapath.md). Two per pod were 70 % of a CNI ADD. A cls_bpf
// filter on a clsact qdisc costs ~0.3 ms. So ADD attaches the programs as
// cls_bpf filters — the same programs and maps, so policy applies before the
// pod's first packet exactly as with tcx — and a background worker moves
// the pod to pinned tcx links (the steady state, the one an agent restart
// takes over) once CNI calls have been quiet for AttachQuietPeriod, or at
// the latest AttachMaxDelay after the ADD, then deletes the filters. While
// both are attached (between the tcx attach and the filter delete, well
// under a millisecond) a packet passes both programs: the verdict is the
// same, its counters count it twice. On kernels without tcx the filters
// simply stay (the fallback the datapath always had).
type tcxUpgrades struct {
	mu      sync.Mutex
	pending map[string]time.Time // endpoint record key → when ADD queued it
	wake    chan struct{}

	inflight atomic.Int32 // CNI calls being served
	lastCNI  atomic.Int64 // when the last one ended (unix ns)
}

func newTCXUpgrades() *tcxUpgrades {
	return &tcxUpgrades{pending: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

// cniCall marks a CNI call as being served; call the returned function
// when it ends.
func (u *tcxUpgrades) cniCall() func() {
	u.inflight.Add(1)
	return func() {
		u.lastCNI.Store(time.Now().UnixNano())
		u.inflight.Add(-1)
	}
}

func (u *tcxUpgrades) queue(key string) {
	u.mu.Lock()
	u.pending[key] = time.Now()
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *tcxUpgrades) drop(key string) {
	u.mu.Lock()
	delete(u.pending, key)
	u.mu.Unlock()
}

func (u *tcxUpgrades) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}

// next returns the key to upgrade now, or how long to wait before asking
// again (0 with no key: nothing is pending, wait for a wake-up).
func (u *tcxUpgrades) next(now time.Time, quiet, maxDelay time.Duration) (key string, wait time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var oldest time.Time
	for k, t := range u.pending {
		if key == "" || t.Before(oldest) {
			key, oldest = k, t
		}
	}
	if key == "" {
		return "", 0
	}
	overdue := maxDelay - now.Sub(oldest)
	if overdue <= 0 {
		return key, 0
	}
	sinceCNI := now.Sub(time.Unix(0, u.lastCNI.Load()))
	if u.inflight.Load() == 0 && sinceCNI >= quiet {
		return key, 0
	}
	wait = quiet
	if u.inflight.Load() == 0 {
		wait = quiet - sinceCNI
	}
	return "", min(wait, overdue)
}

// runTCXUpgrades moves queued pods from cls_bpf to tcx until ctx ends.
func (a *Agent) runTCXUpgrades(ctx context.Context) {
	for {
		key, wait := a.upgrades.next(time.Now(), a.cfg.AttachQuietPeriod, a.cfg.AttachMaxDelay)
		if key != "" {
			a.upgradeToTCX(key)
			continue
		}
		var timer <-chan time.Time
		if wait > 0 {
			timer = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.upgrades.wake:
		case <-timer:
		}
	}
}

// upgradeToTCX attaches the record's programs with tcx and removes its
// cls_bpf filters. A failure leaves the filters enforcing (logged).
func (a *Agent) upgradeToTCX(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.upgrades.drop(key)
	r, ok := a.endpoints[key]
	if !ok || r.gone || a.cleaned.Load() {
		return
	}
	start := time.Now()
	if err := a.attachTC(r); err != nil {
		a.log.Warn("pod stays on cls_bpf filters: tcx attach failed", "pod", r.Namespace+"/"+r.Name, "veth", r.HostIfName, "error", err)
		return
	}
	a.log.Debug("pod moved to tcx", "pod", r.Namespace+"/"+r.Name, "veth", r.HostIfName, "took", time.Since(start))
}

// attachClsBPF attaches both policy programs to the record's host veth as
// cls_bpf filters (what ADD does; see tcxUpgrades).
func (a *Agent) attachClsBPF(r *endpointRecord) error {
	return inNetns(a.cfg.NodeNetns, func() error {
		for _, d := range []bpf.Direction{bpf.Egress, bpf.Ingress} {
			att, err := a.pol.Attach(r.HostIfindex, d, bpf.AttachOptions{Mode: bpf.AttachClsBPF})
			if err != nil {
				return err
			}
			att.Close() // the filter stays
		}
		return nil
	})
}

// attachTC attaches both policy programs to the record's host veth as
// pinned tcx links — replacing the program of a link already pinned, as
// after an agent restart — and then removes any cls_bpf filters of ADD's.
// Without tcx in the kernel, AttachTC falls back to cls_bpf filters, which
// then stay.
func (a *Agent) attachTC(r *endpointRecord) error {
	return inNetns(a.cfg.NodeNetns, func() error {
		tcx := true
		for _, d := range []bpf.Direction{bpf.Egress, bpf.Ingress} {
			att, err := a.pol.Attach(r.HostIfindex, d, bpf.AttachOptions{PinPath: a.pinPath(r.HostIfName, d)})
			if err != nil {
				return err
			}
			tcx = tcx && att.Mode() == bpf.AttachTCX
			att.Close() // the pin (or the cls_bpf filter) keeps it attached
		}
		if tcx {
			if _, err := bpf.RemoveClsBPFFilters(r.HostIfindex); err != nil {
				return fmt.Errorf("remove cls_bpf filters after attaching tcx: %w", err)
			}
		}
		return nil
	})
}

// checkAttached verifies that both programs are attached to the record's
// host veth: a pinned tcx link or a cls_bpf filter for each direction.
func (a *Agent) checkAttached(r *endpointRecord) error {
	return inNetns(a.cfg.NodeNetns, func() error {
		for _, d := range []bpf.Direction{bpf.Ingress, bpf.Egress} {
			_, err := os.Stat(a.pinPath(r.HostIfName, d))
			if err == nil {
				continue
			}
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			ok, err := bpf.ClsBPFAttached(r.HostIfindex, d)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s program of %s is not attached (no pinned tcx link, no cls_bpf filter)", d, r.HostIfName)
			}
		}
		return nil
	})
}
