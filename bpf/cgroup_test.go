//go:build linux

package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// cgroup2Root returns a cgroup v2 mount: /sys/fs/cgroup/unified on a hybrid
// layout, /sys/fs/cgroup on a unified one, or a private mount made for the
// test (all show the same single hierarchy).
func cgroup2Root(t testing.TB) string {
	t.Helper()
	if dir, err := CgroupV2Root(); err == nil {
		return dir
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		t.Skipf("skipped: no cgroup v2 mount and mounting one failed: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount cgroup2 at %s: %v", dir, err)
		}
	})
	return dir
}

// ownCgroup is this process's cgroup v2 path, relative to the mount.
func ownCgroup() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// enterTestCgroup creates a child cgroup, moves the whole test process into
// it and, on cleanup, moves the process back and removes the child.
func enterTestCgroup(t testing.TB) string {
	t.Helper()
	root := cgroup2Root(t)
	orig, err := ownCgroup()
	if err != nil {
		t.Fatal(err)
	}
	origDir := filepath.Join(root, orig)
	dir := filepath.Join(root, fmt.Sprintf("nodemesh-bpf-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup %s: %v", dir, err)
		}
	})
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		t.Fatalf("move the test process into %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(origDir, "cgroup.procs"), pid, 0); err != nil {
			t.Errorf("move the test process back to %s: %v", origDir, err)
		}
	})
	return dir
}
