// Package migration moves a namespace from Istio sidecars to nodemesh's node
// Envoy, and back: analyze (what will work, change or break, per resource and
// field), plan (the exact steps), apply (record, relabel, restart, verify,
// roll back on failure) and rollback.
//
// Analysis reads an Inventory, filled from manifest files or from a cluster
// through the translator's decoder (translate/input: its kinds table, strict
// decoding and diagnostics; migration has none of its own), and takes its verdicts on
// VirtualServices, DestinationRules and Services from the translator's own
// diagnostics: the analyzer never re-implements a translation rule. What the
// translator does not read (AuthorizationPolicy, PeerAuthentication,
// EnvoyFilter, Sidecar, workloads, …) gets migration-specific findings here.
//
// Apply and rollback talk to the Kubernetes API through client-go; what they
// cannot observe without a kubelet or a node Envoy (rollout readiness, the
// controller's routes, a connectivity probe) is behind small interfaces so
// that tests against a real API server can drive it.
//
// This package may import translate, api and internal leaves; it must not
// import cmd, xds, agent, install, Helm or go-control-plane (internal/archtest
// enforces it).
package migration
