//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/bpf"
)

// The node cleanup contract with the installer (install/uninstall.go,
// docs/design/install.md): an agent stopped because the DaemonSet owning
// its pod is being deleted removes nodemesh from its node (uninstall.go)
// and records an Event with reason api.NodeCleanedReason on that DaemonSet
// (involvedObject.uid = the DaemonSet's UID), source host = its node name.
// The reason is api.NodeCleanedReason, which the installer waits for.
const (
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
	// SysctlNetDir shows /proc/sys/net (default DefaultSysctlNetDir).
	SysctlNetDir string
	Logger       *slog.Logger
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
// routing rule and table, the routes to other nodes' pods and the vxlan
// device once no pod is left (see below), every pinned link under
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
// pods over from them instead of handing their addresses out twice, and
// the routes to other nodes' pods stay. With no pod left, they are removed
// too.
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
	files := []struct{ dir, name string }{{c.CNIConfDir, CNIConfFile}, {c.CNIBinDir, cni.PluginType}}
	for _, f := range legacyCNIConfFiles {
		files = append(files, struct{ dir, name string }{c.CNIConfDir, f})
	}
	for _, f := range files {
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
	if c.CNIConfDir != "" {
		changed, err := unchain(c.CNIConfDir)
		errs = append(errs, err)
		for _, p := range changed {
			res.Files = append(res.Files, p+" (nodemesh-cni entry)")
			log.Info("removed nodemesh-cni from", "file", p)
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
		sysctls := netSysctls(c.SysctlNetDir)
		if sysctls == "" {
			sysctls = DefaultSysctlNetDir
		}
		errs = append(errs, removeProxyReturnRouting(sysctls))
		// The routes to other nodes' pods and the vxlan device stay while
		// pods live on the node, for the reason their veths do: they keep
		// reaching the other nodes' pods (as those nodes' routes to them
		// stay) until they are deleted. Nothing maintains them any more.
		if len(live) > 0 {
			return errors.Join(errs...)
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		defer h.Delete()
		errs = append(errs, removeRouting(h))
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
