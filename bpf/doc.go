// Package bpf holds nodemesh's eBPF programs and the typed wrappers the node
// agent uses to load them, attach them and fill their maps.
//
// Two object files are built from the C sources under c/ by bpf2go, and the
// generated *_bpfel.go / *_bpfel.o files are committed so that building and
// testing never needs clang (see gen.go):
//
//   - policy (c/policy.c): identity-based L3/L4 policy with anti-spoofing and
//     conntrack, attached with tcx (or cls_bpf) to each pod's host-side veth.
//     Wrapped by [Policy].
//   - redirect (c/redirect.c): cgroup/connect4, sockops, cgroup/getsockopt and
//     cgroup/getpeername4 programs that send opted-in pods' connections to
//     Service addresses to the node proxy, and answer SO_ORIGINAL_DST for it.
//     Wrapped by [Redirect].
//
// Maps, keys, reserved identities, the verdict order and the pinning layout are
// described in docs/design/datapath.md.
//
// The package is Linux-only, needs CAP_BPF/CAP_NET_ADMIN (in practice root) to
// load anything, never logs (errors are returned, wrapped) and imports nothing
// of Kubernetes, Helm, go-control-plane or the translator — of nodemesh only
// api, for the ports, UID and mark it shares (internal/archtest enforces it):
// the agent translates Kubernetes objects into the plain values this package
// takes.
package bpf
