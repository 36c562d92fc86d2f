// Package ir is nodemesh's intermediate representation: plain data that sits
// between Istio semantics (package translate/istio) and Envoy xDS (package
// translate/envoy).
//
// The IR says *what* a node Envoy must do — which listeners and filter chains
// exist, which virtual hosts and routes, which clusters with which policies,
// which endpoints — in terms a person can read in a golden file. It carries no
// Envoy or Istio types so that both back ends (Envoy xDS for L7 and, later,
// eBPF maps for L3/L4) can be fed from it, and so that tests can assert on it
// without protobuf noise.
//
// policy.go is the policy model (NetworkPolicy, TrafficPolicy and, later,
// AuthorizationPolicy as one shape, with the record of what could not be
// expressed); policy_layer.go says which back end each fact needs and how a
// rule degrades where a back end cannot evaluate it — always towards denying
// more (docs/design/policy.md). The node agent reads the model too, so it is
// the one part of translate the agent may import.
//
// names.go holds every naming rule (cluster, route configuration, virtual host,
// metadata paths); nothing else in nodemesh formats those names.
//
// This package must not import Istio, Envoy, Kubernetes or any other nodemesh
// package but api, the contract leaf of shared constants (internal/archtest
// enforces it).
package ir
