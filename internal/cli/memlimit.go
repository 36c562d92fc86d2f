package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of a container's memory limit given to the Go
// heap as its soft limit; the rest is for what the runtime does not count
// (stacks, fragmentation, the binary's own mappings).
const memoryLimitShare = 0.9

// cgroupMemoryLimit returns the cgroup v2 memory limit of this process
// (memory.max of its cgroup, found through /proc/self/cgroup under root),
// or 0 when there is none.
func cgroupMemoryLimit(root string) int64 {
	f, err := os.Open(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// cgroup v2: "0::/kubepods/burstable/pod…/…" (or "0::/" inside a
		// cgroup namespace).
		path, ok := strings.CutPrefix(s.Text(), "0::")
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, "sys/fs/cgroup", path, "memory.max"))
		if err != nil {
			return 0
		}
		v := strings.TrimSpace(string(data))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return n
	}
	return 0
}

// setMemoryLimit gives the Go runtime a soft memory limit below the
// container's, unless GOMEMLIMIT sets one. Without it the heap may grow to
// twice what is live before a collection: a controller whose live heap is
// 200 MB would be killed by a 300 MB container limit it never needed to
// reach. It returns the limit set (0: none).
func setMemoryLimit(root string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	max := cgroupMemoryLimit(root)
	if max == 0 {
		return 0
	}
	limit := int64(float64(max) * memoryLimitShare)
	debug.SetMemoryLimit(limit)
	return limit
}
