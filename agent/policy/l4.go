package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The second step: the policy model → the entries of the eBPF maps (the L4
// back end, docs/design/policy.md §3–5). A policy is compiled once (its
// selectors parsed, its peers resolved to identities, its numbered ports
// expanded) and then applied to every local endpoint it selects; named ports
// resolve per endpoint (ingress) or per peer (egress).

// compiledPolicy is a model policy ready to apply to endpoints.
type compiledPolicy struct {
	pol *ir.Policy
	// scope selects pods of pol.Scope.Namespace ("" = every namespace).
	scope    labels.Selector
	verdict  bpf.Verdict
	isolates bpf.EndpointFlags
	// gate is the index of the policy's gate (gateIndex).
	gate  int
	rules []*compiledRule
	// diags are the policy's own degradations, reported always.
	diags []ir.Degradation
}

// compiledRule is a rule as a union of products of peers and ports.
type compiledRule struct {
	dir      bpf.Direction
	products []product
	// diags are reported once the rule applies to a local endpoint.
	diags []ir.Degradation
	used  bool
}

// product is the flows to a set of peers on a set of ports. ports is an
// AND of lists of alternatives (nil: every port), kept unresolved because
// named ports resolve on a pod.
type product struct {
	peers peerSet
	ports [][]portSpec
}

// portSpec is one port alternative: numbered ports, or a name.
type portSpec struct {
	name  string
	proto uint8
	pp    []portProto
}

// portProto is a destination port (0 = any) or the range port..end (end
// 0: the single port), and a protocol (0 = any).
type portProto struct {
	port, end uint16
	proto     uint8
}

// last is the range's last port (port for a single port).
func (pp portProto) last() uint16 { return max(pp.port, pp.end) }

// peerSet is a set of peers: identities, or every peer.
type peerSet struct {
	any bool
	ids []bpf.Identity
}

func (a peerSet) empty() bool { return !a.any && len(a.ids) == 0 }

func (a peerSet) intersect(b peerSet) peerSet {
	switch {
	case a.any:
		return b
	case b.any:
		return a
	}
	in := make(map[bpf.Identity]bool, len(b.ids))
	for _, id := range b.ids {
		in[id] = true
	}
	out := peerSet{}
	for _, id := range a.ids {
		if in[id] {
			out.ids = append(out.ids, id)
		}
	}
	return out
}

func bpfDirection(d ir.PolicyDirection) bpf.Direction {
	if d == ir.PolicyEgress {
		return bpf.Egress
	}
	return bpf.Ingress
}

func bpfProto(p ir.IPProtocol) uint8 {
	switch p {
	case ir.IPProtocolTCP:
		return bpf.ProtoTCP
	case ir.IPProtocolUDP:
		return bpf.ProtoUDP
	case ir.IPProtocolSCTP:
		return bpf.ProtoSCTP
	}
	return bpf.ProtoAny
}

// degrade records a back-end degradation on list.
func degrade(list *[]ir.Degradation, src ir.ResourceRef, instead ir.Fallback, field, format string, args ...any) {
	*list = append(*list, ir.Degradation{Instead: instead, Diagnostic: ir.Diagnostic{
		Severity: ir.SeverityWarning, Code: ir.CodeDeniesMore, Resource: src, Field: field,
		Message: fmt.Sprintf(format, args...)}})
}

// compile prepares a policy; nil for one that changes no decision (audit,
// dry run).
func (t *translator) compile(pol *ir.Policy) *compiledPolicy {
	if pol.Action == ir.PolicyAudit || pol.DryRun {
		return nil
	}
	cp := &compiledPolicy{pol: pol, scope: labels.Everything(), verdict: bpf.Allow, gate: t.gateIndex(pol.Gate),
		diags: append([]ir.Degradation(nil), pol.Degradations...)}
	deny := pol.Action.Denies()
	if deny {
		cp.verdict = bpf.Deny
	}
	for _, d := range pol.Isolates {
		cp.isolates |= map[ir.PolicyDirection]bpf.EndpointFlags{ir.PolicyIngress: bpf.EnforceIngress, ir.PolicyEgress: bpf.EnforceEgress}[d]
	}
	scopeErr := ""
	if pol.Scope.Workloads != nil {
		sel, err := selectorOf(pol.Scope.Workloads)
		if err != nil {
			scopeErr = fmt.Sprintf("invalid selector (%v)", err)
		} else {
			cp.scope = sel
		}
	}
	if scopeErr != "" {
		// Which pods it selects is unknown: every pod of the namespace.
		if !deny {
			degrade(&cp.diags, pol.Source, ir.FallbackIsolate, "spec", "%s: every pod of the namespace is isolated, no rule of this policy applies", scopeErr)
			cp.isolates, cp.rules = bpf.EnforceIngress|bpf.EnforceEgress, nil
			return cp
		}
		degrade(&cp.diags, pol.Source, ir.FallbackMatchMore, "spec", "%s: the policy's rules deny for every pod of the namespace", scopeErr)
	}
	if _, known := gateOrder[pol.Gate]; !known && !deny {
		// A gate this back end does not know: its allows cannot be
		// judged, allowing nothing is the safe side.
		degrade(&cp.diags, pol.Source, ir.FallbackIsolate, "spec",
			"policies of the %s gate are not enforced by the eBPF back end: the selected pods are isolated and allowed nothing there", pol.Gate)
		return cp
	}
	// Rules are compiled only for a policy that selects a local endpoint:
	// a node's agent reads every policy of the cluster, and most select
	// pods elsewhere (their rules' diagnostics are reported by the nodes
	// they apply on).
	if !slices.ContainsFunc(t.in.Endpoints, func(ep Endpoint) bool { return t.selects(cp, ep) }) {
		return cp
	}
	for i := range pol.Rules {
		cp.rules = append(cp.rules, t.compileRule(pol, pol.Rules[i]))
	}
	return cp
}

// unsupportedL4 strips the match fields the eBPF back end does not
// evaluate: named ports in notPorts (no source writes them; a name
// resolves per pod, its complement would not).
func unsupportedL4(m *ir.PolicyMatch) []string {
	for _, p := range m.NotPorts {
		if p.Name != "" {
			m.NotPorts = nil
			return []string{"notPorts (named)"}
		}
	}
	return nil
}

func (t *translator) compileRule(pol *ir.Policy, r ir.PolicyRule) *compiledRule {
	if r.Layer() == ir.LayerL7 {
		// No L7 back end yet: every port is a port without L7 enforcement.
		r = ir.ProjectL4(pol.Action, pol.Source, r)
	}
	r = ir.Restrict(pol.Action, pol.Source, r, "not enforced by the eBPF back end", unsupportedL4)
	cr := &compiledRule{dir: bpfDirection(r.Direction), diags: r.Degradations}
	acc := []product{{peers: peerSet{any: true}}}
	for _, c := range r.Clauses {
		var alts []product
		// Matches of ports alone are one product with all their ports: the
		// same flows, and egress resolves the whole list per peer when it
		// names a port (numbered ports of such a list then reach the known
		// peers only, as before the model).
		var portsOnly []portSpec
		mergePorts := false
		for _, m := range c.Matches {
			p, ok := t.compileMatch(pol, cr, m)
			if isPortsOnly(&m) {
				mergePorts = true
				if ok {
					portsOnly = append(portsOnly, p.ports[0]...)
				}
				continue
			}
			if ok {
				alts = append(alts, p)
			}
		}
		if mergePorts && len(portsOnly) > 0 {
			alts = append(alts, product{peers: peerSet{any: true}, ports: [][]portSpec{portsOnly}})
		}
		var next []product
		for _, a := range acc {
			for _, b := range alts {
				if p := (product{peers: a.peers.intersect(b.peers), ports: append(append([][]portSpec(nil), a.ports...), b.ports...)}); !p.peers.empty() {
					next = append(next, p)
				}
			}
		}
		acc = next
	}
	if pol.Gate == ir.GateAuthorization {
		// Istio authorizes TCP connections only (Envoy and ztunnel see
		// nothing else): the gate's rules are about TCP.
		for i := range acc {
			acc[i].ports = append(acc[i].ports, []portSpec{{pp: []portProto{{proto: bpf.ProtoTCP}}}})
		}
	}
	cr.products = acc
	return cr
}

// isPortsOnly reports whether a match constrains nothing but ports.
func isPortsOnly(m *ir.PolicyMatch) bool {
	ports := m.Ports
	m2 := *m
	m2.Ports = nil
	return len(ports) > 0 && m2.IsEmpty()
}

// compileMatch resolves a match's peers and numbered ports; ok is false
// when it matches nothing.
func (t *translator) compileMatch(pol *ir.Policy, cr *compiledRule, m ir.PolicyMatch) (p product, ok bool) {
	deny := pol.Action.Denies()
	p.peers = peerSet{any: true}
	if len(m.Workloads) > 0 {
		p.peers = p.peers.intersect(t.workloads(pol, cr, m))
	}
	if len(m.IPBlocks) > 0 {
		p.peers = p.peers.intersect(t.addressPeers(pol, cr, m.Field, m.IPBlocks, false))
	}
	p.peers = t.identityPeers(pol, cr, m, p.peers)
	if p.peers.empty() {
		return p, false
	}
	if len(m.Ports) > 0 {
		var specs []portSpec
		for _, pm := range m.Ports {
			if s, ok := t.portSpec(pol.Source, cr, deny, m.Field, pm); ok {
				specs = append(specs, s)
			}
		}
		if len(specs) == 0 {
			return p, false
		}
		p.ports = [][]portSpec{specs}
	}
	if len(m.NotPorts) > 0 {
		rest, ok := notPorts(m.NotPorts)
		if !ok {
			return p, false
		}
		p.ports = append(p.ports, rest)
	}
	return p, true
}

// notPorts is the complement of numbered ports, per protocol: the ranges
// of every other port of the protocols the list names (any protocol: TCP,
// UDP and SCTP). ok is false when no port is left.
func notPorts(list []ir.PortMatch) ([]portSpec, bool) {
	excluded := map[uint8][][2]int{}
	var protos []uint8
	for _, pm := range list {
		proto := bpfProto(pm.Protocol)
		ps := []uint8{proto}
		if proto == bpf.ProtoAny {
			ps = []uint8{bpf.ProtoTCP, bpf.ProtoUDP, bpf.ProtoSCTP}
		}
		first, last := int(pm.Port), int(max(pm.Port, pm.EndPort))
		if pm.Port == 0 {
			first, last = 1, 65535
		}
		for _, p := range ps {
			if _, ok := excluded[p]; !ok {
				protos = append(protos, p)
			}
			excluded[p] = append(excluded[p], [2]int{first, last})
		}
	}
	var out []portSpec
	for _, proto := range protos {
		spans := excluded[proto]
		slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
		next := 1
		var pp []portProto
		for _, sp := range spans {
			if sp[0] > next {
				pp = append(pp, span(next, sp[0]-1, proto))
			}
			next = max(next, sp[1]+1)
		}
		if next <= 65535 {
			pp = append(pp, span(next, 65535, proto))
		}
		if len(pp) > 0 {
			out = append(out, portSpec{pp: pp})
		}
	}
	return out, len(out) > 0
}

func span(first, last int, proto uint8) portProto {
	if first == last {
		return portProto{port: uint16(first), proto: proto}
	}
	return portProto{port: uint16(first), end: uint16(last), proto: proto}
}

// portSpec expands a numbered port or range; ok is false when it matches
// nothing.
func (t *translator) portSpec(src ir.ResourceRef, cr *compiledRule, deny bool, field string, pm ir.PortMatch) (portSpec, bool) {
	proto := bpfProto(pm.Protocol)
	if pm.Name != "" {
		return portSpec{name: pm.Name, proto: proto}, true
	}
	every := portSpec{pp: []portProto{{proto: proto}}}
	if pm.Port == 0 {
		return every, true
	}
	first, last := int(pm.Port), int(pm.Port)
	if pm.EndPort != 0 {
		last = int(pm.EndPort)
	}
	switch {
	case first == 1 && last == 65535:
		return every, true
	case last < first && deny:
		degrade(&cr.diags, src, ir.FallbackMatchMore, field+".endPort", "endPort %d is below port %d; denied on every port", last, first)
		return every, true
	case last < first:
		degrade(&cr.diags, src, ir.FallbackMatchNothing, field+".endPort", "endPort %d is below port %d; the port matches nothing", last, first)
		return portSpec{}, false
	case last == first:
		return portSpec{pp: []portProto{{port: uint16(first), proto: proto}}}, true
	}
	// Held exactly, whatever its width: prefix-aligned blocks in the port
	// range trie (bpf.PortBlocks).
	return portSpec{pp: []portProto{{port: uint16(first), end: uint16(last), proto: proto}}}, true
}

// resolve is the ports of a product on a pod with podPorts (nil: named
// ports match nothing).
func resolve(specs [][]portSpec, podPorts []NamedPort) []portProto {
	if len(specs) == 0 {
		return []portProto{{}}
	}
	var out []portProto
	for i, list := range specs {
		var set []portProto
		for _, s := range list {
			if s.name == "" {
				set = append(set, s.pp...)
				continue
			}
			for _, np := range podPorts {
				if np.Name == s.name && (s.proto == bpf.ProtoAny || np.Proto == s.proto) {
					set = append(set, portProto{port: np.Port, proto: np.Proto})
				}
			}
		}
		if i == 0 {
			out = set
		} else {
			out = intersectPorts(out, set)
		}
	}
	return out
}

// intersectPorts is the ports in both lists (port 0 matches any port,
// protocol 0 any protocol; ranges meet in their common ports).
func intersectPorts(a, b []portProto) []portProto {
	meetProto := func(x, y uint8) (uint8, bool) {
		switch {
		case x == 0:
			return y, true
		case y == 0 || x == y:
			return x, true
		}
		return 0, false
	}
	seen := map[portProto]bool{}
	var out []portProto
	for _, x := range a {
		for _, y := range b {
			proto, ok := meetProto(x.proto, y.proto)
			if !ok {
				continue
			}
			pp := portProto{proto: proto}
			switch {
			case x.port == 0:
				pp.port, pp.end = y.port, y.end
			case y.port == 0:
				pp.port, pp.end = x.port, x.end
			default:
				lo, hi := max(x.port, y.port), min(x.last(), y.last())
				if lo > hi {
					continue
				}
				pp.port = lo
				if hi > lo {
					pp.end = hi
				}
			}
			if !seen[pp] {
				seen[pp] = true
				out = append(out, pp)
			}
		}
	}
	return out
}

func named(specs [][]portSpec) bool {
	for _, list := range specs {
		for _, s := range list {
			if s.name != "" {
				return true
			}
		}
	}
	return false
}

// selectorOf is a model selector as apimachinery evaluates it.
func selectorOf(s *ir.LabelSelector) (labels.Selector, error) {
	ls := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: e.Key,
			Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values})
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// ignoredKeys are the label keys of a selector that identities leave out
// (identity.IgnoredLabel), sorted.
func ignoredKeys(s *ir.LabelSelector) []string {
	seen := map[string]bool{}
	for k := range s.MatchLabels {
		if identity.IgnoredLabel(k) {
			seen[k] = true
		}
	}
	for _, e := range s.MatchExpressions {
		if identity.IgnoredLabel(e.Key) {
			seen[e.Key] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// withoutKeys is a selector without its requirements on keys: it matches
// everything the selector matches, and more.
func withoutKeys(s *ir.LabelSelector, keys []string) *ir.LabelSelector {
	out := &ir.LabelSelector{MatchLabels: map[string]string{}}
	for k, v := range s.MatchLabels {
		if !slices.Contains(keys, k) {
			out.MatchLabels[k] = v
		}
	}
	for _, e := range s.MatchExpressions {
		if !slices.Contains(keys, e.Key) {
			out.MatchExpressions = append(out.MatchExpressions, e)
		}
	}
	return out
}

// workloads resolves a match's workload selectors to identities. A
// selector that does not parse (the model's producer should have caught
// it) matches nothing for an allow and every peer for a deny.
func (t *translator) workloads(pol *ir.Policy, cr *compiledRule, m ir.PolicyMatch) peerSet {
	seen := map[bpf.Identity]bool{}
	for _, w := range m.Workloads {
		podSel, nsSel := labels.Everything(), labels.Selector(nil)
		var err error
		if w.Labels != nil {
			sel := w.Labels
			// Identities leave some pod labels out (pod-name, pod-template-
			// hash, …): a requirement on one cannot be decided per identity.
			// NotIn and DoesNotExist would match every identity, In and
			// equality none. An allow matches nothing then; a deny matches
			// every peer the rest of the selector matches.
			if keys := ignoredKeys(sel); len(keys) > 0 {
				if !pol.Action.Denies() {
					degrade(&cr.diags, pol.Source, ir.FallbackMatchNothing, m.Field, "the peer selector uses %s, which identities leave out "+
						"(it differs between the pods of one workload): the peer matches nothing", strings.Join(keys, ", "))
					continue
				}
				degrade(&cr.diags, pol.Source, ir.FallbackMatchMore, m.Field, "the peer selector uses %s, which identities leave out "+
					"(it differs between the pods of one workload): the rule denies every peer the rest of the selector matches", strings.Join(keys, ", "))
				sel = withoutKeys(sel, keys)
			}
			podSel, err = selectorOf(sel)
		}
		if err == nil && w.NamespaceLabels != nil {
			nsSel, err = selectorOf(w.NamespaceLabels)
		}
		if err != nil {
			if pol.Action.Denies() {
				degrade(&cr.diags, pol.Source, ir.FallbackMatchMore, m.Field, "invalid selector (%v); the rule denies every peer", err)
				return peerSet{any: true}
			}
			degrade(&cr.diags, pol.Source, ir.FallbackMatchNothing, m.Field, "invalid selector (%v); the peer matches nothing", err)
			continue
		}
		for _, id := range t.in.Identities {
			if w.Namespace != "" && id.Namespace != w.Namespace {
				continue
			}
			if nsSel != nil {
				nsLabels, ok := t.in.Namespaces[id.Namespace]
				if !ok || !nsSel.Matches(labels.Set(nsLabels)) {
					continue
				}
			}
			if podSel.Matches(labels.Set(id.Labels)) {
				seen[id.ID] = true
			}
		}
	}
	return sortedSet(seen)
}

// ipBlocks resolves a match's blocks to CIDR identities (and WORLD).
func (t *translator) ipBlocks(pol *ir.Policy, cr *compiledRule, m ir.PolicyMatch) peerSet {
	seen := map[bpf.Identity]bool{}
	for _, b := range m.IPBlocks {
		if !b.CIDR.IsValid() || !b.CIDR.Addr().Is4() {
			// Exact for a deny too: IPv6 is dropped both ways.
			degrade(&cr.diags, pol.Source, ir.FallbackMatchNothing, m.Field,
				"IPv6 block %s is not enforced (the datapath polices IPv4 only); the peer matches no IPv4 address", b.CIDR)
			continue
		}
		for _, id := range t.ipBlock(b) {
			seen[id] = true
		}
	}
	return sortedSet(seen)
}

func sortedSet(seen map[bpf.Identity]bool) peerSet {
	out := peerSet{ids: make([]bpf.Identity, 0, len(seen))}
	for id := range seen {
		out.ids = append(out.ids, id)
	}
	sort.Slice(out.ids, func(i, j int) bool { return out.ids[i] < out.ids[j] })
	return out
}

// ipBlock is the identities of the addresses in a block and in none of its
// exceptions. Longest prefix wins in the identity map: an address matches
// the most specific prefix of any policy, so the block matches every prefix
// it contains that no exception contains.
func (t *translator) ipBlock(b ir.IPBlock) []bpf.Identity {
	block := b.CIDR.Masked()
	excluded := func(p netip.Prefix) bool {
		for _, e := range b.Except {
			if contains(e.Masked(), p) {
				return true
			}
		}
		return false
	}
	var out []bpf.Identity
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
	return out
}

// apply writes a compiled policy's entries into its gate's part of every
// endpoint it selects.
func (t *translator) apply(cp *compiledPolicy, parts [][]*IdentityPolicy) {
	for i, ep := range t.in.Endpoints {
		if !t.selects(cp, ep) {
			continue
		}
		for len(parts[i]) <= cp.gate {
			parts[i] = append(parts[i], nil)
		}
		pol := parts[i][cp.gate]
		if pol == nil {
			pol = &IdentityPolicy{Entries: map[bpf.PolicyKey]bpf.Verdict{}, Ranges: map[bpf.PortRangeKey]bpf.Verdict{}}
			parts[i][cp.gate] = pol
		}
		pol.Flags |= cp.isolates
		if cp.pol.Gate == ir.GateAuthorization && cp.isolates&bpf.EnforceIngress != 0 {
			// Istio authorizes TCP only: what is not TCP passes this gate
			// (the network gate still decides it). Protocols without an
			// entry here (neither UDP, SCTP nor ICMP) stay denied: the
			// datapath has no "any protocol but TCP" key.
			for _, proto := range []uint8{bpf.ProtoUDP, bpf.ProtoSCTP, bpf.ProtoICMP} {
				put(pol, ep.Identity, peerSet{any: true}, portProto{proto: proto}, bpf.Ingress, bpf.Allow)
			}
		}
		// On the ports the node Envoy captures, it enforces the
		// AuthorizationPolicies (Endpoint.Captured).
		captured := cp.pol.Gate == ir.GateAuthorization && cp.pol.Source.Kind == KindAuthorizationPolicy && len(ep.Captured) > 0
		for _, r := range cp.rules {
			r.used = true
			for _, p := range r.products {
				if r.dir == bpf.Ingress {
					for _, pp := range resolve(p.ports, ep.Ports) {
						if !captured {
							put(pol, ep.Identity, p.peers, pp, r.dir, cp.verdict)
							continue
						}
						for _, q := range withoutPorts(pp, ep.Captured) {
							put(pol, ep.Identity, p.peers, q, r.dir, cp.verdict)
						}
					}
					continue
				}
				t.egress(pol, ep.Identity, p, cp.verdict)
			}
		}
		if captured && cp.isolates&bpf.EnforceIngress != 0 {
			for _, port := range ep.Captured {
				pp := portProto{port: port, proto: bpf.ProtoTCP}
				put(pol, ep.Identity, peerSet{any: true}, pp, bpf.Ingress, bpf.Allow)
				if !t.in.AllowHostIngress {
					put(pol, ep.Identity, peerSet{ids: []bpf.Identity{bpf.IdentityHost}}, pp, bpf.Ingress, bpf.Deny)
				}
			}
		}
	}
}

// withoutPorts is pp without the TCP ports in ports (sorted, unique): the
// other protocols' part unchanged, TCP's split around them.
func withoutPorts(pp portProto, ports []uint16) []portProto {
	if pp.proto != bpf.ProtoTCP && pp.proto != bpf.ProtoAny {
		return []portProto{pp}
	}
	var out []portProto
	if pp.proto == bpf.ProtoAny {
		for _, proto := range []uint8{bpf.ProtoUDP, bpf.ProtoSCTP} {
			q := pp
			q.proto = proto
			out = append(out, q)
		}
		if pp.port == 0 {
			out = append(out, portProto{proto: bpf.ProtoICMP})
		}
	}
	first, last := int(pp.port), int(pp.last())
	if pp.port == 0 { // every port
		first, last = 1, 65535
	}
	next := first
	for _, c := range ports {
		if int(c) < next || int(c) > last {
			continue
		}
		if int(c) > next {
			out = append(out, span(next, int(c)-1, bpf.ProtoTCP))
		}
		next = int(c) + 1
	}
	if next <= last {
		if next == first && pp.port == 0 {
			out = append(out, portProto{proto: bpf.ProtoTCP}) // nothing captured in it
		} else {
			out = append(out, span(next, last, bpf.ProtoTCP))
		}
	}
	return out
}

// selects reports whether a policy applies to a local endpoint: an
// AuthorizationPolicy only to a meshed one; its namespace, its selector,
// and for Service targets (AuthorizationPolicy
// targetRefs) one of the named Services of the endpoint's namespace
// selecting it.
func (t *translator) selects(cp *compiledPolicy, ep Endpoint) bool {
	if cp.pol.Gate == ir.GateAuthorization && !ep.Meshed {
		return false // Istio's policies: only for pods nodemesh proxies (Endpoint.Meshed)
	}
	if ns := cp.pol.Scope.Namespace; ns != "" && ep.Namespace != ns || !cp.scope.Matches(labels.Set(ep.Labels)) {
		return false
	}
	if len(cp.pol.Scope.Services) == 0 {
		return true
	}
	for _, s := range t.in.Services {
		if s.Namespace == ep.Namespace && len(s.Selector) > 0 && slices.Contains(cp.pol.Scope.Services, s.Name) &&
			labels.SelectorFromSet(s.Selector).Matches(labels.Set(ep.Labels)) {
			return true
		}
	}
	return false
}

// egress writes an egress product: named ports resolve on each peer.
func (t *translator) egress(pol *IdentityPolicy, self bpf.Identity, p product, verdict bpf.Verdict) {
	if !named(p.ports) {
		for _, pp := range resolve(p.ports, nil) {
			put(pol, self, p.peers, pp, bpf.Egress, verdict)
		}
		return
	}
	// Resolve per peer identity; "every peer" means every identity whose
	// pods are known (a named port cannot match an address outside the
	// cluster).
	ids := p.peers.ids
	if p.peers.any {
		for id := range t.in.PeerPorts {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	}
	for _, id := range ids {
		one := peerSet{ids: []bpf.Identity{id}}
		pods := t.in.PeerPorts[id]
		if len(pods) == 0 {
			// A CIDR identity or an identity with no known pod: numbered
			// ports still apply, named ones match nothing.
			for _, pp := range resolve(p.ports, nil) {
				put(pol, self, one, pp, bpf.Egress, verdict)
			}
			continue
		}
		// Pods of one identity may name ports differently: only what all
		// of them agree on.
		var common map[portProto]bool
		for _, podPorts := range pods {
			set := map[portProto]bool{}
			for _, pp := range resolve(p.ports, podPorts) {
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
			put(pol, self, one, pp, bpf.Egress, verdict)
		}
	}
}

// put writes the entries of a product for one port or range. A deny is
// never replaced by an allow of the same key (deny wins; an allow block
// inside a deny block goes when the endpoint's entries are complete,
// bpf.NormalizeRanges).
func put(pol *IdentityPolicy, self bpf.Identity, peers peerSet, pp portProto, dir bpf.Direction, verdict bpf.Verdict) {
	peerIDs := peers.ids
	if peers.any {
		peerIDs = []bpf.Identity{bpf.IdentityAny}
	}
	if pp.end > pp.port {
		// The program looks ranges up with the packet's protocol only: a
		// range of any protocol is one of each protocol with ports.
		protos := []uint8{pp.proto}
		if pp.proto == bpf.ProtoAny {
			protos = []uint8{bpf.ProtoTCP, bpf.ProtoUDP, bpf.ProtoSCTP}
		}
		for _, id := range peerIDs {
			for _, proto := range protos {
				for _, b := range bpf.PortBlocks(pp.port, pp.end) {
					k := bpf.PortRangeKey{Endpoint: self, Peer: id, Dir: dir, Proto: proto, Block: b}
					if pol.Ranges[k] != bpf.Deny {
						pol.Ranges[k] = verdict
					}
				}
			}
		}
		return
	}
	for _, id := range peerIDs {
		k := bpf.PolicyKey{Endpoint: self, Peer: id, Port: pp.port, Proto: pp.proto, Dir: dir}
		if pol.Entries[k] != bpf.Deny {
			pol.Entries[k] = verdict
		}
	}
}

// diagnostics are the degradations to report: every policy's own, and a
// rule's once it applied to a local endpoint.
func (cp *compiledPolicy) diagnostics() []Diagnostic {
	var out []Diagnostic
	add := func(ds []ir.Degradation) {
		for _, d := range ds {
			out = append(out, Diagnostic{Severity: Warning, Kind: d.Diagnostic.Resource.Kind, Namespace: d.Diagnostic.Resource.Namespace,
				Name: d.Diagnostic.Resource.Name, Field: d.Diagnostic.Field, Message: d.Diagnostic.Message})
		}
	}
	add(cp.diags)
	for _, r := range cp.rules {
		if r.used {
			add(r.diags)
		}
	}
	return out
}
