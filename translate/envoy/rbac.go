package envoy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// The L7 back end of the policy model (docs/design/policy.md §3): the
// authorization policies that apply to one workload become Envoy RBAC
// filters for the destination node's inbound listener — the HTTP filter for
// an HTTP port, the network filter for any other — shaped as istiod shapes
// a sidecar's (pilot/pkg/security/authz/builder), so that the same policy
// names, permissions and principals can be compared with Istio's own output
// (translate/authz_oracle_test.go).

// Filter names, as istiod's.
const (
	FilterHTTPRBAC    = "envoy.filters.http.rbac"
	FilterNetworkRBAC = "envoy.filters.network.rbac"

	jwtFilter = "envoy.filters.http.jwt_authn"
)

// RBACFilter is one RBAC filter: Envoy RBAC has one action per filter, so
// the policies of each action get their own, in Istio's evaluation order
// (CUSTOM, which nodemesh enforces as a deny; DENY; ALLOW; AUDIT).
type RBACFilter struct {
	// Action is the action of the filter's rules (CUSTOM: Deny).
	Action ir.PolicyAction
	Custom bool
	// Config is the filter's configuration: *rbachttpv3.RBAC or
	// *rbacnetv3.RBAC. It must not change once the filter is packed.
	Config proto.Message

	// packed is Config packed, once for every chain the filter goes into
	// (a workload's filters go into the chain of each of its pods'
	// ports); nil packs on every call.
	packed *packedRBAC
}

type packedRBAC struct {
	once sync.Once
	any  *anypb.Any
	err  error
}

// pack is Config packed; the filters BuildRBAC returns share one Any
// between calls (nothing changes a packed configuration).
func (f RBACFilter) pack() (*anypb.Any, error) {
	if f.packed == nil {
		return packDeterministic(f.Config)
	}
	f.packed.once.Do(func() { f.packed.any, f.packed.err = packDeterministic(f.Config) })
	return f.packed.any, f.packed.err
}

// HTTPFilter packs an HTTP RBAC filter for an HTTP connection manager.
func (f RBACFilter) HTTPFilter() (*hcmv3.HttpFilter, error) {
	a, err := f.pack()
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", FilterHTTPRBAC, err)
	}
	return &hcmv3.HttpFilter{Name: FilterHTTPRBAC, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// NetworkFilter packs a network RBAC filter for a filter chain.
func (f RBACFilter) NetworkFilter() (*listenerv3.Filter, error) {
	a, err := f.pack()
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", FilterNetworkRBAC, err)
	}
	return &listenerv3.Filter{Name: FilterNetworkRBAC, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// RBACName is an RBAC policy's name: istiod's, so that Envoy's per-policy
// stats and logs read the same (ns[NS]-policy[NAME]-rule[N]); a CUSTOM
// policy's say that it denies because no external authorizer serves it.
func RBACName(p *ir.Policy, rule int) string {
	n := "ns[" + p.Source.Namespace + "]-policy[" + p.Source.Name + "]-rule[" + strconv.Itoa(rule) + "]"
	if p.Custom != "" {
		return "istio-ext-authz-" + p.Custom + "-" + n + "-deny-due-to-bad-CUSTOM-action"
	}
	return n
}

type group struct {
	action         ir.PolicyAction
	custom         bool
	rules, shadows *rbacv3.RBAC
}

// BuildRBAC builds the RBAC filters for the authorization-gate policies
// that apply to one workload's inbound port. forTCP builds the network
// filter of a port whose traffic is not HTTP, with Istio's TCP semantics:
// an ALLOW rule that needs an HTTP fact is left out (it never matches), a
// DENY's (CUSTOM's, AUDIT's) HTTP facts are dropped (it matches more); each
// such change is a diagnostic. Every filter is validated (protoc-gen-validate, regular
// expressions, the packed configurations) before it is returned; an error
// means the policies cannot be enforced and the port must not be served.
func BuildRBAC(pols []ir.Policy, forTCP bool) ([]RBACFilter, ir.Diagnostics, error) {
	return buildRBAC(pols, forTCP, true)
}

// buildRBAC is BuildRBAC; share false renders and validates every rule on
// its own, as before sharing existed (the reference of
// TestRBACSharingIdentical).
func buildRBAC(pols []ir.Policy, forTCP, share bool) ([]RBACFilter, ir.Diagnostics, error) {
	var diags ir.Diagnostics
	groups := []*group{
		{action: ir.PolicyDeny, custom: true},
		{action: ir.PolicyDeny},
		{action: ir.PolicyAllow},
		{action: ir.PolicyAudit},
	}
	// The policies are rendered and validated in parallel (a node can have
	// ten thousand), then put into their filters in order.
	type job struct {
		set  *rbacv3.RBAC
		name string
		src  ir.ResourceRef
		rule *ir.PolicyRule // nil: the policy has no rules
		out  *rbacv3.Policy
		err  error
	}
	n := 0
	for i := range pols {
		n += max(len(pols[i].Rules), 1)
	}
	jobs := make([]job, 0, n)
	for i := range pols {
		p := &pols[i]
		if p.Gate != ir.GateAuthorization {
			continue
		}
		var g *group
		for _, c := range groups {
			if c.action == p.Action && c.custom == (p.Custom != "") {
				g = c
			}
		}
		if g == nil {
			return nil, diags, fmt.Errorf("%s: action %q has no RBAC form", p.Source, p.Action)
		}
		set := &g.rules
		if p.DryRun {
			set = &g.shadows
		}
		if *set == nil {
			*set = &rbacv3.RBAC{Action: rbacAction(p.Action)}
		}
		if len(p.Rules) == 0 {
			// No rules: matches nothing (an ALLOW policy without rules still
			// makes its workloads default-deny: the filter exists).
			jobs = append(jobs, job{set: *set, name: RBACName(p, 0), src: p.Source})
			continue
		}
		for j := range p.Rules {
			r := &p.Rules[j]
			if forTCP {
				tr, keep := tcpRule(p, *r, &diags)
				if !keep {
					continue
				}
				r = &tr
			}
			jobs = append(jobs, job{set: *set, name: RBACName(p, j), src: p.Source, rule: r})
		}
	}
	// Rules with the same body share one policy, rendered and validated
	// once (rbac_share.go).
	shared := newPolicyShare()
	parallelWith(len(jobs), func() *[]byte { return new([]byte) }, func(key *[]byte, i int) {
		jb := &jobs[i]
		if jb.rule == nil {
			jb.out = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: permAny()}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: princAny()}}},
			}
			return
		}
		if share {
			*key = ruleKey((*key)[:0], jb.rule)
			e := shared.get(*key)
			e.once.Do(func() {
				if e.out, e.err = rbacPolicy(*jb.rule, &shared.matches); e.err == nil {
					e.err = validatePolicy(e.out)
				}
			})
			if e.err == nil {
				jb.out = e.out
				return
			}
			// Failed: rebuilt alone below, for an error that names this
			// rule's own fields.
		}
		jb.out, jb.err = rbacPolicy(*jb.rule, nil)
		if jb.err != nil {
			jb.err = fmt.Errorf("%s %s: %w", jb.src, jb.rule.Field, jb.err)
			return
		}
		if err := validatePolicy(jb.out); err != nil {
			jb.err = fmt.Errorf("%s %s: RBAC policy %q: %w", jb.src, jb.rule.Field, jb.name, err)
		}
	})
	for i := range jobs {
		if jobs[i].err != nil {
			return nil, diags, jobs[i].err
		}
		set := jobs[i].set
		if set.Policies == nil {
			// Sized for every job left: a map grown policy by policy
			// rehashes ten thousand names a dozen times.
			set.Policies = make(map[string]*rbacv3.Policy, len(jobs)-i)
		}
		set.Policies[jobs[i].name] = jobs[i].out
	}
	for _, g := range groups {
		for _, set := range []*rbacv3.RBAC{g.rules, g.shadows} {
			if set != nil && set.Policies == nil {
				set.Policies = map[string]*rbacv3.Policy{} // every rule left out (TCP)
			}
		}
	}
	var out []RBACFilter
	for _, g := range groups {
		if g.rules == nil && g.shadows == nil {
			continue
		}
		// istiod's stat prefix: deny for a filter holding dry-run denies.
		prefix := "istio_dry_run_allow_"
		if g.action == ir.PolicyDeny && !g.custom && g.shadows != nil {
			prefix = "istio_dry_run_deny_"
		}
		var cfg interface {
			proto.Message
			validatable
		}
		// Validate the filter around its policies (each is validated
		// above): the same checks as validating the whole, once.
		rules, shadows := policyless(g.rules), policyless(g.shadows)
		if forTCP {
			cfg = &rbacnetv3.RBAC{Rules: rules, ShadowRules: shadows, ShadowRulesStatPrefix: prefix, StatPrefix: "tcp."}
		} else {
			cfg = &rbachttpv3.RBAC{Rules: rules, ShadowRules: shadows, ShadowRulesStatPrefix: prefix}
		}
		if err := cfg.ValidateAll(); err != nil {
			return nil, diags, fmt.Errorf("invalid %s RBAC filter: %w", g.action, err)
		}
		if rules != nil {
			rules.Policies = g.rules.Policies
		}
		if shadows != nil {
			shadows.Policies = g.shadows.Policies
		}
		out = append(out, RBACFilter{Action: g.action, Custom: g.custom, Config: cfg, packed: &packedRBAC{}})
	}
	return out, diags, nil
}

func policyless(r *rbacv3.RBAC) *rbacv3.RBAC {
	if r == nil {
		return nil
	}
	return &rbacv3.RBAC{Action: r.Action, AuditLoggingOptions: r.AuditLoggingOptions}
}

// validatePolicy checks one RBAC policy as Validate checks resources:
// protoc-gen-validate on it, then a typed walk for what PGV cannot see —
// regular expressions (RE2, as Envoy's) and the messages packed in an Any
// (a path template's). Typed rather than Validate's reflective walk: a
// node's RBAC can hold ten thousand policies (BenchmarkAuthorizationPolicies).
func validatePolicy(p *rbacv3.Policy) error {
	if err := p.ValidateAll(); err != nil {
		return err
	}
	for _, pe := range p.GetPermissions() {
		if err := checkPermission(pe, 0); err != nil {
			return err
		}
	}
	for _, pr := range p.GetPrincipals() {
		if err := checkPrincipal(pr, 0); err != nil {
			return err
		}
	}
	return nil
}

const maxRBACDepth = 32

func checkPermission(p *rbacv3.Permission, depth int) error {
	if depth > maxRBACDepth {
		return fmt.Errorf("permission nests too deeply")
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		for _, c := range r.AndRules.GetRules() {
			if err := checkPermission(c, depth+1); err != nil {
				return err
			}
		}
	case *rbacv3.Permission_OrRules:
		for _, c := range r.OrRules.GetRules() {
			if err := checkPermission(c, depth+1); err != nil {
				return err
			}
		}
	case *rbacv3.Permission_NotRule:
		return checkPermission(r.NotRule, depth+1)
	case *rbacv3.Permission_Header:
		return checkStringMatcher(r.Header.GetStringMatch())
	case *rbacv3.Permission_UrlPath:
		return checkStringMatcher(r.UrlPath.GetPath())
	case *rbacv3.Permission_RequestedServerName:
		return checkStringMatcher(r.RequestedServerName)
	case *rbacv3.Permission_Metadata:
		return checkValueMatcher(r.Metadata.GetValue(), 0)
	case *rbacv3.Permission_UriTemplate:
		inner, err := r.UriTemplate.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return fmt.Errorf("cannot unpack %s: %w", r.UriTemplate.GetTypedConfig().GetTypeUrl(), err)
		}
		if v, ok := inner.(validatable); ok {
			return v.ValidateAll()
		}
	}
	return nil
}

func checkPrincipal(p *rbacv3.Principal, depth int) error {
	if depth > maxRBACDepth {
		return fmt.Errorf("principal nests too deeply")
	}
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		for _, c := range r.AndIds.GetIds() {
			if err := checkPrincipal(c, depth+1); err != nil {
				return err
			}
		}
	case *rbacv3.Principal_OrIds:
		for _, c := range r.OrIds.GetIds() {
			if err := checkPrincipal(c, depth+1); err != nil {
				return err
			}
		}
	case *rbacv3.Principal_NotId:
		return checkPrincipal(r.NotId, depth+1)
	case *rbacv3.Principal_Authenticated_:
		return checkStringMatcher(r.Authenticated.GetPrincipalName())
	case *rbacv3.Principal_Header:
		return checkStringMatcher(r.Header.GetStringMatch())
	case *rbacv3.Principal_Metadata:
		return checkValueMatcher(r.Metadata.GetValue(), 0)
	}
	return nil
}

func checkValueMatcher(v *matcherv3.ValueMatcher, depth int) error {
	if depth > maxRBACDepth {
		return fmt.Errorf("value matcher nests too deeply")
	}
	switch m := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		return checkStringMatcher(m.StringMatch)
	case *matcherv3.ValueMatcher_ListMatch:
		return checkValueMatcher(m.ListMatch.GetOneOf(), depth+1)
	case *matcherv3.ValueMatcher_OrMatch:
		for _, c := range m.OrMatch.GetValueMatchers() {
			if err := checkValueMatcher(c, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// regexOK caches which regular expressions compile: a policy set repeats
// the same few (namespace and principal patterns) many times.
var regexOK sync.Map // string → error (nil: compiles)

func checkStringMatcher(m *matcherv3.StringMatcher) error {
	re := m.GetSafeRegex()
	if re == nil {
		return nil
	}
	if v, ok := regexOK.Load(re.GetRegex()); ok {
		if v != nil {
			return v.(error)
		}
		return nil
	}
	_, err := regexp.Compile(re.GetRegex())
	if err != nil {
		err = fmt.Errorf("regular expression %q does not compile: %w", re.GetRegex(), err)
		regexOK.Store(re.GetRegex(), err)
		return err
	}
	regexOK.Store(re.GetRegex(), nil)
	return nil
}

func rbacAction(a ir.PolicyAction) rbacv3.RBAC_Action {
	switch a {
	case ir.PolicyDeny:
		return rbacv3.RBAC_DENY
	case ir.PolicyAudit:
		return rbacv3.RBAC_LOG
	}
	return rbacv3.RBAC_ALLOW
}

// tcpRule is a rule as istiod builds it for a TCP port: false when it is
// left out.
func tcpRule(p *ir.Policy, r ir.PolicyRule, diags *ir.Diagnostics) (ir.PolicyRule, bool) {
	var http []string
	for _, c := range r.Clauses {
		for _, m := range c.Matches {
			for _, l := range m.L7 {
				if !l.Attribute.ConnectionFact() {
					http = append(http, string(l.Attribute))
				}
			}
		}
	}
	if len(http) == 0 {
		return r, true
	}
	if p.Action == ir.PolicyAllow {
		diags.Warnf(ir.CodeDeniesMore, p.Source, r.Field, "the port is not HTTP: a rule with HTTP conditions (%s) never matches", strings.Join(dedupeStrings(http), ", "))
		return r, false
	}
	// AUDIT changes no decision; istiod widens it like a deny.
	out := ir.Restrict(ir.PolicyDeny, p.Source, r, "the port is not HTTP", func(m *ir.PolicyMatch) []string {
		var kept []ir.L7Condition
		var dropped []string
		for _, l := range m.L7 {
			if l.Attribute.ConnectionFact() {
				kept = append(kept, l)
			} else {
				dropped = append(dropped, string(l.Attribute))
			}
		}
		m.L7 = kept
		return dropped
	})
	for _, d := range out.Degradations[len(r.Degradations):] {
		*diags = append(*diags, d.Diagnostic)
	}
	return out, true
}

func dedupeStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

type side int

const (
	sideNone side = iota
	sidePrincipal
	sidePermission
)

func matchSide(m *ir.PolicyMatch) (side, error) {
	if len(m.Workloads) > 0 {
		return 0, fmt.Errorf("peer workload selectors have no RBAC form")
	}
	pr := len(m.Principals)+len(m.NotPrincipals)+len(m.Namespaces)+len(m.NotNamespaces)+len(m.IPBlocks)+
		len(m.NotIPBlocks)+len(m.TrustDomains)+len(m.NotTrustDomains) > 0
	pe := len(m.Ports)+len(m.NotPorts) > 0
	for _, l := range m.L7 {
		switch l.Attribute {
		case ir.L7Host, ir.L7Method, ir.L7Path, ir.L7SNI, ir.L7DestinationIP, ir.L7Metadata:
			pe = true
		default:
			pr = true
		}
	}
	switch {
	case pr && pe:
		return 0, fmt.Errorf("%s: a match mixes peer and request facts", m.Field)
	case pr:
		return sidePrincipal, nil
	case pe:
		return sidePermission, nil
	}
	return sideNone, nil
}

// rbacPolicy is one rule: its clauses (an AND) split into the peer side
// (principals) and the request side (permissions), each the OR istiod
// emits — one entry per alternative of the clause with several (a rule's
// `from` sources, its `to` operations), the single-alternative clauses
// (`when` conditions) repeated in each. Matches are rendered through ms
// (nil: each on its own).
func rbacPolicy(r ir.PolicyRule, ms *matchShare) (*rbacv3.Policy, error) {
	var prs, pes []ir.PolicyClause
	for _, c := range r.Clauses {
		if len(c.Matches) == 0 {
			// An alternative-less clause: the rule matches nothing.
			return &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: permAny()}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: princAny()}}},
			}, nil
		}
		cs := sideNone
		for i := range c.Matches {
			s, err := matchSide(&c.Matches[i])
			if err != nil {
				return nil, err
			}
			if s != sideNone && cs != sideNone && s != cs {
				return nil, fmt.Errorf("%s: a clause mixes peer and request facts", c.Field)
			}
			if s != sideNone {
				cs = s
			}
		}
		empty := false
		for i := range c.Matches {
			if c.Matches[i].IsEmpty() {
				empty = true // an alternative that matches everything
			}
		}
		switch {
		case empty || cs == sideNone:
		case cs == sidePrincipal:
			prs = append(prs, c)
		default:
			pes = append(pes, c)
		}
	}
	pol := &rbacv3.Policy{}
	for _, alt := range distribute(prs) {
		var ids []*rbacv3.Principal
		for _, pt := range alt {
			if pt.m != nil {
				ids = append(ids, ms.principalsOf(pt.m)...)
				continue
			}
			var or []*rbacv3.Principal
			for i := range pt.or {
				or = append(or, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ms.principalsOf(&pt.or[i])}}})
			}
			ids = append(ids, orIds(or))
		}
		if len(ids) == 0 {
			ids = []*rbacv3.Principal{princAny()}
		}
		pol.Principals = append(pol.Principals, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}})
	}
	for _, alt := range distribute(pes) {
		var rules []*rbacv3.Permission
		for _, pt := range alt {
			if pt.m != nil {
				ps, err := ms.permissionsOf(pt.m)
				if err != nil {
					return nil, err
				}
				rules = append(rules, ps...)
				continue
			}
			var or []*rbacv3.Permission
			for i := range pt.or {
				ps, err := ms.permissionsOf(&pt.or[i])
				if err != nil {
					return nil, err
				}
				or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}})
			}
			rules = append(rules, orRules(or))
		}
		if len(rules) == 0 {
			rules = []*rbacv3.Permission{permAny()}
		}
		pol.Permissions = append(pol.Permissions, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rules}}})
	}
	return pol, nil
}

// part is one conjunct of an alternative: a match (its fields ANDed in) or
// a clause with several matches beyond the one distributed (an OR).
type part struct {
	m  *ir.PolicyMatch
	or []ir.PolicyMatch
}

// distribute returns the alternatives of an AND of clauses: one per match
// of the first clause with several (`from` sources, `to` operations), each
// with every other clause's part (`when` conditions). AuthorizationPolicy
// rules have at most one clause with several matches per side; a further
// one stays an OR inside each alternative.
func distribute(cs []ir.PolicyClause) [][]part {
	var fan *ir.PolicyClause
	var shared []part
	for i := range cs {
		c := &cs[i]
		switch {
		case len(c.Matches) == 1:
			shared = append(shared, part{m: &c.Matches[0]})
		case fan == nil:
			fan = c
		default:
			shared = append(shared, part{or: c.Matches})
		}
	}
	if fan == nil {
		return [][]part{shared}
	}
	out := make([][]part, 0, len(fan.Matches))
	for i := range fan.Matches {
		out = append(out, append([]part{{m: &fan.Matches[i]}}, shared...))
	}
	return out
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func princAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func orIds(ids []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}
func notID(id *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: id}}
}
func orRules(rs []*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rs}}}
}
func notRule(r *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: r}}
}
