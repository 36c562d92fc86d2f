//go:build linux

package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NetnsCookie returns the cookie of the network namespace at path (for
// example /proc/<pid>/ns/net or a bind mount under /run/netns): the key
// Redirect.OptIn takes, and what bpf_get_netns_cookie returns in the programs.
func NetnsCookie(path string) (uint64, error) {
	ns, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open netns: %w", err)
	}
	defer ns.Close()

	type result struct {
		cookie uint64
		err    error
	}
	done := make(chan result, 1)
	// A socket created in the namespace carries its cookie. The switch
	// happens on a thread of its own; if switching back fails, the goroutine
	// returns still locked and the runtime discards the thread.
	go func() {
		runtime.LockOSThread()
		cookie, restored, err := cookieIn(int(ns.Fd()))
		if restored {
			runtime.UnlockOSThread()
		}
		done <- result{cookie, err}
	}()
	r := <-done
	if r.err != nil {
		return 0, fmt.Errorf("netns cookie of %s: %w", path, r.err)
	}
	return r.cookie, nil
}

func cookieIn(nsFD int) (cookie uint64, restored bool, err error) {
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return 0, true, err
	}
	defer self.Close()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		return 0, true, fmt.Errorf("enter netns: %w", err)
	}
	fd, sockErr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		if sockErr == nil {
			unix.Close(fd)
		}
		return 0, false, fmt.Errorf("return to own netns: %w", err)
	}
	if sockErr != nil {
		return 0, true, fmt.Errorf("socket: %w", sockErr)
	}
	defer unix.Close(fd)
	cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, true, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return cookie, true, nil
}

// soOriginalDst is SO_ORIGINAL_DST from linux/netfilter_ipv4.h.
const soOriginalDst = 80

// OriginalDst returns what getsockopt(SOL_IP, SO_ORIGINAL_DST) says for a
// connection the proxy accepted: the Service address the client connected to
// before it was redirected. It is the query Envoy's original_dst listener
// filter makes; tests and Go proxies can use this helper.
func OriginalDst(c syscall.Conn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	var (
		sa    unix.RawSockaddrInet4
		opErr error
	)
	err = rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, soOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			opErr = errno
		}
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: family %d: %w", sa.Family, ErrNotIPv4)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}
