//go:build linux

package agent

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/bpf"
)

// requireKernel skips unless the test can load and attach programs: root,
// BPF, iproute2 and a cgroup v2 hierarchy (whose directory it returns).
func requireKernel(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("NODEMESH_DATAPATH") == "required" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("skipped: needs root (bpffs, netns, veth, BPF programs); run as root or `sudo make test-datapath`")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		skip("skipped: cannot create a BPF map (%v)", err)
	}
	m.Close()
	if _, err := exec.LookPath("ip"); err != nil {
		skip("skipped: needs the ip command (iproute2)")
	}
	dir, err := bpf.CgroupV2Root()
	if err != nil {
		skip("skipped: %v", err)
	}
	return dir
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestCleanup runs the teardown on the real kernel: an agent's datapath in a
// private bpffs, a node netns with two pod veths (one with pinned tcx links,
// one with cls_bpf filters, as on kernels without tcx), the cgroup links, the
// CNI files; after Cleanup none of them is left, the live pod's veth and
// state are, and a second Cleanup once the pod is gone removes the state.
func TestCleanup(t *testing.T) {
	cgroupV2 := requireKernel(t)
	id := "nmcl" + rand.String(5)
	dir := t.TempDir()
	bpffs, stateDir := filepath.Join(dir, "bpffs"), filepath.Join(dir, "state")
	confDir, binDir := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin")
	cgroup := filepath.Join(cgroupV2, id)
	for _, d := range []string{bpffs, confDir, binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "mount", "-t", "bpf", "bpf", bpffs)
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	if err := os.Mkdir(cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Rmdir(cgroup) })
	netnsName := id + "-node"
	netnsPath := "/run/netns/" + netnsName
	sh(t, "ip", "netns", "add", netnsName)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netnsName).Run() })
	tcxVeth, clsVeth := HostVethName(id, "a"), HostVethName(id, "b")
	sh(t, "ip", "-n", netnsName, "link", "add", tcxVeth, "type", "veth", "peer", "name", "pa")
	sh(t, "ip", "-n", netnsName, "link", "add", clsVeth, "type", "veth", "peer", "name", "pb")
	plugin := filepath.Join(dir, "plugin")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	a, err := New(Config{NodeName: "node-1", PodCIDR: netip.MustParsePrefix("10.244.9.0/24"),
		Kube: fake.NewClientset(), Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
		BPFFS: bpffs, CgroupRoot: cgroup, StateDir: stateDir, CNISocket: filepath.Join(dir, "cni.sock"),
		CNIConfDir: confDir, CNIBinDir: binDir, CNIPlugin: plugin, NodeNetns: netnsPath}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ifindex := func(name string) int {
		t.Helper()
		h, err := netlinkAt(netnsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Delete()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	rec := &endpointRecord{ContainerID: id, IfName: "a", HostIfName: tcxVeth, HostIfindex: ifindex(tcxVeth)}
	if err := a.attachTC(rec); err != nil {
		t.Fatal(err)
	}
	if err := a.records.save(rec); err != nil {
		t.Fatal(err)
	}
	clsIndex := ifindex(clsVeth)
	err = inNetns(netnsPath, func() error {
		for _, d := range []bpf.Direction{bpf.Ingress, bpf.Egress} {
			att, err := a.pol.Attach(clsIndex, d, bpf.AttachOptions{Mode: bpf.AttachClsBPF})
			if err != nil {
				return err
			}
			att.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.installCNI(); err != nil {
		t.Fatal(err)
	}
	// What the test expects to be removed is there.
	state := func() (tcx, cls, cg int) {
		t.Helper()
		err := inNetns(netnsPath, func() error {
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: rec.HostIfindex, Attach: at})
				if err != nil {
					return err
				}
				tcx += len(res.Programs)
			}
			l, err := netlink.LinkByIndex(clsIndex)
			if err != nil {
				return err
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, err := netlink.FilterList(l, parent)
				if err != nil {
					return err
				}
				cls += len(fs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(cgroup)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupSockOps, ebpf.AttachCGroupGetsockopt, ebpf.AttachCgroupInet4GetPeername} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
			if err != nil {
				t.Fatal(err)
			}
			cg += len(res.Programs)
		}
		return tcx, cls, cg
	}
	if tcx, cls, cg := state(); tcx != 2 || cls != 2 || cg != 4 {
		t.Fatalf("before cleanup: %d tcx programs, %d cls_bpf filters, %d cgroup programs; want 2, 2, 4", tcx, cls, cg)
	}
	conflist, pluginCopy := filepath.Join(confDir, CNIConfFile), filepath.Join(binDir, cni.PluginType)
	for _, p := range []string{conflist, pluginCopy, filepath.Join(bpffs, pinDirName, "links", tcxVeth+"_to_pod")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("before cleanup: %v", err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	if out, _ := exec.Command("ip", "-n", netnsName, "rule", "show").CombinedOutput(); !strings.Contains(string(out), "lookup 15001") {
		t.Errorf("the agent set up no proxy return rule:\n%s", out)
	}
	res, err := Cleanup(CleanupConfig{BPFFS: bpffs, CNIConfDir: confDir, CNIBinDir: binDir, StateDir: stateDir, NodeNetns: netnsPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Links != 8 || res.Filters != 2 || res.Pins == 0 || len(res.Files) != 2 {
		t.Errorf("cleanup result %+v: want 8 links (2 tcx, 6 cgroup), 2 filters, the map pins, 2 files", res)
	}
	if tcx, cls, cg := state(); tcx != 0 || cls != 0 || cg != 0 {
		t.Errorf("after cleanup: %d tcx programs, %d cls_bpf filters, %d cgroup programs left", tcx, cls, cg)
	}
	if _, err := os.Stat(filepath.Join(bpffs, pinDirName)); !errors.Is(err, fs.ErrNotExist) {
		left, _ := exec.Command("find", bpffs).CombinedOutput()
		t.Errorf("pins left (%v):\n%s", err, left)
	}
	for _, p := range []string{conflist, pluginCopy} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left (%v)", p, err)
		}
	}
	// The node proxy return path's routing is gone too.
	if out, _ := exec.Command("ip", "-n", netnsName, "rule", "show").CombinedOutput(); strings.Contains(string(out), "lookup 15001") {
		t.Errorf("the proxy return rule is left:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-n", netnsName, "route", "show", "table", "15001").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("routes left in table 15001:\n%s", out)
	}
	// The live pod keeps its veth and its record.
	if len(res.LivePods) != 1 || res.LivePods[0] != tcxVeth || res.StateRemoved {
		t.Errorf("live pods %v, state removed %v: want [%s], false", res.LivePods, res.StateRemoved, tcxVeth)
	}
	ifindex(tcxVeth)
	if _, err := os.Stat(a.records.path(tcxVeth)); err != nil {
		t.Errorf("the live pod's record: %v", err)
	}

	// Once the pod is gone, a second run (safe to repeat) removes the state.
	sh(t, "ip", "-n", netnsName, "link", "del", tcxVeth)
	res, err = Cleanup(CleanupConfig{BPFFS: bpffs, CNIConfDir: confDir, CNIBinDir: binDir, StateDir: stateDir, NodeNetns: netnsPath})
	if err != nil {
		t.Fatal(err)
	}
	if res.Links != 0 || res.Pins != 0 || len(res.Files) != 0 || !res.StateRemoved {
		t.Errorf("second cleanup %+v: want nothing removed but the state", res)
	}
	for _, d := range []string{"endpoints", "ipam"} {
		if _, err := os.Stat(filepath.Join(stateDir, d)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("state %s left (%v)", d, err)
		}
	}
}
