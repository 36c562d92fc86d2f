// Package translate is nodemesh's translator: Kubernetes and Istio manifests
// (or the same objects from informers) in, validated xDS for node Envoys and
// proxyless gRPC clients out.
//
//	input (strict decoding) → istio (Istio semantics → IR) → envoy (IR → xDS, validation)
//
// This package is the facade over those layers, and the one way through
// them: `nodemesh translate`, the golden tests, the migration analyzer and
// the controller all translate here.
//
//   - New translates a Bag into a Generation and returns the default
//     class's configuration (every node's clusters, assignments and route
//     configurations). Compact lets the caller keep it alone.
//   - NodeClasses and NodePart give a node's part: the route configurations
//     of its source classes (BuildRoutes, shared by content between nodes)
//     and its listener (BuildListeners); ForNode assembles a whole node.
//   - WithEndpoints recomputes only some Services' assignments.
//   - GRPC is the proxyless gRPC clients' view; Diagnostics collect what
//     every step found.
//
// Translate is one node's (or the default class's) configuration built that
// way; the Write* functions render a Result as the `nodemesh translate`
// command prints it, and the golden tests compare those same bytes, so a
// user's bug report becomes a test case by copying files.
//
// What callers hold of the layers below has a name here (Bag, Pod,
// Resources, IstioOptions, Validate, …): the controller (package xds and
// below) imports this package and translate/ir, never input, istio or envoy.
// A Generation keeps no Envoy message; keeping, encoding and serving what it
// returns is the caller's.
//
// The translator is a library: it imports its subpackages, api and internal
// leaves, never the controller (xds), the agent, bpf, install, migration or a
// command line, nor client-go or Helm (internal/archtest enforces it).
package translate
