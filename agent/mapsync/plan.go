package mapsync

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/nodemesh/nodemesh/bpf"
)

// Phase is when a write happens (the package doc says why).
type Phase uint8

// Phases, in order.
const (
	Restrict Phase = iota + 1
	Switch
	Relax
	Finalize
)

func (p Phase) String() string {
	switch p {
	case Restrict:
		return "restrict"
	case Switch:
		return "switch"
	case Relax:
		return "relax"
	case Finalize:
		return "finalize"
	}
	return "phase?"
}

// OpKind is the map and the operation of a write.
type OpKind uint8

// Kinds of writes.
const (
	PutPolicies OpKind = iota + 1
	DeletePolicies
	PutIdentity
	DeleteIdentity
	PutEndpoint
	DeleteEndpoint
	PutLocalEndpoint
	DeleteLocalEndpoint
	PutPortRanges
	DeletePortRanges
)

// Op is one write of a plan. Which fields are set depends on Kind: Keys
// (and Verdicts) for policy entries, RangeKeys (and Verdicts) for port
// range entries — a batch, in no particular order, whose
// entries all restrict or all relax —, Prefix (and Identity) for the identity
// map, Ifindex (and Endpoint) for endpoints, Endpoint.IP (or IP) and
// NetnsCookie for local endpoints.
type Op struct {
	Phase       Phase
	Kind        OpKind
	Keys        []bpf.PolicyKey
	RangeKeys   []bpf.PortRangeKey
	Verdicts    []bpf.Verdict
	Prefix      netip.Prefix
	Identity    bpf.Identity
	Ifindex     int
	Endpoint    bpf.Endpoint
	IP          [4]byte
	NetnsCookie uint64
}

// Plan is an ordered list of writes.
type Plan struct {
	Ops []Op
	// Revised counts the endpoints that get a new policy revision.
	Revised int
}

// effective is what a value means to the datapath: allow, deny, or nothing
// (absent, or a value the programs ignore).
func effective(v bpf.Verdict) bpf.Verdict {
	if v == bpf.Allow || v == bpf.Deny {
		return v
	}
	return 0
}

// restricts reports whether changing a key from old to new can only deny
// more: a deny added, or an allow removed.
func restricts(old, new bpf.Verdict) bool {
	return new == bpf.Deny || old == bpf.Allow && new == 0
}

// attribution is which identities are in use: those of endpoints (the
// Endpoint side of a key) and those addresses map to (the Peer side). A key
// whose either side is not in use decides nothing (it is inert).
type attribution struct {
	endpoints, peers map[bpf.Identity]bool
}

func attributionOf(ids map[netip.Prefix]bpf.Identity, eps []bpf.Endpoint) attribution {
	a := attribution{endpoints: map[bpf.Identity]bool{},
		// Every address no prefix covers is WORLD; IdentityAny matches all.
		peers: map[bpf.Identity]bool{bpf.IdentityAny: true, bpf.IdentityWorld: true}}
	for _, id := range ids {
		a.peers[id] = true
	}
	for _, ep := range eps {
		a.endpoints[ep.Identity] = true
	}
	return a
}

func (a attribution) live(endpoint, peer bpf.Identity) bool {
	return a.endpoints[endpoint] && a.peers[peer]
}

// NewPlan computes the writes that bring the maps from have to want, in an
// order where no intermediate state allows a flow that neither have nor the
// final state allows (package doc). An endpoint gets a new policy revision
// when it already existed and its allowed set may have shrunk: any policy
// entry of its identity changed or went, an address changed identity, its
// own identity changed, or it gained isolation. An unchanged state gives an
// empty plan.
func NewPlan(have State, want Want) Plan {
	var p Plan
	ops := map[Phase][]Op{}
	add := func(op Op) { ops[op.Phase] = append(ops[op.Phase], op) }

	// Revocation, decided as the agent always has.
	revokeAll := false
	for pfx, id := range want.Identities {
		if hid, ok := have.Identities[pfx]; ok && hid != id {
			revokeAll = true // an address changed identity
		}
	}
	revoked := map[bpf.Identity]bool{}
	for k, v := range want.Policies {
		if hv, ok := have.Policies[k]; ok && hv != v {
			revoked[k.Endpoint] = true
		}
	}
	for k := range have.Policies {
		if _, ok := want.Policies[k]; !ok {
			revoked[k.Endpoint] = true
		}
	}
	for k, v := range want.Ranges {
		if hv, ok := have.Ranges[k]; ok && hv != v {
			revoked[k.Endpoint] = true
		}
	}
	for k := range have.Ranges {
		if _, ok := want.Ranges[k]; !ok {
			revoked[k.Endpoint] = true
		}
	}

	// The final endpoints and local endpoints.
	final := make(map[int]bpf.Endpoint, len(want.Pods))
	finalLocal := make(map[[4]byte]LocalEndpoint, len(want.Pods))
	for _, pod := range want.Pods {
		ep := bpf.Endpoint{IP: pod.IP, Identity: pod.Identity, Flags: pod.Flags}
		cur, exists := have.Endpoints[pod.Ifindex]
		ep.PolicyRevision = cur.PolicyRevision
		if exists && (revokeAll || revoked[ep.Identity] || cur.Identity != ep.Identity || ep.Flags&^cur.Flags != 0) {
			ep.PolicyRevision++
			p.Revised++
		}
		final[pod.Ifindex] = ep
		finalLocal[pod.IP] = LocalEndpoint{Endpoint: ep, NetnsCookie: pod.NetnsCookie}
	}

	var oldEps, newEps []bpf.Endpoint
	for _, ep := range have.Endpoints {
		oldEps = append(oldEps, ep)
	}
	for _, lep := range have.LocalEndpoints {
		oldEps = append(oldEps, lep.Endpoint)
	}
	for _, ep := range final {
		newEps = append(newEps, ep) // its local endpoint has the same identity
	}
	before, after := attributionOf(have.Identities, oldEps), attributionOf(want.Identities, newEps)

	// Policy entries and port range entries: each change with its phase,
	// then one put and one delete batch per phase and map.
	phaseOf := func(endpoint, peer bpf.Identity, old, new bpf.Verdict) Phase {
		switch {
		case !before.live(endpoint, peer):
			return Restrict // inert until the switch
		case !after.live(endpoint, peer):
			return Relax // inert after the switch
		case restricts(old, new):
			return Restrict
		}
		return Relax
	}
	policyOps := planEntries(have.Policies, want.Policies, func(k bpf.PolicyKey, old, new bpf.Verdict) Phase {
		return phaseOf(k.Endpoint, k.Peer, old, new)
	})
	rangeOps := planEntries(have.Ranges, want.Ranges, func(k bpf.PortRangeKey, old, new bpf.Verdict) Phase {
		return phaseOf(k.Endpoint, k.Peer, old, new)
	})
	for _, ph := range []Phase{Restrict, Relax} {
		if b := policyOps[ph]; len(b.put) > 0 {
			add(Op{Phase: ph, Kind: PutPolicies, Keys: b.put, Verdicts: b.verdicts})
		}
		if b := policyOps[ph]; len(b.del) > 0 {
			add(Op{Phase: ph, Kind: DeletePolicies, Keys: b.del})
		}
		if b := rangeOps[ph]; len(b.put) > 0 {
			add(Op{Phase: ph, Kind: PutPortRanges, RangeKeys: b.put, Verdicts: b.verdicts})
		}
		if b := rangeOps[ph]; len(b.del) > 0 {
			add(Op{Phase: ph, Kind: DeletePortRanges, RangeKeys: b.del})
		}
	}

	// Endpoints and local endpoints; the identity map.
	planEndpoints(have, final, add)
	planLocalEndpoints(have, finalLocal, add)
	planIdentities(have, want, add)

	for _, ph := range []Phase{Restrict, Switch, Relax, Finalize} {
		p.Ops = append(p.Ops, ops[ph]...)
	}
	return p
}

// batch is the entries of one map one phase puts and deletes.
type batch[K comparable] struct {
	put, del []K
	verdicts []bpf.Verdict
}

// planEntries sorts each change of a map's entries into the phase phaseOf
// gives it. A batch's entries are in no particular order: they all move
// the same way, and sorting tens of thousands of them would cost more than
// writing them.
func planEntries[K comparable](have, want map[K]bpf.Verdict, phaseOf func(k K, old, new bpf.Verdict) Phase) map[Phase]*batch[K] {
	out := map[Phase]*batch[K]{Restrict: {}, Relax: {}}
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			b := out[phaseOf(k, effective(hv), effective(v))]
			b.put, b.verdicts = append(b.put, k), append(b.verdicts, v)
		}
	}
	for k, hv := range have {
		if _, ok := want[k]; !ok {
			b := out[phaseOf(k, effective(hv), 0)]
			b.del = append(b.del, k)
		}
	}
	return out
}

// planEndpoints: gone endpoints and new ones at the switch; an endpoint
// that changes identity (or address) switches with the union of its old
// and new isolation; one that gains isolation gains it while restricting;
// final flags and revisions last.
func planEndpoints(have State, final map[int]bpf.Endpoint, add func(Op)) {
	for _, ifindex := range sortedKeys(have.Endpoints) {
		if _, ok := final[ifindex]; !ok {
			add(Op{Phase: Switch, Kind: DeleteEndpoint, Ifindex: ifindex})
		}
	}
	for _, ifindex := range sortedKeys(final) {
		ep := final[ifindex]
		cur, exists := have.Endpoints[ifindex]
		var last bpf.Endpoint
		switch {
		case !exists:
			add(Op{Phase: Switch, Kind: PutEndpoint, Ifindex: ifindex, Endpoint: ep})
			continue
		case cur.Identity != ep.Identity || cur.IP != ep.IP:
			last = bpf.Endpoint{IP: ep.IP, Identity: ep.Identity, Flags: cur.Flags | ep.Flags, PolicyRevision: cur.PolicyRevision}
			add(Op{Phase: Switch, Kind: PutEndpoint, Ifindex: ifindex, Endpoint: last})
		case ep.Flags&^cur.Flags != 0:
			last = cur
			last.Flags |= ep.Flags
			add(Op{Phase: Restrict, Kind: PutEndpoint, Ifindex: ifindex, Endpoint: last})
		default:
			last = cur
		}
		if last != ep {
			add(Op{Phase: Finalize, Kind: PutEndpoint, Ifindex: ifindex, Endpoint: ep})
		}
	}
}

// planLocalEndpoints does for the local endpoints what planEndpoints does
// for endpoints. A missing local endpoint means the node proxy's
// connections from that address are not policed at all, so a new one
// restricts and a deleted one relaxes: both are attribution changes of the
// switch.
func planLocalEndpoints(have State, final map[[4]byte]LocalEndpoint, add func(Op)) {
	for _, ip := range sortedIPs(have.LocalEndpoints) {
		if _, ok := final[ip]; !ok {
			add(Op{Phase: Switch, Kind: DeleteLocalEndpoint, IP: ip})
		}
	}
	for _, ip := range sortedIPs(final) {
		want := final[ip]
		cur, exists := have.LocalEndpoints[ip]
		var last LocalEndpoint
		switch {
		case !exists:
			add(Op{Phase: Switch, Kind: PutLocalEndpoint, IP: ip, Endpoint: want.Endpoint, NetnsCookie: want.NetnsCookie})
			continue
		case cur.Endpoint.Identity != want.Endpoint.Identity || cur.Endpoint.IP != want.Endpoint.IP || cur.NetnsCookie != want.NetnsCookie:
			last = want
			last.Endpoint.Flags |= cur.Endpoint.Flags
			last.Endpoint.PolicyRevision = cur.Endpoint.PolicyRevision
			add(Op{Phase: Switch, Kind: PutLocalEndpoint, IP: ip, Endpoint: last.Endpoint, NetnsCookie: last.NetnsCookie})
		case want.Endpoint.Flags&^cur.Endpoint.Flags != 0:
			last = cur
			last.Endpoint.Flags |= want.Endpoint.Flags
			add(Op{Phase: Restrict, Kind: PutLocalEndpoint, IP: ip, Endpoint: last.Endpoint, NetnsCookie: last.NetnsCookie})
		default:
			last = cur
		}
		if last != want {
			add(Op{Phase: Finalize, Kind: PutLocalEndpoint, IP: ip, Endpoint: want.Endpoint, NetnsCookie: want.NetnsCookie})
		}
	}
}

// planIdentities: every change of the identity map is an attribution
// change of the switch.
func planIdentities(have State, want Want, add func(Op)) {
	for _, pfx := range sortedPrefixes(want.Identities) {
		if hid, ok := have.Identities[pfx]; !ok || hid != want.Identities[pfx] {
			add(Op{Phase: Switch, Kind: PutIdentity, Prefix: pfx, Identity: want.Identities[pfx]})
		}
	}
	for _, pfx := range sortedPrefixes(have.Identities) {
		if _, ok := want.Identities[pfx]; !ok {
			add(Op{Phase: Switch, Kind: DeleteIdentity, Prefix: pfx})
		}
	}
}

func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedIPs[V any](m map[[4]byte]V) [][4]byte {
	out := make([][4]byte, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b [4]byte) int { return netip.AddrFrom4(a).Compare(netip.AddrFrom4(b)) })
	return out
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return out
}
