// Package policy translates Kubernetes NetworkPolicies and nodemesh's own
// TrafficPolicies into the entries of the eBPF policy maps (bpf.PolicyKey →
// bpf.Verdict, endpoint isolation flags, CIDR identities). An Allow
// TrafficPolicy behaves as a NetworkPolicy; a Deny TrafficPolicy writes deny
// entries, which win over every allow, and isolates nothing (TrafficPolicy).
//
// It works in two steps (docs/design/policy.md): each object becomes an
// ir.Policy, nodemesh's policy model, with a record of what it cannot
// express (model.go: what depends on the object alone; Istio's
// AuthorizationPolicies through translate/authz, authz.go); the models
// become map entries (l4.go, the L4 back end: identities, named ports, port
// ranges; peers.go: principals, namespaces, trust domains and the exact
// complements of the Not* fields). Each gate's entries are computed apart
// and combined (gates.go): a flow must pass the network gate
// (NetworkPolicy, TrafficPolicy) and the authorization gate
// (AuthorizationPolicy). Request conditions are degraded towards denying
// more (ir.ProjectL4).
//
// It is plain data in, plain data out: the caller passes the node's local
// endpoints, the cluster's identities (agent/identity), the namespaces'
// labels and the policies, and gets, per endpoint identity, the isolation
// flags and the set of allow entries, plus diagnostics for everything it
// could not express. What cannot be expressed is never allowed: the endpoint
// stays isolated and the rule (or the part of it) contributes nothing — and
// a deny that cannot be expressed exactly denies more (every peer for an
// invalid peer selector, every port for a range too wide to expand, every
// pod of the namespace for an invalid selector).
//
// Semantics, as Kubernetes defines them:
//   - a pod selected by any policy whose policyTypes include a direction is
//     default-deny in that direction; rules of all selecting policies are
//     unioned;
//   - peers: podSelector (the policy's namespace), namespaceSelector,
//     both (pods of the selected namespaces), ipBlock with except; no peers
//     means every peer; no ports means every port;
//   - ports: numbers, named ports (resolved on the destination pod: the
//     endpoint for ingress, the peer for egress) and endPort ranges
//     (expanded into single ports).
//
// Policy entries are keyed by identity, so pods of one identity share them.
// When pods of one identity would get different entries (a named port that
// resolves differently, a podSelector on a label the identity leaves out),
// they get the intersection and the policy is reported.
//
// The package imports the bpf package for its key types, api/v1alpha1 (the
// TrafficPolicy type), k8s.io/api, translate/ir (the model), translate/authz
// and Istio's API types (AuthorizationPolicy); it must not import client-go
// or any other part of translate.
package policy
