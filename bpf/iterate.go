//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// The listing methods below let the agent reconcile pinned state with what it
// wants after a restart (instead of flushing it), and report fill levels.
// Each is one pass over a map; entries changed meanwhile may or may not be
// seen.

// Endpoints returns every endpoint, by host-side veth ifindex.
func (p *Policy) Endpoints() (map[int]Endpoint, error) {
	out := map[int]Endpoint{}
	var (
		k  uint32
		ep Endpoint
	)
	it := p.objs.NmEndpoints.Iterate()
	for it.Next(&k, &ep) {
		out[int(k)] = ep
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return out, nil
}

// Identities returns every entry of the identity map.
func (p *Policy) Identities() (map[netip.Prefix]Identity, error) {
	out := map[netip.Prefix]Identity{}
	var (
		k  ipcacheKey
		id uint32
	)
	it := p.objs.NmIpcache.Iterate()
	for it.Next(&k, &id) {
		out[netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen))] = Identity(id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	return out, nil
}

// Policies returns every policy entry.
func (p *Policy) Policies() (map[PolicyKey]Verdict, error) {
	out := map[PolicyKey]Verdict{}
	var (
		k PolicyKey
		v uint32
	)
	it := p.objs.NmPolicy.Iterate()
	for it.Next(&k, &v) {
		out[k] = Verdict(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	return out, nil
}

// OptedIn returns the cookies of the opted-in network namespaces.
func (r *Redirect) OptedIn() ([]uint64, error) {
	var (
		out []uint64
		k   uint64
		v   netnsConfig
	)
	it := r.objs.NmNetns.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list opted-in namespaces: %w", err)
	}
	return out, nil
}

// Services returns the redirected service addresses.
func (r *Redirect) Services() ([]netip.AddrPort, error) {
	var (
		out []netip.AddrPort
		k   serviceKey
		v   uint32
	)
	it := r.objs.NmServices.Iterate()
	for it.Next(&k, &v) {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4(k.IP), k.Port))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}

// MapUsage is how full a map is.
type MapUsage struct {
	Name       string
	Entries    int
	MaxEntries int
}

// Usage reports the fill level of the policy maps whose size matters
// (endpoints, identities, policy, port ranges, conntrack).
func (p *Policy) Usage() ([]MapUsage, error) {
	return usage(map[string]*ebpf.Map{
		"nm_endpoints": p.objs.NmEndpoints, "nm_ipcache": p.objs.NmIpcache,
		"nm_policy": p.objs.NmPolicy, "nm_policy_ranges": p.objs.NmPolicyRanges, "nm_ct": p.objs.NmCt,
		"nm_inbound": p.objs.NmInbound,
	})
}

// Usage reports the fill level of the redirection maps (opted-in
// namespaces, services, hand-over records) and of the socket load
// balancing maps.
func (r *Redirect) Usage() ([]MapUsage, error) {
	return usage(map[string]*ebpf.Map{
		"nm_netns": r.objs.NmNetns, "nm_services": r.objs.NmServices, "nm_orig_dst": r.objs.NmOrigDst,
		"nm_lb_services": r.objs.NmLbServices, "nm_lb_backends": r.objs.NmLbBackends, "nm_lb_revnat": r.objs.NmLbRevnat,
	})
}

func usage(maps map[string]*ebpf.Map) ([]MapUsage, error) {
	var out []MapUsage
	for name, m := range maps {
		n, err := countKeys(m)
		if err != nil {
			return nil, fmt.Errorf("count entries of %s: %w", name, err)
		}
		out = append(out, MapUsage{Name: name, Entries: n, MaxEntries: int(m.MaxEntries())})
	}
	return out, nil
}

// countKeys walks the keys only (no value copies).
func countKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	n := 0
	var cur any // nil: start from the first key
	for {
		err := m.NextKey(cur, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		if n > int(m.MaxEntries())*2 {
			return n, errors.New("map keeps changing while counted")
		}
		copy(key, next)
		cur = key
	}
}
