//go:build linux

package agent

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// IPv6 is not policed: the policy programs have no IPv6 identities,
// policy entries or conntrack, and nodemesh's IPAM hands out IPv4 only. So
// IPv6 must not flow at all on pods' veths. The programs drop it both ways
// (reason ipv6-unpoliced); the agent also turns IPv6 off on both ends of
// every veth it creates, before either end goes up, so that no link-local
// address is ever configured there: nothing on the node answers a pod
// over IPv6, nor a pod the node, whatever becomes of the programs (a
// cleanup, a kernel without tcx and cls_bpf filters deleted by hand). No
// ARP-like protocol is needed either: without IPv6 there is no neighbour
// discovery, and IPv4 needs only ARP, which passes.
//
// A dual-stack cluster (a node with an IPv6 pod CIDR) gets no IPv6 for its
// pods from nodemesh yet: the agent warns and does the same. Policing IPv6
// (an IPv6 ipcache and conntrack, IPAM of the node's IPv6 pod CIDR) is what
// it would take to leave IPv6 on.

// disableIPv6 turns IPv6 off on ifName in the calling thread's network
// namespace. A kernel without IPv6 has nothing to turn off.
func (d netSysctls) disableIPv6(ifName string) error {
	if _, err := os.Stat(filepath.Join(string(d), "ipv6")); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return d.write(filepath.Join("ipv6", "conf", ifName, "disable_ipv6"), "1")
}

// podIPv6Off turns IPv6 off on both ends of a pod's veth that already
// exists (an agent taking over pods of an earlier one).
func (a *Agent) podIPv6Off(hostIfName, podNetns, podIfName string) error {
	return errors.Join(
		inNetns(a.cfg.NodeNetns, func() error { return a.sysctls.disableIPv6(hostIfName) }),
		inNetns(podNetns, func() error { return a.sysctls.disableIPv6(podIfName) }),
	)
}
