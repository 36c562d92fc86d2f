//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on an OS thread switched into the network namespace at
// path ("" runs fn in place, in the process's namespace). Netlink calls,
// sysctl writes under /proc/sys/net and tcx attachment by ifindex all act on
// the calling thread's namespace; this is how the agent does them in the
// node's namespace when that is not its own (tests), and in pods'.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
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
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine ends.
			done <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// netlinkAt returns a netlink handle bound to the namespace at path (""
// for the process's own).
func netlinkAt(path string) (*netlink.Handle, error) {
	if path == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return h, nil
}

// DefaultSysctlNetDir is where the network sysctls are, outside a
// container.
const DefaultSysctlNetDir = "/proc/sys/net"

// netSysctls is a directory showing /proc/sys/net: /proc/sys/net itself,
// or a bind mount of the host's in a container, whose /proc/sys the
// runtime mounts read-only unless the container is privileged. Either
// way the kernel shows each thread the sysctls of its own network
// namespace, so the agent writes a pod's by switching a thread into the
// pod's namespace (inNetns), whatever the mount.
type netSysctls string

// write sets net.<name> (name relative to the directory: ipv4/ip_forward)
// in the calling thread's network namespace.
func (d netSysctls) write(name, value string) error {
	if err := os.WriteFile(filepath.Join(string(d), name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl net/%s=%s: %w", name, value, err)
	}
	return nil
}
