package policy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The first step of the translation: a NetworkPolicy (or a TrafficPolicy,
// expressed as one) becomes an ir.Policy. Everything about the source object
// alone is decided here — which selectors and blocks parse, which ports are
// valid — and recorded as degradations of the model; what depends on the
// cluster (which identities a selector picks, named ports, port ranges the
// maps can hold) is the L4 back end's (l4.go).

// NetworkPolicyModel is a NetworkPolicy in the policy model.
func NetworkPolicyModel(p *networkingv1.NetworkPolicy) ir.Policy {
	return buildModel(source{np: p, kind: KindNetworkPolicy})
}

// Model is the TrafficPolicy in the policy model.
func (tp *TrafficPolicy) Model() ir.Policy {
	return buildModel(source{np: tp.asNetworkPolicy(), kind: KindTrafficPolicy, deny: tp.Spec.Action == v1alpha1.ActionDeny})
}

// source is a policy to translate: a NetworkPolicy, or a TrafficPolicy
// expressed as one (kind says which, for field names and diagnostics).
type source struct {
	np   *networkingv1.NetworkPolicy
	kind string
	// deny: its rules deny (a Deny TrafficPolicy) and it isolates nothing.
	deny bool
}

type modelBuilder struct {
	pol  *ir.Policy
	kind string
	deny bool
}

// degrade records a part that cannot be expressed as written on list (the
// policy's or a rule's degradations).
func (b *modelBuilder) degrade(list *[]ir.Degradation, instead ir.Fallback, field, format string, args ...any) {
	*list = append(*list, ir.Degradation{Instead: instead, Diagnostic: ir.Diagnostic{
		Severity: ir.SeverityWarning, Code: ir.CodeDeniesMore, Resource: b.pol.Source, Field: field,
		Message: fmt.Sprintf(format, args...)}})
}

func buildModel(src source) ir.Policy {
	p := src.np
	pol := ir.Policy{
		Source: ir.ResourceRef{Kind: src.kind, Namespace: p.Namespace, Name: p.Name},
		Gate:   ir.GateNetwork, Action: ir.PolicyAllow,
		Scope: ir.PolicyScope{Namespace: p.Namespace},
	}
	if src.deny {
		pol.Action = ir.PolicyDeny
	}
	b := &modelBuilder{pol: &pol, kind: src.kind, deny: src.deny}
	if _, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector); err != nil {
		if !b.deny {
			// Which pods it selects is unknown: isolate every pod of the
			// namespace and allow nothing from this policy.
			b.degrade(&pol.Degradations, ir.FallbackIsolate, b.selectorField(),
				"invalid selector (%v): every pod of the namespace is isolated, no rule of this policy applies", err)
			pol.Isolates = []ir.PolicyDirection{ir.PolicyIngress, ir.PolicyEgress}
			return pol
		}
		// Its rules deny for every pod of the namespace.
		b.degrade(&pol.Degradations, ir.FallbackMatchMore, "spec.selector",
			"invalid selector (%v): the policy's rules deny for every pod of the namespace", err)
	} else {
		pol.Scope.Workloads = irSelector(&p.Spec.PodSelector)
	}
	for _, pt := range p.Spec.PolicyTypes {
		if pt != networkingv1.PolicyTypeIngress && pt != networkingv1.PolicyTypeEgress {
			b.degrade(&pol.Degradations, ir.FallbackIgnore, "spec.policyTypes", "unknown policy type %q ignored", pt)
		}
	}
	ingress, egress := policyTypes(p)
	if ingress {
		if !b.deny {
			pol.Isolates = append(pol.Isolates, ir.PolicyIngress)
		}
		for r, rule := range p.Spec.Ingress {
			pol.Rules = append(pol.Rules, b.rule(ir.PolicyIngress, fmt.Sprintf("spec.ingress[%d]", r), rule.From, b.peersField("from"), rule.Ports))
		}
	}
	if egress {
		if !b.deny {
			pol.Isolates = append(pol.Isolates, ir.PolicyEgress)
		}
		for r, rule := range p.Spec.Egress {
			pol.Rules = append(pol.Rules, b.rule(ir.PolicyEgress, fmt.Sprintf("spec.egress[%d]", r), rule.To, b.peersField("to"), rule.Ports))
		}
	}
	return pol
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

// selectorField and peersField name fields as the policy's kind spells them.
func (b *modelBuilder) selectorField() string {
	if b.kind == KindTrafficPolicy {
		return "spec.selector"
	}
	return "spec.podSelector"
}

func (b *modelBuilder) peersField(networkPolicyName string) string {
	if b.kind == KindTrafficPolicy {
		return ".peers"
	}
	return "." + networkPolicyName
}

// rule is one ingress or egress rule: a clause of peers and a clause of
// ports, each left out when its list is empty (every peer, every port).
func (b *modelBuilder) rule(dir ir.PolicyDirection, field string, peers []networkingv1.NetworkPolicyPeer, peersField string,
	ports []networkingv1.NetworkPolicyPort) ir.PolicyRule {
	r := ir.PolicyRule{Direction: dir, Field: field}
	if len(peers) > 0 {
		if c, every := b.peers(&r, peers, field+peersField); !every {
			r.Clauses = append(r.Clauses, c)
		}
	}
	if len(ports) > 0 {
		if c, every := b.ports(&r, ports, field+".ports"); !every {
			r.Clauses = append(r.Clauses, c)
		}
	}
	return r
}

// peers is the clause of a rule's from/to list; every is true when a deny
// cannot know its peers and so denies every peer.
func (b *modelBuilder) peers(r *ir.PolicyRule, list []networkingv1.NetworkPolicyPeer, field string) (c ir.PolicyClause, every bool) {
	c.Matches = []ir.PolicyMatch{}
	// unusable reports a peer that cannot be expressed: an allow's peer
	// matches nothing; a deny's rule denies every peer.
	unusable := func(f, format string, args ...any) bool {
		if b.deny {
			b.degrade(&r.Degradations, ir.FallbackMatchMore, f, format+"; the rule denies every peer", args...)
			return true
		}
		b.degrade(&r.Degradations, ir.FallbackMatchNothing, f, format+"; the peer matches nothing", args...)
		return false
	}
	for i, peer := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case peer.IPBlock != nil:
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				if unusable(f, "ipBlock cannot be combined with selectors") {
					return c, true
				}
				continue
			}
			block, ok, every := b.ipBlock(r, peer.IPBlock, f, unusable)
			if every {
				return c, true
			}
			if ok {
				c.Matches = append(c.Matches, ir.PolicyMatch{Field: f, IPBlocks: []ir.IPBlock{block}})
			}
		case peer.PodSelector != nil || peer.NamespaceSelector != nil:
			ws := ir.WorkloadSelector{Namespace: b.pol.Source.Namespace}
			if peer.PodSelector != nil {
				if _, err := metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
					if unusable(f+".podSelector", "invalid selector (%v)", err) {
						return c, true
					}
					continue
				}
				ws.Labels = irSelector(peer.PodSelector)
			}
			if peer.NamespaceSelector != nil {
				if _, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
					if unusable(f+".namespaceSelector", "invalid selector (%v)", err) {
						return c, true
					}
					continue
				}
				ws.Namespace, ws.NamespaceLabels = "", irSelector(peer.NamespaceSelector)
			}
			c.Matches = append(c.Matches, ir.PolicyMatch{Field: f, Workloads: []ir.WorkloadSelector{ws}})
		default:
			if b.deny {
				b.degrade(&r.Degradations, ir.FallbackMatchMore, f, "peer has no podSelector, namespaceSelector or ipBlock; the rule denies every peer")
				return c, true
			}
			b.degrade(&r.Degradations, ir.FallbackMatchNothing, f, "peer has no podSelector, namespaceSelector or ipBlock; it matches nothing")
		}
	}
	return c, false
}

// ipBlock checks a peer's block; ok is false when the peer matches nothing,
// every is true when a deny must deny every peer instead.
func (b *modelBuilder) ipBlock(r *ir.PolicyRule, ib *networkingv1.IPBlock, f string,
	unusable func(f, format string, args ...any) bool) (block ir.IPBlock, ok, every bool) {
	cidrField, exceptField := f+".ipBlock.cidr", f+".ipBlock.except"
	if b.kind == KindTrafficPolicy {
		cidrField, exceptField = f+".cidr", f+".except"
	}
	prefix, err := netip.ParsePrefix(ib.CIDR)
	if err != nil {
		return block, false, unusable(cidrField, "invalid CIDR %q", ib.CIDR)
	}
	if !prefix.Addr().Is4() {
		// Exact for a deny too: IPv6 is dropped both ways (datapath.md).
		b.degrade(&r.Degradations, ir.FallbackMatchNothing, cidrField,
			"IPv6 block %s is not enforced (the datapath polices IPv4 only); the peer matches no IPv4 address", ib.CIDR)
		return block, false, false
	}
	block.CIDR = prefix.Masked()
	for i, e := range ib.Except {
		ef := fmt.Sprintf("%s[%d]", exceptField, i)
		p, err := netip.ParsePrefix(e)
		if err != nil || !p.Addr().Is4() {
			if b.deny {
				// The block without the exception denies more.
				b.degrade(&r.Degradations, ir.FallbackMatchMore, ef, "invalid or non-IPv4 exception %q; the rule denies the whole block", e)
				continue
			}
			// Allowing the block without an exception it was meant to have
			// would allow too much.
			b.degrade(&r.Degradations, ir.FallbackMatchNothing, ef, "invalid or non-IPv4 exception %q; the whole block matches nothing", e)
			return block, false, false
		}
		if !contains(block.CIDR, p.Masked()) {
			b.degrade(&r.Degradations, ir.FallbackIgnore, ef, "exception %s is outside the block %s; ignored", e, block.CIDR)
			continue
		}
		block.Except = append(block.Except, p.Masked())
	}
	return block, true, false
}

// ports is the clause of a rule's ports; every is true when a deny cannot
// know its ports and so denies every port and protocol.
func (b *modelBuilder) ports(r *ir.PolicyRule, list []networkingv1.NetworkPolicyPort, field string) (c ir.PolicyClause, every bool) {
	c.Matches = []ir.PolicyMatch{}
	add := func(f string, pm ir.PortMatch) {
		c.Matches = append(c.Matches, ir.PolicyMatch{Field: f, Ports: []ir.PortMatch{pm}})
	}
	// unusable reports a port that cannot be expressed: for an allow it
	// matches nothing, for a deny every port of its protocol is denied.
	unusable := func(f string, proto ir.IPProtocol, format string, args ...any) {
		if b.deny {
			b.degrade(&r.Degradations, ir.FallbackMatchMore, f, format+"; denied on every port", args...)
			add(f, ir.PortMatch{Protocol: proto})
			return
		}
		b.degrade(&r.Degradations, ir.FallbackMatchNothing, f, format+"; the port matches nothing", args...)
	}
	for i, p := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		proto, ok := irProtocol(p.Protocol)
		if !ok {
			if b.deny {
				b.degrade(&r.Degradations, ir.FallbackMatchMore, f+".protocol", "unknown protocol %q; the rule denies every port and protocol", *p.Protocol)
				return c, true
			}
			b.degrade(&r.Degradations, ir.FallbackMatchNothing, f+".protocol", "unknown protocol %q; the port matches nothing", *p.Protocol)
			continue
		}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				unusable(f+".endPort", proto, "endPort without port")
				continue
			}
			add(f, ir.PortMatch{Protocol: proto})
		case p.Port.Type == intstr.String:
			if p.EndPort != nil {
				unusable(f+".endPort", proto, "endPort with a named port")
				continue
			}
			add(f, ir.PortMatch{Protocol: proto, Name: p.Port.StrVal})
		default:
			first := p.Port.IntVal
			if first < 1 || first > 65535 {
				unusable(f+".port", proto, "port %d out of range", first)
				continue
			}
			pm := ir.PortMatch{Protocol: proto, Port: uint16(first)}
			if p.EndPort != nil {
				last := *p.EndPort
				if last < first || last > 65535 {
					unusable(f+".endPort", proto, "endPort %d is below port %d or above 65535", last, first)
					continue
				}
				pm.EndPort = uint16(last)
			}
			add(f, pm)
		}
	}
	return c, false
}

func irProtocol(p *corev1.Protocol) (ir.IPProtocol, bool) {
	if p == nil {
		return ir.IPProtocolTCP, true
	}
	switch strings.ToUpper(string(*p)) {
	case "TCP":
		return ir.IPProtocolTCP, true
	case "UDP":
		return ir.IPProtocolUDP, true
	case "SCTP":
		return ir.IPProtocolSCTP, true
	}
	return "", false
}

// irSelector copies a (valid) label selector into the model.
func irSelector(s *metav1.LabelSelector) *ir.LabelSelector {
	out := &ir.LabelSelector{}
	if len(s.MatchLabels) > 0 {
		out.MatchLabels = make(map[string]string, len(s.MatchLabels))
		for k, v := range s.MatchLabels {
			out.MatchLabels[k] = v
		}
	}
	for _, e := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, ir.LabelRequirement{Key: e.Key, Operator: string(e.Operator),
			Values: append([]string(nil), e.Values...)})
	}
	return out
}
