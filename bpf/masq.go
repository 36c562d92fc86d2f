//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Masq is the loaded masquerading programs (c/masq.c) and their maps: the
// SNAT of this node's pods' traffic leaving through an uplink to a
// destination outside the cluster, and the reverse translation of the
// replies. Its methods are safe for concurrent use.
type Masq struct {
	objs masqObjects
}

// MasqLifetimes are how long an idle translation lives. Zero keeps the
// defaults: 6 hours for TCP, 60 seconds for UDP and ICMP echo, 10 seconds
// for a TCP flow after its FIN or RST.
type MasqLifetimes struct {
	TCP, Other, Closing time.Duration
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max uint16
}

// Size is the number of ports in the range (0 for an invalid one).
func (r PortRange) Size() int {
	if r.Min == 0 || r.Max < r.Min {
		return 0
	}
	return int(r.Max) - int(r.Min) + 1
}

// Overlaps reports whether two ranges share a port.
func (r PortRange) Overlaps(o PortRange) bool {
	return r.Size() > 0 && o.Size() > 0 && r.Min <= o.Max && o.Min <= r.Max
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// masqConfig mirrors struct masq_cfg in c/masq.c.
type masqConfig struct {
	PodNet, PodMask  [4]byte
	PortMin, PortMax uint16
	Enabled          uint32
}

// MasqKey mirrors struct masq_key in c/masq.c: a tuple as one direction's
// packets carry it (ports in host order; ICMP echo: the identifier as the
// pod's port, 0 as the remote's).
type MasqKey struct {
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	Proto            uint8
	Pad              [3]byte
}

// masqEntry mirrors struct masq_entry in c/masq.c.
type masqEntry struct {
	Expires uint64
	Addr    [4]byte
	Port    uint16
	Closing uint8
	Pad     uint8
}

// Translation is one live masquerading: the pod's tuple and the address
// and port it leaves with.
type Translation struct {
	Pod     netip.AddrPort // the pod's address and port (ICMP: identifier)
	Remote  netip.AddrPort
	Proto   uint8
	NAT     netip.AddrPort
	Closing bool
}

// MasqReason is what a masquerading program did; counted per reason.
// Values match enum masq_reason in c/masq.c.
type MasqReason uint32

const (
	MasqSNAT          MasqReason = iota // out: translated
	MasqRNAT                            // in: translated back
	MasqExcluded                        // out: pod source, destination not masqueraded
	MasqInNoEntry                       // in: to the NAT address, no live translation: the host's, untouched
	MasqDropFragment                    // out: a fragment that would need masquerading
	MasqDropProto                       // out: neither TCP, UDP nor ICMP echo request
	MasqDropNoPort                      // out: no free NAT port for that remote
	MasqDropNoAddr                      // out: the uplink has no IPv4 address
	MasqDropMalformed                   // out: truncated header
	MasqDirect                          // out: a reply of a flow opened from outside, untouched
	MasqDirectIn                        // in: a flow from outside to a pod, recorded
	NumMasqReasons                      // number of reasons; not a reason
)

var masqReasonNames = [NumMasqReasons]string{"snat", "reverse-snat", "excluded", "in-no-entry", "drop-fragment",
	"drop-protocol", "drop-no-port", "drop-no-address", "drop-malformed", "direct", "direct-in"}

func (r MasqReason) String() string {
	if r < NumMasqReasons {
		return masqReasonNames[r]
	}
	return fmt.Sprintf("masq-reason(%d)", uint32(r))
}

// LoadMasq loads the masquerading programs and maps. Nothing is
// translated before SetMasqConfig, SetAddresses and attaching.
func LoadMasq(opts LoadOptions, lt MasqLifetimes) (*Masq, error) {
	spec, err := loadMasq()
	if err != nil {
		return nil, fmt.Errorf("load masquerading spec: %w", err)
	}
	for name, d := range map[string]time.Duration{masqVarMasqLifetimeTcpNs: lt.TCP, masqVarMasqLifetimeOtherNs: lt.Other,
		masqVarMasqLifetimeClosingNs: lt.Closing} {
		if d < 0 {
			return nil, fmt.Errorf("masquerading lifetime %s: %v is negative", name, d)
		}
		if d > 0 {
			if err := spec.Variables[name].Set(uint64(d.Nanoseconds())); err != nil {
				return nil, fmt.Errorf("set %s: %w", name, err)
			}
		}
	}
	m := &Masq{}
	if err := loadCollection(spec, &m.objs, opts); err != nil {
		return nil, fmt.Errorf("load masquerading programs: %w", err)
	}
	return m, nil
}

// Close releases the programs and maps. Attachments and pins keep what they
// reference alive.
func (m *Masq) Close() error { return m.objs.Close() }

// SetConfig turns masquerading on for sources in podCIDR (this node's pod
// CIDR), with NAT ports from ports. An invalid podCIDR turns it off.
func (m *Masq) SetConfig(podCIDR netip.Prefix, ports PortRange) error {
	var c masqConfig
	if podCIDR.IsValid() {
		if !podCIDR.Addr().Is4() {
			return fmt.Errorf("masquerading pod CIDR %s: %w", podCIDR, ErrNotIPv4)
		}
		if ports.Size() == 0 {
			return fmt.Errorf("masquerading port range %s: empty", ports)
		}
		podCIDR = podCIDR.Masked()
		c.PodNet = podCIDR.Addr().As4()
		copy(c.PodMask[:], net.CIDRMask(podCIDR.Bits(), 32))
		c.PortMin, c.PortMax, c.Enabled = ports.Min, ports.Max, 1
	}
	if err := m.objs.NmMasqCfg.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write the masquerading configuration: %w", err)
	}
	return nil
}

// SetAddresses makes the masquerading addresses those of addrs (uplink
// ifindex → its IPv4 address), deleting the others.
func (m *Masq) SetAddresses(addrs map[int]netip.Addr) error {
	var errs []error
	var (
		k uint32
		v [4]byte
	)
	have := map[uint32][4]byte{}
	it := m.objs.NmMasqAddrs.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list masquerading addresses: %w", err)
	}
	for ifindex, a := range addrs {
		if !a.Is4() {
			return fmt.Errorf("masquerading address %s of ifindex %d: %w", a, ifindex, ErrNotIPv4)
		}
		if cur, ok := have[uint32(ifindex)]; ok && cur == a.As4() {
			continue
		}
		if err := m.objs.NmMasqAddrs.Put(uint32(ifindex), a.As4()); err != nil {
			errs = append(errs, fmt.Errorf("masquerading address %s of ifindex %d: %w", a, ifindex, err))
		}
	}
	for ifindex := range have {
		if _, ok := addrs[int(ifindex)]; !ok {
			if err := m.objs.NmMasqAddrs.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete masquerading address of ifindex %d: %w", ifindex, err))
			}
		}
	}
	return errors.Join(errs...)
}

// SetExclusions makes the destinations never masqueraded exactly
// prefixes (IPv4), adding and deleting entries one by one so that a
// destination that stays excluded is never masqueraded meanwhile.
func (m *Masq) SetExclusions(prefixes []netip.Prefix) error {
	want := map[ipcacheKey]bool{}
	for _, p := range prefixes {
		if !p.Addr().Is4() {
			return fmt.Errorf("masquerading exclusion %s: %w", p, ErrNotIPv4)
		}
		p = p.Masked()
		want[ipcacheKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}] = true
	}
	var (
		k ipcacheKey
		v uint8
	)
	var stale []ipcacheKey
	have := map[ipcacheKey]bool{}
	it := m.objs.NmMasqSkip.Iterate()
	for it.Next(&k, &v) {
		have[k] = true
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list masquerading exclusions: %w", err)
	}
	var errs []error
	for k := range want {
		if have[k] {
			continue
		}
		if err := m.objs.NmMasqSkip.Put(&k, uint8(1)); err != nil {
			errs = append(errs, fmt.Errorf("add masquerading exclusion %v/%d: %w", netip.AddrFrom4(k.Addr), k.Prefixlen, err))
		}
	}
	for _, k := range stale {
		if err := m.objs.NmMasqSkip.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete masquerading exclusion %v/%d: %w", netip.AddrFrom4(k.Addr), k.Prefixlen, err))
		}
	}
	return errors.Join(errs...)
}

// Exclusions lists the destinations never masqueraded.
func (m *Masq) Exclusions() ([]netip.Prefix, error) {
	var (
		k   ipcacheKey
		v   uint8
		out []netip.Prefix
	)
	it := m.objs.NmMasqSkip.Iterate()
	for it.Next(&k, &v) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list masquerading exclusions: %w", err)
	}
	return out, nil
}

// Translations lists the live and expired translations of nm_masq_out
// (expiry is not visible here: the programs compare it with the kernel's
// clock).
func (m *Masq) Translations() ([]Translation, error) {
	var (
		k   MasqKey
		v   masqEntry
		out []Translation
	)
	it := m.objs.NmMasqOut.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Translation{Pod: netip.AddrPortFrom(netip.AddrFrom4(k.Src), k.SrcPort),
			Remote: netip.AddrPortFrom(netip.AddrFrom4(k.Dst), k.DstPort), Proto: k.Proto,
			NAT: netip.AddrPortFrom(netip.AddrFrom4(v.Addr), v.Port), Closing: v.Closing != 0})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list translations: %w", err)
	}
	return out, nil
}

// ReverseEntries is the number of entries of nm_masq_in (the NAT ports
// held), for fill-level metrics and tests.
func (m *Masq) ReverseEntries() (int, error) {
	var (
		k MasqKey
		v masqEntry
		n int
	)
	it := m.objs.NmMasqIn.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("list reverse translations: %w", err)
	}
	return n, nil
}

// Counters returns the per-reason counts since the map was created, summed
// over CPUs.
func (m *Masq) Counters() ([NumMasqReasons]uint64, error) {
	var out [NumMasqReasons]uint64
	var perCPU []uint64
	for r := range NumMasqReasons {
		if err := m.objs.NmMasqStats.Lookup(uint32(r), &perCPU); err != nil {
			return out, fmt.Errorf("read masquerading counter %s: %w", r, err)
		}
		for _, c := range perCPU {
			out[r] += c
		}
	}
	return out, nil
}

// AttachUplink attaches masq_out to the egress hook and masq_in to the
// ingress hook of uplink ifindex (resolved in the calling thread's network
// namespace), with tcx: masq_in first at its hook, so that from_uplink and
// the stack see the pod's address. pinOut and pinIn are the links' pins
// (see AttachOptions.PinPath). Kernels without tcx (before 6.6) get an
// error wrapping ebpf.ErrNotSupported.
func (m *Masq) AttachUplink(ifindex int, pinOut, pinIn string) (out, in *TCAttachment, err error) {
	// AttachTC's directions are the pod's: Ingress is the interface's
	// egress hook.
	out, err = AttachTC(m.objs.MasqOut, ifindex, Ingress, AttachOptions{Mode: AttachTCX, PinPath: pinOut})
	if err != nil {
		return nil, nil, fmt.Errorf("masq_out: %w", err)
	}
	in, err = AttachTC(m.objs.MasqIn, ifindex, Egress, AttachOptions{Mode: AttachTCX, PinPath: pinIn, First: true})
	if err != nil {
		_ = out.Close()
		return nil, nil, fmt.Errorf("masq_in: %w", err)
	}
	return out, in, nil
}
