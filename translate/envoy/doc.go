// Package envoy turns the IR into Envoy v3 xDS resources (go-control-plane
// protobufs) and validates them before anything is printed or served.
//
// Validation is deeper than go-control-plane's: every message, including the
// ones packed inside google.protobuf.Any (typed_config, typed_per_filter_config,
// typed_extension_protocol_options), passes its protoc-gen-validate rules, and
// nodemesh's own semantic checks catch what those rules cannot see: dangling
// cluster and route-configuration references, EDS clusters without an
// assignment, zero total weights, regular expressions that do not compile,
// negative durations, out-of-range percentages, duplicate names, domains and
// filter-chain matches. A resource that fails is withheld (at the smallest
// unit that can be removed: a route, a filter chain, a cluster) and reported;
// everything else is still emitted.
//
// GRPC (grpc.go) derives from a node Envoy's configuration what proxyless
// gRPC clients are served: api_listeners, and only what gRPC implements.
//
// Only upstream Envoy extensions are used (no Istio proxy filters), because
// the node proxy is the upstream envoyproxy/envoy image.
//
// This package imports translate/ir and go-control-plane; never Istio types.
package envoy
