//go:build linux

package agent

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/nodemesh/nodemesh/agent/identity"
)

// IdentityGCLease is the Lease (in the agent's namespace) whose holder
// collects unused identities: one agent of the cluster at a time.
const IdentityGCLease = "nodemesh-identity-gc"

// runIdentityGC takes part in the election for IdentityGCLease and, while
// leading, collects identities no pod of the cluster has used for
// IdentityGCGrace, every IdentityGCPeriod. It returns when ctx ends.
func (a *Agent) runIdentityGC(ctx context.Context) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: a.cfg.Namespace, Name: IdentityGCLease},
		Client:     a.cfg.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: a.cfg.NodeName},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   30 * time.Second,
		RenewDeadline:   20 * time.Second,
		RetryPeriod:     5 * time.Second,
		ReleaseOnCancel: true,
		Name:            IdentityGCLease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				a.log.Info("collecting unused identities", "period", a.cfg.IdentityGCPeriod, "grace", a.cfg.IdentityGCGrace)
				a.collectIdentities(ctx)
			},
			OnStoppedLeading: func() { a.log.Debug("no longer collecting identities") },
		},
	})
	if err != nil {
		a.log.Error("identity collection disabled", "error", err)
		return
	}
	for ctx.Err() == nil {
		le.Run(ctx) // returns when leadership is lost; stand again
	}
}

// collectIdentities sweeps every IdentityGCPeriod until ctx ends.
func (a *Agent) collectIdentities(ctx context.Context) {
	gc := &identity.Collector{Allocator: a.allocator, Grace: a.cfg.IdentityGCGrace}
	t := time.NewTicker(a.cfg.IdentityGCPeriod)
	defer t.Stop()
	for {
		if !a.informers.hasSynced() || a.cleaned.Load() {
			// Nothing to sweep against yet (or any more).
		} else if inUse, err := a.identityKeysInUse(); err != nil {
			a.log.Warn("collect identities: list pods", "error", err)
		} else {
			doomed := gc.Sweep(time.Now(), a.informers.storedIdentities(), func(k identity.Key) bool { return inUse[k.String()] })
			if len(doomed) > 0 {
				deleted, err := gc.Delete(ctx, doomed)
				a.metrics.identitiesCollected.Add(float64(len(deleted)))
				if len(deleted) > 0 {
					a.log.Info("collected unused identities", "count", len(deleted), "identities", deleted)
				}
				if err != nil {
					a.log.Warn("collect identities", "error", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// identityKeysInUse are the keys of every pod of the cluster (this node's
// and the others', ended pods included: their objects still exist) and of
// this node's endpoints (a pod the informer has not shown yet).
func (a *Agent) identityKeysInUse() (map[string]bool, error) {
	used := map[string]bool{}
	local, err := a.informers.pods.List(everything())
	if err != nil {
		return nil, err
	}
	remote, err := a.informers.remotePods.List(everything())
	if err != nil {
		return nil, err
	}
	for _, p := range append(local, remote...) {
		if !p.Spec.HostNetwork {
			used[identity.KeyOf(p.Namespace, p.Spec.ServiceAccountName, p.Labels).String()] = true
		}
	}
	a.mu.Lock()
	for _, r := range a.liveRecords() {
		used[identity.KeyOf(r.Namespace, r.ServiceAccount, r.Labels).String()] = true
	}
	a.mu.Unlock()
	return used, nil
}
