package policy

import (
	"fmt"
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// NamedPort is a container port of a pod.
type NamedPort struct {
	Name  string
	Port  uint16
	Proto uint8
}

// Endpoint is a pod on this node.
type Endpoint struct {
	Namespace string
	Name      string
	Labels    map[string]string
	Identity  bpf.Identity
	Ports     []NamedPort
	// Key is the key of its own policy entries (the agent gives
	// bpf.EndpointKey of its host veth's ifindex), used when policies treat
	// the pods of its identity differently; 0: it has none, and such pods
	// share the entries every one of them is allowed.
	Key bpf.Identity
	// Redirected pods connect to the node proxy: when isolated for egress
	// they get an allow entry to it (Input.ProxyPort).
	Redirected bool
	// Meshed pods are in nodemesh's mesh: an opted-in namespace and no
	// sidecar (the agent's redirected()). Istio's own policies
	// (AuthorizationPolicy) apply to them only, as Istio applies them only
	// to pods it proxies: a pod with a sidecar is authorized by its sidecar
	// — the L4 projection here as well would deny what the sidecar allows
	// by HTTP facts, breaking namespaces not yet moved — and a pod outside
	// the mesh is not authorized by Istio at all.
	Meshed bool
	// Captured are the pod's TCP ports the node Envoy's inbound listener
	// captures (translate/authz.Capture: HTTP ports under a policy with
	// HTTP facts). The Envoy enforces every AuthorizationPolicy there — L4
	// rules included — and its upstream connection carries the client's
	// address, so the authorization gate leaves those ports to it: no
	// projection of AuthorizationPolicy rules on them (the projection of an
	// L7 ALLOW matches nothing and would deny what the Envoy allowed).
	// PeerAuthentication, NetworkPolicy and TrafficPolicy still apply.
	// Connections the node itself opens are not captured: without
	// AllowHostIngress, HOST is denied on these ports (they would pass
	// around the Envoy's policy).
	Captured []uint16
	// CapturedForMTLS are the pod's TCP ports captured only so that the
	// node Envoy terminates Istio mTLS on them (sidecar clients under a
	// DestinationRule ISTIO_MUTUAL, docs/design/policy.md §10): the Envoy
	// enforces no policy there, so nothing changes for the gate — Translate
	// does not read them; the agent writes them to nm_inbound with Captured.
	CapturedForMTLS []uint16
}

// Identity is a security identity of the cluster: the namespace, service
// account and (filtered) labels of the pods that have it.
type Identity struct {
	ID        bpf.Identity
	Namespace string
	// ServiceAccount is the pods' service account: with the namespace and
	// Input.TrustDomain it is the peer's Istio principal
	// (TD/ns/NS/sa/SA), which AuthorizationPolicies match. "" stands for
	// "default", as the API server's admission fills it in.
	ServiceAccount string
	Labels         map[string]string
}

// Service is a Service of the cluster, for AuthorizationPolicies whose
// targetRefs name Services: they apply to the pods its selector selects.
type Service struct {
	Namespace string
	Name      string
	Selector  map[string]string
}

// Input is everything a translation reads.
type Input struct {
	Endpoints  []Endpoint
	Identities []Identity
	// Namespaces are the labels of every namespace, by name.
	Namespaces map[string]map[string]string
	Policies   []*networkingv1.NetworkPolicy
	// TrafficPolicies are nodemesh's own (trafficpolicies.nodemesh.io).
	TrafficPolicies []*TrafficPolicy
	// Models are policies already in the policy model (the L4 part of
	// other kinds); NetworkPolicies and TrafficPolicies join them.
	Models []ir.Policy
	// PeerPorts are the container ports of pods known to have an identity
	// (for named ports in egress rules); local endpoints are added to it.
	PeerPorts map[bpf.Identity][][]NamedPort
	// CIDRs gives identities to ipBlock prefixes; nil allocates a fresh one.
	CIDRs *CIDRAllocator
	// AllowHostIngress lets the node (kubelet probes) reach pods isolated
	// for ingress, as most Kubernetes network plugins do.
	AllowHostIngress bool
	// ProxyPort is the node proxy's port redirected pods connect to (0: none).
	ProxyPort uint16
	// TrustDomain is the cluster's trust domain (default cluster.local):
	// the trust domain of every identity's principal. The authorization
	// policies' principals are already rewritten for its aliases
	// (translate/authz), so a principal of another trust domain matches
	// no identity.
	TrustDomain string
	// Services are the cluster's Services (targetRefs of authorization
	// policies).
	Services []Service
	// PeerAddrs are the addresses of the pods of each identity (local and
	// remote): Istio's ipBlocks match pods' addresses too.
	PeerAddrs map[bpf.Identity][]netip.Addr
	// PeerAuthn are the cluster's PeerAuthentications (nil: none): a
	// meshed endpoint's STRICT ports refuse peers without a pod identity
	// (peerauthn.go).
	PeerAuthn *authz.PeerAuthentications
}

// IdentityPolicy is what the maps hold under one endpoint key: an identity
// whose local pods all have the same policy, or one endpoint.
type IdentityPolicy struct {
	Flags   bpf.EndpointFlags
	Entries map[bpf.PolicyKey]bpf.Verdict
	// Ranges are the port ranges (endPort), as blocks of the port range
	// map, normalized (bpf.NormalizeRanges).
	Ranges map[bpf.PortRangeKey]bpf.Verdict
}

// Result is a translation.
type Result struct {
	// Identities are the policies by endpoint key (PolicyKey.Endpoint): the
	// local endpoints' identities, and the endpoint keys of pods that
	// policies treat differently from others of their identity. A key with
	// no flags and no entries is present too.
	Identities map[bpf.Identity]*IdentityPolicy
	// EndpointKeys are the keys the endpoints' entries are under (the
	// value of their bpf.Endpoint.Identity), in the order of
	// Input.Endpoints.
	EndpointKeys []bpf.Identity
	// CIDRs are the prefixes to write to the identity map.
	CIDRs       map[netip.Prefix]bpf.Identity
	Diagnostics []Diagnostic
}

// Severity of a diagnostic.
type Severity string

const (
	// Warning: part of a policy could not be expressed; it is enforced as
	// deny.
	Warning Severity = "Warning"
	// Error: part of a policy is invalid (its source rejects it); what is
	// enforced instead denies more.
	Error Severity = "Error"
)

// Diagnostic is a problem with one policy.
type Diagnostic struct {
	Severity Severity
	// Kind is NetworkPolicy, TrafficPolicy, AuthorizationPolicy or
	// PeerAuthentication.
	Kind      string
	Namespace string
	Name      string
	Field     string
	Message   string
}

func (d Diagnostic) String() string {
	kind := d.Kind
	if kind == "" {
		kind = KindNetworkPolicy
	}
	return fmt.Sprintf("%s: %s %s/%s %s: %s", d.Severity, kind, d.Namespace, d.Name, d.Field, d.Message)
}
