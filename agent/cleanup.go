//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/bpf"
)

// The node cleanup contract with the installer (install/uninstall.go,
// docs/design/install.md): while the ConfigMap CleanupConfigMap exists in
// the agent's namespace, the agent removes nodemesh from its node and
// records an Event with reason NodeCleanedReason on that ConfigMap, source
// host = its node name. The installer keeps the same names
// (install.CleanupName, install.NodeCleanedReason; a test checks).
const (
	CleanupConfigMap  = "nodemesh-cleanup"
	NodeCleanedReason = "NodeCleaned"
	// NodeCleanupFailedReason is the Warning Event recorded instead when
	// something could not be removed (the installer then lists the node as
	// unconfirmed, with 'nodemesh-agent cleanup' as the fix).
	NodeCleanupFailedReason = "NodeCleanupFailed"
)

// CleanupConfig says where Cleanup looks: the same values the agent ran
// with.
type CleanupConfig struct {
	// BPFFS is the bpffs whose nodemesh directory holds the pins.
	BPFFS string
	// CNIConfDir and CNIBinDir hold the conflist and the plugin; empty:
	// leave them.
	CNIConfDir string
	CNIBinDir  string
	// StateDir holds the endpoint records and address leases.
	StateDir string
	// NodeNetns is the node's network namespace ("" = the caller's).
	NodeNetns string
	Logger    *slog.Logger
}

// CleanupResult is what Cleanup removed, and the pods' interfaces it left.
type CleanupResult struct {
	// Links are the pinned tcx and cgroup links detached.
	Links int
	// Filters are the cls_bpf filters deleted (kernels without tcx).
	Filters int
	// Pins are the other pins (maps) removed.
	Pins int
	// Files are the CNI files removed.
	Files []string
	// LivePods are the host veths of pods still running on the node: they
	// are left alone (see Cleanup), and so are the state directory's records
	// and leases of those pods.
	LivePods []string
	// StateRemoved: no pod was left, so the state directory's records and
	// leases were removed.
	StateRemoved bool
}

// Cleanup removes nodemesh from the node: the CNI configuration (first, so
// the runtime stops handing new pods to nodemesh), the plugin binary, the
// cls_bpf filters of kernels without tcx, the node proxy return path's
// routing rule and table, every pinned link under
// BPFFS/nodemesh (unpinning the last reference detaches the tcx programs
// from the pods' veths and the redirection programs from the cgroup) and
// every other pin (the maps), and the directory itself. Nothing may hold
// the agent's handles any more (Agent.Close first): a link a process still
// holds stays attached until that process lets go.
//
// Pods' veths stay. Deleting them would cut every pod still running on the
// node off at once, while leaving them keeps the pods reachable (their
// routes stay; policy and redirection no longer apply) until they are
// deleted, which removes the veth pair with the pod's network namespace.
// For the same reason the state directory's endpoint records and address
// leases stay while such a pod is left: an agent installed again takes the
// pods over from them instead of handing their addresses out twice. With
// no pod left, they are removed too.
//
// Cleanup carries on past errors and returns them all; running it again is
// safe.
func Cleanup(c CleanupConfig) (*CleanupResult, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &CleanupResult{}
	var errs []error
	for _, f := range []struct{ dir, name string }{{c.CNIConfDir, CNIConfFile}, {c.CNIBinDir, cni.PluginType}} {
		if f.dir == "" {
			continue
		}
		p := filepath.Join(f.dir, f.name)
		switch err := os.Remove(p); {
		case err == nil:
			res.Files = append(res.Files, p)
			log.Info("removed", "file", p)
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
		}
	}
	var live map[string]bool
	err := inNetns(c.NodeNetns, func() error {
		var err error
		live, err = liveVeths(c.StateDir)
		if err != nil {
			return err
		}
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list the node's interfaces: %w", err)
		}
		var errs []error
		for _, l := range links {
			n, err := bpf.RemoveClsBPFFilters(l.Attrs().Index)
			res.Filters += n
			errs = append(errs, err)
		}
		errs = append(errs, removeProxyReturnRouting())
		return errors.Join(errs...)
	})
	errs = append(errs, err)
	if c.BPFFS != "" {
		errs = append(errs, removePins(filepath.Join(c.BPFFS, pinDirName), res, log))
	}
	for name := range live {
		res.LivePods = append(res.LivePods, name)
	}
	slices.Sort(res.LivePods)
	if c.StateDir != "" && len(res.LivePods) == 0 && live != nil {
		// The entries, not the directory: it is a hostPath mount in the
		// DaemonSet.
		for _, d := range []string{"endpoints", "ipam"} {
			errs = append(errs, os.RemoveAll(filepath.Join(c.StateDir, d)))
		}
		res.StateRemoved = true
	}
	if len(res.LivePods) > 0 {
		log.Info("left the veths of pods still running on the node (they go with their pods)", "veths", res.LivePods)
	}
	return res, errors.Join(errs...)
}

// liveVeths are the host veths the endpoint records name that exist with
// the recorded ifindex, in the calling thread's network namespace. Without
// a state directory the map is nil.
func liveVeths(stateDir string) (map[string]bool, error) {
	if stateDir == "" {
		return nil, nil
	}
	recs, err := recordStore{dir: filepath.Join(stateDir, "endpoints")}.load()
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, r := range recs {
		if l, err := netlink.LinkByName(r.HostIfName); err == nil && l.Attrs().Index == r.HostIfindex {
			live[r.HostIfName] = true
		}
	}
	return live, nil
}

// removePins detaches every pinned link under dir (unpin and close: the
// last reference goes), removes every other pin, then the directories.
func removePins(dir string, res *CleanupResult, log *slog.Logger) error {
	var files, dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		} else {
			files = append(files, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range files {
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			uerr := l.Unpin()
			cerr := l.Close()
			if err := errors.Join(uerr, cerr); err != nil {
				errs = append(errs, fmt.Errorf("detach pinned link %s: %w", p, err))
				continue
			}
			res.Links++
			log.Info("detached", "link", p)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin %s: %w", p, err))
			continue
		}
		res.Pins++
	}
	// Deepest first.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
		}
	}
	log.Info("removed pins", "dir", dir, "links", res.Links, "maps", res.Pins)
	return errors.Join(errs...)
}

// cleanupWatch watches the cleanup request: the ConfigMap CleanupConfigMap
// in the agent's namespace, selected by name (the agent's Role allows that
// one name only).
type cleanupWatch struct {
	factory   informers.SharedInformerFactory
	informer  cache.SharedIndexInformer
	requested chan struct{} // closed on the first sighting
	once      sync.Once
	request   atomic.Pointer[corev1.ConfigMap]
}

func newCleanupWatch(kube kubernetes.Interface, namespace string) *cleanupWatch {
	w := &cleanupWatch{requested: make(chan struct{})}
	w.factory = informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", CleanupConfigMap).String()
		}))
	w.informer = w.factory.Core().V1().ConfigMaps().Informer()
	seen := func(obj any) {
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == CleanupConfigMap {
			w.request.Store(cm)
			w.once.Do(func() { close(w.requested) })
		}
	}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    seen,
		UpdateFunc: func(_, obj any) { seen(obj) },
	})
	return w
}

// cleanupRequested is closed once the cleanup request has been seen (never
// without a namespace to watch).
func (a *Agent) cleanupRequested() <-chan struct{} {
	if a.cleanup == nil {
		return nil
	}
	return a.cleanup.requested
}

// removeFromNode answers the cleanup request seen by the watch: it stops
// serving the CNI plugin and cleans the node (cleanNode). The agent then
// stays up, not ready, doing nothing, until it is stopped: exiting would
// have the DaemonSet start an agent that re-creates the datapath.
func (a *Agent) removeFromNode(ctx context.Context, cniListener net.Listener) error {
	a.cleaned.Store(true)
	cniListener.Close()
	// The answer must get out also when the agent is being stopped.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	a.cleanNode(actx, a.cleanup.request.Load())
	cancel()
	<-ctx.Done()
	return nil
}

// cleanupOnExit is the last look for the request when the agent is stopped
// before its watch delivered it: a plain 'helm uninstall' creates it (a
// pre-delete hook) and deletes the DaemonSet right after.
func (a *Agent) cleanupOnExit() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cm, err := a.cfg.Kube.CoreV1().ConfigMaps(a.cfg.Namespace).Get(ctx, CleanupConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		a.log.Debug("stopping without a cleanup request: the datapath stays")
		return // a rolling update, or the agent's own end: the datapath stays
	case err != nil:
		a.log.Warn("stopping: cannot tell whether nodemesh is being uninstalled; the datapath stays", "error", err)
		return
	}
	a.cleaned.Store(true)
	a.cleanNode(ctx, cm)
}

// cleanNode lets go of the agent's handles, runs Cleanup and answers on the
// request cm.
func (a *Agent) cleanNode(ctx context.Context, cm *corev1.ConfigMap) {
	a.log.Info("node cleanup requested: removing nodemesh from this node", "configmap", cm.Namespace+"/"+cm.Name)
	a.mu.Lock()
	closeErr := a.Close()
	res, err := Cleanup(CleanupConfig{BPFFS: a.cfg.BPFFS, CNIConfDir: a.cfg.CNIConfDir, CNIBinDir: a.cfg.CNIBinDir,
		StateDir: a.cfg.StateDir, NodeNetns: a.cfg.NodeNetns, Logger: a.log})
	a.mu.Unlock()
	err = errors.Join(closeErr, err)
	if err != nil {
		a.log.Error("node cleanup incomplete; run 'nodemesh-agent cleanup' on the node", "error", err)
		a.answer(ctx, cm, corev1.EventTypeWarning, NodeCleanupFailedReason,
			fmt.Sprintf("node %s: cleanup incomplete (run 'nodemesh-agent cleanup' on the node): %v", a.cfg.NodeName, err))
		return
	}
	a.log.Info("node cleaned", "links", res.Links, "filters", res.Filters, "maps", res.Pins, "files", res.Files,
		"podsLeft", len(res.LivePods))
	a.answer(ctx, cm, corev1.EventTypeNormal, NodeCleanedReason,
		fmt.Sprintf("node %s: removed %d links, %d cls_bpf filters, %d map pins, %d CNI files; %d pods keep their interfaces until deleted",
			a.cfg.NodeName, res.Links, res.Filters, res.Pins, len(res.Files), len(res.LivePods)))
}

// answer records the Event on the request directly (not through the
// agent's asynchronous recorder), retrying, so that the agent knows it was
// recorded — also when it is about to exit.
func (a *Agent) answer(ctx context.Context, cm *corev1.ConfigMap, typ, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", cm.Name, time.Now().UnixNano()), Namespace: cm.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: cm.Namespace, Name: cm.Name,
			UID: cm.UID, ResourceVersion: cm.ResourceVersion},
		Reason: reason, Message: msg, Type: typ, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: "nodemesh-agent", Host: a.cfg.NodeName},
		ReportingController: "nodemesh.io/agent", ReportingInstance: a.cfg.NodeName,
	}
	for attempt := 0; ; attempt++ {
		_, err := a.cfg.Kube.CoreV1().Events(cm.Namespace).Create(ctx, ev, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			a.log.Info("answered the cleanup request", "reason", reason)
			return
		}
		if attempt == 10 {
			a.log.Error("cannot record the answer to the cleanup request", "reason", reason, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			a.log.Error("cannot record the answer to the cleanup request", "reason", reason, "error", err)
			return
		case <-time.After(time.Second):
		}
	}
}
