package api

// AgentCapabilities are the Linux capabilities the agent needs, named as a
// container's securityContext names them (without CAP_). The chart grants
// exactly these and drops every other (install's TestAgentCapabilities),
// and the end-to-end tests run the agent binary with exactly these in its
// bounding set and no_new_privs (agent/e2e), so a missing one fails them.
//
//   - NET_ADMIN: netlink (veths, addresses, routes, the proxy return
//     path's rule and table, cls_bpf filters), the network sysctls, and
//     loading and attaching networking BPF programs (tc, cgroup sock_addr,
//     sockops, sockopt: the kernel wants CAP_NET_ADMIN besides CAP_BPF).
//   - SYS_ADMIN: setns(2) into pods' network namespaces (their side of
//     the veth, addresses, routes, IPv6 off; their netns cookie), which
//     nothing else allows. It also makes bpf_capable() and
//     perfmon_capable() true, so CAP_BPF and CAP_PERFMON add nothing; the
//     policy programs need perfmon_capable() (the verifier refuses their
//     pointer arithmetic "for !root" without it: measured). Without
//     SYS_ADMIN (pod-side setup moved into the CNI plugin, which the
//     runtime runs as root) the set would be BPF, NET_ADMIN, PERFMON.
//
// Not needed (the end-to-end suite passes without them): SYS_RESOURCE (BPF
// memory is charged to the memory cgroup since Linux 5.11, no
// RLIMIT_MEMLOCK), NET_RAW (no packet sockets), DAC_OVERRIDE, CHOWN,
// FOWNER (the agent runs as root and owns what it writes). SYS_PTRACE
// would be needed only for a runtime that passes CNI_NETNS as
// /proc/<pid>/ns/net of another process; containerd and CRI-O pass bind
// mounts under /var/run/netns.
var AgentCapabilities = []string{"NET_ADMIN", "SYS_ADMIN"}
