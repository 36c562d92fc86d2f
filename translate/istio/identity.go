package istio

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// splitByIdentity decides each client's identity once, at the listener
// (Istio mTLS): every filter chain that can reach a cluster with Istio mTLS
// gets a copy per client identity, matching only the addresses of that
// identity's pods that the chain serves today, and storing the identity
// (ClientIdentity) for the clusters' transport socket matchers. The
// clusters then depend on the node's set of identities only, not on its
// pods' addresses.
//
// The split never changes which chain's routing a client gets. Envoy
// selects a chain by destination port, destination address, server names,
// transport and application protocols first, and by source address after
// them, the most specific source prefix winning
// (config.listener.v3.FilterChainMatch); the copies share their chain's
// whole match except the source addresses, so every step before the source
// address prunes exactly as before, and among the chains left an
// identity's copy holds the client's own host prefix — the most specific
// there is — where the client was served by that chain. Host prefixes moved
// to a copy leave the chain (two chains with one prefix would be rejected
// by Envoy); a chain left with none is dropped (it would match every
// client). A client address that is in no identity (an address two
// identities claim, see NodeIdentities) stays on the chain without
// identity: plaintext for auto-mTLS, no certificate for ISTIO_MUTUAL.
func splitByIdentity(l *ir.Listener, ids []ir.ClientIdentity, mtls map[string]*ir.IstioMTLS) {
	owner := identityOwners(ids)
	if len(owner) == 0 {
		return
	}
	addrs := make([]netip.Addr, 0, len(owner))
	for a := range owner {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)

	groups := map[string][]int{} // chains by their match without source
	var order []string
	for i, fc := range l.FilterChains {
		k := matchKey(fc.Match)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	drop := map[int]bool{}
	var added []ir.FilterChain
	for _, k := range order {
		members := groups[k]
		idx := newSourceIndex(l.FilterChains, members)
		// byIdentity[chain][identity] are the addresses the chain serves;
		// moved[chain] the host prefixes that leave it.
		byIdentity := map[int]map[string][]netip.Addr{}
		moved := map[int]map[string]bool{}
		for _, a := range addrs {
			i, exact := idx.selectChain(a)
			if i < 0 || !reachesMTLS(l.FilterChains[i], mtls) {
				continue
			}
			if byIdentity[i] == nil {
				byIdentity[i], moved[i] = map[string][]netip.Addr{}, map[string]bool{}
			}
			byIdentity[i][owner[a]] = append(byIdentity[i][owner[a]], a)
			if exact {
				moved[i][netip.PrefixFrom(a, a.BitLen()).String()] = true
			}
		}
		for _, i := range members {
			if len(byIdentity[i]) == 0 {
				continue
			}
			fc := &l.FilterChains[i]
			if len(fc.Match.SourcePrefixes) > 0 {
				fc.Match.SourcePrefixes = slices.DeleteFunc(slices.Clone(fc.Match.SourcePrefixes), func(p string) bool { return moved[i][canonicalPrefix(p)] })
				drop[i] = len(fc.Match.SourcePrefixes) == 0
			}
			for _, id := range slices.Sorted(maps.Keys(byIdentity[i])) {
				c := *fc
				c.Name = ir.IdentityFilterChainName(fc.Name, id)
				c.ClientIdentity = id
				as := byIdentity[i][id]
				c.Match.SourcePrefixes = make([]string, len(as))
				for j, a := range as {
					c.Match.SourcePrefixes[j] = netip.PrefixFrom(a, a.BitLen()).String()
				}
				added = append(added, c)
			}
		}
	}
	out := make([]ir.FilterChain, 0, len(l.FilterChains)-len(drop)+len(added))
	for i, fc := range l.FilterChains {
		if !drop[i] {
			out = append(out, fc)
		}
	}
	l.FilterChains = append(out, added...)
	sortChains(l.FilterChains)
}

// identityOwners maps each client address to its identity; an address two
// identities claim belongs to neither (NodeIdentities already drops those:
// this keeps the rule where the chains are made).
func identityOwners(ids []ir.ClientIdentity) map[netip.Addr]string {
	owner := map[netip.Addr]string{}
	disputed := map[netip.Addr]bool{}
	for _, id := range ids {
		for _, s := range id.Addresses {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if o, ok := owner[a]; ok && o != id.SPIFFE || disputed[a] {
				delete(owner, a)
				disputed[a] = true
				continue
			}
			owner[a] = id.SPIFFE
		}
	}
	return owner
}

// matchKey is a chain's match without its source addresses.
func matchKey(m ir.FilterChainMatch) string {
	return strconv.FormatUint(uint64(m.DestinationPort), 10) + "|" + strings.Join(m.DestinationPrefixes, ",") + "|" + strings.Join(m.ApplicationProtocols, ",")
}

// sourceIndex is the source address step of Envoy's filter chain
// selection among chains of one destination match.
type sourceIndex struct {
	hosts    map[netip.Addr]int // host prefixes
	wider    []sourcePrefix     // the others
	catchAll int                // the chain without source prefixes, or -1
}

type sourcePrefix struct {
	p     netip.Prefix
	chain int
}

func newSourceIndex(chains []ir.FilterChain, members []int) *sourceIndex {
	x := &sourceIndex{hosts: map[netip.Addr]int{}, catchAll: -1}
	for _, i := range members {
		ps := chains[i].Match.SourcePrefixes
		if len(ps) == 0 {
			x.catchAll = i
			continue
		}
		for _, s := range ps {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				continue // (the builder reports it)
			}
			p = p.Masked()
			if p.IsSingleIP() {
				x.hosts[p.Addr()] = i
			} else {
				x.wider = append(x.wider, sourcePrefix{p, i})
			}
		}
	}
	return x
}

// selectChain is the chain Envoy selects for a client address: the one with
// the most specific source prefix that contains it, else the one without
// source prefixes; -1 when none. exact says the chain names the address's
// own host prefix.
func (x *sourceIndex) selectChain(a netip.Addr) (chain int, exact bool) {
	if i, ok := x.hosts[a]; ok {
		return i, true
	}
	best, bits := x.catchAll, -1
	for _, sp := range x.wider {
		if sp.p.Contains(a) && sp.p.Bits() > bits {
			best, bits = sp.chain, sp.p.Bits()
		}
	}
	return best, false
}

// canonicalPrefix is a prefix in netip's text form ("" if it does not parse).
func canonicalPrefix(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return ""
	}
	return p.Masked().String()
}

// reachesMTLS says whether a chain can send to a cluster with Istio mTLS:
// an HTTP chain can (its routes name any cluster), a TCP chain when one of
// its destinations has it (not the blackhole chain, for one).
func reachesMTLS(fc ir.FilterChain, mtls map[string]*ir.IstioMTLS) bool {
	if fc.HTTP != nil {
		return true
	}
	if fc.TCP == nil {
		return false
	}
	for _, d := range fc.TCP.Destinations {
		if mtls[d.Cluster] != nil {
			return true
		}
	}
	return false
}

// SplitByIdentity splits the outbound listener of a node's model (as Node
// returns it) by its client identities (NodeIdentities); see
// splitByIdentity. Only the outbound listener: its chains are the clients'.
func (p *Prepared) SplitByIdentity(m *ir.Model, ids []ir.ClientIdentity) {
	if len(ids) == 0 || len(p.mtls) == 0 {
		return
	}
	for i := range m.Listeners {
		if m.Listeners[i].Name != ir.OutboundListenerName {
			continue
		}
		l := m.Listeners[i]
		l.FilterChains = slices.Clone(l.FilterChains)
		splitByIdentity(&l, ids, p.mtls)
		m.Listeners[i] = l
	}
}
