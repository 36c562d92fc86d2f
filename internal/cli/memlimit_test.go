package cli

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup, max string
		want              int64
	}{
		{"pod cgroup", "0::/kubepods/burstable/pod1/c1\n", "314572800\n", 314572800},
		{"cgroup namespace", "0::/\n", "1073741824\n", 1073741824},
		{"no limit", "0::/user.slice\n", "max\n", 0},
		{"cgroup v1 only", "12:memory:/docker/abc\n", "", 0},
		{"garbage", "0::/x\n", "lots\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			write := func(p, data string) {
				p = filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("proc/self/cgroup", tc.cgroup)
			if tc.max != "" {
				path := tc.cgroup[3 : len(tc.cgroup)-1]
				write(filepath.Join("sys/fs/cgroup", path, "memory.max"), tc.max)
			}
			if got := cgroupMemoryLimit(root); got != tc.want {
				t.Errorf("limit %d, want %d", got, tc.want)
			}
		})
	}
	if got := cgroupMemoryLimit(t.TempDir()); got != 0 {
		t.Errorf("without /proc: %d", got)
	}
}

func TestSetMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc/self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "sys/fs/cgroup/pod"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/self/cgroup"), []byte("0::/pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sys/fs/cgroup/pod/memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOMEMLIMIT", "")
	if got := setMemoryLimit(root); got != 900000000 || debug.SetMemoryLimit(-1) != 900000000 {
		t.Errorf("limit %d (runtime %d), want 90%% of the cgroup's", got, debug.SetMemoryLimit(-1))
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := setMemoryLimit(root); got != 0 {
		t.Errorf("GOMEMLIMIT set, but the limit was changed to %d", got)
	}
}
