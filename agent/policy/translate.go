package policy

import (
	"fmt"
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

type translator struct {
	in    *Input
	cidrs map[netip.Prefix]bpf.Identity
}

// Translate computes the policy of every local endpoint identity, in two
// steps: every NetworkPolicy and TrafficPolicy becomes an ir.Policy
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

	perEndpoint := make([]*IdentityPolicy, len(in.Endpoints))
	for i := range in.Endpoints {
		perEndpoint[i] = &IdentityPolicy{Entries: map[bpf.PolicyKey]bpf.Verdict{}}
	}
	blocked := make([]bpf.EndpointFlags, len(in.Endpoints))
	var diags []Diagnostic
	for i := range models {
		cp := t.compile(&models[i])
		if cp == nil {
			continue
		}
		t.apply(cp, perEndpoint, blocked)
		diags = append(diags, cp.diagnostics()...)
	}
	for i, ep := range in.Endpoints {
		unblock(perEndpoint[i], blocked[i])
		t.defaults(ep, perEndpoint[i])
	}
	res := &Result{Identities: map[bpf.Identity]*IdentityPolicy{}, CIDRs: t.cidrs}
	// Endpoints of one identity share entries: they get the intersection
	// of their allows and the union of their denies.
	byID := map[bpf.Identity][]int{}
	for i, ep := range in.Endpoints {
		byID[ep.Identity] = append(byID[ep.Identity], i)
	}
	for id, idx := range byID {
		merged := perEndpoint[idx[0]]
		for _, i := range idx[1:] {
			other := perEndpoint[i]
			differ := merged.Flags != other.Flags || len(merged.Entries) != len(other.Entries)
			out := &IdentityPolicy{Flags: merged.Flags | other.Flags, Entries: map[bpf.PolicyKey]bpf.Verdict{}}
			for k, v := range merged.Entries {
				ov, ok := other.Entries[k]
				if !ok || ov != v {
					differ = true
				}
				if ok && ov == v || v == bpf.Deny {
					out.Entries[k] = v
				}
			}
			for k, v := range other.Entries {
				if v == bpf.Deny && merged.Entries[k] != bpf.Deny {
					out.Entries[k] = v
					differ = true
				}
			}
			if differ {
				a, b := in.Endpoints[idx[0]], in.Endpoints[i]
				res.Diagnostics = append(res.Diagnostics, Diagnostic{Severity: Warning, Namespace: a.Namespace, Name: "*",
					Field: "spec", Message: fmt.Sprintf("pods %s and %s share identity %d but policies treat them differently "+
						"(named ports or labels left out of identities); both get only what both are allowed", a.Name, b.Name, id)})
			}
			merged = out
		}
		res.Identities[id] = merged
	}
	res.Diagnostics = append(diags, res.Diagnostics...)
	sort.SliceStable(res.Diagnostics, func(i, j int) bool { return res.Diagnostics[i].String() < res.Diagnostics[j].String() })
	return res
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
