// Package istio gives Istio's traffic-management semantics to a node Envoy:
// it turns the Services, endpoints, VirtualServices and DestinationRules of an
// input.Bag into the plain-data IR of package translate/ir, with Istio's names
// and defaults (see ../shared/reference/istio-semantics.md sections 1.2–1.6
// and 6), and reports everything it cannot honour as a diagnostic.
//
// One invalid resource, or one invalid rule inside a resource, never stops
// the others: the affected part is left out and an error diagnostic says so.
// The package never panics on any input.
//
// Istio evaluates sourceLabels, sourceNamespace, gateways and short host names
// once per client proxy. A node Envoy serves many clients, so routing here is
// computed per source class (see ARCHITECTURE.md); offline translation without
// pods uses one default class, a client with no labels and no namespace.
//
// This package may import translate/input, translate/authz (the
// AuthorizationPolicy translation the agent shares), translate/ir and api,
// never Envoy.
package istio
