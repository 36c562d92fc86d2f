//go:build linux

package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Port ranges (NetworkPolicy endPort) are held exactly by nm_policy_ranges,
// an LPM trie keyed by (endpoint, peer, direction, protocol, port prefix):
// a range is decomposed into prefix-aligned power-of-two blocks of ports
// (PortBlocks), at most 30 for any range, and the programs look the flow's
// port up once per peer (its longest containing block decides). Single
// ports and "every port" stay in the nm_policy hash (PolicyKey), whose
// exact lookup is the cheaper one.

// rangeFixedBits is POLICY_RANGE_FIXED_BITS in c/policy_maps.h: the key
// bits before the port (endpoint, peer, direction, protocol).
const rangeFixedBits = 80

// PortBlock is the 2^(16-Bits) destination ports starting at Port, whose
// first Bits bits are fixed (Port is a multiple of the block's size).
type PortBlock struct {
	Port uint16
	Bits uint8
}

// Last is the block's last port.
func (b PortBlock) Last() uint16 { return b.Port | uint16(uint32(1)<<(16-b.Bits)-1) }

// Contains reports whether o lies within b.
func (b PortBlock) Contains(o PortBlock) bool {
	return o.Bits >= b.Bits && o.Port&^uint16(uint32(1)<<(16-b.Bits)-1) == b.Port
}

func (b PortBlock) String() string {
	if b.Bits == 16 {
		return fmt.Sprint(b.Port)
	}
	return fmt.Sprintf("%d-%d", b.Port, b.Last())
}

// PortBlocks decomposes the ports first..last into the fewest prefix-aligned
// blocks, in port order: every port of the range is in exactly one block
// and no other port in any. Empty when last < first.
func PortBlocks(first, last uint16) []PortBlock {
	var out []PortBlock
	for p := uint32(first); p <= uint32(last); {
		// The largest block starting at p (aligned) that ends by last.
		bits := uint8(0)
		for ; bits < 16; bits++ {
			size := uint32(1) << (16 - bits)
			if p%size == 0 && p+size-1 <= uint32(last) {
				break
			}
		}
		out = append(out, PortBlock{Port: uint16(p), Bits: bits})
		p += uint32(1) << (16 - bits)
	}
	return out
}

// PortRangeKey is an entry of the port range map: the flows of an endpoint
// (as PolicyKey.Endpoint) with a peer (IdentityAny: every peer) in a
// direction, of one protocol (never ProtoAny: the program looks ranges up
// only with the packet's protocol), to a block of destination ports.
type PortRangeKey struct {
	Endpoint Identity
	Peer     Identity
	Dir      Direction
	Proto    uint8
	Block    PortBlock
}

// NormalizeRanges removes the allow entries that lie within a deny entry of
// the same endpoint, peer, direction and protocol. The longest block that
// contains a port decides, so such an allow would hide the deny; without
// it the deny decides (deny wins, as in the hash). The maps must only ever
// hold normalized sets (the agent's map-sync ordering relies on it).
func NormalizeRanges(m map[PortRangeKey]Verdict) {
	for k, v := range m {
		if v != Allow {
			continue
		}
		for bits := int(k.Block.Bits) - 1; bits >= 0; bits-- {
			outer := k
			outer.Block = PortBlock{Port: k.Block.Port &^ uint16(uint32(1)<<(16-bits)-1), Bits: uint8(bits)}
			if m[outer] == Deny {
				delete(m, k)
				break
			}
		}
	}
}

// RangeVerdict is what the program's lookup finds for port: the verdict of
// the longest block of k's group that contains it, or 0.
func RangeVerdict(m map[PortRangeKey]Verdict, k PortRangeKey, port uint16) Verdict {
	for bits := 16; bits >= 0; bits-- {
		k.Block = PortBlock{Port: port &^ uint16(uint32(1)<<(16-bits)-1), Bits: uint8(bits)}
		if v, ok := m[k]; ok {
			return v
		}
	}
	return 0
}

// rangeKey is the layout of struct policy_range_key in c/policy_maps.h.
type rangeKey struct {
	Prefixlen uint32
	Endpoint  uint32
	Peer      uint32
	Dir       uint8
	Proto     uint8
	Port      [2]byte // network order
}

func (k PortRangeKey) raw() (rangeKey, error) {
	if k.Block.Bits > 16 || k.Block.Port&^uint16(uint32(0xffff0000)>>k.Block.Bits) != 0 {
		return rangeKey{}, fmt.Errorf("port block %d/%d is not aligned", k.Block.Port, k.Block.Bits)
	}
	return rangeKey{Prefixlen: rangeFixedBits + uint32(k.Block.Bits), Endpoint: uint32(k.Endpoint), Peer: uint32(k.Peer),
		Dir: uint8(k.Dir), Proto: k.Proto, Port: [2]byte{byte(k.Block.Port >> 8), byte(k.Block.Port)}}, nil
}

func (r rangeKey) key() PortRangeKey {
	return PortRangeKey{Endpoint: Identity(r.Endpoint), Peer: Identity(r.Peer), Dir: Direction(r.Dir), Proto: r.Proto,
		Block: PortBlock{Port: uint16(r.Port[0])<<8 | uint16(r.Port[1]), Bits: uint8(r.Prefixlen - rangeFixedBits)}}
}

// PutPortRanges creates or replaces port range entries, one syscall each
// (an LPM trie has no batch update); verdicts[i] is the verdict of keys[i].
func (p *Policy) PutPortRanges(keys []PortRangeKey, verdicts []Verdict) error {
	if len(keys) != len(verdicts) {
		return fmt.Errorf("put port ranges: %d keys but %d verdicts", len(keys), len(verdicts))
	}
	for i, k := range keys {
		rk, err := k.raw()
		if err != nil {
			return fmt.Errorf("put port range %+v: %w", k, err)
		}
		if err := p.objs.NmPolicyRanges.Put(&rk, uint32(verdicts[i])); err != nil {
			return fmt.Errorf("put port range %+v: %w", k, err)
		}
	}
	return nil
}

// DeletePortRanges removes port range entries, ignoring those that do not
// exist.
func (p *Policy) DeletePortRanges(keys []PortRangeKey) error {
	for _, k := range keys {
		rk, err := k.raw()
		if err != nil {
			return fmt.Errorf("delete port range %+v: %w", k, err)
		}
		if err := p.objs.NmPolicyRanges.Delete(&rk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete port range %+v: %w", k, err)
		}
	}
	return nil
}

// PortRanges returns every port range entry.
func (p *Policy) PortRanges() (map[PortRangeKey]Verdict, error) {
	out := map[PortRangeKey]Verdict{}
	var (
		k rangeKey
		v uint32
	)
	it := p.objs.NmPolicyRanges.Iterate()
	for it.Next(&k, &v) {
		out[k.key()] = Verdict(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list port ranges: %w", err)
	}
	return out, nil
}
