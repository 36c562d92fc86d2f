//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Sizes of the socket load balancing maps (c/socklb.h); TestMapLayouts
// checks them against the object.
const (
	// MaxLBServiceEntries is nm_lb_services' size: every frontend takes one
	// master entry plus one per backend slot.
	MaxLBServiceEntries = 131072
	// MaxLBBackends is nm_lb_backends' size: distinct backends
	// {address, port, protocol} over all frontends.
	MaxLBBackends = 65536
)

// LBKey is a key of nm_lb_services (struct lb4_key): a frontend (Service
// address, port, protocol) and a slot: 0 is the frontend's master entry,
// 1..count its backend slots.
type LBKey struct {
	Address [4]byte
	Port    uint16 // host order
	Slot    uint16
	Proto   uint8
	Pad     [3]uint8
}

// LBService is a value of nm_lb_services (struct lb4_service): in a master
// entry, Count backend slots (0: connections are refused); in a slot, the
// backend's id.
type LBService struct {
	BackendID uint32
	Count     uint16
	Flags     uint16
}

// LBBackend is a value of nm_lb_backends (struct lb4_backend).
type LBBackend struct {
	Address [4]byte
	Port    uint16 // host order
	Proto   uint8
	Flags   uint8
}

// lbRevNATKey and lbRevNAT mirror struct lb4_revnat_key and struct
// lb4_revnat.
type lbRevNATKey struct {
	Cookie  uint64
	Address [4]byte
	Port    uint16
	Pad     uint16
}

type lbRevNAT struct {
	Address [4]byte
	Port    uint16
	Pad     uint16
}

// NewLBKey is the key of frontend addr/proto's slot.
func NewLBKey(addr netip.AddrPort, proto uint8, slot uint16) (LBKey, error) {
	if !addr.Addr().Is4() {
		return LBKey{}, fmt.Errorf("frontend %s: %w", addr, ErrNotIPv4)
	}
	return LBKey{Address: addr.Addr().As4(), Port: addr.Port(), Slot: slot, Proto: proto}, nil
}

// Frontend is the key's frontend address.
func (k LBKey) Frontend() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(k.Address), k.Port)
}

// Addr is the backend's address.
func (b LBBackend) Addr() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(b.Address), b.Port)
}

// PutLBService writes an entry of the services map.
func (r *Redirect) PutLBService(k LBKey, v LBService) error {
	if err := r.objs.NmLbServices.Put(&k, &v); err != nil {
		return fmt.Errorf("put lb service %s/%d slot %d: %w", k.Frontend(), k.Proto, k.Slot, err)
	}
	return nil
}

// DeleteLBService deletes an entry of the services map; a missing entry is
// not an error.
func (r *Redirect) DeleteLBService(k LBKey) error {
	if err := r.objs.NmLbServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete lb service %s/%d slot %d: %w", k.Frontend(), k.Proto, k.Slot, err)
	}
	return nil
}

// PutLBBackend writes backend id (≥ 1).
func (r *Redirect) PutLBBackend(id uint32, b LBBackend) error {
	if id == 0 {
		return errors.New("put lb backend: id 0 is not a backend")
	}
	if err := r.objs.NmLbBackends.Put(id, &b); err != nil {
		return fmt.Errorf("put lb backend %d (%s): %w", id, b.Addr(), err)
	}
	return nil
}

// DeleteLBBackend deletes backend id; a missing one is not an error.
func (r *Redirect) DeleteLBBackend(id uint32) error {
	if err := r.objs.NmLbBackends.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete lb backend %d: %w", id, err)
	}
	return nil
}

// LBServices lists the services map.
func (r *Redirect) LBServices() (map[LBKey]LBService, error) {
	out := map[LBKey]LBService{}
	var (
		k LBKey
		v LBService
	)
	it := r.objs.NmLbServices.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list lb services: %w", err)
	}
	return out, nil
}

// LBBackends lists the backends map.
func (r *Redirect) LBBackends() (map[uint32]LBBackend, error) {
	out := map[uint32]LBBackend{}
	var (
		k uint32
		v LBBackend
	)
	it := r.objs.NmLbBackends.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list lb backends: %w", err)
	}
	return out, nil
}
