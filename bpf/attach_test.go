//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inPrivateNetns runs f on a thread moved into a new, empty network
// namespace, which disappears with everything in it when f returns. Nothing
// f does can touch the machine's own interfaces.
func inPrivateNetns(t *testing.T, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		ns, err := netns.New() // unshare(CLONE_NEWNET) for this thread
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("new netns: %w", err)
			return
		}
		err = f()
		ns.Close()
		if rerr := netns.Set(orig); rerr != nil {
			// Leave the thread locked: the runtime discards it.
			done <- errors.Join(err, fmt.Errorf("return to the original netns: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// tcxPrograms is the number of programs attached with tcx at a hook.
func tcxPrograms(ifindex int, attach ebpf.AttachType) (int, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	if err != nil {
		return 0, err
	}
	return len(res.Programs), nil
}

func clsBPFFilters(ifindex int, parent uint32) ([]*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, parent)
	if err != nil {
		return nil, err
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			out = append(out, bf)
		}
	}
	return out, nil
}

func TestAttachTC(t *testing.T) {
	requireBPF(t)
	p, err := LoadPolicy(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pin := filepath.Join(privateBPFFS(t), "tc_from_pod")

	inPrivateNetns(t, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nmtest0"}, PeerName: "nmtest1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		l, err := netlink.LinkByName("nmtest0")
		if err != nil {
			return err
		}
		idx := l.Attrs().Index

		expect := func(what string, attach ebpf.AttachType, want int) error {
			n, err := tcxPrograms(idx, attach)
			if err != nil {
				return fmt.Errorf("%s: query: %w", what, err)
			}
			if n != want {
				return fmt.Errorf("%s: %d tcx programs at %s, want %d", what, n, attach, want)
			}
			return nil
		}

		// auto picks tcx on this kernel; both directions land on the right hook.
		from, err := p.Attach(idx, Egress, AttachOptions{})
		if err != nil {
			return err
		}
		if from.Mode() != AttachTCX {
			return fmt.Errorf("auto attached with %s, want tcx", from.Mode())
		}
		to, err := p.Attach(idx, Ingress, AttachOptions{Mode: AttachTCX})
		if err != nil {
			return err
		}
		if err := errors.Join(expect("attached", ebpf.AttachTCXIngress, 1), expect("attached", ebpf.AttachTCXEgress, 1)); err != nil {
			return err
		}
		if err := errors.Join(from.Detach(), to.Detach()); err != nil {
			return err
		}
		if err := errors.Join(expect("detached", ebpf.AttachTCXIngress, 0), expect("detached", ebpf.AttachTCXEgress, 0)); err != nil {
			return err
		}

		// A pinned link outlives Close, and attaching again with the same
		// pin replaces its program instead of adding a second one.
		a, err := p.Attach(idx, Egress, AttachOptions{Mode: AttachTCX, PinPath: pin})
		if err != nil {
			return err
		}
		if err := a.Close(); err != nil {
			return err
		}
		if err := expect("pinned, closed", ebpf.AttachTCXIngress, 1); err != nil {
			return err
		}
		a, err = p.Attach(idx, Egress, AttachOptions{Mode: AttachTCX, PinPath: pin})
		if err != nil {
			return fmt.Errorf("re-attach over the pin: %w", err)
		}
		if err := expect("re-attached over the pin", ebpf.AttachTCXIngress, 1); err != nil {
			return err
		}
		if err := a.Detach(); err != nil {
			return err
		}
		if err := expect("pinned, detached", ebpf.AttachTCXIngress, 0); err != nil {
			return err
		}

		// cls_bpf fallback: one direct-action filter per hook, replaced on
		// re-attach, removed by Detach.
		for _, dir := range []Direction{Egress, Ingress} {
			parent := uint32(netlink.HANDLE_MIN_INGRESS)
			if dir == Ingress {
				parent = netlink.HANDLE_MIN_EGRESS
			}
			var a *TCAttachment
			for range 2 {
				if a, err = p.Attach(idx, dir, AttachOptions{Mode: AttachClsBPF}); err != nil {
					return err
				}
			}
			if a.Mode() != AttachClsBPF {
				return fmt.Errorf("cls_bpf attached with %s", a.Mode())
			}
			fs, err := clsBPFFilters(idx, parent)
			if err != nil {
				return err
			}
			wantName := "nodemesh-" + map[Direction]string{Egress: "from_pod", Ingress: "to_pod"}[dir]
			if len(fs) != 1 || !fs[0].DirectAction || fs[0].Name != wantName {
				return fmt.Errorf("%s: cls_bpf filters %+v, want one direct-action %s", dir, fs, wantName)
			}
			if ok, err := ClsBPFAttached(idx, dir); err != nil || !ok {
				return fmt.Errorf("%s: ClsBPFAttached after attach: %v, %v", dir, ok, err)
			}
			if ok, err := ClsBPFAttached(idx, map[Direction]Direction{Egress: Ingress, Ingress: Egress}[dir]); err != nil || ok {
				return fmt.Errorf("%s: ClsBPFAttached for the other direction: %v, %v", dir, ok, err)
			}
			if err := a.Detach(); err != nil {
				return err
			}
			if fs, err := clsBPFFilters(idx, parent); err != nil || len(fs) != 0 {
				return fmt.Errorf("%s: after detach: filters %+v, %v", dir, fs, err)
			}
		}
		// RemoveClsBPFFilters takes both and nothing else.
		for _, dir := range []Direction{Egress, Ingress} {
			if _, err := p.Attach(idx, dir, AttachOptions{Mode: AttachClsBPF}); err != nil {
				return err
			}
		}
		if n, err := RemoveClsBPFFilters(idx); err != nil || n != 2 {
			return fmt.Errorf("RemoveClsBPFFilters: %d, %v; want 2", n, err)
		}
		for _, dir := range []Direction{Egress, Ingress} {
			if ok, err := ClsBPFAttached(idx, dir); err != nil || ok {
				return fmt.Errorf("%s: ClsBPFAttached after RemoveClsBPFFilters: %v, %v", dir, ok, err)
			}
		}
		return nil
	})
}
