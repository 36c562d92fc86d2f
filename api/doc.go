// Package api is nodemesh's contract leaf: the names that two components —
// or a component and the Helm chart — must agree on. The opt-in label and
// its values, the Istio labels, UID and mark nodemesh leaves alone, the
// ports, the names of the objects the chart creates (Services,
// ServiceAccounts, the CA Secret and bundle), the default release
// namespace and the audiences of the controller's authentication are
// defined here once; every package that shares one of them imports it
// instead of spelling it. The chart's templates spell some of them too:
// install's tests check the rendered chart against these constants.
//
// The CustomResourceDefinitions' Go types are in api/v1alpha1; their YAML is
// generated from those types (make generate).
//
// This package imports nothing, not even the standard library: it is the one
// nodemesh package that every other one may import, translate/ir and bpf
// included (internal/archtest enforces it).
package api
