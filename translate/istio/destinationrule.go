package istio

import (
	"cmp"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// drInfo is one valid DestinationRule after validation.
type drInfo struct {
	obj  *networkingv1.DestinationRule
	ref  ir.ResourceRef
	host string // resolved
	// policy is the top-level traffic policy, nil when unset or invalid.
	policy *networking.TrafficPolicy
	// portPolicies are the valid portLevelSettings, by port.
	portPolicies map[uint32]portPolicy
	subsets      []*subsetInfo
	// exportTo is the resolved exportTo (or the mesh default).
	exportTo exportSet
	// local: a client of the rule's namespace looks at it first (Istio's
	// namespaceLocal index: exported to ".", "*" or its own namespace).
	// privateOnly: it is exported to its own namespace only, so other
	// namespaces' clients never see it (not in Istio's
	// exportedByNamespace index).
	local, privateOnly bool
}

type portPolicy struct {
	policy *networking.TrafficPolicy
	field  ir.Path
}

// subsetInfo is one valid subset.
type subsetInfo struct {
	name     string
	selector selector
	// policy is the subset's own traffic policy (nil when unset or invalid).
	policy       *networking.TrafficPolicy
	portPolicies map[uint32]portPolicy
	dr           *drInfo
	field        ir.Path
}

// mergedDR is what applies to one host for one client namespace: Istio merges
// the DestinationRules of a namespace that name the same host — subsets are
// concatenated and the first top-level policy wins.
type mergedDR struct {
	// owner is the DestinationRule whose top-level policy applies.
	owner   *drInfo
	subsets []*subsetInfo
	// id names the DestinationRules merged, in order: two clients with the
	// same id see the same rule.
	id string
}

// ID is the identity of what a client sees ("" for no DestinationRule).
func (m *mergedDR) ID() string {
	if m == nil {
		return ""
	}
	return m.id
}

func (m *mergedDR) subset(name string) *subsetInfo {
	if m == nil {
		return nil
	}
	for _, s := range m.subsets {
		if s.name == name {
			return s
		}
	}
	return nil
}

type drKey struct {
	clientNamespace string
	host            string
}

// indexDestinationRules validates every DestinationRule and keeps the valid
// parts, ordered by Istio precedence (creation time, then name, namespace).
func (t *translator) indexDestinationRules() {
	objs := slices.Clone(t.bag.DestinationRules)
	slices.SortStableFunc(objs, func(a, b *networkingv1.DestinationRule) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace))
	})
	t.drsByNS = map[string]*namespaceDRs{}
	for _, obj := range objs {
		dr := t.validateDestinationRule(obj)
		if dr == nil {
			continue
		}
		nd := t.drsByNS[dr.ref.Namespace]
		if nd == nil {
			nd = &namespaceDRs{exact: map[string][]*drInfo{}}
			t.drsByNS[dr.ref.Namespace] = nd
		}
		if isWildcard(dr.host) {
			nd.wildcard = append(nd.wildcard, dr)
		} else {
			nd.exact[dr.host] = append(nd.exact[dr.host], dr)
		}
	}
}

// namespaceDRs are the valid DestinationRules of one namespace, in
// precedence order, by host.
type namespaceDRs struct {
	exact    map[string][]*drInfo
	wildcard []*drInfo
}

// destinationRule returns the DestinationRule that applies to a Service for
// a client namespace: Istio's PushContext.destinationRule
// (pilot/pkg/model/push_context.go), with exportTo:
//  1. the client's namespace's rules exported to it (namespaceLocal) — for a
//     client of the root namespace, only the root namespace's private ones;
//  2. else the Service's namespace's rules exported beyond it
//     (exportedByNamespace), if the most specific of them is exported to the
//     client;
//  3. else the same in the config root namespace.
//
// Within one namespace the most specific host wins and rules for that same
// host merge. A client without a namespace (the default class) skips step 1
// and, in steps 2 and 3, sees only rules exported to "*" — exactly Istio's
// code with an empty proxy namespace.
func (t *translator) destinationRule(s *service, clientNamespace string) *mergedDR {
	key := drKey{clientNamespace, s.fqdn}
	if m, ok := t.drMemo[key]; ok {
		return m
	}
	all := func(*drInfo) bool { return true }
	exported := func(dr *drInfo) bool { return !dr.privateOnly }
	visible := func(dr *drInfo) bool { return dr.exportTo.visibleTo(clientNamespace) }
	var m *mergedDR
	switch root := t.opts.RootNamespace; {
	case clientNamespace == "":
	case clientNamespace == root:
		// Istio's rootNamespaceLocal: the root namespace's private rules;
		// its exported ones come in step 3, after the Service's namespace.
		m = t.drInNamespace(s.fqdn, root, func(dr *drInfo) bool { return dr.privateOnly }, all)
	default:
		m = t.drInNamespace(s.fqdn, clientNamespace, func(dr *drInfo) bool { return dr.local }, all)
	}
	for _, ns := range []string{s.namespace, t.opts.RootNamespace} {
		if m != nil {
			break
		}
		m = t.drInNamespace(s.fqdn, ns, exported, visible)
	}
	t.drMemo[key] = m
	return m
}

// drInNamespace is Istio's MostSpecificHostMatch over the rules of a
// namespace that are in an index (in), then keeps those the client sees
// (visible): when the most specific rules are not exported to the client,
// a less specific one does not take their place (Istio's
// getExportedDestinationRuleFromNamespace).
func (t *translator) drInNamespace(fqdn, ns string, in, visible func(*drInfo) bool) *mergedDR {
	nd := t.drsByNS[ns]
	if nd == nil {
		return nil
	}
	matched := slices.DeleteFunc(slices.Clone(nd.exact[fqdn]), func(dr *drInfo) bool { return !in(dr) })
	if len(matched) == 0 {
		best := -1
		for _, dr := range nd.wildcard {
			if !in(dr) || !hostMatches(fqdn, dr.host) {
				continue
			}
			switch sp := hostSpecificity(dr.host); {
			case sp > best:
				best, matched = sp, []*drInfo{dr}
			case sp == best && dr.host == matched[0].host:
				matched = append(matched, dr)
			}
		}
	}
	matched = slices.DeleteFunc(matched, func(dr *drInfo) bool { return !visible(dr) })
	if len(matched) == 0 {
		return nil
	}
	m := &mergedDR{}
	seen := map[string]bool{}
	var ids []string
	for _, dr := range matched {
		ids = append(ids, dr.ref.Namespace+"/"+dr.ref.Name)
		if m.owner == nil && dr.policy != nil {
			m.owner = dr
		}
		for _, s := range dr.subsets {
			if seen[s.name] {
				t.diags.Warnf(ir.CodeConflict, dr.ref, string(s.field),
					"subset %q is already defined by an older DestinationRule for %s; this one is ignored (Istio keeps the first)", s.name, dr.host)
				continue
			}
			seen[s.name] = true
			m.subsets = append(m.subsets, s)
		}
	}
	if m.owner == nil {
		m.owner = matched[0]
	}
	m.id = strings.Join(ids, ",")
	return m
}

// trafficPolicy is Istio's util.MergeSubsetTrafficPolicy for one port
// (pilot/pkg/networking/util/util.go, model.MergeTrafficPolicy in
// pilot/pkg/model/destination_rule.go). Precedence, lowest first: the
// DestinationRule's top-level policy, its portLevelSettings entry for the
// port, the subset's top-level policy, the subset's portLevelSettings entry.
// Every step replaces whole components (loadBalancer, connectionPool,
// outlierDetection, tls), never single fields, and a port-level entry
// replaces all four of them: a component it omits falls back to Istio's
// default rather than being inherited (the API's documented "port-level
// settings do not inherit"). A port-level entry carries no retryBudget, so
// at the DestinationRule level it drops the top-level one, while a subset's
// retryBudget — or the DestinationRule's, when the subset sets none — stays.
func (m *mergedDR) trafficPolicy(port uint32, subset *subsetInfo) *networking.TrafficPolicy {
	if m == nil {
		return nil
	}
	var base *networking.TrafficPolicy
	if m.owner != nil {
		base = m.owner.policy
		if pp, ok := m.owner.portPolicies[port]; ok {
			base = pp.policy // GetPortLevelTrafficPolicy: the entry alone
		}
	}
	if subset == nil {
		return base
	}
	sp, portLevel := subset.policy, false
	if pp, ok := subset.portPolicies[port]; ok {
		sp, portLevel = pp.policy, true
	}
	switch {
	case sp == nil:
		return base
	case base == nil:
		return sp
	}
	// model.ShallowCopyTrafficPolicy, then model.MergeTrafficPolicy with
	// hasPortLevel = portLevel.
	merged := &networking.TrafficPolicy{
		LoadBalancer:     base.LoadBalancer,
		ConnectionPool:   base.ConnectionPool,
		OutlierDetection: base.OutlierDetection,
		Tls:              base.Tls,
		Tunnel:           base.Tunnel,
		ProxyProtocol:    base.ProxyProtocol,
		RetryBudget:      base.RetryBudget,
	}
	if sp.ConnectionPool != nil || portLevel {
		merged.ConnectionPool = sp.ConnectionPool
	}
	if sp.OutlierDetection != nil || portLevel {
		merged.OutlierDetection = sp.OutlierDetection
	}
	if sp.LoadBalancer != nil || portLevel {
		merged.LoadBalancer = sp.LoadBalancer
	}
	if sp.Tls != nil || portLevel {
		merged.Tls = sp.Tls
	}
	if sp.Tunnel != nil {
		merged.Tunnel = sp.Tunnel
	}
	if sp.ProxyProtocol != nil {
		merged.ProxyProtocol = sp.ProxyProtocol
	}
	if sp.RetryBudget != nil {
		merged.RetryBudget = sp.RetryBudget
	}
	return merged
}

// consistentHash is Istio's HashForHTTPDestination: subset port-level beats
// subset, which beats port-level, which beats top-level.
func (m *mergedDR) consistentHash(port uint32, subsetName string) *networking.LoadBalancerSettings_ConsistentHashLB {
	if m == nil || m.owner == nil {
		return nil
	}
	hash := m.owner.policy.GetLoadBalancer().GetConsistentHash()
	var plsHash *networking.LoadBalancerSettings_ConsistentHashLB
	if pp, ok := m.owner.portPolicies[port]; ok {
		plsHash = pp.policy.GetLoadBalancer().GetConsistentHash()
	}
	var subsetHash, subsetPLSHash *networking.LoadBalancerSettings_ConsistentHashLB
	if s := m.subset(subsetName); s != nil && subsetName != "" {
		subsetHash = s.policy.GetLoadBalancer().GetConsistentHash()
		if pp, ok := s.portPolicies[port]; ok {
			subsetPLSHash = pp.policy.GetLoadBalancer().GetConsistentHash()
		}
	}
	switch {
	case subsetPLSHash != nil:
		return subsetPLSHash
	case subsetHash != nil:
		return subsetHash
	case plsHash != nil:
		return plsHash
	}
	return hash
}
