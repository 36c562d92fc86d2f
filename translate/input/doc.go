// Package input reads Kubernetes manifests (files, directories, stdin) into a
// Bag of typed objects for the translator.
//
// Decoding is strict, as `kubectl apply --validate=strict` is: an unknown or
// mistyped field is an error diagnostic that names the resource, the field
// path and the file:line, and the document is left out. One bad document never
// stops the others. Istio specs are checked against their protobuf schemas
// (istio.io/api), Kubernetes objects against their Go types.
//
// The same Bag is filled by the controller's informers, without source
// positions, so that files and a live cluster go through one code path.
//
// kinds.go is the one table of kinds nodemesh decodes: those the translator
// reads, and those tools read besides (the migration analyzer's workloads
// and Istio security, extension and telemetry resources), which are decoded
// with the same strictness only when a Loader keeps ignored kinds
// (Object.Typed). Kinds lists it for tools that read a live cluster.
//
// This package must not import Envoy or any translator back end; of the rest
// of nodemesh it imports translate/ir, api and internal/suggest.
package input
