package lbsync

import (
	"fmt"
	"net/netip"

	"github.com/nodemesh/nodemesh/bpf"
)

// Maps is what a plan is read from and applied to.
type Maps interface {
	LBServices() (map[bpf.LBKey]bpf.LBService, error)
	LBBackends() (map[uint32]bpf.LBBackend, error)
	PutLBService(k bpf.LBKey, v bpf.LBService) error
	DeleteLBService(k bpf.LBKey) error
	PutLBBackend(id uint32, b bpf.LBBackend) error
	DeleteLBBackend(id uint32) error
}

// Frontend is an address a socket connects or sends to: a ClusterIP or a
// node address with a Service port, and the protocol.
type Frontend struct {
	Addr  netip.AddrPort
	Proto uint8
}

func (f Frontend) String() string { return fmt.Sprintf("%s/%s", f.Addr, protoName(f.Proto)) }

// Backend is where a connection to a frontend goes instead.
type Backend struct {
	Addr  netip.AddrPort
	Proto uint8
}

func (b Backend) String() string { return fmt.Sprintf("%s/%s", b.Addr, protoName(b.Proto)) }

func protoName(p uint8) string {
	switch p {
	case bpf.ProtoTCP:
		return "tcp"
	case bpf.ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Want is the content the maps should reach: every frontend with its
// backends, in slot order. A frontend with no backend refuses connections.
type Want map[Frontend][]Backend

// State is what the maps hold.
type State struct {
	Services map[bpf.LBKey]bpf.LBService
	Backends map[uint32]bpf.LBBackend
}

// Read lists the maps.
func Read(m Maps) (State, error) {
	var s State
	var err error
	if s.Services, err = m.LBServices(); err != nil {
		return State{}, fmt.Errorf("read the lb services map: %w", err)
	}
	if s.Backends, err = m.LBBackends(); err != nil {
		return State{}, fmt.Errorf("read the lb backends map: %w", err)
	}
	return s, nil
}

func backendOf(b bpf.LBBackend) Backend {
	return Backend{Addr: b.Addr(), Proto: b.Proto}
}

func (b Backend) value() bpf.LBBackend {
	return bpf.LBBackend{Address: b.Addr.Addr().As4(), Port: b.Addr.Port(), Proto: b.Proto}
}

func (f Frontend) key(slot uint16) bpf.LBKey {
	return bpf.LBKey{Address: f.Addr.Addr().As4(), Port: f.Addr.Port(), Slot: slot, Proto: f.Proto}
}

func frontendOf(k bpf.LBKey) Frontend {
	return Frontend{Addr: k.Frontend(), Proto: k.Proto}
}
