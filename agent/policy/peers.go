package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The peer facts of Istio's AuthorizationPolicy as sets of identities
// (docs/design/policy.md §2): principals, namespaces and trust domains are
// facts of the peer's identity (its key has the namespace and the service
// account; the trust domain is the cluster's), and their Not* forms are
// exact complements over every identity an address can have — pods',
// CIDRs', WORLD (an address no prefix covers) and HOST. Identities that are
// not pods (CIDRs, WORLD, HOST) have no principal, namespace or trust domain:
// a positive field never matches them and a Not* field always does, as
// Envoy's RBAC and ztunnel treat a peer without an mTLS identity.

const defaultTrustDomain = "cluster.local"

// peerFacts is what an AuthorizationPolicy can know of one identity.
type peerFacts struct {
	principal, namespace, trustDomain string
}

// indexPeers fills the translator's view of every peer identity.
func (t *translator) indexPeers() {
	td := t.in.TrustDomain
	if td == "" {
		td = defaultTrustDomain
	}
	t.facts = make(map[bpf.Identity]peerFacts, len(t.in.Identities))
	seen := map[bpf.Identity]bool{bpf.IdentityWorld: true, bpf.IdentityHost: true}
	t.universe = []bpf.Identity{bpf.IdentityHost, bpf.IdentityWorld}
	for _, id := range t.in.Identities {
		sa := id.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		t.facts[id.ID] = peerFacts{principal: td + "/ns/" + id.Namespace + "/sa/" + sa, namespace: id.Namespace, trustDomain: td}
		if !seen[id.ID] {
			seen[id.ID] = true
			t.universe = append(t.universe, id.ID)
		}
	}
	for _, id := range t.cidrs {
		if !seen[id] {
			seen[id] = true
			t.universe = append(t.universe, id)
		}
	}
	slices.Sort(t.universe)
	t.memo = map[string]peerSet{}
	t.addrIDs = slices.Sorted(maps.Keys(t.in.PeerAddrs))
}

// peersWhere is the identities whose fact (named kind, for the memo)
// matches one of the globs.
func (t *translator) peersWhere(kind string, globs []ir.Glob, fact func(peerFacts) string) peerSet {
	key := kind + "\x00" + globsKey(globs)
	if p, ok := t.memo[key]; ok {
		return p
	}
	p := t.scanPeers(globs, fact)
	t.memo[key] = p
	return p
}

func globsKey(globs []ir.Glob) string {
	var b strings.Builder
	for _, g := range globs {
		b.WriteString(string(g))
		b.WriteByte(0)
	}
	return b.String()
}

func (t *translator) scanPeers(globs []ir.Glob, fact func(peerFacts) string) peerSet {
	seen := map[bpf.Identity]bool{}
	for id, f := range t.facts {
		v := fact(f)
		if v == "" {
			continue
		}
		for _, g := range globs {
			if g.Match(v) {
				seen[id] = true
				break
			}
		}
	}
	return sortedSet(seen)
}

// split is an identity only some of whose pods are in an address set.
type split struct {
	id     bpf.Identity
	n, all int
}

// union is the identities of a or b: a merge of the two sorted lists.
func union(a, b peerSet) peerSet {
	if a.any || b.any {
		return peerSet{any: true}
	}
	out := peerSet{ids: make([]bpf.Identity, 0, len(a.ids)+len(b.ids))}
	i, j := 0, 0
	for i < len(a.ids) || j < len(b.ids) {
		switch {
		case j == len(b.ids) || i < len(a.ids) && a.ids[i] < b.ids[j]:
			out.ids = append(out.ids, a.ids[i])
			i++
		case i == len(a.ids) || b.ids[j] < a.ids[i]:
			out.ids = append(out.ids, b.ids[j])
			j++
		default: // equal
			out.ids = append(out.ids, a.ids[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// complement is every identity of the universe not in s. For the
// authorization gate the node (HOST) is left out when the agent lets the
// node in (AllowHostIngress): Istio never applies AuthorizationPolicy to
// kubelet probes (the sidecar injector rewrites them; ztunnel exempts them),
// so "deny everyone but X" must not cut off the kubelet.
func (t *translator) complement(pol *ir.Policy, s peerSet) peerSet {
	if s.any {
		return peerSet{}
	}
	out := peerSet{ids: make([]bpf.Identity, 0, len(t.universe))}
	for _, id := range t.universe {
		if id == bpf.IdentityHost && pol.Gate == ir.GateAuthorization && t.in.AllowHostIngress {
			continue
		}
		if _, found := slices.BinarySearch(s.ids, id); !found { // peer sets are sorted
			out.ids = append(out.ids, id)
		}
	}
	return out
}

// identityPeers narrows p to the match's identity facts: principals,
// namespaces, trust domains and the complements of those and of ipBlocks.
func (t *translator) identityPeers(pol *ir.Policy, cr *compiledRule, m ir.PolicyMatch, p peerSet) peerSet {
	principal := func(f peerFacts) string { return f.principal }
	namespace := func(f peerFacts) string { return f.namespace }
	trustDomain := func(f peerFacts) string { return f.trustDomain }
	if len(m.Principals) > 0 {
		p = p.intersect(t.peersWhere("principal", m.Principals, principal))
	}
	if len(m.NotPrincipals) > 0 {
		p = p.intersect(t.complement(pol, t.peersWhere("principal", m.NotPrincipals, principal)))
	}
	if len(m.Namespaces) > 0 {
		p = p.intersect(t.peersWhere("namespace", m.Namespaces, namespace))
	}
	if len(m.NotNamespaces) > 0 {
		p = p.intersect(t.complement(pol, t.peersWhere("namespace", m.NotNamespaces, namespace)))
	}
	if len(m.TrustDomains) > 0 {
		p = p.intersect(t.peersWhere("trustDomain", m.TrustDomains, trustDomain))
	}
	if len(m.NotTrustDomains) > 0 {
		p = p.intersect(t.complement(pol, t.peersWhere("trustDomain", m.NotTrustDomains, trustDomain)))
	}
	if len(m.NotIPBlocks) > 0 {
		p = p.intersect(t.complement(pol, t.addressPeers(pol, cr, m.Field, m.NotIPBlocks, true)))
	}
	return p
}

// addressPeers is the identities of the addresses in blocks. NetworkPolicy's
// ipBlocks are for addresses outside the cluster (CIDR identities and
// WORLD; a pod's address has its pod's identity), but Istio's ipBlocks
// match the connection's source address whatever it is, pods' included. So
// for the authorization gate a pod identity belongs to the set by the
// addresses of its pods (Input.PeerAddrs). When only some of an identity's
// pods are in the blocks the identity is rounded towards denying more: in
// for a deny's ipBlocks and an allow's notIpBlocks (the complement then
// leaves it out), out for an allow's ipBlocks and a deny's notIpBlocks;
// reported.
func (t *translator) addressPeers(pol *ir.Policy, cr *compiledRule, field string, blocks []ir.IPBlock, not bool) peerSet {
	out := t.ipBlocks(pol, cr, ir.PolicyMatch{Field: field, IPBlocks: blocks})
	if pol.Gate != ir.GateAuthorization {
		return out
	}
	in := func(a netip.Addr) bool {
		return slices.ContainsFunc(blocks, func(b ir.IPBlock) bool { return b.Contains(a) })
	}
	wide := pol.Action.Denies() != not
	// The pods' side depends only on the blocks and on wide: memoized, its
	// split identities remembered so that every rule still reports them.
	key := fmt.Sprintf("addr\x00%v\x00%v", wide, blocks)
	pods, ok := t.memo[key]
	splits := t.splits[key]
	if !ok {
		seen := map[bpf.Identity]bool{}
		for _, id := range t.addrIDs {
			n := 0
			for _, a := range t.in.PeerAddrs[id] {
				if in(a) {
					n++
				}
			}
			all := len(t.in.PeerAddrs[id])
			if n > 0 && n < all {
				splits = append(splits, split{id: id, n: n, all: all})
			}
			if n > 0 && (wide || n == all) {
				seen[id] = true
			}
		}
		pods = sortedSet(seen)
		t.memo[key] = pods
		if t.splits == nil {
			t.splits = map[string][]split{}
		}
		t.splits[key] = splits
	}
	for _, sp := range splits {
		degrade(&cr.diags, pol.Source, ir.FallbackMatchMore, field, "%d of the %d pods of identity %d have an address in the blocks; "+
			"the eBPF back end decides by identity, so it counts as %s, which denies more", sp.n, sp.all, sp.id, map[bool]string{true: "in", false: "out"}[wide])
	}
	return union(out, pods)
}
