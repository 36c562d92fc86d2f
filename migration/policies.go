package migration

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// The migration checks of the kinds the translator does not read. Each
// finding is filed under every analysed namespace whose workloads the
// resource applies to: its own namespace's (all of them without a
// selector), or any namespace's when it sits in Istio's root namespace.

// appliesTo lists the namespaces a workload-selected resource applies to.
func (a *analysis) appliesTo(obj metav1.Object, sel *typeapi.WorkloadSelector) []string {
	var labels map[string]string
	if sel != nil {
		labels = sel.MatchLabels
	}
	var out []string
	for _, ns := range a.namespaces() {
		if obj.GetNamespace() != ns && obj.GetNamespace() != a.opts.rootNamespace() {
			continue
		}
		if len(labels) == 0 || a.selectsIn(ns, labels) {
			out = append(out, ns)
		}
	}
	return out
}

// selectsIn reports whether labels select a pod or a workload's pods in ns.
func (a *analysis) selectsIn(ns string, labels map[string]string) bool {
	for _, p := range a.inv.podsOf(ns) {
		if hasLabels(labels, p.Labels) {
			return true
		}
	}
	for _, w := range a.inv.workloadsOf(ns) {
		if hasLabels(labels, w.Template.Labels) {
			return true
		}
	}
	return false
}

func scope(obj metav1.Object, ns string) string {
	if obj.GetNamespace() == ns {
		return "this namespace's workloads"
	}
	return "every namespace's workloads (it is in Istio's root namespace " + obj.GetNamespace() + ")"
}

func (a *analysis) policyFindings() {
	a.authorizationPolicies()
	a.peerAuthentications()
	a.requestAuthentications()
	for _, ef := range a.inv.EnvoyFilters {
		ref := input.Ref("EnvoyFilter", ef)
		if gatewayOnlyEnvoyFilter(ef.Spec.ConfigPatches) {
			a.addAt(ef.Namespace, ref, "spec.configPatches", Supported, "GatewayOnly", "patches gateways only, which nodemesh does not change", "")
			continue
		}
		var sel *typeapi.WorkloadSelector
		if ef.Spec.WorkloadSelector != nil {
			sel = &typeapi.WorkloadSelector{MatchLabels: ef.Spec.WorkloadSelector.Labels}
		}
		for _, ns := range a.appliesTo(ef, sel) {
			a.addAt(ns, ref, "spec.configPatches", Unsupported, "EnvoyFilter",
				"EnvoyFilter patches are not applied to the node Envoy: whatever it adds to "+scope(ef, ns)+"' sidecars (filters, retries on reset, Lua, rate limits) silently stops",
				"express the behaviour with VirtualService or DestinationRule fields, or keep the namespace on sidecars")
		}
	}
	for _, wp := range a.inv.WasmPlugins {
		ref := input.Ref("WasmPlugin", wp)
		if len(wp.Spec.TargetRefs) > 0 || wp.Spec.TargetRef != nil {
			a.addAt(wp.Namespace, ref, "spec.targetRefs", Supported, "GatewayAttached", "attached with targetRefs to a gateway or waypoint, which nodemesh does not change", "")
			continue
		}
		for _, ns := range a.appliesTo(wp, wp.Spec.Selector) {
			a.addAt(ns, ref, "spec.url", Unsupported, "WasmPlugin",
				"Wasm plugins are not loaded into the node Envoy: the plugin stops running for "+scope(wp, ns),
				"keep the namespace on sidecars, or move the plugin to an ingress gateway")
		}
	}
	for _, tm := range a.inv.Telemetries {
		ref := input.Ref("Telemetry", tm)
		for _, ns := range a.appliesTo(tm, tm.Spec.Selector) {
			a.addAt(ns, ref, "spec", Changed, "Telemetry",
				"the node Envoy reports Envoy's own statistics and access logs per node: Istio's metrics (istio_requests_total), per-workload tracing tags and this resource's overrides do not apply to "+scope(tm, ns),
				"switch dashboards and alerts to the node Envoy's cluster and route statistics before moving")
		}
	}
	a.sidecars()
}

func gatewayOnlyEnvoyFilter(patches []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch) bool {
	if len(patches) == 0 {
		return false
	}
	for _, p := range patches {
		if p.GetMatch().GetContext() != networkingapi.EnvoyFilter_GATEWAY {
			return false
		}
	}
	return true
}

// authorizationPolicies reports, per policy and rule, how nodemesh enforces
// each AuthorizationPolicy after the move (docs/design/policy.md): rules of
// L4 facts — principals (the identity's namespace and service account),
// namespaces, ipBlocks, ports — in eBPF at the destination pods, the same
// decisions as the sidecar; rules with request facts (methods, paths,
// hosts, headers, JWT) by the node Envoy's inbound RBAC on HTTP ports and
// Istio's TCP semantics elsewhere, as a sidecar; CUSTOM as a deny. Only what is not
// enforced identically is unsupported, by the field that makes it so.
func (a *analysis) authorizationPolicies() {
	pols, diags := istio.AuthorizationPolicies(a.inv.AuthorizationPolicies, istio.AuthzOptions{RootNamespace: a.opts.rootNamespace()})
	byRef := map[ir.ResourceRef]*ir.Policy{}
	for i := range pols {
		byRef[pols[i].Source] = &pols[i]
	}
	for _, ap := range a.inv.AuthorizationPolicies {
		ref := input.Ref("AuthorizationPolicy", ap)
		spec := &ap.Spec
		pol := byRef[ref]
		namespaces := a.appliesTo(ap, spec.Selector)
		if pol != nil && len(pol.Scope.Services) > 0 {
			// targetRefs to Services: the policy's namespace, its
			// Services' workloads (a sidecar ignores targetRefs; a
			// waypoint enforced them).
			namespaces = []string{ap.Namespace}
		}
		if pol == nil {
			if len(spec.TargetRefs) > 0 || spec.TargetRef != nil {
				a.addAt(ap.Namespace, ref, "spec.targetRefs", Supported, "GatewayAttached", "attached with targetRefs to a gateway, which nodemesh does not change", "")
				continue
			}
			// Rejected by the translation: its errors say why.
			for _, ns := range namespaces {
				for _, d := range diags {
					if d.Resource == ref && d.Severity == ir.SeverityError {
						a.addAt(ns, ref, d.Field, Unsupported, "InvalidAuthorizationPolicy", d.Message, "fix the policy; istiod rejects it too")
					}
				}
			}
			continue
		}
		for _, ns := range namespaces {
			a.authorizationPolicy(ns, ap, ref, pol, diags)
		}
	}
}

func (a *analysis) authorizationPolicy(ns string, ap *securityv1.AuthorizationPolicy, ref ir.ResourceRef, pol *ir.Policy, diags ir.Diagnostics) {
	where := "enforced for " + scope(ap, ns) + " in eBPF at the destination pods, as the sidecar enforced it"
	switch {
	case pol.Custom != "":
		a.addAt(ns, ref, "spec.provider", Unsupported, "CustomAuthorization",
			fmt.Sprintf("CUSTOM (provider %q): nodemesh has no external authorizer; it denies every request the policy selects instead of asking %q", pol.Custom, pol.Custom),
			"keep the namespace on sidecars, or move the external authorization to an ingress gateway")
		return
	case pol.Action == ir.PolicyAudit:
		a.addAt(ns, ref, "spec.action", Changed, "AuditAuthorization", "AUDIT decides nothing either way; nodemesh writes no audit records yet, so "+scope(ap, ns)+" are no longer audited", "")
		return
	case pol.DryRun:
		a.addAt(ns, ref, "metadata.annotations", Changed, "DryRunAuthorization", "dry run (istio.io/dry-run): nodemesh neither enforces nor logs it (the sidecar logged its shadow decisions)", "")
		return
	case len(pol.Scope.Services) > 0:
		a.addAt(ns, ref, "spec.targetRefs", Changed, "ServiceTargetedAuthorization",
			"targetRefs to Services: nodemesh enforces it at the Services' workloads; sidecars ignored such a policy (a waypoint enforced it)", "")
	}
	for _, d := range diags {
		if d.Resource == ref && d.Severity == ir.SeverityError {
			a.addAt(ns, ref, d.Field, Unsupported, "InvalidAuthorizationPolicy", d.Message+" (nodemesh enforces the rest of the policy, denying more)", "fix the policy")
		}
	}
	if len(pol.Rules) == 0 {
		effect := "allow-nothing: no request is allowed by it"
		if pol.Action != ir.PolicyAllow {
			effect = "no rules: it matches nothing"
		}
		a.addAt(ns, ref, "spec", Supported, "AuthorizationPolicy", effect+"; "+where, "")
		return
	}
	for _, r := range pol.Rules {
		if r.Layer() == ir.LayerL4 {
			a.addAt(ns, ref, r.Field, Supported, "AuthorizationPolicy", strings.ToUpper(string(pol.Action))+" rule "+where, "")
			continue
		}
		// Request facts: the node Envoy's inbound RBAC on the ports the
		// Services declare HTTP (the agent captures them, policy.md
		// §7.2–7.3), Istio's TCP semantics in eBPF elsewhere — what a
		// sidecar does on a TCP port. Only a port Istio would sniff as
		// HTTP (no protocol declared) differs: nodemesh does not capture
		// it, and the rule's TCP reading denies more there.
		var why []string
		for _, d := range ir.ProjectL4(pol.Action, pol.Source, r).Degradations {
			why = append(why, d.Diagnostic.Message)
		}
		a.addAt(ns, ref, r.Field, Supported, "L7AuthorizationPolicy",
			fmt.Sprintf("%s rule with request facts: enforced for %s by the node Envoy's inbound RBAC on the ports their Services declare HTTP (the agent captures those into it), as the sidecar enforced it; on ports declared TCP, Istio's TCP semantics in eBPF, as on a sidecar (%s); on ports that declare no protocol (Istio sniffs them) the TCP reading applies too, which denies more",
				strings.ToUpper(string(pol.Action)), scope(ap, ns), strings.Join(why, "; ")), "")
	}
}

// callerNamespaces lists the namespaces an AuthorizationPolicy names as
// sources (source.namespaces, or the ns/<name> part of principals), with the
// field that names each.
func callerNamespaces(ap *securityv1.AuthorizationPolicy) map[string]string {
	out := map[string]string{}
	for i, r := range ap.Spec.Rules {
		for j, f := range r.From {
			s := f.GetSource()
			if s == nil {
				continue
			}
			field := fmt.Sprintf("spec.rules[%d].from[%d].source", i, j)
			for _, n := range s.Namespaces {
				if n != "*" && !strings.Contains(n, "*") {
					out[n] = field + ".namespaces"
				}
			}
			for _, p := range s.Principals {
				if _, rest, ok := strings.Cut(p, "/ns/"); ok {
					if n, _, _ := strings.Cut(rest, "/"); n != "" && !strings.Contains(n, "*") {
						out[n] = field + ".principals"
					}
				}
			}
		}
	}
	return out
}

// identityCallers reports callers named by identity in an ALLOW policy of
// a server still on sidecars: once they move, their requests carry no mTLS
// identity, so the policy no longer allows them.
func (a *analysis) identityCallers() {
	for _, ap := range a.inv.AuthorizationPolicies {
		if ap.Spec.Action != securityapi.AuthorizationPolicy_ALLOW || a.dataplaneOf(ap.Namespace) != "sidecar" {
			continue
		}
		ref := input.Ref("AuthorizationPolicy", ap)
		analysed := a.namespaces()
		for caller, field := range callerNamespaces(ap) {
			if caller == ap.Namespace || !slices.Contains(analysed, caller) {
				continue
			}
			a.addAt(caller, ref, field, Unsupported, "IdentityAllowedCaller",
				fmt.Sprintf("%s allows calls from %s by mTLS identity; once %s's clients move to nodemesh their calls carry no identity and are denied while %s stays on sidecars", ap.Namespace, caller, caller, ap.Namespace),
				fmt.Sprintf("move %s first, or keep %s on sidecars until nodemesh carries identities over mTLS", ap.Namespace, caller))
		}
	}
}

func modeOf(m *securityapi.PeerAuthentication_MutualTLS) securityapi.PeerAuthentication_MutualTLS_Mode {
	if m == nil {
		return securityapi.PeerAuthentication_MutualTLS_UNSET
	}
	return m.Mode
}

// strictIn says whether a namespace's servers require mTLS: a namespace-wide
// PeerAuthentication, or else the mesh-wide one in the root namespace.
func (a *analysis) strictIn(ns string) (ir.ResourceRef, bool) {
	var mesh, own *ir.ResourceRef
	var meshMode, ownMode securityapi.PeerAuthentication_MutualTLS_Mode
	for _, pa := range a.inv.PeerAuthentications {
		if pa.Spec.Selector != nil && len(pa.Spec.Selector.MatchLabels) > 0 {
			continue
		}
		ref := input.Ref("PeerAuthentication", pa)
		switch pa.Namespace {
		case ns:
			own, ownMode = &ref, modeOf(pa.Spec.Mtls)
		case a.opts.rootNamespace():
			mesh, meshMode = &ref, modeOf(pa.Spec.Mtls)
		}
	}
	switch {
	case own != nil && ownMode != securityapi.PeerAuthentication_MutualTLS_UNSET:
		return *own, ownMode == securityapi.PeerAuthentication_MutualTLS_STRICT
	case mesh != nil:
		return *mesh, meshMode == securityapi.PeerAuthentication_MutualTLS_STRICT
	}
	return ir.ResourceRef{}, false
}

// peerAuthentications reports how each PeerAuthentication is enforced
// for the analysed namespaces' workloads once they move (docs/design/
// policy.md §10): the effective mode of every workload's ports with
// istiod's precedence (translate/authz), attributed to the policies that
// decide it. STRICT is enforced by the agent in eBPF by attested pod
// identity instead of mTLS — a change, said precisely, not a block:
// nothing a STRICT port refused in Istio but a pod of the cluster, the
// node, or a pod outside the mesh gets in, and no peer Istio admitted is
// refused (the mesh has no peer outside the cluster nodemesh could not
// attest: VMs and other clusters are not supported at all). PERMISSIVE and
// DISABLE change nothing. What istiod itself ignores is reported as such.
func (a *analysis) peerAuthentications() {
	idx := authz.NewPeerAuthentications(a.inv.PeerAuthentications, a.opts.rootNamespace(), nil)
	analysed := a.namespaces()
	for _, d := range idx.Diagnostics {
		if slices.Contains(analysed, d.Resource.Namespace) {
			a.addAt(d.Resource.Namespace, d.Resource, d.Field, Supported, "PeerAuthenticationIgnored", d.Message, "")
		}
	}
	type decided struct {
		ref       ir.ResourceRef
		strict    bool
		workloads []string
		modes     []string
	}
	for _, ns := range analysed {
		var strictRef *ir.ResourceRef
		byRef := map[ir.ResourceRef]*decided{}
		var order []ir.ResourceRef
		for _, t := range a.peerAuthnTargets(ns) {
			eff := idx.For(ns, t.labels)
			seen := map[ir.ResourceRef]bool{}
			note := func(ref ir.ResourceRef, strict bool) {
				if ref.Name == "" {
					return
				}
				d := byRef[ref]
				if d == nil {
					d = &decided{ref: ref}
					byRef[ref] = d
					order = append(order, ref)
				}
				d.strict = d.strict || strict
				if !seen[ref] {
					seen[ref] = true
					d.workloads = append(d.workloads, t.name)
					d.modes = append(d.modes, t.name+": "+describePorts(eff))
				}
			}
			note(eff.Workload.From, eff.Workload.Mode == authz.ModeStrict)
			for _, p := range eff.SortedPorts() {
				note(eff.Ports[p].From, eff.Ports[p].Mode == authz.ModeStrict)
			}
		}
		for _, ref := range order {
			d := byRef[ref]
			field := "spec.mtls"
			if !d.strict {
				a.addAt(ns, ref, field, Supported, "PeerAuthentication",
					"decides "+strings.Join(d.modes, "; ")+": no STRICT port, so nothing is enforced, as with sidecars (sidecar clients send plaintext to pods without a sidecar)", "")
				continue
			}
			if strictRef == nil {
				strictRef = &ref
			}
			a.addAt(ns, ref, field, Changed, "PeerAuthenticationStrict",
				"decides "+strings.Join(d.modes, "; ")+". STRICT is enforced by nodemesh in eBPF at the pod, by attested identity instead of mTLS: "+
					"connections from addresses that are not pods of the cluster are refused; pods of the cluster are admitted without encryption on the wire, "+
					"and so are the node (host-network processes, not only kubelet probes) and pods outside the mesh, whose plaintext Istio refuses; "+
					"sidecar clients reach these pods in plaintext (auto mTLS sees no sidecar) until nodemesh terminates Istio mTLS",
				"nothing to do if the cluster's own pods are the peers you trust; a NetworkPolicy or an AuthorizationPolicy narrows which of them may connect")
		}
		if strictRef != nil {
			a.strict[ns] = *strictRef
		}
	}
}

// strictCallers names the namespaces outside the mesh that the manifests
// show calling a namespace with STRICT ports: Istio refuses their plaintext
// there, nodemesh will admit it once the namespace moves.
func (a *analysis) strictCallers() {
	for _, ns := range slices.Sorted(maps.Keys(a.strict)) {
		for _, caller := range slices.Sorted(maps.Keys(a.graph)) {
			if caller == ns || !a.graph[caller][ns] || a.dataplaneOf(caller) != "none" {
				continue
			}
			a.addAt(ns, a.strict[ns], "spec.mtls", Changed, "StrictCallerOutsideMesh",
				fmt.Sprintf("%s, outside the mesh, calls %s: Istio refuses its plaintext on the STRICT ports; once %s moves, nodemesh admits it (a pod of the cluster, by its attested identity)", caller, ns, ns),
				fmt.Sprintf("if %s must stay refused, deny it with an AuthorizationPolicy (DENY from namespace %s) or a NetworkPolicy before the move", caller, caller))
		}
	}
}

// peerAuthnTarget is a workload (or, without workloads, a pod) of a
// namespace, by its pod labels; a namespace with neither has one target
// without labels.
type peerAuthnTarget struct {
	name   string
	labels map[string]string
}

func (a *analysis) peerAuthnTargets(ns string) []peerAuthnTarget {
	var out []peerAuthnTarget
	for _, w := range a.inv.workloadsOf(ns) {
		out = append(out, peerAuthnTarget{name: w.Ref.Name, labels: w.Template.Labels})
	}
	if len(out) == 0 {
		for _, p := range a.inv.podsOf(ns) {
			out = append(out, peerAuthnTarget{name: p.Name, labels: p.Labels})
		}
	}
	slices.SortFunc(out, func(x, y peerAuthnTarget) int { return strings.Compare(x.name, y.name) })
	if len(out) == 0 {
		// Nothing deployed yet: what the namespace's pods will get from
		// namespace- and mesh-level policies.
		out = []peerAuthnTarget{{name: "its pods"}}
	}
	return out
}

// describePorts is a workload's effective modes: "STRICT" or "PERMISSIVE,
// port 9090 STRICT".
func describePorts(e authz.EffectivePeerAuthn) string {
	parts := []string{string(e.Workload.Mode)}
	for _, p := range e.SortedPorts() {
		if m := e.Ports[p].Mode; m != e.Workload.Mode {
			parts = append(parts, fmt.Sprintf("port %d %s", p, m))
		}
	}
	return strings.Join(parts, ", ")
}

// strictCallees reports, for each analysed namespace, the namespaces it calls
// whose servers require mTLS and are still on sidecars: after the move its
// clients send plaintext, which those servers reject.
func (a *analysis) strictCallees() {
	for _, ns := range a.namespaces() {
		for _, callee := range sortedSet(a.graph[ns], ns) {
			if a.dataplaneOf(callee) != "sidecar" {
				continue
			}
			ref, strict := a.strictIn(callee)
			if !strict {
				continue
			}
			a.addAt(ns, ref, "spec.mtls.mode", Unsupported, "StrictServerOnSidecars",
				fmt.Sprintf("%s calls %s, whose servers still run sidecars and require mTLS (STRICT): once %s's clients move to nodemesh they send plaintext, which those servers reject", ns, callee, ns),
				fmt.Sprintf("move %s first (see the order), or set its PeerAuthentication to PERMISSIVE for the duration of the move", callee))
		}
	}
}

func (a *analysis) dataplaneOf(ns string) string { return a.inventoryOf(ns).Dataplane }

func (a *analysis) sidecars() {
	for _, sc := range a.inv.Sidecars {
		ref := input.Ref("Sidecar", sc)
		var sel *typeapi.WorkloadSelector
		if sc.Spec.WorkloadSelector != nil {
			sel = &typeapi.WorkloadSelector{MatchLabels: sc.Spec.WorkloadSelector.Labels}
		}
		for _, ns := range a.appliesTo(sc, sel) {
			if len(sc.Spec.Egress) > 0 {
				a.addAt(ns, ref, "spec.egress", Changed, "SidecarScope",
					"egress scoping is not applied by the node Envoy: "+scope(sc, ns)+" see every Service and route of the mesh, not only the hosts listed (the route-parity findings list what they gain)",
					"nothing to do for routing; if the Sidecar was used to limit what clients may call, use a NetworkPolicy or an AuthorizationPolicy on the servers")
			}
			if p := sc.Spec.OutboundTrafficPolicy; p != nil && p.Mode == networkingapi.OutboundTrafficPolicy_REGISTRY_ONLY {
				a.addAt(ns, ref, "spec.outboundTrafficPolicy.mode", Unsupported, "SidecarScope",
					"REGISTRY_ONLY is not applied: the node Envoy passes traffic to unknown hosts through (ALLOW_ANY), so calls the sidecar blocked succeed",
					"block egress with a NetworkPolicy before moving, or keep the namespace on sidecars")
			}
			if len(sc.Spec.Ingress) > 0 {
				a.addAt(ns, ref, "spec.ingress", Unsupported, "SidecarScope",
					"ingress listeners are not applied: nodemesh has no inbound proxy yet, so the ports and TLS settings they configure are gone",
					"keep the namespace on sidecars")
			}
		}
	}
}

// requestAuthentications: the node Envoy validates tokens with jwt_authn
// built as istiod builds a sidecar's (translate.WorkloadJWT), so a valid
// RequestAuthentication with inline keys is enforced identically. What
// cannot be: an invalid rule (nodemesh rejects its tokens; istiod rejects
// the resource). A key set to fetch (jwksUri, or the issuer's discovery
// document) is fetched by the controller (xds/jwks), a change: where it
// cannot reach the key server, tokens are rejected.
func (a *analysis) requestAuthentications() {
	ras, diags := istio.RequestAuthentications(a.inv.RequestAuthentications, istio.AuthzOptions{RootNamespace: a.opts.rootNamespace()})
	byRef := map[ir.ResourceRef]*ir.RequestAuthn{}
	for i := range ras {
		byRef[ras[i].Source] = &ras[i]
	}
	for _, ra := range a.inv.RequestAuthentications {
		ref := input.Ref("RequestAuthentication", ra)
		m := byRef[ref]
		if m == nil {
			a.addAt(ra.Namespace, ref, "spec.targetRefs", Supported, "GatewayAttached",
				"attached with targetRefs to a gateway or waypoint, which nodemesh does not change", "")
			continue
		}
		namespaces := a.appliesTo(ra, ra.Spec.Selector)
		if len(m.Scope.Services) > 0 {
			namespaces = []string{ra.Namespace}
		}
		for _, ns := range namespaces {
			blocked := false
			for _, d := range diags {
				if d.Resource == ref && (d.Severity == ir.SeverityError || d.Severity == ir.SeverityWarning) {
					blocked = true
					a.addAt(ns, ref, d.Field, Unsupported, "InvalidRequestAuthentication", d.Message, "fix the RequestAuthentication; istiod rejects it")
				}
			}
			for _, r := range m.Rules {
				if r.JWKS == "" && !r.RejectTokens {
					a.addAt(ns, ref, r.Field+".jwksUri", Changed, "JWKSFetch",
						fmt.Sprintf("the controller fetches the key set of issuer %q (jwksUri, or the issuer's OpenID discovery), as istiod does by default, and gives it to the node Envoys inline; until its first fetch succeeds, tokens of that issuer are rejected (401) for %s, as istiod does when it cannot fetch. It refuses key servers on loopback, link-local (cloud metadata) and multicast addresses and does not follow redirects", r.Issuer, scope(ra, ns)),
						"make sure the controller's pod can reach the key server (egress, DNS)")
				}
			}
			if blocked {
				continue
			}
			msg := "tokens are validated for " + scope(ra, ns) + " by the node Envoy's jwt_authn on their inbound HTTP ports, as the sidecar validated them; requestPrincipals and request.auth.* match as on a sidecar"
			if len(m.Scope.Services) > 0 {
				a.addAt(ns, ref, "spec.targetRefs", Changed, "ServiceTargetedRequestAuthentication",
					msg+"; targetRefs to Services: applied at the Services' workloads (sidecars ignored such a RequestAuthentication)", "")
				continue
			}
			a.addAt(ns, ref, "spec.jwtRules", Supported, "RequestAuthentication", msg, "")
		}
	}
}
