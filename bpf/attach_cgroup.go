//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// CgroupAttachment is the redirection programs attached to one cgroup.
type CgroupAttachment struct {
	links []link.Link
	pins  []string
}

// AttachCgroup attaches connect4, sendmsg4, recvmsg4, sockops, getsockopt
// and getpeername4 to the cgroup v2 directory cgroupPath: the cgroup v2 root
// in production, so that every pod and the node proxy are covered. The
// redirection acts only on opted-in network namespaces; the socket load
// balancing on every socket, for the frontends the LB maps hold (none: the
// programs change nothing).
//
// With pinDir set (a directory on a bpffs), the links are pinned there as
// cgroup_<program>; links already pinned there get the new programs in place,
// so an agent restart never leaves the cgroup without them. Without pinDir,
// the programs stay attached until Close.
func (r *Redirect) AttachCgroup(cgroupPath, pinDir string) (*CgroupAttachment, error) {
	progs := []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{"connect4", ebpf.AttachCGroupInet4Connect, r.objs.NmConnect4},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, r.objs.NmSendmsg4},
		{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, r.objs.NmRecvmsg4},
		{"sockops", ebpf.AttachCGroupSockOps, r.objs.NmSockops},
		{"getsockopt", ebpf.AttachCGroupGetsockopt, r.objs.NmGetsockopt},
		{"getpeername4", ebpf.AttachCgroupInet4GetPeername, r.objs.NmGetpeername4},
	}
	if pinDir != "" {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create link pin directory: %w", err)
		}
	}
	a := &CgroupAttachment{}
	for _, p := range progs {
		var pin string
		if pinDir != "" {
			pin = filepath.Join(pinDir, "cgroup_"+p.name)
		}
		l, err := attachCgroupLink(cgroupPath, p.attach, p.prog, pin)
		if err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("attach %s to cgroup %s: %w", p.name, cgroupPath, err)
		}
		a.links = append(a.links, l)
		if pin != "" {
			a.pins = append(a.pins, pin)
		}
	}
	return a, nil
}

func attachCgroupLink(cgroupPath string, attach ebpf.AttachType, prog *ebpf.Program, pin string) (link.Link, error) {
	if pin != "" {
		l, err := link.LoadPinnedLink(pin, nil)
		switch {
		case err == nil:
			if err := l.Update(prog); err != nil {
				_ = l.Close()
				return nil, fmt.Errorf("replace program of pinned link %s: %w", pin, err)
			}
			return l, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: attach, Program: prog})
	if err != nil {
		return nil, err
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("pin link at %s: %w", pin, err)
		}
	}
	return l, nil
}

// Close releases the process's handles: unpinned links are detached, pinned
// ones stay.
func (a *CgroupAttachment) Close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	a.links = nil
	return errors.Join(errs...)
}

// Detach removes the programs from the cgroup, pinned or not.
func (a *CgroupAttachment) Detach() error {
	var errs []error
	for _, l := range a.links {
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link: %w", err))
		}
	}
	return errors.Join(append(errs, a.Close())...)
}

// CgroupV2Root returns the mounted cgroup v2 hierarchy the redirection
// programs attach to: /sys/fs/cgroup on a unified layout,
// /sys/fs/cgroup/unified on a hybrid one.
func CgroupV2Root() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}
