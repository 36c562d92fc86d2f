// Package authz translates Istio AuthorizationPolicies (security.istio.io
// v1/v1beta1) into nodemesh's policy model (translate/ir, the authorization
// gate; docs/design/policy.md §1.1, §7), with istiod's trust-domain handling.
//
// It is the one translation both back ends read: the controller's Envoy RBAC
// (through translate/istio and the translate facade) and the agent's eBPF
// maps (agent/policy), which computes the L4 part itself from the cluster as
// it does for NetworkPolicy. So it imports only translate/ir, the standard
// library and Istio's API types (istio.io/api/security, istio.io/api/type and
// their client-go wrappers, which bring k8s.io/apimachinery) — never
// translate/input, translate/istio, translate/envoy or go-control-plane, so
// that the agent links no translator.
package authz
