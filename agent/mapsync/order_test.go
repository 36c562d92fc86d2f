package mapsync

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/bpf"
)

// The flows the property is checked on: every pod interface (one that no
// pod has, too) in both directions and the node proxy's connections from
// every pod address, to and from pods on this node and others, an address
// only a CIDR prefix covers, one nothing covers (WORLD) and the node.
var (
	peerAddrs = []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"),
		netip.MustParseAddr("10.0.1.9"), netip.MustParseAddr("10.0.5.5"), netip.MustParseAddr("8.8.8.8"),
		netip.MustParseAddr("192.168.1.1"),
	}
	flows = func() []flow {
		var out []flow
		for ifindex := 1; ifindex <= 4; ifindex++ {
			for _, dir := range []bpf.Direction{bpf.Ingress, bpf.Egress} {
				for _, peer := range peerAddrs {
					for _, pp := range [][2]uint16{{80, 6}, {443, 6}, {80, 17}, {1500, 6}, {40000, 6}} {
						out = append(out, flow{ifindex: ifindex, dir: dir, peer: peer, port: pp[0], proto: uint8(pp[1])})
					}
				}
			}
		}
		for n := byte(1); n <= 3; n++ {
			for _, peer := range peerAddrs {
				for _, port := range []uint16{80, 443, 40000} {
					out = append(out, flow{proxy: true, src: ip(n), peer: peer, port: port})
				}
			}
		}
		return out
	}()
)

func (f flow) String() string {
	if f.proxy {
		return fmt.Sprintf("proxy from %s to %s:%d", netip.AddrFrom4(f.src), f.peer, f.port)
	}
	return fmt.Sprintf("ifindex %d %s peer %s %d/%d", f.ifindex, f.dir, f.peer, f.port, f.proto)
}

// checkOrder applies the plan from have to want one map entry at a time
// and checks, after every write, that no flow is allowed that neither the
// old nor the final state allows. The one exception the order cannot
// avoid: a flow both of whose ends changed identity may be judged with one
// end's old identity and the other's new; it must then be allowed by the
// old or the new entries for that pair. It also checks that the final
// state is the wanted one and that new revisions are the last writes.
func checkOrder(t *testing.T, have State, want Want) {
	t.Helper()
	plan := NewPlan(have, want)
	done := newFake(have)
	if err := Apply(done, plan); err != nil {
		t.Fatal(err)
	}
	final := done.s
	checkFinal(t, have, want, final)

	revised := false
	for _, op := range plan.Ops {
		isRevision := op.Kind == PutEndpoint && op.Endpoint.PolicyRevision != have.Endpoints[op.Ifindex].PolicyRevision
		if revised && op.Kind != PutEndpoint && op.Kind != PutLocalEndpoint {
			t.Errorf("%s comes after a new policy revision", op)
		}
		revised = revised || isRevision
	}

	type judged struct {
		ok bool
		a  attr
	}
	var before, after []judged
	for _, f := range flows {
		ok, a, _ := judge(have, f)
		before = append(before, judged{ok, a})
		ok, a, _ = judge(final, f)
		after = append(after, judged{ok, a})
	}
	step := 0
	f := newFake(have)
	f.after = func(s State, what string) {
		step++
		for i, fl := range flows {
			ok, a, ep := judge(s, fl)
			if !ok || before[i].ok || after[i].ok {
				continue
			}
			if a.present && a != before[i].a && a != after[i].a {
				// Judged with identities neither state gives the flow.
				if decide(have, ep, dirOf(fl), a.peer, fl.port, protoOf(fl)) ||
					decide(final, ep, dirOf(fl), a.peer, fl.port, protoOf(fl)) {
					continue
				}
			}
			t.Errorf("after write %d (%s) %s is allowed; before: %v, after: %v\nplan:\n%s", step, what, fl,
				before[i], after[i], strings.Join(plan.Lines(), "\n"))
			return
		}
	}
	if err := Apply(f, plan); err != nil {
		t.Fatal(err)
	}
}

func dirOf(f flow) bpf.Direction {
	if f.proxy {
		return bpf.Egress
	}
	return f.dir
}

func protoOf(f flow) uint8 {
	if f.proxy {
		return bpf.ProtoTCP
	}
	return f.proto
}

// checkFinal: the maps hold what was wanted; revisions move by one, only
// for endpoints that existed; local endpoints mirror endpoints.
func checkFinal(t *testing.T, have State, want Want, final State) {
	t.Helper()
	if fmt.Sprint(final.Identities) != fmt.Sprint(want.Identities) && len(final.Identities)+len(want.Identities) > 0 {
		t.Errorf("identities %v, want %v", final.Identities, want.Identities)
	}
	if fmt.Sprint(final.Policies) != fmt.Sprint(want.Policies) && len(final.Policies)+len(want.Policies) > 0 {
		t.Errorf("policies %v, want %v", final.Policies, want.Policies)
	}
	if fmt.Sprint(final.Ranges) != fmt.Sprint(want.Ranges) && len(final.Ranges)+len(want.Ranges) > 0 {
		t.Errorf("port ranges %v, want %v", final.Ranges, want.Ranges)
	}
	if len(final.Endpoints) != len(want.Pods) {
		t.Errorf("endpoints %v, want pods %v", final.Endpoints, want.Pods)
	}
	for _, pod := range want.Pods {
		ep := final.Endpoints[pod.Ifindex]
		if ep.IP != pod.IP || ep.Identity != pod.Identity || ep.Flags != pod.Flags {
			t.Errorf("endpoint %d = %+v, want %+v", pod.Ifindex, ep, pod)
		}
		cur, existed := have.Endpoints[pod.Ifindex]
		if existed && ep.PolicyRevision != cur.PolicyRevision && ep.PolicyRevision != cur.PolicyRevision+1 || !existed && ep.PolicyRevision != 0 {
			t.Errorf("endpoint %d revision %d, was %+v", pod.Ifindex, ep.PolicyRevision, cur)
		}
		if l := final.LocalEndpoints[pod.IP]; l.Endpoint != ep || l.NetnsCookie != pod.NetnsCookie {
			t.Errorf("local endpoint %v = %+v, want %+v cookie %d", netip.AddrFrom4(pod.IP), l, ep, pod.NetnsCookie)
		}
	}
}

// TestPlanNeverAllowsMore checks the ordering property on the scenarios of
// TestNewPlan and on generated pairs of states.
func TestPlanNeverAllowsMore(t *testing.T) {
	for name, tc := range scenarios {
		t.Run(name, func(t *testing.T) {
			checkOrder(t, tc.s.have, tc.s.want)
			checkOrder(t, clone(State{}), tc.s.want) // from empty maps
		})
	}
	seeds := 3000
	if testing.Short() {
		seeds = 300
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("generated/%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			have, want := generate(r)
			checkOrder(t, have, want)
		})
	}
}

// The universe of generated states: three interfaces, three pod addresses,
// a pod on another node, a CIDR prefix and the node; pod identities
// 300-303, a CIDR identity, HOST.
var (
	genPrefixes = []netip.Prefix{pfx("10.0.0.1/32"), pfx("10.0.0.2/32"), pfx("10.0.0.3/32"), pfx("10.0.1.9/32"),
		pfx("10.0.0.0/16"), pfx("192.168.1.1/32")}
	genIDs   = []bpf.Identity{300, 301, 302, 303}
	genPeers = []bpf.Identity{bpf.IdentityAny, bpf.IdentityHost, bpf.IdentityWorld, 300, 301, 302, 303, 1<<24 + 5}
)

func genIdentities(r *rand.Rand) map[netip.Prefix]bpf.Identity {
	out := map[netip.Prefix]bpf.Identity{}
	for _, p := range genPrefixes {
		if r.IntN(3) > 0 {
			switch {
			case p.Bits() == 16:
				out[p] = 1<<24 + 5
			case p.Addr().Is4() && p.Addr().As4()[0] == 192:
				out[p] = bpf.IdentityHost
			default:
				out[p] = genIDs[r.IntN(len(genIDs))]
			}
		}
	}
	return out
}

func genPolicies(r *rand.Rand) map[bpf.PolicyKey]bpf.Verdict {
	out := map[bpf.PolicyKey]bpf.Verdict{}
	for range r.IntN(14) {
		k := bpf.PolicyKey{Endpoint: genIDs[r.IntN(3)], Peer: genPeers[r.IntN(len(genPeers))],
			Port: []uint16{0, 80, 443}[r.IntN(3)], Proto: []uint8{0, 6, 17}[r.IntN(3)], Dir: bpf.Direction(r.IntN(2))}
		if k.Port != 0 && k.Proto == 0 {
			k.Proto = 6
		}
		out[k] = []bpf.Verdict{bpf.Allow, bpf.Allow, bpf.Deny}[r.IntN(3)]
	}
	return out
}

// genRanges gives port ranges (normalized, as the agent writes them) that
// overlap each other and the hash's ports: 1024-65535 (the ephemeral
// ports), 1000-3001 (unaligned), 40000 alone, 0-65535 as one block.
func genRanges(r *rand.Rand) map[bpf.PortRangeKey]bpf.Verdict {
	out := map[bpf.PortRangeKey]bpf.Verdict{}
	for range r.IntN(5) {
		rng := [][2]uint16{{1024, 65535}, {1000, 3001}, {40000, 40000}, {32768, 49151}, {0, 65535}, {80, 443}}[r.IntN(6)]
		base := bpf.PortRangeKey{Endpoint: genIDs[r.IntN(3)], Peer: genPeers[r.IntN(len(genPeers))],
			Proto: []uint8{6, 17}[r.IntN(2)], Dir: bpf.Direction(r.IntN(2))}
		v := []bpf.Verdict{bpf.Allow, bpf.Allow, bpf.Deny}[r.IntN(3)]
		for _, b := range bpf.PortBlocks(rng[0], rng[1]) {
			k := base
			k.Block = b
			if out[k] != bpf.Deny {
				out[k] = v
			}
		}
	}
	bpf.NormalizeRanges(out)
	return out
}

func genPods(r *rand.Rand) []Pod {
	var out []Pod
	used := map[[4]byte]bool{}
	for ifindex := 1; ifindex <= 3; ifindex++ {
		if r.IntN(4) == 0 {
			continue
		}
		addr := ip(byte(ifindex))
		if r.IntN(6) == 0 {
			addr = ip(byte(ifindex%3 + 1)) // an address that moved
		}
		if used[addr] {
			continue
		}
		used[addr] = true
		out = append(out, Pod{Ifindex: ifindex, IP: addr, Identity: genIDs[r.IntN(3)],
			Flags: bpf.EndpointFlags(r.IntN(4)), NetnsCookie: uint64(r.IntN(2) + 1)})
	}
	return out
}

// generate gives a state the maps hold (as a previous plan left it, with
// revisions) and a wanted state: independent, or a few changes away.
func generate(r *rand.Rand) (State, Want) {
	old := Want{Identities: genIdentities(r), Policies: genPolicies(r), Ranges: genRanges(r), Pods: genPods(r)}
	have := clone(State{Identities: old.Identities, Policies: old.Policies, Ranges: old.Ranges})
	for _, p := range old.Pods {
		ep := bpf.Endpoint{IP: p.IP, Identity: p.Identity, Flags: p.Flags, PolicyRevision: uint32(r.IntN(3))}
		have.Endpoints[p.Ifindex] = ep
		if r.IntN(8) > 0 { // sometimes the local endpoint is missing
			have.LocalEndpoints[p.IP] = LocalEndpoint{Endpoint: ep, NetnsCookie: p.NetnsCookie}
		}
	}
	if r.IntN(2) == 0 {
		return have, Want{Identities: genIdentities(r), Policies: genPolicies(r), Ranges: genRanges(r), Pods: genPods(r)}
	}
	want := Want{Identities: map[netip.Prefix]bpf.Identity{}, Policies: map[bpf.PolicyKey]bpf.Verdict{},
		Ranges: maps.Clone(old.Ranges), Pods: append([]Pod(nil), old.Pods...)}
	for k, v := range old.Identities {
		want.Identities[k] = v
	}
	for k, v := range old.Policies {
		want.Policies[k] = v
	}
	for range r.IntN(4) + 1 {
		switch r.IntN(7) {
		case 5:
			for k, v := range genRanges(r) {
				if want.Ranges[k] != bpf.Deny {
					want.Ranges[k] = v
				}
			}
			bpf.NormalizeRanges(want.Ranges)
		case 6:
			for k := range want.Ranges {
				if r.IntN(2) == 0 {
					delete(want.Ranges, k)
				} else {
					want.Ranges[k] = 3 - want.Ranges[k] // allow ↔ deny
				}
				break
			}
			bpf.NormalizeRanges(want.Ranges)
		case 0:
			for k, v := range genIdentities(r) {
				want.Identities[k] = v
				break
			}
		case 1:
			for k := range want.Identities {
				delete(want.Identities, k)
				break
			}
		case 2:
			for k, v := range genPolicies(r) {
				want.Policies[k] = v
			}
		case 3:
			for k := range want.Policies {
				if r.IntN(2) == 0 {
					delete(want.Policies, k)
				} else {
					want.Policies[k] = 3 - want.Policies[k] // allow ↔ deny
				}
				break
			}
		case 4:
			if len(want.Pods) > 0 {
				i := r.IntN(len(want.Pods))
				want.Pods[i].Identity = genIDs[r.IntN(3)]
				want.Pods[i].Flags = bpf.EndpointFlags(r.IntN(4))
			}
		}
	}
	return have, want
}
