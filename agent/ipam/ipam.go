// Package ipam is the agent's address allocator for the node's pod CIDR.
//
// Every lease is a file under the state directory (leases/<address>),
// created with O_EXCL and synced before the address is handed out, so an
// agent restart or crash never hands out an address twice. Leases are keyed
// by (container ID, interface name), which makes allocation idempotent: a
// repeated ADD gets the address it already has. Allocation is round-robin
// from the last address handed out, so a released address is not reused at
// once (stale conntrack entries and caches of the old pod age out first).
//
// The package depends only on the standard library.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// ErrExhausted is returned when every address of the range is leased.
var ErrExhausted = errors.New("no free address in the pod CIDR")

// Owner is who holds a lease.
type Owner struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Namespace and Name are the pod's, for people reading the files.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

func (o Owner) same(other Owner) bool {
	return o.ContainerID == other.ContainerID && o.IfName == other.IfName
}

// Store allocates addresses of one IPv4 prefix. It is safe for concurrent
// use, also by several processes (an flock serialises them).
type Store struct {
	dir  string
	cidr netip.Prefix
	mu   sync.Mutex
}

// Open opens (creating it if needed) the lease store in dir for cidr, an
// IPv4 prefix of at most /30. The first address after the network address is
// the gateway and is never leased; nor are the network and broadcast
// addresses.
func Open(dir string, cidr netip.Prefix) (*Store, error) {
	if !cidr.IsValid() || !cidr.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %s: not an IPv4 prefix", cidr)
	}
	if cidr.Bits() > 30 {
		return nil, fmt.Errorf("pod CIDR %s: too small (at most /30)", cidr)
	}
	if err := os.MkdirAll(filepath.Join(dir, "leases"), 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM directory: %w", err)
	}
	return &Store{dir: dir, cidr: cidr.Masked()}, nil
}

// Prefix is the range addresses come from.
func (s *Store) Prefix() netip.Prefix { return s.cidr }

// Gateway is the pods' gateway: the first address of the range.
func (s *Store) Gateway() netip.Addr { return s.cidr.Addr().Next() }

func (s *Store) broadcast() netip.Addr {
	a := s.cidr.Addr().As4()
	host := uint32(1)<<(32-s.cidr.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lock takes the store's in-process and cross-process locks.
func (s *Store) lock() (unlock func(), err error) {
	s.mu.Lock()
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("open IPAM lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		s.mu.Unlock()
		return nil, fmt.Errorf("lock IPAM store: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		s.mu.Unlock()
	}, nil
}

func (s *Store) leasePath(a netip.Addr) string { return filepath.Join(s.dir, "leases", a.String()) }

// leases reads every lease file. Files that do not parse are kept as leases
// of an unknown owner: an address is never handed out while its file exists.
func (s *Store) leases() (map[netip.Addr]Owner, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "leases"))
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	out := make(map[netip.Addr]Owner, len(ents))
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // a temporary or foreign file
		}
		var o Owner
		if data, err := os.ReadFile(filepath.Join(s.dir, "leases", e.Name())); err == nil {
			_ = json.Unmarshal(data, &o)
		}
		out[a] = o
	}
	return out, nil
}

// Leases returns every lease, for reconciliation and inspection.
func (s *Store) Leases() (map[netip.Addr]Owner, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.leases()
}

// Lookup returns the address leased to (containerID, ifName), if any.
func (s *Store) Lookup(containerID, ifName string) (netip.Addr, bool, error) {
	leases, err := s.Leases()
	if err != nil {
		return netip.Addr{}, false, err
	}
	a, ok := find(leases, Owner{ContainerID: containerID, IfName: ifName})
	return a, ok, nil
}

func find(leases map[netip.Addr]Owner, o Owner) (netip.Addr, bool) {
	var found []netip.Addr
	for a, lo := range leases {
		if lo.same(o) {
			found = append(found, a)
		}
	}
	if len(found) == 0 {
		return netip.Addr{}, false
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Less(found[j]) })
	return found[0], true
}

// Allocate leases an address to o, or returns the one o already holds.
func (s *Store) Allocate(o Owner) (netip.Addr, error) {
	if o.ContainerID == "" || o.IfName == "" {
		return netip.Addr{}, errors.New("allocate: container ID and interface name are required")
	}
	unlock, err := s.lock()
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	leases, err := s.leases()
	if err != nil {
		return netip.Addr{}, err
	}
	if a, ok := find(leases, o); ok {
		return a, nil
	}
	start := s.Gateway()
	if data, err := os.ReadFile(filepath.Join(s.dir, "last")); err == nil {
		if last, err := netip.ParseAddr(string(data)); err == nil && s.cidr.Contains(last) {
			start = last
		}
	}
	bcast := s.broadcast()
	next := func(a netip.Addr) netip.Addr {
		a = a.Next()
		if !s.cidr.Contains(a) || a == bcast {
			return s.Gateway().Next()
		}
		return a
	}
	data, err := json.Marshal(o)
	if err != nil {
		return netip.Addr{}, err
	}
	size := 1 << (32 - s.cidr.Bits())
	for a, i := next(start), 0; i < size; a, i = next(a), i+1 {
		if _, taken := leases[a]; taken || a == s.Gateway() {
			continue
		}
		if err := writeExclusive(s.leasePath(a), data); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return netip.Addr{}, fmt.Errorf("lease %s: %w", a, err)
		}
		// The round-robin position is a hint; losing it only changes which
		// free address comes next.
		_ = os.WriteFile(filepath.Join(s.dir, "last"), []byte(a.String()), 0o600)
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("%w %s (%d leases)", ErrExhausted, s.cidr, len(leases))
}

// writeExclusive creates path with data, failing if it exists, and syncs the
// file and its directory so the lease survives a crash.
func writeExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Release frees the lease of (containerID, ifName) and returns the address
// it had. Releasing a lease that does not exist is not an error.
func (s *Store) Release(containerID, ifName string) (netip.Addr, bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return netip.Addr{}, false, err
	}
	defer unlock()
	leases, err := s.leases()
	if err != nil {
		return netip.Addr{}, false, err
	}
	o := Owner{ContainerID: containerID, IfName: ifName}
	var freed netip.Addr
	for a, lo := range leases {
		if lo.same(o) {
			if err := os.Remove(s.leasePath(a)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return netip.Addr{}, false, fmt.Errorf("release %s: %w", a, err)
			}
			freed = a
		}
	}
	return freed, freed.IsValid(), nil
}
