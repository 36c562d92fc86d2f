// Package agent is the nodemesh node agent: it serves the CNI plugin (veth,
// addresses and routes of each pod, with agent-owned IPAM), keeps the eBPF
// maps in line with the cluster (identities, NetworkPolicies, Services and
// namespace opt-in), and exports metrics and health.
//
// Subpackages: cni (the plugin and its wire protocol), ipam (pod address
// leases), identity (cluster-wide identities through the API), policy
// (NetworkPolicy and TrafficPolicy → the policy model → map entries, plain
// data) and mapsync (the policy maps' sync as a pure, ordered plan of
// writes).
//
// Everything the datapath needs lives in pinned maps and links under
// <bpffs>/nodemesh (see docs/design/datapath.md), and everything the agent
// needs to find it again lives in its state directory, so a restart or a
// crash of the agent loses no connection and leaves policy enforced; on
// start the agent reconciles the pinned state with the API instead of
// flushing it (docs/design/agent.md). Only the deletion of the agent's own
// DaemonSet — an uninstall — makes a stopping agent remove nodemesh from
// its node (uninstall.go).
//
// The agent imports bpf, api (the shared names and CRD types), translate/ir
// (the policy model) and client-go; it must not import xds, the rest of the
// translator, install, migration, Helm or go-control-plane
// (internal/archtest enforces it).
package agent
