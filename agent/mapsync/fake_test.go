package mapsync

import (
	"errors"
	"maps"
	"net/netip"

	"github.com/nodemesh/nodemesh/bpf"
)

// fakeMaps is the four maps in memory. Every single entry written (a batch
// writes its entries one by one, as the kernel does) calls after, so tests
// can look at every state the datapath could see.
type fakeMaps struct {
	s     State
	after func(s State, what string)
	// failAt makes the failAt-th entry write fail (1-based; 0: never).
	failAt, n int
	// readErr makes the listings fail.
	readErr error
}

var errInjected = errors.New("injected failure")

func newFake(s State) *fakeMaps { return &fakeMaps{s: clone(s)} }

func clone(s State) State {
	out := State{Identities: maps.Clone(s.Identities), Policies: maps.Clone(s.Policies), Ranges: maps.Clone(s.Ranges),
		Endpoints: maps.Clone(s.Endpoints), LocalEndpoints: maps.Clone(s.LocalEndpoints)}
	if out.Ranges == nil {
		out.Ranges = map[bpf.PortRangeKey]bpf.Verdict{}
	}
	if out.Identities == nil {
		out.Identities = map[netip.Prefix]bpf.Identity{}
	}
	if out.Policies == nil {
		out.Policies = map[bpf.PolicyKey]bpf.Verdict{}
	}
	if out.Endpoints == nil {
		out.Endpoints = map[int]bpf.Endpoint{}
	}
	if out.LocalEndpoints == nil {
		out.LocalEndpoints = map[[4]byte]LocalEndpoint{}
	}
	return out
}

func (f *fakeMaps) write(what string, do func()) error {
	f.n++
	if f.n == f.failAt {
		return errInjected
	}
	do()
	if f.after != nil {
		f.after(f.s, what)
	}
	return nil
}

func (f *fakeMaps) Identities() (map[netip.Prefix]bpf.Identity, error) {
	return maps.Clone(f.s.Identities), f.readErr
}

func (f *fakeMaps) Policies() (map[bpf.PolicyKey]bpf.Verdict, error) {
	return maps.Clone(f.s.Policies), f.readErr
}

func (f *fakeMaps) PortRanges() (map[bpf.PortRangeKey]bpf.Verdict, error) {
	return maps.Clone(f.s.Ranges), f.readErr
}

func (f *fakeMaps) PutPortRanges(keys []bpf.PortRangeKey, verdicts []bpf.Verdict) error {
	for i, k := range keys {
		if err := f.write("range", func() { f.s.Ranges[k] = verdicts[i] }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) DeletePortRanges(keys []bpf.PortRangeKey) error {
	for _, k := range keys {
		if err := f.write("range", func() { delete(f.s.Ranges, k) }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) Endpoints() (map[int]bpf.Endpoint, error) {
	return maps.Clone(f.s.Endpoints), f.readErr
}

func (f *fakeMaps) LocalEndpoints() (map[[4]byte]bpf.Endpoint, map[[4]byte]uint64, error) {
	eps, cookies := map[[4]byte]bpf.Endpoint{}, map[[4]byte]uint64{}
	for ip, l := range f.s.LocalEndpoints {
		eps[ip], cookies[ip] = l.Endpoint, l.NetnsCookie
	}
	return eps, cookies, f.readErr
}

func (f *fakeMaps) PutIdentity(p netip.Prefix, id bpf.Identity) error {
	return f.write("identity", func() { f.s.Identities[p] = id })
}

func (f *fakeMaps) DeleteIdentity(p netip.Prefix) error {
	return f.write("identity", func() { delete(f.s.Identities, p) })
}

func (f *fakeMaps) PutPolicies(keys []bpf.PolicyKey, verdicts []bpf.Verdict) error {
	for i, k := range keys {
		if err := f.write("policy", func() { f.s.Policies[k] = verdicts[i] }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) DeletePolicies(keys []bpf.PolicyKey) error {
	for _, k := range keys {
		if err := f.write("policy", func() { delete(f.s.Policies, k) }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) PutEndpoint(ifindex int, ep bpf.Endpoint) error {
	return f.write("endpoint", func() { f.s.Endpoints[ifindex] = ep })
}

func (f *fakeMaps) DeleteEndpoint(ifindex int) error {
	return f.write("endpoint", func() { delete(f.s.Endpoints, ifindex) })
}

func (f *fakeMaps) PutLocalEndpoint(ep bpf.Endpoint, cookie uint64) error {
	return f.write("local", func() { f.s.LocalEndpoints[ep.IP] = LocalEndpoint{Endpoint: ep, NetnsCookie: cookie} })
}

func (f *fakeMaps) DeleteLocalEndpoint(ip [4]byte) error {
	return f.write("local", func() { delete(f.s.LocalEndpoints, ip) })
}

var _ Maps = (*fakeMaps)(nil)

// The datapath's decision for a new flow, as bpf/c/policy_maps.h decide()
// and redirect.c proxy_egress_denied() make it (docs/design/datapath.md,
// "Verdict order"), on a State.

// lookup is the identity of an address: the longest prefix, else WORLD.
func lookup(s State, addr netip.Addr) bpf.Identity {
	best, id := -1, bpf.IdentityWorld
	for p, i := range s.Identities {
		if p.Contains(addr) && p.Bits() > best {
			best, id = p.Bits(), i
		}
	}
	return id
}

// decide is decide() of policy_maps.h: the hash lookups and, for a port,
// the port range trie's longest match.
func decide(s State, ep bpf.Endpoint, dir bpf.Direction, peer bpf.Identity, port uint16, proto uint8) bool {
	pol := s.Policies
	allowed := false
	for _, p := range []bpf.Identity{peer, bpf.IdentityAny} {
		if port != 0 {
			switch bpf.RangeVerdict(s.Ranges, bpf.PortRangeKey{Endpoint: ep.Identity, Peer: p, Dir: dir, Proto: proto}, port) {
			case bpf.Deny:
				return false
			case bpf.Allow:
				allowed = true
			}
		}
		var keys []bpf.PolicyKey
		if port != 0 {
			keys = append(keys, bpf.PolicyKey{Endpoint: ep.Identity, Peer: p, Port: port, Proto: proto, Dir: dir})
		}
		keys = append(keys, bpf.PolicyKey{Endpoint: ep.Identity, Peer: p, Proto: proto, Dir: dir})
		if proto != 0 {
			keys = append(keys, bpf.PolicyKey{Endpoint: ep.Identity, Peer: p, Dir: dir})
		}
		for _, k := range keys {
			switch pol[k] {
			case bpf.Deny:
				return false
			case bpf.Allow:
				allowed = true
			}
		}
	}
	if allowed {
		return true
	}
	enforce := bpf.EnforceIngress
	if dir == bpf.Egress {
		enforce = bpf.EnforceEgress
	}
	return ep.Flags&enforce == 0
}

// flow is a new flow: at a pod's veth (ifindex), or the node proxy's
// upstream connection from a local pod's address (proxy: src).
type flow struct {
	proxy   bool
	ifindex int
	src     [4]byte
	dir     bpf.Direction
	peer    netip.Addr
	port    uint16
	proto   uint8
}

// attr is which identities a flow is judged with.
type attr struct {
	present  bool
	endpoint bpf.Identity
	peer     bpf.Identity
}

// judge decides a flow in a state, and says with which identities.
func judge(s State, f flow) (bool, attr, bpf.Endpoint) {
	peer := lookup(s, f.peer)
	if f.proxy {
		lep, ok := s.LocalEndpoints[f.src]
		if !ok {
			return true, attr{peer: peer}, bpf.Endpoint{} // not policed
		}
		return decide(s, lep.Endpoint, bpf.Egress, peer, f.port, bpf.ProtoTCP), attr{true, lep.Endpoint.Identity, peer}, lep.Endpoint
	}
	ep, ok := s.Endpoints[f.ifindex]
	if !ok {
		return false, attr{peer: peer}, ep // drop-no-endpoint
	}
	return decide(s, ep, f.dir, peer, f.port, f.proto), attr{true, ep.Identity, peer}, ep
}
