//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/api"
)

// Removing nodemesh from a node removes its policy enforcement, so it is
// tied to the one act that means "nodemesh goes": deleting the agent's own
// DaemonSet, which is what an uninstall does ('nodemesh uninstall' first,
// 'helm uninstall' as part of deleting the release). Its threat model is in
// docs/design/agent.md, "Uninstall: node cleanup".
//
// The agent learns which DaemonSet owns its pod (the pod's controller
// reference) once it has synced, then watches that one DaemonSet by name
// (the agent's Role allows get/list/watch of that name only). SIGTERM
// alone removes nothing (rolling updates, node drains, a deleted pod); at
// SIGTERM the agent removes its node's datapath only when the DaemonSet
// owning its pod — with the UID of the reference, so not a new DaemonSet
// of the same name — is being deleted or is gone:
//
//  1. the watch saw it deleted, or with a deletionTimestamp; else
//  2. a GET says so (NotFound, another UID, a deletionTimestamp): the
//     SIGTERM may come before the watch delivered the deletion; else
//  3. when that GET fails (Forbidden, Unauthorized: 'helm uninstall'
//     deletes the agent's RoleBindings and ServiceAccount milliseconds
//     after the DaemonSet, and an established watch outlives them), the
//     watch is given up to ownerWatchGrace to deliver the deletion.
//
// Anything else keeps the datapath: not knowing keeps enforcement.
// Removing the datapath itself needs no API; its outcome is recorded as an
// Event on the DaemonSet (best effort: a 'helm uninstall' may already have
// taken the agent's right to create Events) and counted in
// nodemesh_agent_node_cleanups_total.

// The bounds of the decision at SIGTERM and of the Event: together within
// the pod's 30 s grace period. ownerWatchGrace is the wait for the watch
// when the API no longer answers the agent.
const (
	ownerGetTimeout = 5 * time.Second
	ownerWatchGrace = 10 * time.Second
	eventTimeout    = 10 * time.Second
)

// ownerWatch watches the DaemonSet that owns the agent's pod.
type ownerWatch struct {
	owner    metav1.OwnerReference
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	// stop ends the watch. Not the agent's context: the watch must keep
	// running past SIGTERM, until the decision is made.
	stop     chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	deleting map[types.UID]bool // DaemonSets seen deleted or being deleted
	changed  chan struct{}      // closed and replaced when deleting grows
}

// daemonSetOwner is the controller reference of kind DaemonSet of pod.
func daemonSetOwner(pod *corev1.Pod) (metav1.OwnerReference, bool) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "DaemonSet" || ref.APIVersion != appsv1.SchemeGroupVersion.String() {
		return metav1.OwnerReference{}, false
	}
	return *ref, true
}

// ownPod is the agent's pod: from the node's pod informer, or the API.
func (a *Agent) ownPod(ctx context.Context) (*corev1.Pod, error) {
	if p, err := a.informers.pods.Pods(a.cfg.Namespace).Get(a.cfg.PodName); err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return a.cfg.Kube.CoreV1().Pods(a.cfg.Namespace).Get(ctx, a.cfg.PodName, metav1.GetOptions{})
}

// watchOwner starts the watch of the DaemonSet owning the agent's pod.
// Without a pod name, or a pod a DaemonSet does not own, nothing is
// watched and SIGTERM never removes the datapath (said in the log).
func (a *Agent) watchOwner(ctx context.Context) {
	if a.cfg.PodName == "" || a.cfg.Namespace == "" {
		a.log.Warn("no --pod-name or --namespace: the agent cannot tell an uninstall from a restart, so it never removes nodemesh from the node ('nodemesh-agent cleanup' does, by hand)")
		return
	}
	pod, err := a.ownPod(ctx)
	if err != nil {
		a.log.Warn("cannot read the agent's own pod: it will not remove nodemesh from the node when uninstalled", "pod", a.cfg.Namespace+"/"+a.cfg.PodName, "error", err)
		return
	}
	owner, ok := daemonSetOwner(pod)
	if !ok {
		a.log.Warn("the agent's pod is not owned by a DaemonSet: it will not remove nodemesh from the node when stopped", "pod", a.cfg.Namespace+"/"+a.cfg.PodName)
		return
	}
	w := &ownerWatch{owner: owner, deleting: map[types.UID]bool{}, changed: make(chan struct{}), stop: make(chan struct{})}
	w.factory = informers.NewSharedInformerFactoryWithOptions(a.cfg.Kube, 0, informers.WithNamespace(a.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", owner.Name).String()
		}))
	w.informer = w.factory.Apps().V1().DaemonSets().Informer()
	seen := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if ds, ok := obj.(*appsv1.DaemonSet); ok && w.markDeleting(ds.UID) && ds.UID == owner.UID {
			a.metrics.uninstallPending.Set(1)
			a.log.Info("the agent's DaemonSet is being deleted: nodemesh will be removed from this node when the agent stops",
				"daemonset", a.cfg.Namespace+"/"+ds.Name)
		}
	}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.DeletionTimestamp != nil {
				seen(ds)
			}
		},
		UpdateFunc: func(old, obj any) {
			if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.DeletionTimestamp != nil {
				seen(ds)
			}
			// Deleted and created again while the watch was down: the
			// relist shows the new one in the old one's place.
			if o, ok := old.(*appsv1.DaemonSet); ok {
				if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.UID != o.UID {
					seen(o)
				}
			}
		},
		DeleteFunc: seen,
	})
	a.owner = w
	w.factory.Start(w.stop)
	a.log.Info("watching the agent's DaemonSet: its deletion (an uninstall) removes nodemesh from this node when the agent stops",
		"daemonset", a.cfg.Namespace+"/"+owner.Name, "uid", owner.UID)
}

// close ends the watch.
func (w *ownerWatch) close() {
	w.stopOnce.Do(func() { close(w.stop) })
}

// markDeleting remembers DaemonSet uid as deleted or being deleted, and
// reports whether it was not yet.
func (w *ownerWatch) markDeleting(uid types.UID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deleting[uid] {
		return false
	}
	w.deleting[uid] = true
	close(w.changed)
	w.changed = make(chan struct{})
	return true
}

// seenDeleting reports whether the watch saw DaemonSet uid deleted or
// being deleted, and a channel closed when that may have changed.
func (w *ownerWatch) seenDeleting(uid types.UID) (bool, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deleting[uid], w.changed
}

// uninstalling decides, when the agent is stopped, whether the DaemonSet
// owning its pod is being deleted (see the top of this file), and why.
func (a *Agent) uninstalling() (bool, string) {
	w := a.owner
	if w == nil {
		return false, "no owning DaemonSet known"
	}
	ctx, cancel := context.WithTimeout(context.Background(), ownerGetTimeout)
	defer cancel()
	// The pod's owner now: a DaemonSet that replaced ours may have
	// adopted the pod (deleted with --cascade=orphan, then created again).
	owner := w.owner
	if p, err := a.informers.pods.Pods(a.cfg.Namespace).Get(a.cfg.PodName); err == nil {
		if ref, ok := daemonSetOwner(p); ok {
			owner = ref
		}
	}
	if owner.Name != w.owner.Name {
		return false, fmt.Sprintf("the pod is now owned by DaemonSet %s, which the agent does not watch", owner.Name)
	}
	if seen, _ := w.seenDeleting(owner.UID); seen {
		return true, "the watch saw DaemonSet " + owner.Name + " deleted"
	}
	ds, err := a.cfg.Kube.AppsV1().DaemonSets(a.cfg.Namespace).Get(ctx, owner.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, "DaemonSet " + owner.Name + " is gone"
	case err == nil && ds.UID != owner.UID:
		return true, fmt.Sprintf("DaemonSet %s was deleted (one with another UID replaced it)", owner.Name)
	case err == nil && ds.DeletionTimestamp != nil:
		return true, "DaemonSet " + owner.Name + " is being deleted"
	case err == nil:
		return false, "DaemonSet " + owner.Name + " stays (a restart, update or drain)"
	}
	// No answer: an uninstall that already took the agent's API access, or
	// an API server that is down. The watch still runs.
	a.log.Info("cannot read the agent's DaemonSet; waiting for its watch", "error", err, "for", ownerWatchGrace)
	deadline := time.After(ownerWatchGrace)
	for {
		seen, changed := w.seenDeleting(owner.UID)
		if seen {
			return true, "the watch saw DaemonSet " + owner.Name + " deleted"
		}
		select {
		case <-changed:
		case <-deadline:
			return false, fmt.Sprintf("cannot tell whether DaemonSet %s is being deleted (%v): the datapath stays", owner.Name, err)
		}
	}
}

// cleanupOnExit removes nodemesh from the node if the agent stops because
// its DaemonSet is being deleted.
func (a *Agent) cleanupOnExit() {
	if a.owner != nil {
		defer a.owner.close()
	}
	yes, why := a.uninstalling()
	if !yes {
		a.log.Info("stopping; the datapath stays", "reason", why)
		return
	}
	a.log.Info("stopping for an uninstall: removing nodemesh from this node", "reason", why)
	a.cleaned.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	a.cleanNode(ctx, a.owner.owner)
}

// cleanNode lets go of the agent's handles, runs Cleanup and records the
// outcome as an Event on the DaemonSet.
func (a *Agent) cleanNode(ctx context.Context, ds metav1.OwnerReference) {
	a.mu.Lock()
	closeErr := a.Close()
	res, err := Cleanup(CleanupConfig{BPFFS: a.cfg.BPFFS, CNIConfDir: a.cfg.CNIConfDir, CNIBinDir: a.cfg.CNIBinDir,
		StateDir: a.cfg.StateDir, NodeNetns: a.cfg.NodeNetns, SysctlNetDir: a.cfg.SysctlNetDir, Logger: a.log})
	a.mu.Unlock()
	err = errors.Join(closeErr, err)
	if err != nil {
		a.metrics.cleanups.WithLabelValues("failed").Inc()
		a.log.Error("node cleanup incomplete; run 'nodemesh-agent cleanup' on the node", "error", err)
		a.recordCleanup(ctx, ds, corev1.EventTypeWarning, NodeCleanupFailedReason,
			fmt.Sprintf("node %s: cleanup incomplete (run 'nodemesh-agent cleanup' on the node): %v", a.cfg.NodeName, err))
		return
	}
	a.metrics.cleanups.WithLabelValues("cleaned").Inc()
	a.log.Info("node cleaned", "links", res.Links, "filters", res.Filters, "maps", res.Pins, "files", res.Files,
		"podsLeft", len(res.LivePods))
	a.recordCleanup(ctx, ds, corev1.EventTypeNormal, api.NodeCleanedReason,
		fmt.Sprintf("node %s: removed %d links, %d cls_bpf filters, %d map pins, %d CNI files; %d pods keep their interfaces until deleted",
			a.cfg.NodeName, res.Links, res.Filters, res.Pins, len(res.Files), len(res.LivePods)))
}

// recordCleanup records the Event directly (not through the agent's
// asynchronous recorder), retrying within ctx, so that it gets out before
// the agent exits when it can get out at all.
func (a *Agent) recordCleanup(ctx context.Context, ds metav1.OwnerReference, typ, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ds.Name, time.Now().UnixNano()), Namespace: a.cfg.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: ds.APIVersion, Kind: ds.Kind, Namespace: a.cfg.Namespace,
			Name: ds.Name, UID: ds.UID},
		Reason: reason, Message: msg, Type: typ, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: api.AgentName, Host: a.cfg.NodeName},
		ReportingController: "nodemesh.io/agent", ReportingInstance: a.cfg.NodeName,
	}
	for {
		_, err := a.cfg.Kube.CoreV1().Events(a.cfg.Namespace).Create(ctx, ev, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			a.log.Info("recorded the node cleanup", "reason", reason)
			return
		}
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			a.log.Info("cannot record the node cleanup: the uninstall took the agent's API access first", "reason", reason, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			a.log.Error("cannot record the node cleanup", "reason", reason, "error", err)
			return
		case <-time.After(time.Second):
		}
	}
}
