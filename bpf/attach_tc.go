//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachMode is how a TC program is attached to an interface.
type AttachMode int

const (
	// AttachAuto uses tcx, and netlink cls_bpf where the kernel has no tcx
	// (before Linux 6.6).
	AttachAuto AttachMode = iota
	// AttachTCX uses a tcx bpf_link.
	AttachTCX
	// AttachClsBPF uses a direct-action cls_bpf filter on a clsact qdisc.
	AttachClsBPF
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachTCX:
		return "tcx"
	case AttachClsBPF:
		return "cls_bpf"
	}
	return fmt.Sprintf("attach-mode(%d)", int(m))
}

// AttachOptions configure AttachTC.
type AttachOptions struct {
	Mode AttachMode
	// PinPath (tcx only) is a file on a bpffs for the link. If a link is
	// pinned there already, its program is replaced in place (no moment
	// without a program, which is what an agent restart needs); otherwise the
	// new link is pinned there, so it outlives the process.
	PinPath string
	// First (tcx only) attaches a new link before every program already
	// at the hook instead of after them: a program whose rewrite the
	// others must see (masq_in before from_uplink). Replacing the program
	// of a pinned link keeps its place.
	First bool
}

// clsBPFPriority and clsBPFHandle identify nodemesh's cls_bpf filters, so
// attaching again replaces the filter instead of adding a second one.
const (
	clsBPFPriority = 0xc000 // leaves lower (earlier) priorities to others
	clsBPFHandle   = 0x1
)

// TCAttachment is a program attached to one hook of an interface.
type TCAttachment struct {
	mode   AttachMode
	link   link.Link
	pin    string
	filter *netlink.BpfFilter
}

// AttachTC attaches prog, the program enforcing dir, to interface ifindex:
// Egress programs (traffic leaving the pod) at the interface's ingress hook,
// Ingress programs at its egress hook. The ifindex is resolved in the calling
// thread's network namespace.
//
// A tcx link lasts until it is closed (or, when pinned, unpinned); a cls_bpf
// filter lasts until it is deleted, whatever happens to the process.
func AttachTC(prog *ebpf.Program, ifindex int, dir Direction, opts AttachOptions) (*TCAttachment, error) {
	if opts.Mode != AttachClsBPF {
		a, err := attachTCX(prog, ifindex, dir, opts.PinPath, opts.First)
		if err == nil || opts.Mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return a, err
		}
	}
	return attachClsBPF(prog, ifindex, dir)
}

func attachTCX(prog *ebpf.Program, ifindex int, dir Direction, pin string, first bool) (*TCAttachment, error) {
	attach := ebpf.AttachTCXIngress
	if dir == Ingress {
		attach = ebpf.AttachTCXEgress
	}
	if pin != "" {
		l, err := link.LoadPinnedLink(pin, nil)
		switch {
		case err == nil:
			if err := l.Update(prog); err != nil {
				_ = l.Close()
				return nil, fmt.Errorf("replace program of tcx link %s: %w", pin, err)
			}
			return &TCAttachment{mode: AttachTCX, link: l, pin: pin}, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("load pinned tcx link %s: %w", pin, err)
		}
	}
	topts := link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach}
	if first {
		topts.Anchor = link.Head()
	}
	l, err := link.AttachTCX(topts)
	if err != nil {
		return nil, fmt.Errorf("attach %s program to ifindex %d with tcx: %w", dir, ifindex, err)
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("pin tcx link of ifindex %d at %s: %w", ifindex, pin, err)
		}
	}
	return &TCAttachment{mode: AttachTCX, link: l, pin: pin}, nil
}

func attachClsBPF(prog *ebpf.Program, ifindex int, dir Direction) (*TCAttachment, error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	// Add, never replace: replacing clsact would drop other users' filters.
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	parent := clsBPFParent(dir)
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("program info: %w", err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    clsBPFHandle,
			Priority:  clsBPFPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         "nodemesh-" + info.Name,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return nil, fmt.Errorf("attach %s program to ifindex %d with cls_bpf: %w", dir, ifindex, err)
	}
	return &TCAttachment{mode: AttachClsBPF, filter: f}, nil
}

// clsBPFParent is the clsact hook of a direction (relative to the pod, on
// its host-side veth: what leaves the pod enters the host side).
func clsBPFParent(dir Direction) uint32 {
	if dir == Ingress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// Mode is AttachTCX or AttachClsBPF: how the program was attached.
func (a *TCAttachment) Mode() AttachMode { return a.mode }

// Close releases the process's handle. An unpinned tcx link is detached; a
// pinned tcx link and a cls_bpf filter stay attached.
func (a *TCAttachment) Close() error {
	if a.link != nil {
		return a.link.Close()
	}
	return nil
}

// Detach removes the program from the interface (and the tcx link's pin).
func (a *TCAttachment) Detach() error {
	if a.link != nil {
		if a.pin != "" {
			if err := a.link.Unpin(); err != nil {
				return fmt.Errorf("unpin tcx link %s: %w", a.pin, err)
			}
		}
		if err := a.link.Close(); err != nil {
			return fmt.Errorf("close tcx link: %w", err)
		}
		return nil
	}
	if err := netlink.FilterDel(a.filter); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete cls_bpf filter of ifindex %d: %w", a.filter.LinkIndex, err)
	}
	return nil
}

// RemoveClsBPFFilters deletes the cls_bpf filters AttachTC put on interface
// ifindex (nodemesh's priority and handle, named nodemesh-*), at both hooks,
// and returns how many it deleted. The clsact qdisc stays: other programs
// may use it. The ifindex is resolved in the calling thread's network
// namespace. tcx links are not filters: unpinning them detaches them.
func RemoveClsBPFFilters(ifindex int) (int, error) {
	l, filters, err := nodemeshFilters(ifindex)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, bf := range filters {
		if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("delete cls_bpf filter %s of %s: %w", bf.Name, l.Attrs().Name, err)
		}
		n++
	}
	return n, nil
}

// ClsBPFAttached reports whether interface ifindex (in the calling
// thread's network namespace) has the cls_bpf filter AttachTC puts there
// for dir.
func ClsBPFAttached(ifindex int, dir Direction) (bool, error) {
	_, filters, err := nodemeshFilters(ifindex)
	if err != nil {
		return false, err
	}
	_, ok := filters[dir]
	return ok, nil
}

// nodemeshFilters finds nodemesh's cls_bpf filters on ifindex, by direction.
func nodemeshFilters(ifindex int) (netlink.Link, map[Direction]*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, nil, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	out := map[Direction]*netlink.BpfFilter{}
	for _, dir := range []Direction{Egress, Ingress} {
		filters, err := netlink.FilterList(l, clsBPFParent(dir))
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				continue // no clsact qdisc
			}
			return nil, nil, fmt.Errorf("filters of %s: %w", l.Attrs().Name, err)
		}
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			if ok && bf.Priority == clsBPFPriority && bf.Handle == clsBPFHandle && strings.HasPrefix(bf.Name, "nodemesh-") {
				out[dir] = bf
			}
		}
	}
	return l, out, nil
}
