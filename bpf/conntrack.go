//go:build linux

package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// ctKey and ctEntry mirror struct ct_key / struct ct_entry in c/policy.c.
// Entries are keyed from the endpoint's point of view (local = the pod side),
// so the packets of a flow and its replies find the same entry.
type ctKey struct {
	Ifindex    uint32
	Local      [4]byte
	Remote     [4]byte
	LocalPort  uint16
	RemotePort uint16
	Proto      uint8
	Pad        [3]uint8
}

type ctEntry struct {
	Expires        uint64 // bpf_ktime_get_coarse_ns deadline
	PolicyRevision uint32
	Origin         Direction // direction of the packet that opened the flow
	Flags          ctFlags
	LocalOrigin    uint8 // opened towards the pod by a socket of the node
	Pad            uint8
}

// ctFlags mirrors the CT_F_* flags of struct ct_entry. An entry without
// flags carries its flow both ways (the origin's packets and the replies).
type ctFlags uint8

const (
	ctRevoked   ctFlags = 1 << iota // origin re-decided as denied: a tombstone that carries nothing
	ctMidstream                     // TCP flow picked up without its SYN: no known origin
	ctOKIngress                     // mid-stream: packets into the pod allowed at the entry's revision
	ctOKEgress                      // mid-stream: packets out of the pod allowed at the entry's revision
)

// FlushConntrack removes every conntrack entry of the endpoint on ifindex and
// returns how many it removed. After a flush, the next packet of each of the
// endpoint's flows is decided as a new flow (so a reply may then be dropped);
// a TCP packet without SYN then opens a mid-stream entry that carries its own
// direction only, so the replying side cannot re-open the other direction.
func (p *Policy) FlushConntrack(ifindex int) (int, error) {
	var (
		k     ctKey
		v     ctEntry
		stale []ctKey
	)
	it := p.objs.NmCt.Iterate()
	for it.Next(&k, &v) {
		if k.Ifindex == uint32(ifindex) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate conntrack of ifindex %d: %w", ifindex, err)
	}
	n := 0
	for i := range stale {
		err := p.objs.NmCt.Delete(&stale[i])
		switch {
		case err == nil:
			n++
		case errors.Is(err, ebpf.ErrKeyNotExist): // evicted meanwhile
		default:
			return n, fmt.Errorf("flush conntrack of ifindex %d: %w", ifindex, err)
		}
	}
	return n, nil
}
