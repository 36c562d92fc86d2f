package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

// MaxPortRange is the widest endPort range expanded into single-port
// entries; a wider one (other than every port) is reported and allows
// nothing.
const MaxPortRange = 1024

// portProto is a destination port (0 = any) and protocol (0 = any).
type portProto struct {
	port  uint16
	proto uint8
}

// peerSet is the peers of one rule: identities, or every peer.
type peerSet struct {
	any bool
	ids []bpf.Identity
}

type translator struct {
	in     *Input
	diags  []Diagnostic
	cidrs  map[netip.Prefix]bpf.Identity
	policy *networkingv1.NetworkPolicy
	// kind of the policy being translated; deny: its rules deny (a Deny
	// TrafficPolicy) and it isolates nothing.
	kind string
	deny bool
}

func (t *translator) report(field, format string, args ...any) {
	t.diags = append(t.diags, Diagnostic{Severity: Warning, Kind: t.kind, Namespace: t.policy.Namespace, Name: t.policy.Name,
		Field: field, Message: fmt.Sprintf(format, args...)})
}

// source is a policy to translate: a NetworkPolicy, or a TrafficPolicy
// expressed as one.
type source struct {
	np   *networkingv1.NetworkPolicy
	kind string
	deny bool
}

// Translate computes the policy of every local endpoint identity.
func Translate(in Input) *Result {
	if in.CIDRs == nil {
		in.CIDRs = NewCIDRAllocator(nil)
	}
	var sources []source
	for _, p := range in.Policies {
		sources = append(sources, source{np: p, kind: KindNetworkPolicy})
	}
	for _, tp := range in.TrafficPolicies {
		sources = append(sources, source{np: tp.asNetworkPolicy(), kind: KindTrafficPolicy, deny: tp.Spec.Action == v1alpha1.ActionDeny})
	}
	sort.Slice(sources, func(i, j int) bool {
		a, b := sources[i], sources[j]
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		if a.np.Namespace != b.np.Namespace {
			return a.np.Namespace < b.np.Namespace
		}
		return a.np.Name < b.np.Name
	})
	policies := make([]*networkingv1.NetworkPolicy, len(sources))
	for i, src := range sources {
		policies[i] = src.np
	}
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
	t.cidrs = in.CIDRs.assign(collectPrefixes(policies))

	perEndpoint := make([]*IdentityPolicy, len(in.Endpoints))
	for i := range in.Endpoints {
		perEndpoint[i] = &IdentityPolicy{Entries: map[bpf.PolicyKey]bpf.Verdict{}}
	}
	for _, src := range sources {
		t.policy, t.kind, t.deny = src.np, src.kind, src.deny
		t.apply(src.np, perEndpoint)
	}
	for i, ep := range in.Endpoints {
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
	res.Diagnostics = append(t.diags, res.Diagnostics...)
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

func policyTypes(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, pt := range p.Spec.PolicyTypes {
		switch pt {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func (t *translator) apply(p *networkingv1.NetworkPolicy, perEndpoint []*IdentityPolicy) {
	sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
	if err != nil {
		// Which pods it selects is unknown: isolate every pod of the
		// namespace and allow nothing from this policy.
		if t.deny {
			// Which pods it selects is unknown: its rules deny for every
			// pod of the namespace.
			t.report("spec.selector", "invalid selector (%v): the policy's rules deny for every pod of the namespace", err)
			sel = labels.Everything()
		} else {
			t.report(t.selectorField(), "invalid selector (%v): every pod of the namespace is isolated, no rule of this policy applies", err)
			for i, ep := range t.in.Endpoints {
				if ep.Namespace == p.Namespace {
					perEndpoint[i].Flags |= bpf.EnforceIngress | bpf.EnforceEgress
				}
			}
			return
		}
	}
	for _, pt := range p.Spec.PolicyTypes {
		if pt != networkingv1.PolicyTypeIngress && pt != networkingv1.PolicyTypeEgress {
			t.report("spec.policyTypes", "unknown policy type %q ignored", pt)
		}
	}
	ingress, egress := policyTypes(p)
	for i, ep := range t.in.Endpoints {
		if ep.Namespace != p.Namespace || !sel.Matches(labels.Set(ep.Labels)) {
			continue
		}
		pol := perEndpoint[i]
		if ingress {
			if !t.deny {
				pol.Flags |= bpf.EnforceIngress
			}
			for r, rule := range p.Spec.Ingress {
				field := fmt.Sprintf("spec.ingress[%d]", r)
				peers := t.peers(rule.From, field+t.peersField("from"))
				ports := t.ports(rule.Ports, field+".ports", ep.Ports)
				for _, pp := range ports {
					t.put(pol, ep.Identity, peers, pp, bpf.Ingress)
				}
			}
		}
		if egress {
			if !t.deny {
				pol.Flags |= bpf.EnforceEgress
			}
			for r, rule := range p.Spec.Egress {
				field := fmt.Sprintf("spec.egress[%d]", r)
				peers := t.peers(rule.To, field+t.peersField("to"))
				t.egressPorts(pol, ep.Identity, peers, rule.Ports, field+".ports")
			}
		}
	}
}

// put writes the entries of a rule: allows, or denies for a Deny policy.
// A deny is never replaced by an allow of the same key (deny wins).
func (t *translator) put(pol *IdentityPolicy, self bpf.Identity, peers peerSet, pp portProto, dir bpf.Direction) {
	verdict := bpf.Allow
	if t.deny {
		verdict = bpf.Deny
	}
	set := func(k bpf.PolicyKey) {
		if pol.Entries[k] != bpf.Deny {
			pol.Entries[k] = verdict
		}
	}
	k := bpf.PolicyKey{Endpoint: self, Port: pp.port, Proto: pp.proto, Dir: dir}
	if peers.any {
		k.Peer = bpf.IdentityAny
		set(k)
		return
	}
	for _, id := range peers.ids {
		k.Peer = id
		set(k)
	}
}

// selectorField and peersField name fields as the policy's kind spells them.
func (t *translator) selectorField() string {
	if t.kind == KindTrafficPolicy {
		return "spec.selector"
	}
	return "spec.podSelector"
}

func (t *translator) peersField(networkPolicyName string) string {
	if t.kind == KindTrafficPolicy {
		return ".peers"
	}
	return "." + networkPolicyName
}

// egressPorts handles egress ports: named ports resolve on each peer.
func (t *translator) egressPorts(pol *IdentityPolicy, self bpf.Identity, peers peerSet, ports []networkingv1.NetworkPolicyPort, field string) {
	named := false
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			named = true
		}
	}
	if !named {
		for _, pp := range t.ports(ports, field, nil) {
			t.put(pol, self, peers, pp, bpf.Egress)
		}
		return
	}
	// Resolve per peer identity; "every peer" means every identity whose
	// pods are known (a named port cannot match an address outside the
	// cluster).
	ids := peers.ids
	if peers.any {
		for id := range t.in.PeerPorts {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	}
	for _, id := range ids {
		pods := t.in.PeerPorts[id]
		if len(pods) == 0 {
			// A CIDR identity or an identity with no known pod: numbered
			// ports still apply, named ones match nothing.
			for _, pp := range t.ports(ports, field, nil) {
				t.put(pol, self, peerSet{ids: []bpf.Identity{id}}, pp, bpf.Egress)
			}
			continue
		}
		// Pods of one identity may name ports differently: only what all
		// of them agree on.
		var common map[portProto]bool
		for _, podPorts := range pods {
			set := map[portProto]bool{}
			for _, pp := range t.ports(ports, field, podPorts) {
				set[pp] = true
			}
			if common == nil {
				common = set
				continue
			}
			for pp := range common {
				if !set[pp] {
					delete(common, pp)
				}
			}
		}
		for pp := range common {
			t.put(pol, self, peerSet{ids: []bpf.Identity{id}}, pp, bpf.Egress)
		}
	}
}

// peers resolves a rule's from/to list.
func (t *translator) peers(list []networkingv1.NetworkPolicyPeer, field string) peerSet {
	if len(list) == 0 {
		return peerSet{any: true}
	}
	seen := map[bpf.Identity]bool{}
	for i, peer := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		var ids []bpf.Identity
		switch {
		case peer.IPBlock != nil:
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				t.report(f, "ipBlock cannot be combined with selectors; the peer matches nothing")
				continue
			}
			ids = t.ipBlock(peer.IPBlock, f+".ipBlock")
		case peer.PodSelector != nil || peer.NamespaceSelector != nil:
			var ok bool
			ids, ok = t.selectIdentities(peer, f)
			if !ok && t.deny {
				return peerSet{any: true} // a deny of unknown peers: every peer
			}
		default:
			t.report(f, "peer has no podSelector, namespaceSelector or ipBlock; it matches nothing")
		}
		for _, id := range ids {
			seen[id] = true
		}
	}
	out := peerSet{}
	for id := range seen {
		out.ids = append(out.ids, id)
	}
	sort.Slice(out.ids, func(i, j int) bool { return out.ids[i] < out.ids[j] })
	return out
}

// selectIdentities resolves a selector peer; ok is false when a selector
// is invalid (the peer then matches nothing, or for a deny every peer).
func (t *translator) selectIdentities(peer networkingv1.NetworkPolicyPeer, field string) (ids []bpf.Identity, ok bool) {
	invalid := "invalid selector (%v); the peer matches nothing"
	if t.deny {
		invalid = "invalid selector (%v); the rule denies every peer"
	}
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			t.report(field+".podSelector", invalid, err)
			return nil, false
		}
		podSel = s
	}
	nsMatch := func(ns string) bool { return ns == t.policy.Namespace }
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			t.report(field+".namespaceSelector", invalid, err)
			return nil, false
		}
		nsMatch = func(ns string) bool {
			nsLabels, ok := t.in.Namespaces[ns]
			if !ok {
				return false
			}
			return s.Matches(labels.Set(nsLabels))
		}
	}
	for _, id := range t.in.Identities {
		if nsMatch(id.Namespace) && podSel.Matches(labels.Set(id.Labels)) {
			ids = append(ids, id.ID)
		}
	}
	return ids, true
}

func (t *translator) ipBlock(b *networkingv1.IPBlock, field string) []bpf.Identity {
	block, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		t.report(field+".cidr", "invalid CIDR %q; the peer matches nothing", b.CIDR)
		return nil
	}
	if !block.Addr().Is4() {
		t.report(field+".cidr", "IPv6 block %s is not enforced (the datapath polices IPv4 only); the peer matches no IPv4 address", b.CIDR)
		return nil
	}
	block = block.Masked()
	var excepts []netip.Prefix
	for i, e := range b.Except {
		p, err := netip.ParsePrefix(e)
		if err != nil || !p.Addr().Is4() {
			// Allowing the block without an exception it was meant to have
			// would allow too much.
			t.report(fmt.Sprintf("%s.except[%d]", field, i), "invalid or non-IPv4 exception %q; the whole block matches nothing", e)
			return nil
		}
		if !contains(block, p.Masked()) {
			t.report(fmt.Sprintf("%s.except[%d]", field, i), "exception %s is outside the block %s; ignored", e, block)
			continue
		}
		excepts = append(excepts, p.Masked())
	}
	excluded := func(p netip.Prefix) bool {
		for _, e := range excepts {
			if contains(e, p) {
				return true
			}
		}
		return false
	}
	var out []bpf.Identity
	// Longest prefix wins in the identity map: an address matches the most
	// specific prefix of any policy, so the block matches every prefix it
	// contains that no exception contains.
	for p, id := range t.cidrs {
		if contains(block, p) && !excluded(p) {
			out = append(out, id)
		}
	}
	// Addresses covered by no prefix at all are WORLD: only a /0 block
	// reaches them.
	if block.Bits() == 0 && !excluded(block) {
		out = append(out, bpf.IdentityWorld)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// collectPrefixes is every ipBlock prefix and exception of every policy,
// except /0 (WORLD stands for it).
func collectPrefixes(policies []*networkingv1.NetworkPolicy) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	add := func(s string) {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() && p.Bits() > 0 {
			out[p.Masked()] = true
		}
	}
	for _, p := range policies {
		var peers []networkingv1.NetworkPolicyPeer
		for _, r := range p.Spec.Ingress {
			peers = append(peers, r.From...)
		}
		for _, r := range p.Spec.Egress {
			peers = append(peers, r.To...)
		}
		for _, peer := range peers {
			if peer.IPBlock != nil {
				add(peer.IPBlock.CIDR)
				for _, e := range peer.IPBlock.Except {
					add(e)
				}
			}
		}
	}
	return out
}

func protoNumber(p *corev1.Protocol) (uint8, bool) {
	if p == nil {
		return bpf.ProtoTCP, true
	}
	switch strings.ToUpper(string(*p)) {
	case "TCP":
		return bpf.ProtoTCP, true
	case "UDP":
		return bpf.ProtoUDP, true
	case "SCTP":
		return bpf.ProtoSCTP, true
	}
	return 0, false
}

// ports resolves a rule's ports; named ports resolve against podPorts (the
// destination pod's), and match nothing when podPorts is nil or lacks them.
func (t *translator) ports(list []networkingv1.NetworkPolicyPort, field string, podPorts []NamedPort) []portProto {
	if len(list) == 0 {
		return []portProto{{}}
	}
	var out []portProto
	for i, p := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			t.report(f+".protocol", "unknown protocol %q; the port matches nothing", *p.Protocol)
			continue
		}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				t.report(f+".endPort", "endPort without port; the port matches nothing")
				continue
			}
			out = append(out, portProto{proto: proto})
		case p.Port.Type == intstr.String:
			if p.EndPort != nil {
				t.report(f+".endPort", "endPort with a named port; the port matches nothing")
				continue
			}
			for _, np := range podPorts {
				if np.Name == p.Port.StrVal && np.Proto == proto {
					out = append(out, portProto{port: np.Port, proto: proto})
				}
			}
		default:
			first := p.Port.IntVal
			if first < 1 || first > 65535 {
				t.report(f+".port", "port %d out of range; the port matches nothing", first)
				continue
			}
			last := first
			if p.EndPort != nil {
				last = *p.EndPort
			}
			switch {
			case last < first || last > 65535:
				t.report(f+".endPort", "endPort %d is below port %d or above 65535; the port matches nothing", last, first)
			case first == 1 && last == 65535:
				out = append(out, portProto{proto: proto})
			case last-first+1 > MaxPortRange && t.deny:
				t.report(f+".endPort", "range %d-%d is wider than the %d ports the agent expands; denied on every port", first, last, MaxPortRange)
				out = append(out, portProto{proto: proto})
			case last-first+1 > MaxPortRange:
				t.report(f+".endPort", "range %d-%d is wider than the %d ports the agent expands; it matches nothing", first, last, MaxPortRange)
			default:
				for port := first; port <= last; port++ {
					out = append(out, portProto{port: uint16(port), proto: proto})
				}
			}
		}
	}
	return out
}
