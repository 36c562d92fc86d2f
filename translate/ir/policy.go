package ir

import "net/netip"

// The policy model: access rules from NetworkPolicy, TrafficPolicy and
// (issue 14) AuthorizationPolicy, in one shape that both back ends read —
// eBPF identity maps for L3/L4 facts (agent/policy), Envoy RBAC on the
// destination node's inbound listener for HTTP facts. docs/design/policy.md
// is the design; this file is the data.
//
// A Policy is one source object. Its rules are an OR; a rule is an AND of
// clauses, a clause an OR of matches, a match an AND of fields, each field an
// OR of its values (its Not* form: none of them). That is ztunnel's
// authorization shape and Envoy RBAC's, so AuthorizationPolicy maps onto it
// field for field, and NetworkPolicy is the special case of a peers clause
// and a ports clause.

// PolicyAction is what a matching rule does.
type PolicyAction string

const (
	// PolicyAllow admits the flow (when no deny matches it).
	PolicyAllow PolicyAction = "Allow"
	// PolicyDeny drops the flow, whatever any allow says. Istio's CUSTOM
	// action is translated as a deny (with a degradation): nodemesh has no
	// external authorizer, and the traffic CUSTOM selects must not pass.
	PolicyDeny PolicyAction = "Deny"
	// PolicyAudit changes no decision; the L7 back end logs matches.
	PolicyAudit PolicyAction = "Audit"
)

// PolicyGate groups the policies that decide together. A flow must pass
// every gate: a gate passes it when no policy of the gate isolates the
// endpoint in the flow's direction, or one of the gate's allow rules
// matches. Deny rules are absolute, whatever their gate. Kinds get gates of
// their own where, in an Istio mesh, they are enforced at separate points
// (NetworkPolicy by the CNI, AuthorizationPolicy by the sidecar): unioning
// their allows would admit what only one of them admits.
type PolicyGate string

const (
	// GateNetwork: NetworkPolicy and TrafficPolicy (an Allow TrafficPolicy
	// unions with NetworkPolicies).
	GateNetwork PolicyGate = "network"
	// GateAuthorization: Istio AuthorizationPolicy.
	GateAuthorization PolicyGate = "authorization"
)

// PolicyDirection is the direction of a flow relative to the selected
// workload.
type PolicyDirection string

const (
	// PolicyIngress: flows to the workload; the peer is the source.
	PolicyIngress PolicyDirection = "ingress"
	// PolicyEgress: flows from the workload; the peer is the destination.
	PolicyEgress PolicyDirection = "egress"
)

// Policy is one source object in the model.
type Policy struct {
	// Source names the object (diagnostics, Events, RBAC policy names).
	Source ResourceRef  `json:"source"`
	Gate   PolicyGate   `json:"gate"`
	Action PolicyAction `json:"action"`
	// DryRun rules are evaluated and reported, never enforced (Istio's
	// istio.io/dry-run annotation; Envoy shadow rules).
	DryRun bool `json:"dryRun,omitempty"`
	// Custom is the provider of an Istio CUSTOM policy, which is
	// translated as a Deny (nodemesh has no external authorizer); the RBAC
	// policy names say so, as istiod's do for a CUSTOM action it cannot
	// honour.
	Custom string      `json:"custom,omitempty"`
	Scope  PolicyScope `json:"scope"`
	// Isolates lists the directions in which a selected workload becomes
	// default-deny: only the allow rules of the gate admit flows then.
	Isolates []PolicyDirection `json:"isolates,omitempty"`
	Rules    []PolicyRule      `json:"rules,omitempty"`
	// Degradations of the policy as a whole (its scope); a rule's are on
	// the rule.
	Degradations []Degradation `json:"degradations,omitempty"`
}

// IsolatesDirection reports whether the policy isolates its workloads in d.
func (p *Policy) IsolatesDirection(d PolicyDirection) bool {
	for _, i := range p.Isolates {
		if i == d {
			return true
		}
	}
	return false
}

// PolicyScope is the set of workloads a policy applies to.
type PolicyScope struct {
	// Namespace of the workloads; "" is every namespace (an Istio policy in
	// the root namespace).
	Namespace string `json:"namespace,omitempty"`
	// Workloads selects by pod labels; nil selects every workload of the
	// namespace.
	Workloads *LabelSelector `json:"workloads,omitempty"`
	// Services, when set, narrow the scope to the workloads behind these
	// Services of the namespace (AuthorizationPolicy targetRefs).
	Services []string `json:"services,omitempty"`
}

// LabelSelector is a Kubernetes label selector as plain data: every
// MatchLabels pair and every requirement must hold. An empty selector
// selects everything. Producers validate it; back ends evaluate it with
// apimachinery's own selector code.
type LabelSelector struct {
	MatchLabels      map[string]string  `json:"matchLabels,omitempty"`
	MatchExpressions []LabelRequirement `json:"matchExpressions,omitempty"`
}

// LabelRequirement is one expression of a LabelSelector; Operator is In,
// NotIn, Exists or DoesNotExist.
type LabelRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// PolicyRule applies its policy's action to the flows it matches.
type PolicyRule struct {
	Direction PolicyDirection `json:"direction"`
	// Field is where the rule is in its source (spec.ingress[0],
	// spec.rules[1].to[0]).
	Field string `json:"field,omitempty"`
	// Clauses must all match; a rule without clauses matches every flow.
	Clauses []PolicyClause `json:"clauses,omitempty"`
	// Degradations are the parts of the rule that could not be expressed,
	// and what is enforced instead.
	Degradations []Degradation `json:"degradations,omitempty"`
}

// PolicyClause matches when any of its matches does; a clause without
// matches matches nothing (every alternative it had was unusable).
type PolicyClause struct {
	// Field is where the clause is in its source (spec.rules[0].from,
	// spec.rules[0].when[1]).
	Field   string        `json:"field,omitempty"`
	Matches []PolicyMatch `json:"matches"`
}

// PolicyMatch matches when every field given matches; a field matches when
// any of its values does, a Not* field when none does. A match without
// fields matches every flow.
type PolicyMatch struct {
	// Field is where the match is in its source (spec.ingress[0].from[1]).
	Field string `json:"field,omitempty"`

	// Peer facts (the source of an ingress flow, the destination of an
	// egress flow), enforced at L4.
	Workloads     []WorkloadSelector `json:"workloads,omitempty"`
	Principals    []Glob             `json:"principals,omitempty"`
	NotPrincipals []Glob             `json:"notPrincipals,omitempty"`
	Namespaces    []Glob             `json:"namespaces,omitempty"`
	NotNamespaces []Glob             `json:"notNamespaces,omitempty"`
	IPBlocks      []IPBlock          `json:"ipBlocks,omitempty"`
	NotIPBlocks   []IPBlock          `json:"notIPBlocks,omitempty"`
	// TrustDomains are the trust domain of the peer's principal (Istio's
	// source.trustDomains): a part of the principal the L4 back end reads
	// from the identity, like Principals.
	TrustDomains    []Glob `json:"trustDomains,omitempty"`
	NotTrustDomains []Glob `json:"notTrustDomains,omitempty"`

	// The flow's destination port, enforced at L4.
	Ports    []PortMatch `json:"ports,omitempty"`
	NotPorts []PortMatch `json:"notPorts,omitempty"`

	// L7 facts, enforced by the node Envoy's RBAC filter.
	L7 []L7Condition `json:"l7,omitempty"`
}

// IsEmpty reports whether the match has no field (it matches every flow).
func (m *PolicyMatch) IsEmpty() bool {
	return len(m.Workloads) == 0 && len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 && len(m.IPBlocks) == 0 &&
		len(m.NotIPBlocks) == 0 && len(m.TrustDomains) == 0 && len(m.NotTrustDomains) == 0 &&
		len(m.Ports) == 0 && len(m.NotPorts) == 0 && len(m.L7) == 0
}

// WorkloadSelector selects peer workloads by namespace and labels.
type WorkloadSelector struct {
	// Namespace by name; "" leaves the namespace to NamespaceLabels, and to
	// every namespace when that is nil too.
	Namespace string `json:"namespace,omitempty"`
	// NamespaceLabels selects namespaces by their labels (an empty selector:
	// every namespace that exists).
	NamespaceLabels *LabelSelector `json:"namespaceLabels,omitempty"`
	// Labels selects pods; nil is every pod.
	Labels *LabelSelector `json:"labels,omitempty"`
}

// IPBlock is a prefix minus exceptions (contained in it).
type IPBlock struct {
	CIDR   netip.Prefix   `json:"cidr"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// Contains reports whether a is in the prefix and in none of the
// exceptions.
func (b IPBlock) Contains(a netip.Addr) bool {
	if !b.CIDR.Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// IPProtocol of a port match; "" is every protocol.
type IPProtocol string

// IP protocols a port match names.
const (
	IPProtocolAny  IPProtocol = ""
	IPProtocolTCP  IPProtocol = "TCP"
	IPProtocolUDP  IPProtocol = "UDP"
	IPProtocolSCTP IPProtocol = "SCTP"
)

// PortMatch is a destination port, a range or a named port, of a protocol.
type PortMatch struct {
	Protocol IPProtocol `json:"protocol,omitempty"`
	// Port 0 with no Name is every port of Protocol.
	Port uint16 `json:"port,omitempty"`
	// EndPort, when set, makes Port..EndPort a range.
	EndPort uint16 `json:"endPort,omitempty"`
	// Name is a container port name, resolved on the destination pod.
	Name string `json:"name,omitempty"`
}

// Glob is an Istio authorization value: "exact", "prefix*", "*suffix", or
// "*" (any non-empty value).
type Glob string

// Match reports whether s matches the glob.
func (g Glob) Match(s string) bool {
	v := string(g)
	switch {
	case v == "*":
		return s != ""
	case len(v) > 1 && v[len(v)-1] == '*':
		return len(s) >= len(v)-1 && s[:len(v)-1] == v[:len(v)-1]
	case len(v) > 1 && v[0] == '*':
		return len(s) >= len(v)-1 && s[len(s)-(len(v)-1):] == v[1:]
	}
	return s == v
}

// L7Attribute is a request fact only the node Envoy can see.
type L7Attribute string

// L7 attributes (Istio's operation fields, request principals and when
// keys; docs/design/policy.md §2).
const (
	L7Method           L7Attribute = "method"
	L7Path             L7Attribute = "path"
	L7Host             L7Attribute = "host"
	L7Header           L7Attribute = "header"           // Name: the header
	L7RequestPrincipal L7Attribute = "requestPrincipal" // JWT iss/sub
	L7RemoteIP         L7Attribute = "remoteIP"         // after X-Forwarded-For
	L7Claim            L7Attribute = "claim"            // Path: the claim's nested keys
	L7Audience         L7Attribute = "audience"
	L7Presenter        L7Attribute = "presenter"
	L7SNI              L7Attribute = "sni"
	// L7DestinationIP is the address the client connected to (Istio's
	// destination.ip): an L3 fact, but one the eBPF maps are not keyed by.
	L7DestinationIP L7Attribute = "destinationIP"
	// L7Metadata is Envoy dynamic metadata (Istio's experimental.envoy.*
	// keys): Name is the filter, Path the keys.
	L7Metadata L7Attribute = "metadata"
)

// ConnectionFact reports whether Envoy's network (TCP) RBAC filter can
// evaluate the attribute: a fact of the connection, not of an HTTP request.
// istiod keeps exactly these in the RBAC of a TCP port
// (../shared/conformance/istio-authz/tcp/audit-both-http-tcp).
func (a L7Attribute) ConnectionFact() bool {
	switch a {
	case L7RemoteIP, L7SNI, L7DestinationIP, L7Metadata:
		return true
	}
	return false
}

// L7Condition matches a request attribute against globs (any of Values,
// none of NotValues).
type L7Condition struct {
	Attribute L7Attribute `json:"attribute"`
	Name      string      `json:"name,omitempty"`
	Path      []string    `json:"path,omitempty"`
	Values    []Glob      `json:"values,omitempty"`
	NotValues []Glob      `json:"notValues,omitempty"`
}

// Fallback is what is enforced instead of a part that cannot be expressed;
// every fallback denies at least as much as the part would have.
type Fallback string

const (
	// FallbackMatchNothing: an allow (or the part of it) matches nothing.
	FallbackMatchNothing Fallback = "MatchNothing"
	// FallbackMatchMore: a deny matches more than written (a condition is
	// dropped: every peer, every port, every pod of the namespace).
	FallbackMatchMore Fallback = "MatchMore"
	// FallbackIsolate: the selected workloads are isolated and the policy
	// allows nothing.
	FallbackIsolate Fallback = "Isolate"
	// FallbackIgnore: the part changes no decision (an unknown policy type,
	// an exception outside its block).
	FallbackIgnore Fallback = "Ignore"
)

// Degradation records a part of a policy that cannot be enforced exactly,
// and what is enforced instead.
type Degradation struct {
	Instead    Fallback   `json:"instead"`
	Diagnostic Diagnostic `json:"diagnostic"`
}

// CodeDeniesMore classifies the diagnostic of a degradation: part of a
// policy is enforced as deny (or has no effect), never as allow.
const CodeDeniesMore Code = "DeniesMore"
