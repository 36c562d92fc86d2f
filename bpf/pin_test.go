//go:build linux

package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// privateBPFFS mounts a bpffs on a temporary directory for the test.
func privateBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Skipf("skipped: cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return dir
}

func TestLoadPinnedMapsSurviveReload(t *testing.T) {
	requireBPF(t)
	pins := filepath.Join(privateBPFFS(t), "maps")

	p, err := LoadPolicy(LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatalf("LoadPolicy: %v", err)
	}
	ep := Endpoint{IP: ip4(podIP), Identity: podID, Flags: EnforceIngress | EnforceEgress, PolicyRevision: 7}
	if err := p.PutEndpoint(testIfindex, ep); err != nil {
		t.Fatal(err)
	}
	allow(p, PolicyKey{Endpoint: podID, Peer: IdentityWorld, Port: 80, Proto: ProtoTCP, Dir: Egress})(t)
	runStep(t, p, step{"SYN out", Egress, syn(podIP, 40000, worldIP, 80).bytes(), ReasonAllowedPolicy})
	p.Close()

	r, err := LoadRedirect(LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatalf("LoadRedirect: %v", err)
	}
	if err := r.OptIn(42); err != nil {
		t.Fatal(err)
	}
	r.Close()

	for _, name := range []string{"nm_endpoints", "nm_ipcache", "nm_policy", "nm_ct", "nm_pol_stats",
		"nm_redir_cfg", "nm_netns", "nm_services", "nm_sk_dst", "nm_orig_dst", "nm_redir_stats"} {
		if _, err := os.Stat(filepath.Join(pins, name)); err != nil {
			t.Errorf("map %s not pinned: %v", name, err)
		}
	}

	// A new load (an agent restart) finds the endpoint, the policy, the
	// flow and the counters where they were.
	p, err = LoadPolicy(LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatalf("LoadPolicy again: %v", err)
	}
	defer p.Close()
	got, err := p.Endpoint(testIfindex)
	if err != nil {
		t.Fatal(err)
	}
	if got != ep {
		t.Errorf("endpoint after reload = %+v, want %+v", got, ep)
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c[Egress][ReasonAllowedPolicy].Packets != 1 {
		t.Errorf("counters after reload: %+v", c[Egress])
	}
	runStep(t, p, step{"reply after reload", Ingress, tcp(worldIP, 80, podIP, 40000, tcpSYN|tcpACK).bytes(), ReasonCTEstablished})
	runStep(t, p, step{"policy after reload", Egress, syn(podIP, 40001, worldIP, 80).bytes(), ReasonAllowedPolicy})

	r, err = LoadRedirect(LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatalf("LoadRedirect again: %v", err)
	}
	defer r.Close()
	var cfg netnsConfig
	if err := r.objs.NmNetns.Lookup(uint64(42), &cfg); err != nil {
		t.Errorf("opted-in netns after reload: %v", err)
	}
}

// TestAttachCgroupPinned: pinned cgroup links outlive Close, a second attach
// over the pins replaces the programs in place, and Detach removes them.
func TestAttachCgroupPinned(t *testing.T) {
	requireBPF(t)
	dir := filepath.Join(cgroup2Root(t), fmt.Sprintf("nodemesh-bpf-pin-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup %s: %v", dir, err)
		}
	})
	pins := filepath.Join(privateBPFFS(t), "cgroup")
	r, err := LoadRedirect(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	attached := func(when string, want int) {
		t.Helper()
		cg, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupSockOps,
			ebpf.AttachCGroupGetsockopt, ebpf.AttachCgroupInet4GetPeername} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: at})
			if err != nil {
				t.Fatalf("%s: query %s: %v", when, at, err)
			}
			if len(res.Programs) != want {
				t.Errorf("%s: %d programs at %s, want %d", when, len(res.Programs), at, want)
			}
		}
	}

	a, err := r.AttachCgroup(dir, pins)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	attached("pinned and closed", 1)
	a, err = r.AttachCgroup(dir, pins)
	if err != nil {
		t.Fatalf("attach over the pins: %v", err)
	}
	attached("attached over the pins", 1)
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	attached("detached", 0)
	if entries, _ := os.ReadDir(pins); len(entries) != 0 {
		t.Errorf("pins left after Detach: %v", entries)
	}
}
