// Package translate is nodemesh's translator: Kubernetes and Istio manifests
// (or the same objects from informers) in, validated xDS for a node Envoy out.
//
//	input (strict decoding) → istio (Istio semantics → IR) → envoy (IR → xDS, validation)
//
// Translate runs the pipeline; the Write* functions render a Result as the
// `nodemesh translate` command prints it, and the golden tests compare those
// same bytes, so a user's bug report becomes a test case by copying files.
//
// The translator is a library: it imports its subpackages, api and internal
// leaves, never the controller (xds), the agent, bpf, install, migration or a
// command line, nor client-go or Helm (internal/archtest enforces it).
package translate
