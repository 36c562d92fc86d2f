//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/nodemesh/nodemesh/api"
)

// Inbound capture (docs/design/datapath.md, "Inbound capture"): TCP to a
// {local pod, port} under L7 (HTTP) AuthorizationPolicy is handed by
// from_pod and from_uplink to the node proxy's inbound listener, which
// enforces the policy and connects on to the pod with the client's address.

const (
	// ProxyInboundPort is the node proxy's inbound listener.
	ProxyInboundPort = api.InboundCapturePort
	// ProxyInboundSocketMark is the SO_MARK the node proxy sets on its
	// inbound listener (Envoy: the listener's socket_options, SOL_SOCKET
	// SO_MARK, STATE_PREBIND), which the connections it accepts inherit.
	// The programs hand captured packets only to sockets that carry it:
	// setting a mark needs CAP_NET_ADMIN, so a process that merely binds the
	// port gets nothing. It shares no bit with the proxy return mark
	// (agent.ProxyReturnMark), which would route the proxy's own replies
	// back to it.
	ProxyInboundSocketMark uint32 = api.InboundListenerMark
	// ProxyInboundUpstreamMark is the SO_MARK the node proxy's inbound
	// cluster must set on its upstream connections to the pod (Envoy: the
	// inbound listener's original_src filter, mark 0x539 — Istio's "do not
	// capture again"). cgroup/connect4 sends the node proxy's other upstream
	// connections to a captured {pod, port} of this node to the inbound
	// listener; this one must reach the pod, or it would loop. Setting it
	// needs CAP_NET_ADMIN. The outbound listener's original_src must not set
	// it: its upstream connections to a pod of this node would skip the
	// pod's L7 policy.
	ProxyInboundUpstreamMark uint32 = api.IstioSkipMark
	// MaxInboundCaptures is the size of nm_inbound.
	MaxInboundCaptures = 65536
)

// InboundProxy is where captured connections go (nm_inbound_cfg).
type InboundProxy struct {
	// Port is the proxy's inbound listener port in the node's network
	// namespace (ProxyInboundPort); 0 configures no proxy: the traffic of
	// every {pod, port} in nm_inbound is then dropped.
	Port uint16
	// Mark is set on captured packets for the policy routing rule that
	// delivers them locally (agent.ProxyReturnMark).
	Mark uint32
	// SocketMark is the SO_MARK of the proxy's sockets
	// (ProxyInboundSocketMark).
	SocketMark uint32
}

// inboundConfig is the value of nm_inbound_cfg. Layout matches struct
// inbound_cfg in c/policy.c.
type inboundConfig struct {
	PktMark, SockMark uint32
	Port              uint16
	_                 uint16
}

// inboundKey is the key of nm_inbound. Layout matches struct inbound_key in
// c/policy.c.
type inboundKey struct {
	Addr  [4]byte
	Port  [2]byte // network order
	Proto uint8
	_     uint8
}

// ErrBadInboundProxy is returned for an inbound proxy configuration the
// programs could not use safely.
var ErrBadInboundProxy = errors.New("bad inbound proxy configuration")

// SetInboundProxy configures the proxy that captured connections go to. A
// zero Port takes it away (captured traffic is then dropped, not passed):
// the whole configuration is zeroed. Otherwise both marks must be set and
// share no bit — a socket mark with the routing mark's bit would send the
// proxy's own packets back to it.
func (p *Policy) SetInboundProxy(c InboundProxy) error {
	var v inboundConfig
	if c.Port != 0 {
		switch {
		case c.Mark == 0 || c.SocketMark == 0:
			return fmt.Errorf("%w: the packet mark (%#x) and the socket mark (%#x) must both be set", ErrBadInboundProxy, c.Mark, c.SocketMark)
		case c.Mark&c.SocketMark != 0:
			return fmt.Errorf("%w: the socket mark %#x shares bits with the packet mark %#x", ErrBadInboundProxy, c.SocketMark, c.Mark)
		}
		v = inboundConfig{PktMark: c.Mark, SockMark: c.SocketMark, Port: c.Port}
	}
	if err := p.objs.NmInboundCfg.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("write the inbound proxy configuration: %w", err)
	}
	return nil
}

// InboundProxy returns the configuration SetInboundProxy wrote (zero when
// none).
func (p *Policy) InboundProxy() (InboundProxy, error) {
	var v inboundConfig
	if err := p.objs.NmInboundCfg.Lookup(uint32(0), &v); err != nil {
		return InboundProxy{}, fmt.Errorf("read the inbound proxy configuration: %w", err)
	}
	return InboundProxy{Port: v.Port, Mark: v.PktMark, SocketMark: v.SockMark}, nil
}

func inboundKeyOf(addr netip.Addr, port uint16) (inboundKey, error) {
	if !addr.Is4() {
		return inboundKey{}, fmt.Errorf("inbound capture of %s: %w", addr, ErrNotIPv4)
	}
	if port == 0 {
		return inboundKey{}, fmt.Errorf("inbound capture of %s: port 0", addr)
	}
	return inboundKey{Addr: addr.As4(), Port: [2]byte{byte(port >> 8), byte(port)}, Proto: ProtoTCP}, nil
}

// PutInboundCapture captures new TCP connections to addr:port (a pod of this
// node) into the inbound proxy, from local pods and from other nodes.
// Packets of connections opened before, which no proxy socket owns, are
// dropped or reset by the proxy's listener.
func (p *Policy) PutInboundCapture(addr netip.Addr, port uint16) error {
	k, err := inboundKeyOf(addr, port)
	if err != nil {
		return err
	}
	if err := p.objs.NmInbound.Put(&k, uint32(0)); err != nil {
		return fmt.Errorf("put inbound capture of %s: %w", netip.AddrPortFrom(addr, port), err)
	}
	return nil
}

// DeleteInboundCapture stops capturing addr:port for new connections (those
// the proxy holds lose their packets: they are no longer handed to it). A
// missing entry is fine.
func (p *Policy) DeleteInboundCapture(addr netip.Addr, port uint16) error {
	k, err := inboundKeyOf(addr, port)
	if err != nil {
		return err
	}
	if err := p.objs.NmInbound.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete inbound capture of %s: %w", netip.AddrPortFrom(addr, port), err)
	}
	return nil
}

// InboundCaptures lists nm_inbound, for the agent's sync and cleanup.
func (p *Policy) InboundCaptures() ([]netip.AddrPort, error) {
	var (
		out []netip.AddrPort
		k   inboundKey
		v   uint32
	)
	it := p.objs.NmInbound.Iterate()
	for it.Next(&k, &v) {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4(k.Addr), uint16(k.Port[0])<<8|uint16(k.Port[1])))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list inbound captures: %w", err)
	}
	return out, nil
}
