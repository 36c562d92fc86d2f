package authz

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Options tune the AuthorizationPolicy translation.
type Options struct {
	// RootNamespace is Istio's root namespace (default istio-system): a
	// policy there applies to every namespace.
	RootNamespace string
	// TrustDomain is the mesh's trust domain (default cluster.local) and
	// TrustDomainAliases the ones it also answers to (meshConfig
	// trustDomainAliases): principals are rewritten for each, as istiod does.
	TrustDomain        string
	TrustDomainAliases []string
}

// Istio's defaults (meshConfig rootNamespace, trustDomain).
const (
	DefaultRootNamespace = "istio-system"
	DefaultTrustDomain   = "cluster.local"
)

func (o Options) withDefaults() Options {
	if o.RootNamespace == "" {
		o.RootNamespace = DefaultRootNamespace
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	return o
}

// TrustDomains is the mesh's trust domain followed by its aliases, without
// repetitions: the trust domains whose principals the translation rewrites
// for each other, and that a principal of the mesh's own workloads has.
func (o Options) TrustDomains() []string {
	o = o.withDefaults()
	return dedupe(append([]string{o.TrustDomain}, o.TrustDomainAliases...))
}

// DryRunAnnotation turns an AuthorizationPolicy's rules into shadow rules.
const DryRunAnnotation = "istio.io/dry-run"

// Kind is the kind of the policies' model sources (ir.ResourceRef.Kind).
const Kind = "AuthorizationPolicy"

// AuthorizationPolicies translates Istio AuthorizationPolicies into the
// policy model (docs/design/policy.md §1.1, §7), one ir.Policy per object in
// the authorization gate, sorted by namespace and name. A policy or a part
// of it that cannot be translated is reported and degraded towards denying
// more (an allow's part matches nothing, a deny's part is dropped so the
// deny matches more); it never stops the other policies. A policy that
// applies to no workload nodemesh serves (targetRefs to Gateways only) is
// left out, with a diagnostic.
func AuthorizationPolicies(aps []*securityv1.AuthorizationPolicy, opts Options) ([]ir.Policy, ir.Diagnostics) {
	opts = opts.withDefaults()
	tds := trustDomains(opts.TrustDomains())
	sorted := slices.DeleteFunc(slices.Clone(aps), func(ap *securityv1.AuthorizationPolicy) bool { return ap == nil })
	slices.SortFunc(sorted, func(x, y *securityv1.AuthorizationPolicy) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	// Policies are independent: translate them on every core, each with
	// its own diagnostics, and assemble in order.
	type result struct {
		pol   ir.Policy
		ok    bool
		diags ir.Diagnostics
	}
	results := make([]result, len(sorted))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(sorted)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(sorted) {
					return
				}
				a := &authz{opts: opts, tds: tds}
				p, ok := a.policy(sorted[i])
				results[i] = result{p, ok, a.diags}
			}
		}()
	}
	wg.Wait()
	var out []ir.Policy
	var diags ir.Diagnostics
	for _, r := range results {
		if r.ok {
			out = append(out, r.pol)
		}
		diags = append(diags, r.diags...)
	}
	return out, diags
}

type authz struct {
	opts  Options
	tds   trustDomains
	diags ir.Diagnostics
}

// degrade records a part of the policy that cannot be enforced as written.
func degrade(instead ir.Fallback, ref ir.ResourceRef, field, msg string) ir.Degradation {
	return ir.Degradation{Instead: instead, Diagnostic: ir.Diagnostic{
		Severity: ir.SeverityWarning, Code: ir.CodeDeniesMore, Resource: ref, Field: field, Message: msg}}
}

func (a *authz) policy(ap *securityv1.AuthorizationPolicy) (ir.Policy, bool) {
	ref := ir.ResourceRef{Kind: Kind, Namespace: ap.Namespace, Name: ap.Name}
	spec := &ap.Spec
	pol := ir.Policy{Source: ref, Gate: ir.GateAuthorization}
	switch spec.Action {
	case securityapi.AuthorizationPolicy_ALLOW:
		pol.Action = ir.PolicyAllow
		pol.Isolates = []ir.PolicyDirection{ir.PolicyIngress}
	case securityapi.AuthorizationPolicy_DENY:
		pol.Action = ir.PolicyDeny
	case securityapi.AuthorizationPolicy_AUDIT:
		pol.Action = ir.PolicyAudit
	case securityapi.AuthorizationPolicy_CUSTOM:
		// No external authorizer: what CUSTOM would send to one is denied,
		// never allowed (istiod does the same for a provider it cannot use).
		pol.Action = ir.PolicyDeny
		pol.Custom = "unknown"
		if p := spec.GetProvider().GetName(); p != "" {
			pol.Custom = p
		}
		pol.Degradations = append(pol.Degradations, degrade(ir.FallbackMatchMore, ref, "spec.action",
			fmt.Sprintf("CUSTOM (provider %q) is not supported: nodemesh has no external authorizer, the requests its rules select are denied", pol.Custom)))
	default:
		pol.Action = ir.PolicyDeny
		a.diags.Errorf(ir.CodeInvalidValue, ref, "spec.action", "unknown action %v: its rules deny", spec.Action)
		pol.Degradations = append(pol.Degradations, degrade(ir.FallbackMatchMore, ref, "spec.action", "unknown action: its rules deny"))
	}
	if v, ok := ap.Annotations[DryRunAnnotation]; ok {
		dry, err := strconv.ParseBool(v)
		if err != nil {
			a.diags.Warnf(ir.CodeInvalidValue, ref, "metadata.annotations["+DryRunAnnotation+"]",
				"%q is not a boolean: the policy is enforced (istiod ignores the annotation too)", v)
		}
		pol.DryRun = dry
	}
	if !a.scope(ap, &pol) {
		return pol, false
	}
	for i, r := range spec.Rules {
		pol.Rules = append(pol.Rules, a.rule(ap, &pol, i, r))
	}
	return pol, true
}

// scope fills the policy's scope; false when the policy applies to no
// workload nodemesh serves.
func (a *authz) scope(ap *securityv1.AuthorizationPolicy, pol *ir.Policy) bool {
	spec := &ap.Spec
	scope, field, widened, applies := TargetScope(pol.Source, a.opts.RootNamespace, spec.GetSelector().GetMatchLabels(),
		spec.GetTargetRef(), spec.GetTargetRefs(), &a.diags)
	pol.Scope = scope
	if widened != "" {
		// The scope cannot be known: the whole namespace (mesh, in the
		// root namespace), which denies more for every action.
		instead := ir.FallbackMatchMore
		if pol.Action == ir.PolicyAllow {
			instead = ir.FallbackIsolate
		}
		pol.Degradations = append(pol.Degradations, degrade(instead, pol.Source, field, widened+": the policy applies to every workload of its namespace"))
	}
	return applies
}

// TargetScope is the scope of an Istio policy of the security API
// (AuthorizationPolicy, RequestAuthentication): its namespace (every one
// for the root namespace), selector labels, or targetRef(s) to Services of
// its namespace. applies is false when it targets only gateways (a
// diagnostic says so). widened is not empty when the scope cannot be known
// (selector and targetRefs both set, a targetRef to another namespace,
// without a name, of an unknown kind — errors in diags): the scope is then
// the whole namespace, and widened says why, for the caller to decide what
// that means for its kind; field is the field at fault.
func TargetScope(ref ir.ResourceRef, rootNamespace string, sel map[string]string, targetRef *typeapi.PolicyTargetReference,
	targetRefs []*typeapi.PolicyTargetReference, diags *ir.Diagnostics) (scope ir.PolicyScope, field, widened string, applies bool) {
	if ref.Namespace != rootNamespace {
		scope.Namespace = ref.Namespace
	}
	refs := targetRefs
	field = "spec.targetRefs"
	if targetRef != nil {
		refs = append([]*typeapi.PolicyTargetReference{targetRef}, refs...)
		field = "spec.targetRef"
	}
	wide := func(msg string) (ir.PolicyScope, string, string, bool) {
		return ir.PolicyScope{Namespace: scope.Namespace}, field, msg, true
	}
	if len(refs) > 0 && len(sel) > 0 {
		diags.Errorf(ir.CodeInvalidValue, ref, field, "targetRefs and selector cannot both be set (istiod rejects the %s)", ref.Kind)
		return wide("targetRefs and selector both set")
	}
	if len(sel) > 0 {
		scope.Workloads = &ir.LabelSelector{MatchLabels: maps.Clone(sel)}
	}
	if len(refs) == 0 {
		return scope, "", "", true
	}
	gatewayOnly := true
	for i, t := range refs {
		f := field
		if field == "spec.targetRefs" || i > 0 {
			f = fmt.Sprintf("spec.targetRefs[%d]", i-boolInt(targetRef != nil))
		}
		if t == nil {
			continue
		}
		switch {
		case t.GetKind() == "Service" && (t.GetGroup() == "" || t.GetGroup() == "core"):
			if t.GetNamespace() != "" && t.GetNamespace() != ref.Namespace {
				diags.Errorf(ir.CodeInvalidValue, ref, f+".namespace", "a targetRef must be in the %s's namespace %q", ref.Kind, ref.Namespace)
				return wide("a targetRef in another namespace")
			}
			if t.GetName() == "" {
				diags.Errorf(ir.CodeInvalidValue, ref, f+".name", "a targetRef needs a name")
				return wide("a targetRef without a name")
			}
			gatewayOnly = false
			if !slices.Contains(scope.Services, t.GetName()) {
				scope.Services = append(scope.Services, t.GetName())
			}
		case t.GetKind() == "Gateway" || t.GetKind() == "GatewayClass" || t.GetKind() == "ServiceEntry":
			diags.Infof(ir.CodeGatewayOnly, ref, f, "targetRef %s %q applies to a gateway or waypoint, not to workloads' inbound traffic", t.GetKind(), t.GetName())
		default:
			diags.Errorf(ir.CodeInvalidValue, ref, f+".kind", "targetRef kind %q (group %q) is not one Istio supports", t.GetKind(), t.GetGroup())
			return wide("an unknown targetRef kind")
		}
	}
	if gatewayOnly {
		return scope, "", "", false
	}
	slices.Sort(scope.Services)
	return scope, "", "", true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// matchBuilder collects one match and the fields of it that are invalid.
type matchBuilder struct {
	a     *authz
	ref   ir.ResourceRef
	m     ir.PolicyMatch
	bad   []string
	field string
}

// at is the path of the builder's sub-field name when it has values, for
// their diagnostics; "" when it has none (nothing reads it then). Most of
// a source's or operation's fields are empty: building every path was
// most of the translation's allocations (BenchmarkAuthorizationPolicies).
func (b *matchBuilder) at(name string, vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return b.field + name
}

func (b *matchBuilder) invalid(field, format string, args ...any) {
	b.a.diags.Errorf(ir.CodeInvalidValue, b.ref, field, format, args...)
	b.bad = append(b.bad, field)
}

// finish applies the rule for invalid fields: an allow's (or audit's) match
// matches nothing (false: drop it), a deny's keeps its valid fields.
func (b *matchBuilder) finish(pol *ir.Policy, r *ir.PolicyRule) (ir.PolicyMatch, bool) {
	if len(b.bad) == 0 {
		return b.m, true
	}
	what := strings.Join(b.bad, ", ")
	if pol.Action.Denies() {
		r.Degradations = append(r.Degradations, degrade(ir.FallbackMatchMore, b.ref, b.field, "invalid ("+what+"): the deny ignores them and matches more"))
		return b.m, true
	}
	r.Degradations = append(r.Degradations, degrade(ir.FallbackMatchNothing, b.ref, b.field, "invalid ("+what+"): the "+strings.ToLower(string(pol.Action))+" never matches"))
	return b.m, false
}

func (a *authz) rule(ap *securityv1.AuthorizationPolicy, pol *ir.Policy, i int, r *securityapi.Rule) ir.PolicyRule {
	base := "spec.rules[" + strconv.Itoa(i) + "]"
	out := ir.PolicyRule{Direction: ir.PolicyIngress, Field: base}
	if r == nil {
		return out
	}
	out.Clauses = make([]ir.PolicyClause, 0, boolInt(len(r.From) > 0)+boolInt(len(r.To) > 0)+len(r.When))
	add := func(c ir.PolicyClause, mb *matchBuilder) ir.PolicyClause {
		if m, ok := mb.finish(pol, &out); ok {
			c.Matches = append(c.Matches, m)
		}
		return c
	}
	if len(r.From) > 0 {
		c := ir.PolicyClause{Field: base + ".from", Matches: make([]ir.PolicyMatch, 0, len(r.From))}
		for j, f := range r.From {
			field := base + ".from[" + strconv.Itoa(j) + "].source"
			mb := &matchBuilder{a: a, ref: pol.Source, field: field}
			mb.m.Field = field
			mb.source(ap.Namespace, f.GetSource())
			c = add(c, mb)
		}
		out.Clauses = append(out.Clauses, c)
	}
	if len(r.To) > 0 {
		c := ir.PolicyClause{Field: base + ".to", Matches: make([]ir.PolicyMatch, 0, len(r.To))}
		for j, t := range r.To {
			field := base + ".to[" + strconv.Itoa(j) + "].operation"
			mb := &matchBuilder{a: a, ref: pol.Source, field: field}
			mb.m.Field = field
			mb.operation(t.GetOperation())
			c = add(c, mb)
		}
		out.Clauses = append(out.Clauses, c)
	}
	for k, w := range r.When {
		field := base + ".when[" + strconv.Itoa(k) + "]"
		mb := &matchBuilder{a: a, ref: pol.Source, field: field}
		mb.m.Field = field
		mb.condition(ap.Namespace, w)
		out.Clauses = append(out.Clauses, add(ir.PolicyClause{Field: field}, mb))
	}
	return out
}

// globs validates Istio authorization values: exact, "prefix*", "*suffix"
// or "*"; istiod rejects a "*" anywhere else and an empty value.
func (b *matchBuilder) globs(field string, vs []string) []ir.Glob {
	var out []ir.Glob
	for i, v := range vs {
		if !validGlob(v) {
			b.invalid(fmt.Sprintf("%s[%d]", field, i), "%q: a value is exact, prefix*, *suffix or *", v)
			continue
		}
		out = append(out, ir.Glob(v))
	}
	return out
}

func validGlob(v string) bool {
	if v == "*" {
		return true
	}
	s := v
	if strings.HasPrefix(s, "*") {
		s = s[1:]
	} else {
		s = strings.TrimSuffix(s, "*")
	}
	return s != "" && !strings.Contains(s, "*")
}

func toGlobs(vs []string) []ir.Glob {
	out := make([]ir.Glob, 0, len(vs))
	for _, v := range vs {
		out = append(out, ir.Glob(v))
	}
	return out
}

func fromGlobs(gs []ir.Glob) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, string(g))
	}
	return out
}

func (b *matchBuilder) principals(field string, vs []string) []ir.Glob {
	g := b.globs(field, vs)
	if len(g) == 0 {
		return nil
	}
	return toGlobs(b.a.tds.principals(fromGlobs(g)))
}

// serviceAccounts turns "ns/sa" or "sa" (the policy's namespace) into
// principals of any trust domain, as istiod's regex does.
func (b *matchBuilder) serviceAccounts(field, ns string, vs []string) []ir.Glob {
	var out []ir.Glob
	for i, v := range vs {
		n, sa, ok := strings.Cut(v, "/")
		if !ok {
			n, sa = ns, v
		}
		if n == "" || sa == "" || strings.ContainsAny(sa, "/*") || strings.Contains(n, "*") {
			b.invalid(fmt.Sprintf("%s[%d]", field, i), "%q: a service account is <namespace>/<name> or <name>, without wildcards", v)
			continue
		}
		out = append(out, ir.Glob("*/ns/"+n+"/sa/"+sa))
	}
	return out
}

func (b *matchBuilder) ipBlocks(field string, vs []string) []ir.IPBlock {
	var out []ir.IPBlock
	for i, v := range vs {
		p, err := parsePrefix(v)
		if err != nil {
			b.invalid(fmt.Sprintf("%s[%d]", field, i), "%q is not an IP address or CIDR", v)
			continue
		}
		out = append(out, ir.IPBlock{CIDR: p})
	}
	return out
}

// prefixes validates addresses held as strings (remote.ip, destination.ip:
// facts only Envoy evaluates) and normalises them to CIDR form.
func (b *matchBuilder) prefixes(field string, vs []string) []ir.Glob {
	var out []ir.Glob
	for _, blk := range b.ipBlocks(field, vs) {
		out = append(out, ir.Glob(blk.CIDR.String()))
	}
	return out
}

func parsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		return netip.ParsePrefix(v)
	}
	addr, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

func (b *matchBuilder) ports(field string, vs []string) []ir.PortMatch {
	var out []ir.PortMatch
	for i, v := range vs {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			b.invalid(fmt.Sprintf("%s[%d]", field, i), "%q is not a port (1-65535)", v)
			continue
		}
		out = append(out, ir.PortMatch{Protocol: ir.IPProtocolTCP, Port: uint16(n)})
	}
	return out
}

func (b *matchBuilder) l7(c ir.L7Condition) {
	if len(c.Values) > 0 || len(c.NotValues) > 0 {
		b.m.L7 = append(b.m.L7, c)
	}
}

func (b *matchBuilder) source(ns string, s *securityapi.Source) {
	if s == nil {
		return
	}
	b.m.Principals = append(b.m.Principals, b.principals(b.at(".principals", s.Principals), s.Principals)...)
	b.m.NotPrincipals = append(b.m.NotPrincipals, b.principals(b.at(".notPrincipals", s.NotPrincipals), s.NotPrincipals)...)
	b.m.Principals = append(b.m.Principals, b.serviceAccounts(b.at(".serviceAccounts", s.ServiceAccounts), ns, s.ServiceAccounts)...)
	b.m.NotPrincipals = append(b.m.NotPrincipals, b.serviceAccounts(b.at(".notServiceAccounts", s.NotServiceAccounts), ns, s.NotServiceAccounts)...)
	b.m.Namespaces = b.globs(b.at(".namespaces", s.Namespaces), s.Namespaces)
	b.m.NotNamespaces = b.globs(b.at(".notNamespaces", s.NotNamespaces), s.NotNamespaces)
	b.m.IPBlocks = b.ipBlocks(b.at(".ipBlocks", s.IpBlocks), s.IpBlocks)
	b.m.NotIPBlocks = b.ipBlocks(b.at(".notIpBlocks", s.NotIpBlocks), s.NotIpBlocks)
	b.m.TrustDomains = toGlobs(b.a.tds.domains(fromGlobs(b.globs(b.at(".trustDomains", s.TrustDomains), s.TrustDomains))))
	b.m.NotTrustDomains = toGlobs(b.a.tds.domains(fromGlobs(b.globs(b.at(".notTrustDomains", s.NotTrustDomains), s.NotTrustDomains))))
	b.l7(ir.L7Condition{Attribute: ir.L7RequestPrincipal, Values: b.globs(b.at(".requestPrincipals", s.RequestPrincipals), s.RequestPrincipals),
		NotValues: b.globs(b.at(".notRequestPrincipals", s.NotRequestPrincipals), s.NotRequestPrincipals)})
	b.l7(ir.L7Condition{Attribute: ir.L7RemoteIP, Values: b.prefixes(b.at(".remoteIpBlocks", s.RemoteIpBlocks), s.RemoteIpBlocks),
		NotValues: b.prefixes(b.at(".notRemoteIpBlocks", s.NotRemoteIpBlocks), s.NotRemoteIpBlocks)})
	if len(b.m.TrustDomains) == 0 {
		b.m.TrustDomains = nil
	}
	if len(b.m.NotTrustDomains) == 0 {
		b.m.NotTrustDomains = nil
	}
}

func (b *matchBuilder) operation(o *securityapi.Operation) {
	if o == nil {
		return
	}
	b.l7(ir.L7Condition{Attribute: ir.L7Host, Values: b.globs(b.at(".hosts", o.Hosts), o.Hosts), NotValues: b.globs(b.at(".notHosts", o.NotHosts), o.NotHosts)})
	b.l7(ir.L7Condition{Attribute: ir.L7Method, Values: b.globs(b.at(".methods", o.Methods), o.Methods), NotValues: b.globs(b.at(".notMethods", o.NotMethods), o.NotMethods)})
	b.l7(ir.L7Condition{Attribute: ir.L7Path, Values: b.paths(b.at(".paths", o.Paths), o.Paths), NotValues: b.paths(b.at(".notPaths", o.NotPaths), o.NotPaths)})
	b.m.Ports = b.ports(b.at(".ports", o.Ports), o.Ports)
	b.m.NotPorts = b.ports(b.at(".notPorts", o.NotPorts), o.NotPorts)
}

// paths are globs or Istio path templates ({*} one segment, {**} any).
func (b *matchBuilder) paths(field string, vs []string) []ir.Glob {
	var plain []string
	var out []ir.Glob
	for _, v := range vs {
		if strings.Contains(v, "{*") {
			if err := checkPathTemplate(v); err != nil {
				b.invalid(field, "%q: %v", v, err)
				continue
			}
			out = append(out, ir.Glob(v))
			continue
		}
		plain = append(plain, v)
	}
	return append(b.globs(field, plain), out...)
}

// checkPathTemplate applies istiod's rules: {*} and {**} are whole path
// segments, {**} at most once and last but for a literal suffix.
func checkPathTemplate(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("a path template starts with /")
	}
	if strings.Count(v, "{**}") > 1 {
		return fmt.Errorf("{**} may appear once")
	}
	for _, seg := range strings.Split(v[1:], "/") {
		if strings.Contains(seg, "{") || strings.Contains(seg, "}") || strings.Contains(seg, "*") {
			if seg != "{*}" && seg != "{**}" {
				return fmt.Errorf("segment %q: {*} and {**} must be whole segments", seg)
			}
		}
	}
	return nil
}

// conditionKeys are Istio's `when` keys ("Authorization Policy
// conditions"); request.headers[…], request.auth.claims[…] and
// experimental.envoy.filters.*[…] take a name.
func (b *matchBuilder) condition(ns string, w *securityapi.Condition) {
	if w == nil {
		b.invalid(b.field, "empty condition")
		return
	}
	f := b.field
	key := w.Key
	if len(w.Values) == 0 && len(w.NotValues) == 0 {
		b.invalid(f, "condition %q needs values or notValues", key)
		return
	}
	vals, nots := f+".values", f+".notValues"
	switch {
	case strings.HasPrefix(key, "request.headers["):
		name, ok := bracketed(strings.TrimPrefix(key, "request.headers"))
		if !ok || len(name) != 1 || !headerToken(name[0]) {
			b.invalid(f+".key", "%q: request.headers[NAME]", key)
			return
		}
		b.l7(ir.L7Condition{Attribute: ir.L7Header, Name: name[0], Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case key == "source.ip":
		b.m.IPBlocks = b.ipBlocks(vals, w.Values)
		b.m.NotIPBlocks = b.ipBlocks(nots, w.NotValues)
	case key == "remote.ip":
		b.l7(ir.L7Condition{Attribute: ir.L7RemoteIP, Values: b.prefixes(vals, w.Values), NotValues: b.prefixes(nots, w.NotValues)})
	case key == "source.namespace":
		b.m.Namespaces = b.globs(vals, w.Values)
		b.m.NotNamespaces = b.globs(nots, w.NotValues)
	case key == "source.principal":
		b.m.Principals = b.principals(vals, w.Values)
		b.m.NotPrincipals = b.principals(nots, w.NotValues)
	case key == "source.serviceAccount":
		b.m.Principals = b.serviceAccounts(vals, ns, w.Values)
		b.m.NotPrincipals = b.serviceAccounts(nots, ns, w.NotValues)
	case key == "request.auth.principal":
		b.l7(ir.L7Condition{Attribute: ir.L7RequestPrincipal, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case key == "request.auth.audiences":
		b.l7(ir.L7Condition{Attribute: ir.L7Audience, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case key == "request.auth.presenter":
		b.l7(ir.L7Condition{Attribute: ir.L7Presenter, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case strings.HasPrefix(key, "request.auth.claims["):
		path, ok := bracketed(strings.TrimPrefix(key, "request.auth.claims"))
		if !ok {
			b.invalid(f+".key", "%q: request.auth.claims[NAME] (nested: [a][b])", key)
			return
		}
		b.l7(ir.L7Condition{Attribute: ir.L7Claim, Path: path, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case key == "destination.ip":
		b.l7(ir.L7Condition{Attribute: ir.L7DestinationIP, Values: b.prefixes(vals, w.Values), NotValues: b.prefixes(nots, w.NotValues)})
	case key == "destination.port":
		b.m.Ports = b.ports(vals, w.Values)
		b.m.NotPorts = b.ports(nots, w.NotValues)
	case key == "connection.sni":
		b.l7(ir.L7Condition{Attribute: ir.L7SNI, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	case strings.HasPrefix(key, "experimental.envoy.filters."):
		filter, rest, ok := strings.Cut(strings.TrimPrefix(key, "experimental."), "[")
		path, pok := bracketed("[" + rest)
		if !ok || !pok || len(path) != 1 {
			b.invalid(f+".key", "%q: experimental.envoy.filters.NAME[KEY]", key)
			return
		}
		b.l7(ir.L7Condition{Attribute: ir.L7Metadata, Name: filter, Path: path, Values: b.globs(vals, w.Values), NotValues: b.globs(nots, w.NotValues)})
	default:
		b.invalid(f+".key", "unknown condition key %q (istiod rejects the rule)", key)
	}
}

// headerToken reports whether s is an HTTP header name (RFC 9110 token;
// Envoy also takes the pseudo-headers, ":authority" and the like).
func headerToken(s string) bool {
	s = strings.TrimPrefix(s, ":")
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// bracketed splits "[a][b]" into [a b]; false unless the whole string is
// non-empty bracketed names.
func bracketed(s string) ([]string, bool) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end <= 1 {
			return nil, false
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	return out, len(out) > 0
}
