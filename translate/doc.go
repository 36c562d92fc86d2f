// Package translate is nodemesh's translator: Kubernetes and Istio manifests
// (or the same objects from informers) in, validated xDS for a node Envoy out.
//
//	input (strict decoding) → istio (Istio semantics → IR) → envoy (IR → xDS, validation)
//
// Translate runs the pipeline; the Write* functions render a Result as the
// `nodemesh translate` command prints it, and the golden tests compare those
// same bytes, so a user's bug report becomes a test case by copying files.
package translate
