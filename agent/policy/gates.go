package policy

import (
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Gates (docs/design/policy.md §1.5, §4). In an Istio sidecar mesh a
// connection passes the CNI's NetworkPolicy and then the sidecar's
// AuthorizationPolicy: two enforcement points, each with its own default
// deny. nodemesh enforces both in one map, so each gate's entries are
// computed on their own and combined per endpoint:
//
//   - isolation: an endpoint is isolated in a direction if any gate isolates
//     it there;
//   - deny entries: every gate's, absolute (they win over every allow);
//   - allow entries, in a direction some gate isolates: exactly the flows
//     that every isolating gate allows — the meet of their allow entries
//     (a gate that does not isolate the direction allows every flow there);
//     in a direction no gate isolates, the union (they decide nothing).
//
// The meet is exact with wildcards: entries are keys of (peer or any peer)
// × (port, aligned port block or any port) × (protocol or any protocol),
// the datapath allows a flow when any key it matches holds an allow, and
// the meet of two such keys is again such a key (or nothing): a specific
// peer meets "any" as itself, aligned port blocks are nested or disjoint,
// a port meets "any port" as itself. So a flow matches a key of the meet
// exactly when it matches a key of each gate.

// gateOrder numbers the gates whose entries are computed apart.
var gateOrder = map[ir.PolicyGate]int{ir.GateNetwork: 0, ir.GateAuthorization: 1}

// gateIndex is the index of a gate's part of an endpoint's policy; gates
// this back end does not know get parts of their own, after the known ones
// (their allow policies keep no rules: they isolate and allow nothing).
func (t *translator) gateIndex(g ir.PolicyGate) int {
	if i, ok := gateOrder[g]; ok {
		return i
	}
	if t.extraGates == nil {
		t.extraGates = map[ir.PolicyGate]int{}
	}
	if i, ok := t.extraGates[g]; ok {
		return i
	}
	i := len(gateOrder) + len(t.extraGates)
	t.extraGates[g] = i
	return i
}

// allowKey is one allow entry of a gate in a form that meets: a port block
// (bits 16: one port) or any port, a protocol (0: any), a peer (IdentityAny:
// any).
type allowKey struct {
	peer    bpf.Identity
	proto   uint8
	anyPort bool
	block   bpf.PortBlock
}

// allows are a part's allow entries in one direction.
func allows(p *IdentityPolicy, dir bpf.Direction) []allowKey {
	var out []allowKey
	for k, v := range p.Entries {
		if v != bpf.Allow || k.Dir != dir {
			continue
		}
		switch {
		case k.Port == 0:
			out = append(out, allowKey{peer: k.Peer, proto: k.Proto, anyPort: true})
		case k.Proto != bpf.ProtoAny:
			out = append(out, allowKey{peer: k.Peer, proto: k.Proto, block: bpf.PortBlock{Port: k.Port, Bits: 16}})
		}
		// A port with any protocol is never looked up (the datapath looks
		// a port up with the packet's protocol): it allows nothing, so it
		// takes no part in the meet.
	}
	for k, v := range p.Ranges {
		if v == bpf.Allow && k.Dir == dir {
			out = append(out, allowKey{peer: k.Peer, proto: k.Proto, block: k.Block})
		}
	}
	return out
}

// meetKey is the flows both keys match; false when there are none.
func meetKey(a, b allowKey) (allowKey, bool) {
	var out allowKey
	switch {
	case a.peer == bpf.IdentityAny:
		out.peer = b.peer
	case b.peer == bpf.IdentityAny || a.peer == b.peer:
		out.peer = a.peer
	default:
		return out, false
	}
	switch {
	case a.proto == bpf.ProtoAny:
		out.proto = b.proto
	case b.proto == bpf.ProtoAny || a.proto == b.proto:
		out.proto = a.proto
	default:
		return out, false
	}
	switch {
	case a.anyPort:
		out.anyPort, out.block = b.anyPort, b.block
	case b.anyPort:
		out.block = a.block
	case a.block.Contains(b.block):
		out.block = b.block
	case b.block.Contains(a.block):
		out.block = a.block
	default:
		return out, false
	}
	return out, true
}

// meet is the keys matching the flows both lists allow.
func meet(a, b []allowKey) []allowKey {
	byPeer := map[bpf.Identity][]allowKey{}
	for _, k := range b {
		byPeer[k.peer] = append(byPeer[k.peer], k)
	}
	seen := map[allowKey]bool{}
	var out []allowKey
	add := func(x allowKey, ys []allowKey) {
		for _, y := range ys {
			if m, ok := meetKey(x, y); ok && !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	for _, x := range a {
		if x.peer == bpf.IdentityAny {
			add(x, b)
			continue
		}
		add(x, byPeer[x.peer])
		add(x, byPeer[bpf.IdentityAny])
	}
	return out
}

// putAllow writes an allow key under endpoint self unless a deny holds the
// same key. A port key of any protocol is written once per protocol with
// ports, as the datapath looks ports up with the packet's protocol.
func putAllow(pol *IdentityPolicy, self bpf.Identity, dir bpf.Direction, k allowKey) {
	protos := []uint8{k.proto}
	if !k.anyPort && k.proto == bpf.ProtoAny {
		protos = []uint8{bpf.ProtoTCP, bpf.ProtoUDP, bpf.ProtoSCTP}
	}
	for _, proto := range protos {
		switch {
		case k.anyPort:
			e := bpf.PolicyKey{Endpoint: self, Peer: k.peer, Proto: proto, Dir: dir}
			if pol.Entries[e] != bpf.Deny {
				pol.Entries[e] = bpf.Allow
			}
		case k.block.Bits == 16:
			e := bpf.PolicyKey{Endpoint: self, Peer: k.peer, Port: k.block.Port, Proto: proto, Dir: dir}
			if pol.Entries[e] != bpf.Deny {
				pol.Entries[e] = bpf.Allow
			}
		default:
			r := bpf.PortRangeKey{Endpoint: self, Peer: k.peer, Dir: dir, Proto: proto, Block: k.block}
			if pol.Ranges[r] != bpf.Deny {
				pol.Ranges[r] = bpf.Allow
			}
		}
	}
}

// combine is an endpoint's policy from its gates' parts (nil parts: gates
// with no policy for it).
func combine(self bpf.Identity, parts []*IdentityPolicy) *IdentityPolicy {
	out := &IdentityPolicy{Entries: map[bpf.PolicyKey]bpf.Verdict{}, Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
	var present []*IdentityPolicy
	for _, p := range parts {
		if p != nil {
			present = append(present, p)
		}
	}
	if len(present) == 1 {
		// One gate: its entries as they are (byte for byte what a single
		// gate always produced).
		p := present[0]
		out.Flags = p.Flags
		for k, v := range p.Entries {
			out.Entries[k] = v
		}
		for k, v := range p.Ranges {
			out.Ranges[k] = v
		}
		return out
	}
	for _, p := range present {
		out.Flags |= p.Flags
		for k, v := range p.Entries {
			if v == bpf.Deny {
				out.Entries[k] = bpf.Deny
			}
		}
		for k, v := range p.Ranges {
			if v == bpf.Deny {
				out.Ranges[k] = bpf.Deny
			}
		}
	}
	for _, d := range []struct {
		dir  bpf.Direction
		flag bpf.EndpointFlags
	}{{bpf.Ingress, bpf.EnforceIngress}, {bpf.Egress, bpf.EnforceEgress}} {
		var keys []allowKey
		first := true
		for _, p := range present {
			if p.Flags&d.flag == 0 {
				continue
			}
			if first {
				keys, first = allows(p, d.dir), false
				continue
			}
			keys = meet(keys, allows(p, d.dir))
		}
		if first {
			// No gate isolates the direction: the allows decide nothing;
			// kept as the single gate would keep them.
			for _, p := range present {
				keys = append(keys, allows(p, d.dir)...)
			}
		}
		for _, k := range keys {
			putAllow(out, self, d.dir, k)
		}
	}
	return out
}
