//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// ErrNotIPv4 is returned for an address or prefix that is not IPv4: the
// programs handle IPv4 only.
var ErrNotIPv4 = errors.New("not an IPv4 address")

// LoadOptions configure LoadPolicy and LoadRedirect.
type LoadOptions struct {
	// PinPath is a directory on a bpffs. When set, every map is pinned there
	// under its name (nm_*), and maps already pinned there are reused, so
	// policy, conntrack and redirection state survive an agent restart. A pinned
	// map whose type, key, value or size no longer matches the program fails the
	// load with an error wrapping ebpf.ErrMapIncompatible.
	PinPath string
	// ConntrackTCPLifetime and ConntrackOtherLifetime are how long an idle
	// conntrack entry is honoured (policy only). Zero keeps the defaults:
	// 6 hours for TCP, 60 seconds for everything else.
	ConntrackTCPLifetime   time.Duration
	ConntrackOtherLifetime time.Duration
}

// loadCollection loads spec into to (a bpf2go objects struct), pinning maps
// by name under opts.PinPath when it is set.
func loadCollection(spec *ebpf.CollectionSpec, to any, opts LoadOptions) error {
	var copts ebpf.CollectionOptions
	if opts.PinPath != "" {
		if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
			return fmt.Errorf("create pin directory: %w", err)
		}
		// CollectionOptions.Maps.PinPath only pins maps that ask for it;
		// internal maps (.rodata and the like) hold per-load constants and
		// are never shared.
		for name, m := range spec.Maps {
			if !strings.HasPrefix(name, ".") {
				m.Pinning = ebpf.PinByName
			}
		}
		copts.Maps.PinPath = opts.PinPath
	}
	if err := spec.LoadAndAssign(to, &copts); err != nil {
		return err
	}
	return nil
}
