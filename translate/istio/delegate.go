package istio

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// VirtualService delegation, as istiod does it for sidecars at the pinned
// version (pilot/pkg/model/virtualservice_controller.go mergeVirtualServices,
// which replaced mergeVirtualServicesIfNeeded, and virtualservice.go
// MergeHTTPRoutes, mergeHTTPRoute, mergeHTTPMatchRequests,
// mergeHTTPMatchRequest, hasConflict, stringMatchConflict):
//
//   - a VirtualService without hosts is a delegate; it applies only through
//     a root VirtualService whose http rule names it in `delegate`
//     (namespace defaulting to the root's), and only if its exportTo makes it
//     visible to the root's namespace;
//   - the root's rule is replaced by the delegate's rules, each with its
//     matches ANDed with the root rule's (a delegate rule none of whose
//     matches fits a root match is dropped), and the root rule's other
//     fields (timeout, retries, fault, rewrite, directResponse, mirror(s),
//     corsPolicy, headers) filling in what the delegate's rule leaves unset;
//   - a missing or hidden delegate drops the root's rule, nothing else;
//   - one level only: a delegate's rule cannot delegate again (Istio's
//     validation rejects it), and a VirtualService with hosts is never a
//     delegate (it is not in istiod's delegate collection, so a reference to
//     it is a missing delegate);
//   - short host names in a delegate resolve in the delegate's namespace
//     (ResolveVirtualServiceShortnames runs on the delegate), those the root
//     rule passes on in the root's.
//
// There is no PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE at the pinned version:
// delegation is always on, and so it is here.

// delegateInfo is a delegate VirtualService after validation.
type delegateInfo struct {
	vs *vsInfo
	// used records that some root referenced it (for the "applies to
	// nothing" note).
	used bool
}

// httpRule is where an http rule of a root VirtualService came from after
// delegation: src is the VirtualService whose text it is (the root, or a
// view of the delegate carrying the delegate's ref and namespace), path its
// field there.
type httpRule struct {
	src  *vsInfo
	path ir.Path
	bad  bool
}

// rule reports where the i-th http rule of vs.obj.Spec came from: vs itself
// unless delegation replaced some of its rules.
func (vs *vsInfo) rule(i int) (src *vsInfo, path ir.Path, bad bool) {
	if vs.rules == nil {
		return vs, ir.Path("spec.http").Index(i), vs.badHTTP[i]
	}
	r := vs.rules[i]
	return r.src, r.path, r.bad
}

func delegateKey(namespace, name string) string { return namespace + "/" + name }

// indexDelegate validates a VirtualService without hosts as Istio's
// ValidateVirtualService does for delegates (no gateways, no tcp or tls
// routes; pkg/config/validation/validation.go) and keeps it for the roots
// that name it. A delegate that fails those checks is rejected whole, as the
// webhook would; a rule of it that fails is left out.
func (t *translator) indexDelegate(obj *networkingv1.VirtualService) {
	ref := ir.ResourceRef{Kind: "VirtualService", Namespace: obj.Namespace, Name: obj.Name}
	v := vsValidator{t, ref, new(bool)}
	spec := &obj.Spec
	ok := true
	reject := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; the delegate is ignored", args...)
		ok = false
	}
	if len(spec.Gateways) > 0 {
		reject("spec.gateways", "a delegate VirtualService (no hosts) must not name gateways: the root's gateways apply")
	}
	if len(spec.Tcp) > 0 {
		reject("spec.tcp", "a delegate VirtualService (no hosts) must not have tcp routes: only http rules are delegated")
	}
	if len(spec.Tls) > 0 {
		reject("spec.tls", "a delegate VirtualService (no hosts) must not have tls routes: only http rules are delegated")
	}
	if len(spec.Http) == 0 {
		reject("spec.http", "a delegate VirtualService (no hosts) needs http rules")
	}
	if !ok {
		return
	}
	vs := &vsInfo{obj: obj, ref: ref, namespace: obj.Namespace, badHTTP: map[int]bool{}, badTCP: map[int]bool{}}
	for i, h := range spec.Http {
		path := ir.Path("spec.http").Index(i)
		if h.Delegate != nil {
			v.errorf(path.Field("delegate"), "a delegate's rule cannot delegate again (Istio allows one level); the rule is left out")
			vs.badHTTP[i] = true
			continue
		}
		if !v.httpRoute(path, h) {
			vs.badHTTP[i] = true
		}
	}
	if *v.rejected {
		// As for any VirtualService (validateVirtualService): what Istio's
		// validation refuses does not exist for it; roots naming this
		// delegate drop their rule.
		t.diags.Errorf(ir.CodeInvalidValue, ref, "",
			"VirtualService is rejected: Istio's validation refuses it (see the errors on its fields), so none of it applies; the roots that delegate to it drop those rules")
		return
	}
	if t.delegates == nil {
		t.delegates = map[string]*delegateInfo{}
	}
	t.delegates[delegateKey(obj.Namespace, obj.Name)] = &delegateInfo{vs: vs}
}

// rootRoute validates a root's rule that delegates: Istio's
// validateHTTPRouteConflict forbids route and redirect on it (the delegate
// supplies the action) and checks the rest as for any rule. The rest is
// checked by httpRoute on a copy whose action is a stand-in destination, so
// the checks that depend on the action (rewrite or mirror with
// directResponse) still run.
func (v vsValidator) rootRoute(path ir.Path, h *networking.HTTPRoute) bool {
	ok := true
	fail := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; the rule is left out", args...)
		ok = false
	}
	if len(h.Route) > 0 {
		fail(path.Field("route"), "a rule that delegates must not set route: the delegate's rules route")
	}
	if h.Redirect != nil {
		fail(path.Field("redirect"), "a rule that delegates must not set redirect: the delegate's rules route")
	}
	if h.Delegate.Name == "" {
		fail(path.Field("delegate").Field("name"), "delegate name is required")
	}
	c := proto.Clone(h).(*networking.HTTPRoute)
	c.Delegate, c.Route, c.Redirect = nil, nil, nil
	if c.DirectResponse == nil {
		c.Route = []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "delegate.invalid"}}}
	}
	return v.httpRoute(path, c) && ok
}

// mergeDelegates replaces, in every root VirtualService, each rule that
// delegates by the delegate's rules merged with it (mergeVirtualServices).
// The root's vsInfo gets a copy of its object with the merged rules, and
// rules telling where each came from; other VirtualServices are untouched.
func (t *translator) mergeDelegates() {
	for _, vs := range t.vss {
		if !slices.ContainsFunc(vs.obj.Spec.Http, func(h *networking.HTTPRoute) bool { return h.Delegate != nil }) {
			continue
		}
		var merged []*networking.HTTPRoute
		var rules []httpRule
		for i, h := range vs.obj.Spec.Http {
			path := ir.Path("spec.http").Index(i)
			if h.Delegate == nil || vs.badHTTP[i] {
				// A bad rule stays (left out when routes are built) so that
				// it still counts as a catch-all, as any bad rule does.
				merged = append(merged, h)
				rules = append(rules, httpRule{src: vs, path: path, bad: vs.badHTTP[i]})
				continue
			}
			ns := h.Delegate.Namespace
			if ns == "" {
				ns = vs.namespace
			}
			field := string(path.Field("delegate"))
			d := t.delegates[delegateKey(ns, h.Delegate.Name)]
			if d == nil {
				msg := "no delegate VirtualService %s/%s (one without hosts); the rule is dropped, as Istio drops it"
				if t.hasVirtualService(ns, h.Delegate.Name) {
					msg = "VirtualService %s/%s is not a usable delegate (it has hosts, or failed validation); the rule is dropped, as Istio drops it"
				}
				t.diags.Warnf(ir.CodeDelegate, vs.ref, field, msg, ns, h.Delegate.Name)
				continue
			}
			d.used = true
			// The delegate's exportTo (or the mesh default) must reach the
			// root's namespace: the same visibility as every resource's.
			if !exportToOf(d.vs.namespace, d.vs.obj.Spec.ExportTo, t.opts.DefaultVirtualServiceExportTo).visibleTo(vs.namespace) {
				t.diags.Warnf(ir.CodeDelegate, vs.ref, field,
					"delegate %s is not exported to namespace %s (exportTo %v); the rule is dropped, as Istio drops it",
					d.vs.ref, vs.namespace, d.vs.obj.Spec.ExportTo)
				continue
			}
			root := resolveRuleHosts(h, vs.namespace, t.opts.ClusterDomain)
			view := &vsInfo{obj: vs.obj, ref: d.vs.ref, namespace: d.vs.namespace}
			for j, dh := range d.vs.obj.Spec.Http {
				dpath := ir.Path("spec.http").Index(j)
				leaf := resolveRuleHosts(dh, d.vs.namespace, t.opts.ClusterDomain)
				m, conflict := mergeHTTPRoute(root, leaf)
				if conflict {
					t.diags.Warnf(ir.CodeDelegate, d.vs.ref, string(dpath.Field("match")),
						"no match of this rule fits within a match of %s %s (Istio's delegate match conflict); the rule is dropped for that root",
						vs.ref, path)
					continue
				}
				t.gatewayOverride(vs, path, h, d.vs.ref, dpath, dh)
				merged = append(merged, m)
				rules = append(rules, httpRule{src: view, path: dpath, bad: d.vs.badHTTP[j]})
			}
		}
		obj := vs.obj.DeepCopy()
		obj.Spec.Http = merged
		vs.obj, vs.rules = obj, rules
	}
	// A delegate named only by roots that do not apply to the mesh (bound to
	// gateways) is used, by gateways nodemesh does not configure: the roots'
	// own GatewayOnly note says so, not an "unused" one here.
	named := map[string]bool{}
	for _, o := range t.bag.VirtualServices {
		for _, h := range o.Spec.Http {
			if len(o.Spec.Hosts) > 0 && h.GetDelegate() != nil {
				ns := cmp.Or(h.Delegate.Namespace, o.Namespace)
				named[delegateKey(ns, h.Delegate.Name)] = true
			}
		}
	}
	// Delegates are listed in a map; report the unused ones in a stable order.
	for _, key := range slices.Sorted(maps.Keys(t.delegates)) {
		if d := t.delegates[key]; !d.used && !named[key] {
			t.diags.Infof(ir.CodeDelegate, d.vs.ref, "spec.hosts",
				"a VirtualService without hosts is a delegate, and no root VirtualService delegates to it; it applies to nothing")
		}
	}
}

// gatewayOverride warns when a delegate's match names gateways while the
// root's match restricted clients by sourceLabels or sourceNamespace: the
// merged match keeps the delegate's gateways, and Istio's sourceMatchHTTP
// then decides on gateways alone, so the root's client restriction no longer
// applies to that rule. nodemesh does what Istio does; the warning says so.
func (t *translator) gatewayOverride(root *vsInfo, rootPath ir.Path, rh *networking.HTTPRoute, ref ir.ResourceRef, path ir.Path, dh *networking.HTTPRoute) {
	restricted := slices.ContainsFunc(rh.Match, func(m *networking.HTTPMatchRequest) bool {
		return len(m.GetGateways()) == 0 && (len(m.GetSourceLabels()) > 0 || m.GetSourceNamespace() != "")
	})
	if !restricted {
		return
	}
	for k, m := range dh.Match {
		if len(m.GetGateways()) > 0 {
			t.diags.Warnf(ir.CodeDelegate, ref, string(path.Field("match").Index(k).Field("gateways")),
				"gateways here override the sourceLabels/sourceNamespace of %s %s (Istio decides on gateways alone): the root's client restriction does not apply to this match",
				root.ref, rootPath)
		}
	}
}

func (t *translator) hasVirtualService(namespace, name string) bool {
	return slices.ContainsFunc(t.bag.VirtualServices, func(o *networkingv1.VirtualService) bool {
		return o.Namespace == namespace && o.Name == name
	})
}

// resolveRuleHosts is ResolveVirtualServiceShortnames for one http rule: a
// copy whose destination and mirror hosts are fully qualified in namespace.
// proto.Clone also turns null list entries (a null match, which the loader's
// schema check reports but a Bag built in code may hold) into empty
// messages, so the merge below never meets a nil match.
func resolveRuleHosts(h *networking.HTTPRoute, namespace, clusterDomain string) *networking.HTTPRoute {
	c := proto.Clone(h).(*networking.HTTPRoute)
	for _, d := range c.Route {
		if d.Destination != nil {
			d.Destination.Host = resolveHost(d.Destination.Host, namespace, clusterDomain)
		}
	}
	if c.Mirror != nil {
		c.Mirror.Host = resolveHost(c.Mirror.Host, namespace, clusterDomain)
	}
	for _, m := range c.Mirrors {
		if m.Destination != nil {
			m.Destination.Host = resolveHost(m.Destination.Host, namespace, clusterDomain)
		}
	}
	return c
}

// mergeHTTPRoute is Istio's mergeHTTPRoute: leaf (a copy the caller owns)
// with its matches merged with root's and root's other fields filling in
// what leaf leaves unset. conflict means leaf is dropped.
func mergeHTTPRoute(root, leaf *networking.HTTPRoute) (*networking.HTTPRoute, bool) {
	m, conflict := mergeHTTPMatchRequests(root.Match, leaf.Match)
	if conflict {
		return nil, true
	}
	leaf.Match = m
	switch {
	case leaf.Name == "":
		leaf.Name = root.Name
	case root.Name != "":
		leaf.Name = root.Name + "-" + leaf.Name
	}
	if leaf.Rewrite == nil {
		leaf.Rewrite = root.Rewrite
	}
	if leaf.DirectResponse == nil {
		leaf.DirectResponse = root.DirectResponse
	}
	if leaf.Timeout == nil {
		leaf.Timeout = root.Timeout
	}
	if leaf.Retries == nil {
		leaf.Retries = root.Retries
	}
	if leaf.Fault == nil {
		leaf.Fault = root.Fault
	}
	if leaf.Mirror == nil {
		leaf.Mirror = root.Mirror
	}
	if leaf.MirrorPercent == nil { // deprecated, and Istio still merges it
		leaf.MirrorPercent = root.MirrorPercent
	}
	if leaf.MirrorPercentage == nil {
		leaf.MirrorPercentage = root.MirrorPercentage
	}
	if leaf.CorsPolicy == nil {
		leaf.CorsPolicy = root.CorsPolicy
	}
	if leaf.Mirrors == nil {
		leaf.Mirrors = root.Mirrors
	}
	if leaf.Headers == nil {
		leaf.Headers = root.Headers
	}
	return leaf, false
}

// mergeHTTPMatchRequests is Istio's: every leaf match must fit at least one
// root match; each fitting pair becomes one merged match (the AND of both).
// A leaf match that fits none makes the whole leaf rule conflict.
func mergeHTTPMatchRequests(root, leaf []*networking.HTTPMatchRequest) ([]*networking.HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return leaf, false
	}
	if len(leaf) == 0 {
		return root, false
	}
	var out []*networking.HTTPMatchRequest
	for _, l := range leaf {
		found := false
		for _, r := range root {
			if matchConflict(r, l) {
				continue
			}
			out = append(out, mergeHTTPMatchRequest(r, l))
			found = true
		}
		if !found {
			return nil, true
		}
	}
	return out, len(out) == 0
}

// mergeHTTPMatchRequest is Istio's: leaf's conditions, with root's filling
// in those leaf leaves unset; maps are united (leaf wins on a shared key,
// which matchConflict only lets through when both agree).
func mergeHTTPMatchRequest(root, leaf *networking.HTTPMatchRequest) *networking.HTTPMatchRequest {
	out := proto.Clone(leaf).(*networking.HTTPMatchRequest)
	switch {
	case out.Name == "":
		out.Name = root.Name
	case root.Name != "":
		out.Name = root.Name + "-" + out.Name
	}
	if out.Uri == nil {
		out.Uri = root.Uri
	}
	if out.Scheme == nil {
		out.Scheme = root.Scheme
	}
	if out.Method == nil {
		out.Method = root.Method
	}
	if out.Authority == nil {
		out.Authority = root.Authority
	}
	out.Headers = mergeCopy(root.Headers, leaf.Headers)
	out.WithoutHeaders = mergeCopy(root.WithoutHeaders, leaf.WithoutHeaders)
	out.QueryParams = mergeCopy(root.QueryParams, leaf.QueryParams)
	if out.Port == 0 {
		out.Port = root.Port
	}
	out.SourceLabels = mergeCopy(root.SourceLabels, leaf.SourceLabels)
	if out.SourceNamespace == "" {
		out.SourceNamespace = root.SourceNamespace
	}
	if len(out.Gateways) == 0 {
		out.Gateways = root.Gateways
	}
	if out.StatPrefix == "" {
		out.StatPrefix = root.StatPrefix
	}
	return out
}

func mergeCopy[V any](base, override map[string]V) map[string]V {
	if len(base) == 0 && len(override) == 0 {
		return nil
	}
	out := make(map[string]V, len(base)+len(override))
	maps.Copy(out, base)
	maps.Copy(out, override)
	return out
}

// matchConflict is Istio's hasConflict: whether leaf cannot be narrowed
// into root (leaf must describe a subset of root's requests).
func matchConflict(root, leaf *networking.HTTPMatchRequest) bool {
	roots := []*networking.StringMatch{root.Uri, root.Scheme, root.Method, root.Authority}
	leaves := []*networking.StringMatch{leaf.Uri, leaf.Scheme, leaf.Method, leaf.Authority}
	for i := range roots {
		if stringMatchConflict(roots[i], leaves[i]) {
			return true
		}
	}
	for k, l := range leaf.Headers {
		if stringMatchConflict(root.Headers[k], l) {
			return true
		}
	}
	for k, l := range leaf.WithoutHeaders {
		if stringMatchConflict(root.WithoutHeaders[k], l) {
			return true
		}
	}
	for k, l := range leaf.QueryParams {
		if stringMatchConflict(root.QueryParams[k], l) {
			return true
		}
	}
	if root.IgnoreUriCase != leaf.IgnoreUriCase {
		return true
	}
	if root.Port > 0 && leaf.Port > 0 && root.Port != leaf.Port {
		return true
	}
	if root.SourceNamespace != "" && leaf.SourceNamespace != root.SourceNamespace {
		return true
	}
	for k, l := range leaf.SourceLabels {
		if v, ok := root.SourceLabels[k]; ok && v != l {
			return true
		}
	}
	if len(root.Gateways) > 0 && len(leaf.Gateways) > 0 {
		if len(root.Gateways) < len(leaf.Gateways) {
			return true
		}
		for _, g := range leaf.Gateways {
			if !slices.Contains(root.Gateways, g) {
				return true
			}
		}
	}
	return false
}

// stringMatchConflict is Istio's: with both set, only equal exact matches
// and a leaf prefix or exact match within the root's prefix fit; a regex
// (or a presence match) on either side conflicts with anything on the other.
func stringMatchConflict(root, leaf *networking.StringMatch) bool {
	if root == nil || leaf == nil {
		return false
	}
	if root.GetRegex() != "" && (leaf.GetRegex() != "" || leaf.GetPrefix() != "" || leaf.GetExact() != "") {
		return true
	}
	if leaf.GetRegex() != "" && (root.GetRegex() != "" || root.GetPrefix() != "" || root.GetExact() != "") {
		return true
	}
	if exact := root.GetExact(); exact != "" {
		return leaf.GetPrefix() != "" || leaf.GetExact() != exact
	}
	if prefix := root.GetPrefix(); prefix != "" {
		if p := leaf.GetPrefix(); p != "" {
			return !strings.HasPrefix(p, prefix)
		}
		if e := leaf.GetExact(); e != "" {
			return !strings.HasPrefix(e, prefix)
		}
	}
	return true
}
