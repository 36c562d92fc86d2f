// Package v1alpha1 holds the Go types of nodemesh's CustomResourceDefinitions
// in the API group nodemesh.io, version v1alpha1: Identity (cluster-scoped,
// the security identities of the eBPF datapath) and TrafficPolicy
// (namespaced, nodemesh's own L3/L4 policy).
//
// The CRDs' YAML is generated from these types and their kubebuilder markers
// by controller-gen (make generate), into the chart's crds/ directory
// (install/chart/crds), and so is zz_generated.deepcopy.go; make
// check-generated fails when the committed files differ from what the types
// generate. The validation the API server applies — enums, bounds, CEL rules —
// is written here as markers. Every list and map a CEL rule runs under has a
// maxItems or maxProperties: the API server estimates a rule's worst-case cost
// from those bounds and refuses a CRD whose rules could exceed its budget.
//
// Like package api, it imports nothing of nodemesh but api; of the rest only
// k8s.io/apimachinery.
//
// +kubebuilder:object:generate=true
// +groupName=nodemesh.io
package v1alpha1
