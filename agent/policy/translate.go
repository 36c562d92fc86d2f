package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

type translator struct {
	in    *Input
	cidrs map[netip.Prefix]bpf.Identity
	// facts are the peer facts of every pod identity (peers.go); universe
	// is every identity an address can have.
	facts    map[bpf.Identity]peerFacts
	universe []bpf.Identity
	// memo caches the peer sets of identity facts (peersWhere) and of
	// address blocks (addressPeers) within one translation: a node's
	// policies name the same principals, namespaces and blocks over and
	// over, and each set is a scan of every identity.
	memo map[string]peerSet
	// addrIDs are the identities of PeerAddrs, sorted once; splits the
	// identities an address set cut in two, by memo key.
	addrIDs []bpf.Identity
	splits  map[string][]split
	// extraGates index the gates beyond the known ones (gateIndex).
	extraGates map[ir.PolicyGate]int
}

// Translate computes the policy of every local endpoint, in two steps: every NetworkPolicy and TrafficPolicy becomes an ir.Policy
// (model.go), and the models become map entries (l4.go).
func Translate(in Input) *Result {
	if in.CIDRs == nil {
		in.CIDRs = NewCIDRAllocator(nil)
	}
	models := make([]ir.Policy, 0, len(in.Policies)+len(in.TrafficPolicies)+len(in.Models))
	for _, p := range in.Policies {
		models = append(models, NetworkPolicyModel(p))
	}
	for _, tp := range in.TrafficPolicies {
		models = append(models, tp.Model())
	}
	models = append(models, in.Models...)
	sort.SliceStable(models, func(i, j int) bool { return models[i].Source.Compare(models[j].Source) < 0 })

	// Local endpoints are peers too (named ports of egress rules).
	peerPorts := map[bpf.Identity][][]NamedPort{}
	for id, pp := range in.PeerPorts {
		peerPorts[id] = append(peerPorts[id], pp...)
	}
	for _, ep := range in.Endpoints {
		peerPorts[ep.Identity] = append(peerPorts[ep.Identity], ep.Ports)
	}
	in.PeerPorts = peerPorts

	t := &translator{in: &in}
	t.cidrs = in.CIDRs.assign(collectPrefixes(&in, in.Models))
	t.indexPeers()

	// Each gate's entries apart (parts[endpoint][gate]), then combined:
	// a flow must pass every gate (gates.go).
	parts := make([][]*IdentityPolicy, len(in.Endpoints))
	var diags []Diagnostic
	for i := range models {
		cp := t.compile(&models[i])
		if cp == nil {
			continue
		}
		t.apply(cp, parts)
		diags = append(diags, cp.diagnostics()...)
	}
	perEndpoint := make([]*IdentityPolicy, len(in.Endpoints))
	for i, ep := range in.Endpoints {
		parts[i] = t.peerAuthn(ep, parts[i])
		perEndpoint[i] = combine(ep.Identity, parts[i])
		t.defaults(ep, perEndpoint[i])
	}
	for _, pol := range perEndpoint {
		bpf.NormalizeRanges(pol.Ranges)
	}
	res := &Result{Identities: map[bpf.Identity]*IdentityPolicy{}, EndpointKeys: make([]bpf.Identity, len(in.Endpoints)), CIDRs: t.cidrs}
	// Endpoints of one identity share its entries when policy treats them
	// all alike (the common case: a Deployment's pods). When it does not —
	// a selector on a label identities leave out (identity.IgnoredLabel:
	// statefulset.kubernetes.io/pod-name, pod-template-hash, …), named
	// ports that differ, a pod with a sidecar — each of them gets entries
	// of its own under its endpoint key: exactly its own allows and denies.
	byID := map[bpf.Identity][]int{}
	for i, ep := range in.Endpoints {
		byID[ep.Identity] = append(byID[ep.Identity], i)
	}
	for id, idx := range byID {
		alike := true
		for _, i := range idx[1:] {
			alike = alike && samePolicy(perEndpoint[idx[0]], perEndpoint[i])
		}
		if alike {
			res.Identities[id] = perEndpoint[idx[0]]
			for _, i := range idx {
				res.EndpointKeys[i] = id
			}
			continue
		}
		for _, i := range idx {
			key := in.Endpoints[i].Key
			if key == 0 {
				// No key of its own given: the shared entries, allowing only
				// what every pod of the identity is allowed.
				res.Diagnostics = append(res.Diagnostics, Diagnostic{Severity: Warning, Namespace: in.Endpoints[i].Namespace,
					Name: in.Endpoints[i].Name, Field: "spec", Message: fmt.Sprintf("pods of identity %d are treated differently by "+
						"policy and this one has no endpoint key; it gets only what every pod of the identity is allowed", id)})
				res.Identities[id] = intersect(res.Identities[id], perEndpoint[i])
				res.EndpointKeys[i] = id
				continue
			}
			res.Identities[key] = rekey(perEndpoint[i], key)
			res.EndpointKeys[i] = key
		}
	}
	res.Diagnostics = append(diags, res.Diagnostics...)
	sort.SliceStable(res.Diagnostics, func(i, j int) bool { return res.Diagnostics[i].String() < res.Diagnostics[j].String() })
	return res
}

// samePolicy reports whether two endpoints' policies are the same.
func samePolicy(a, b *IdentityPolicy) bool {
	return a.Flags == b.Flags && maps.Equal(a.Entries, b.Entries) && maps.Equal(a.Ranges, b.Ranges)
}

// rekey is a policy with its entries under key instead of the identity.
func rekey(pol *IdentityPolicy, key bpf.Identity) *IdentityPolicy {
	out := &IdentityPolicy{Flags: pol.Flags, Entries: make(map[bpf.PolicyKey]bpf.Verdict, len(pol.Entries)),
		Ranges: make(map[bpf.PortRangeKey]bpf.Verdict, len(pol.Ranges))}
	for k, v := range pol.Entries {
		k.Endpoint = key
		out.Entries[k] = v
	}
	for k, v := range pol.Ranges {
		k.Endpoint = key
		out.Ranges[k] = v
	}
	return out
}

// intersect is what two endpoints sharing entries may get: the union of
// their isolation and denies, the allows both have (key by key: an allow
// block one of them lacks goes, which only denies more).
func intersect(a, b *IdentityPolicy) *IdentityPolicy {
	if a == nil {
		return b
	}
	out := &IdentityPolicy{Flags: a.Flags | b.Flags, Entries: map[bpf.PolicyKey]bpf.Verdict{}, Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
	for _, p := range []*IdentityPolicy{a, b} {
		for k, v := range p.Entries {
			if v == bpf.Deny || a.Entries[k] == v && b.Entries[k] == v {
				out.Entries[k] = v
			}
		}
		for k, v := range p.Ranges {
			if v == bpf.Deny || a.Ranges[k] == v && b.Ranges[k] == v {
				out.Ranges[k] = v
			}
		}
	}
	bpf.NormalizeRanges(out.Ranges)
	return out
}

// defaults adds the entries every isolated endpoint gets.
func (t *translator) defaults(ep Endpoint, pol *IdentityPolicy) {
	if pol.Flags&bpf.EnforceIngress != 0 && t.in.AllowHostIngress {
		pol.Entries[bpf.PolicyKey{Endpoint: ep.Identity, Peer: bpf.IdentityHost, Dir: bpf.Ingress}] = bpf.Allow
	}
	if pol.Flags&bpf.EnforceEgress != 0 && ep.Redirected && t.in.ProxyPort != 0 {
		pol.Entries[bpf.PolicyKey{Endpoint: ep.Identity, Peer: bpf.IdentityHost, Port: t.in.ProxyPort,
			Proto: bpf.ProtoTCP, Dir: bpf.Egress}] = bpf.Allow
	}
}

// collectPrefixes is every IPv4 block and exception of the policies, except
// /0 (WORLD stands for it). NetworkPolicies and TrafficPolicies contribute
// every block they name — in rules of a direction they do not enforce too —,
// as before the model: a prefix no rule uses only refines which identity an
// address has, never a decision, and keeping the set lets the maps stay
// byte for byte what they were.
func collectPrefixes(in *Input, models []ir.Policy) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	add := func(p netip.Prefix) {
		if p.IsValid() && p.Addr().Is4() && p.Bits() > 0 {
			out[p.Masked()] = true
		}
	}
	addString := func(s string) {
		if p, err := netip.ParsePrefix(s); err == nil {
			add(p)
		}
	}
	nps := append([]*networkingv1.NetworkPolicy(nil), in.Policies...)
	for _, tp := range in.TrafficPolicies {
		nps = append(nps, tp.asNetworkPolicy())
	}
	for _, p := range nps {
		var peers []networkingv1.NetworkPolicyPeer
		for _, r := range p.Spec.Ingress {
			peers = append(peers, r.From...)
		}
		for _, r := range p.Spec.Egress {
			peers = append(peers, r.To...)
		}
		for _, peer := range peers {
			if peer.IPBlock != nil {
				addString(peer.IPBlock.CIDR)
				for _, e := range peer.IPBlock.Except {
					addString(e)
				}
			}
		}
	}
	for _, pol := range models {
		if pol.Action == ir.PolicyAudit || pol.DryRun {
			continue
		}
		for _, r := range pol.Rules {
			for _, c := range r.Clauses {
				for _, m := range c.Matches {
					for _, b := range append(append([]ir.IPBlock(nil), m.IPBlocks...), m.NotIPBlocks...) {
						add(b.CIDR)
						for _, e := range b.Except {
							add(e)
						}
					}
				}
			}
		}
	}
	return out
}
