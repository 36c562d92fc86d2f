package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The node Envoy's inbound listener (docs/design/policy.md §7.2): which
// ports of a node's pods it captures (the decision the agent takes too,
// translate/authz.Capture), and the filter chain of each — the pod's RBAC
// for its authorization policies, Istio's inbound HTTP connection manager.

// Capture decides which ports of pods the node Envoy's inbound listener
// captures (authz.NewCapture; the agent uses translate/authz directly).
type Capture = authz.Capture

// CapturedPort is a pod port the inbound listener captures.
type CapturedPort = authz.CapturedPort

// NewCapture prepares the capture decision for a state of the cluster: its
// authorization policies (AuthorizationPolicies) and Services.
func NewCapture(pols []ir.Policy, services []*corev1.Service) *Capture {
	return authz.NewCapture(pols, services)
}

// CapturedPorts are the ports of one pod the inbound listener captures,
// sorted (none for a pod that is not meshed, has no address or has
// completed). For many pods, use NewCapture once and Capture.Ports.
func CapturedPorts(c *Capture, bag *Bag, pod *Pod) []CapturedPort {
	if !servesTraffic(pod) {
		return nil
	}
	return c.Ports(workload(pod), namespaceLabels(bag)[pod.Namespace])
}

// Workload is what translate/authz reads of a pod.
func Workload(pod *Pod) authz.Workload { return workload(pod) }

func workload(pod *input.Pod) authz.Workload {
	w := authz.Workload{Namespace: pod.Namespace, Labels: pod.Labels, HostNetwork: pod.HostNetwork, Sidecar: pod.Sidecar}
	if len(pod.Ports) > 0 {
		w.NamedPorts = make([]authz.NamedPort, len(pod.Ports))
		for i, p := range pod.Ports {
			w.NamedPorts[i] = authz.NamedPort{Name: p.Name, Port: p.Port}
		}
	}
	return w
}

// servesTraffic: a pod with an address that has not completed. Readiness
// is not asked: a pod that is not ready yet can still be connected to
// directly, and the agent captures by the same rule.
func servesTraffic(pod *input.Pod) bool {
	return len(pod.IPs) > 0 && pod.Phase != corev1.PodSucceeded && pod.Phase != corev1.PodFailed
}

func namespaceLabels(bag *Bag) map[string]map[string]string {
	out := make(map[string]map[string]string, len(bag.Namespaces))
	for _, n := range bag.Namespaces {
		out[n.Name] = n.Labels
	}
	return out
}

// inboundPod is a captured pod of a node: its ports and the indexes of the
// policies that apply to it (in Generation.pols).
type inboundPod struct {
	pod      *input.Pod
	ports    []CapturedPort
	policies []int
}

// authzState is what a generation keeps of the authorization policies.
type authzState struct {
	opts    AuthzOptions
	pols    []ir.Policy
	applies []func(namespace string, podLabels map[string]string) bool
	capture *Capture
	// peers are the pods with an identity (TD/ns/NS/sa/SA) and the
	// addresses it is known by, for principals in the inbound RBAC.
	peers []peer
	// byAddr memoizes byAddress per policy (it does not depend on the
	// destination pod; nodes are built in parallel).
	mu     sync.Mutex
	byAddr map[int]ir.Policy
	// ras are the RequestAuthentications: the jwt_authn filter of the
	// pods they apply to (before the RBAC filters), whose keys jwks
	// fetches; bag is what their scopes are resolved against.
	ras  []ir.RequestAuthn
	jwks JWKSFunc
	bag  *Bag
	// mtls is set with Istio mTLS (Options.Istio.IstioMTLS): the node
	// Envoys terminate it for sidecar clients (authz.Capture.WithMTLS).
	mtls *inboundMTLS
}

// inboundMTLS is what inbound mTLS termination needs of the options.
type inboundMTLS struct {
	trustDomain, clusterDomain string
}

// peerAuthentications are the bag's PeerAuthentications (kept typed in
// Other, as AuthorizationPolicies).
func peerAuthentications(bag *Bag) []*securityv1.PeerAuthentication {
	var out []*securityv1.PeerAuthentication
	for _, o := range bag.Other {
		if pa, ok := o.Typed.(*securityv1.PeerAuthentication); ok && pa != nil {
			out = append(out, pa)
		}
	}
	return out
}

type peer struct {
	namespace, principal string
	addrs                []netip.Addr
}

// newAuthzState translates the bag's authorization policies and
// RequestAuthentications, and with mtls its DestinationRules and
// PeerAuthentications for inbound mTLS termination (none: nil).
func newAuthzState(bag *Bag, opts AuthzOptions, jwks JWKSFunc, mtls *inboundMTLS) *authzState {
	pols, _ := AuthorizationPolicies(bag, opts) // their diagnostics are the policies' status (xds/watch)
	ras, _ := RequestAuthentications(bag, opts)
	if mtls != nil && len(bag.DestinationRules) == 0 {
		mtls = nil // no rule can make a client send mTLS
	}
	if len(pols) == 0 && len(ras) == 0 && mtls == nil {
		return nil
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = authz.DefaultTrustDomain
	}
	scopes := make([]ir.PolicyScope, len(ras))
	for i := range ras {
		scopes[i] = ras[i].Scope
	}
	s := &authzState{opts: opts, pols: pols, capture: authz.NewCapture(pols, bag.Services).WithAuthn(scopes, bag.Services),
		ras: ras, jwks: jwks, bag: bag, mtls: mtls}
	if mtls != nil {
		// (what istiod ignores of the PeerAuthentications is their status,
		// xds/watch)
		pa := authz.NewPeerAuthentications(peerAuthentications(bag), opts.RootNamespace, nil)
		s.capture.WithMTLS(authz.MTLSTermination{DestinationRules: bag.DestinationRules, PeerAuthn: pa, ClusterDomain: mtls.clusterDomain})
	}
	for i := range pols {
		s.applies = append(s.applies, authz.Applies(&pols[i], bag.Services))
	}
	for _, p := range bag.Pods {
		if p.HostNetwork || !servesTraffic(p) {
			continue // the node's address: no pod identity (HOST)
		}
		sa := p.ServiceAccount
		if sa == "" {
			sa = "default" // what the API server sets
		}
		pr := peer{namespace: p.Namespace, principal: opts.TrustDomain + "/ns/" + p.Namespace + "/sa/" + sa}
		for _, ip := range p.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				pr.addrs = append(pr.addrs, a.Unmap())
			}
		}
		s.peers = append(s.peers, pr)
	}
	return s
}

// inbound lists a node's captured pods and a key of everything their chains
// depend on (addresses, ports, which policies apply); the policies
// themselves are the generation's.
func (s *authzState) inbound(bag *Bag, node string) (string, []inboundPod) {
	if s == nil {
		return "", nil
	}
	nsLabels := namespaceLabels(bag)
	var out []inboundPod
	var key strings.Builder
	for _, pod := range bag.Pods {
		if pod.NodeName != node || !servesTraffic(pod) {
			continue
		}
		ports := s.capture.Ports(workload(pod), nsLabels[pod.Namespace])
		if len(ports) == 0 {
			continue
		}
		ip := inboundPod{pod: pod, ports: ports}
		key.WriteString(pod.Namespace + "/" + pod.Name + "=" + strings.Join(pod.IPs, ",") + ":")
		for _, p := range ports {
			key.WriteString(strconv.FormatUint(uint64(p.Port), 10) + string(p.Protocol) + ",")
			if p.MTLS != "" {
				// The chain's certificate is the pod's identity.
				key.WriteString(string(p.MTLS) + "=" + pod.IdentityAccount() + ",")
			}
		}
		key.WriteByte('@')
		for i := range s.pols {
			if s.pols[i].Gate == ir.GateAuthorization && s.applies[i](pod.Namespace, pod.Labels) {
				ip.policies = append(ip.policies, i)
				key.WriteString(strconv.Itoa(i) + ",")
			}
		}
		key.WriteByte('~')
		for i := range s.ras {
			if AppliesTo(&ir.Policy{Scope: s.ras[i].Scope}, pod, bag.Services) {
				key.WriteString(strconv.Itoa(i) + ",")
			}
		}
		key.WriteByte(';')
		out = append(out, ip)
	}
	return key.String(), out
}

// chains builds the RBAC of each captured pod (once for all its ports) and
// its chains. A pod whose RBAC cannot be built gets chains that deny every
// request, and an error.
func (s *authzState) chains(pods []inboundPod) ([]envoy.InboundChain, ir.Diagnostics) {
	var out []envoy.InboundChain
	var diags ir.Diagnostics
	type built struct {
		filters []envoy.RBACFilter
		err     error
	}
	// Pods of one workload have the same policies: their RBAC is built
	// (and its diagnostics reported) once.
	bySet := map[string]built{}
	for _, ip := range pods {
		set := fmt.Sprint(ip.policies)
		b, ok := bySet[set]
		if !ok {
			pols := make([]ir.Policy, 0, len(ip.policies))
			for _, i := range ip.policies {
				pols = append(pols, s.resolved(i))
			}
			var ds ir.Diagnostics
			b.filters, ds, b.err = envoy.BuildRBAC(pols, false)
			diags = append(diags, ds...)
			bySet[set] = b
		}
		filters, err := b.filters, b.err
		ref := ir.ResourceRef{Kind: "Pod", Namespace: ip.pod.Namespace, Name: ip.pod.Name}
		if err != nil {
			diags.Errorf(ir.CodeInvalidXDS, ref, "", "the inbound RBAC of the pod cannot be built, its captured ports deny every request: %v", err)
		}
		// The pod's RequestAuthentications: jwt_authn before the RBAC
		// filters (every HTTP port of the pod, as on a sidecar). A filter
		// that cannot be built denies every request of the pod.
		var authn []*hcmv3.HttpFilter
		jwt, jds, jerr := WorkloadJWT(s.ras, s.bag, ip.pod, s.jwks)
		diags = append(diags, jds...)
		if jerr != nil {
			diags.Errorf(ir.CodeInvalidXDS, ref, "", "the JWT validation of the pod cannot be built, its captured ports deny every request: %v", jerr)
		} else if jwt != nil {
			authn = []*hcmv3.HttpFilter{jwt}
		}
		for _, p := range ip.ports {
			c := envoy.InboundChain{
				Pod: ref, Addresses: ip.pod.IPs, Port: p.Port, Protocol: p.Protocol,
				Authn: authn, RBAC: filters, DenyAll: err != nil || jerr != nil,
			}
			if p.MTLSOnly {
				// No policy with HTTP facts: the agent's gate decides the
				// port at L4, on the Envoy's upstream connection (which
				// carries the client's address); the chain only proxies.
				c.Authn, c.RBAC, c.DenyAll = nil, nil, false
			}
			if p.MTLS != "" && s.mtls != nil {
				c.MTLS = &envoy.InboundMTLS{Strict: p.MTLS == authz.ModeStrict, TrustDomain: s.mtls.trustDomain,
					Certificate: ir.SPIFFEID(s.mtls.trustDomain, ip.pod.Namespace, ip.pod.IdentityAccount())}
			}
			out = append(out, c)
		}
	}
	return out, diags
}

// resolved is policy i with its peers by address (byAddress), computed once.
func (s *authzState) resolved(i int) ir.Policy {
	s.mu.Lock()
	p, ok := s.byAddr[i]
	s.mu.Unlock()
	if ok {
		return p
	}
	p = s.byAddress(s.pols[i])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr == nil {
		s.byAddr = map[int]ir.Policy{}
	}
	s.byAddr[i] = p
	return p
}

// byAddress rewrites a policy's peer identity facts (principals,
// namespaces, trust domains and their not* forms) as the addresses of the
// pods that have them, the way the eBPF back end knows peers: the inbound
// listener sees plaintext connections from the client's own address (no
// mTLS yet, issue 14 §2), so Envoy's `authenticated` principal would never
// match — an ALLOW by principal would admit nothing and, worse, a DENY by
// principal would never fire. A match whose peers are no pod matches
// nothing; a not* form becomes notIPBlocks (a peer that is no pod has no
// principal, so it is not one of those, as in Istio and in eBPF).
func (s *authzState) byAddress(p ir.Policy) ir.Policy {
	out := p
	out.Rules = make([]ir.PolicyRule, len(p.Rules))
	for i, r := range p.Rules {
		nr := r
		nr.Clauses = make([]ir.PolicyClause, len(r.Clauses))
		for j, c := range r.Clauses {
			nc := ir.PolicyClause{Field: c.Field, Matches: make([]ir.PolicyMatch, 0, len(c.Matches))}
			for _, m := range c.Matches {
				if nm, ok := s.matchByAddress(m); ok {
					nc.Matches = append(nc.Matches, nm)
				}
			}
			nr.Clauses[j] = nc
		}
		out.Rules[i] = nr
	}
	return out
}

func (s *authzState) matchByAddress(m ir.PolicyMatch) (ir.PolicyMatch, bool) {
	positive := len(m.Principals) > 0 || len(m.Namespaces) > 0 || len(m.TrustDomains) > 0
	negative := len(m.NotPrincipals) > 0 || len(m.NotNamespaces) > 0 || len(m.NotTrustDomains) > 0
	if !positive && !negative {
		return m, true
	}
	td := s.opts.TrustDomain
	hasMatch := func(gs []ir.Glob, v string) bool {
		return slices.ContainsFunc(gs, func(g ir.Glob) bool { return g.Match(v) })
	}
	excluded := func(p peer) bool {
		return hasMatch(m.NotPrincipals, p.principal) || hasMatch(m.NotNamespaces, p.namespace) || hasMatch(m.NotTrustDomains, td)
	}
	out := m
	out.Principals, out.Namespaces, out.TrustDomains = nil, nil, nil
	out.NotPrincipals, out.NotNamespaces, out.NotTrustDomains = nil, nil, nil
	if positive {
		var blocks []ir.IPBlock
		for _, p := range s.peers {
			if len(m.Principals) > 0 && !hasMatch(m.Principals, p.principal) ||
				len(m.Namespaces) > 0 && !hasMatch(m.Namespaces, p.namespace) ||
				len(m.TrustDomains) > 0 && !hasMatch(m.TrustDomains, td) || excluded(p) {
				continue
			}
			for _, a := range p.addrs {
				// Within the match's own ipBlocks, if it has some (a match
				// is an AND of its fields).
				if len(m.IPBlocks) > 0 && !slices.ContainsFunc(m.IPBlocks, func(b ir.IPBlock) bool { return b.Contains(a) }) {
					continue
				}
				blocks = append(blocks, ir.IPBlock{CIDR: netip.PrefixFrom(a, a.BitLen())})
			}
		}
		if len(blocks) == 0 {
			return ir.PolicyMatch{}, false
		}
		out.IPBlocks = sortBlocks(blocks)
		return out, true
	}
	var not []ir.IPBlock
	for _, p := range s.peers {
		if excluded(p) {
			for _, a := range p.addrs {
				not = append(not, ir.IPBlock{CIDR: netip.PrefixFrom(a, a.BitLen())})
			}
		}
	}
	out.NotIPBlocks = sortBlocks(append(slices.Clone(m.NotIPBlocks), not...))
	return out, true
}

func sortBlocks(bs []ir.IPBlock) []ir.IPBlock {
	slices.SortFunc(bs, func(a, b ir.IPBlock) int {
		if c := a.CIDR.Addr().Compare(b.CIDR.Addr()); c != 0 {
			return c
		}
		return a.CIDR.Bits() - b.CIDR.Bits()
	})
	return slices.CompactFunc(bs, func(a, b ir.IPBlock) bool { return a.CIDR == b.CIDR && len(a.Except) == 0 && len(b.Except) == 0 })
}
