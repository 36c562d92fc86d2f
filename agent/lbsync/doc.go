// Package lbsync brings the socket load balancing maps (nm_lb_services,
// nm_lb_backends; bpf/c/socklb.h) from what they hold to what the cluster's
// Services and EndpointSlices say, as a pure plan of ordered writes applied
// through a narrow interface (Maps) that *bpf.Redirect implements and tests
// fake — the way agent/mapsync does it for the policy maps.
//
// Two parts:
//
//   - Frontends (cluster.go) turns Services and EndpointSlices into the
//     wanted content: each frontend (ClusterIP:port/proto, and the node's
//     addresses:nodePort) with its backends — the ready endpoints, or the
//     serving-but-terminating ones when none is ready, as kube-proxy
//     chooses — bounded by the maps' sizes (Fit).
//   - NewPlan (plan.go) orders the writes so that the programs, which read
//     the maps while they change, never follow a slot to a backend that is
//     not written yet: new backends first, then each frontend's slots, then
//     its master entry (the slot count), then the slots beyond a shrunk
//     count, then gone frontends (master first), and backends no slot names
//     any more last.
//
// The package imports bpf for the map types only, and the Kubernetes API
// types; it never touches a map except in Apply.
package lbsync
