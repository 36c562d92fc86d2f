//go:build linux

package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// Routing modes: how pods reach the pods of other nodes
// (docs/design/datapath.md, "Cross-node traffic").
const (
	// RoutingNative routes each other node's pod CIDR via that node's
	// address: the nodes must share a link (or the underlay must route pod
	// CIDRs), as Cilium's native routing with auto-direct-node-routes.
	RoutingNative = "native"
	// RoutingVXLAN encapsulates pod traffic between nodes in VXLAN (a
	// kernel vxlan device, one FDB and neighbour entry per node): only the
	// nodes' addresses must be reachable.
	RoutingVXLAN = "vxlan"
	// RoutingNone installs no route: something else (the cloud's routes,
	// another CNI in chained setups) carries pod traffic between nodes.
	RoutingNone = "none"
)

// RoutingModes are the accepted --routing-mode values.
var RoutingModes = []string{RoutingNative, RoutingVXLAN, RoutingNone}

// peerNode is another node as the routes see it: its address and its
// IPv4 pod CIDR.
type peerNode struct {
	Name string
	IP   netip.Addr
	CIDR netip.Prefix
}

// peerNodes reads the other nodes' pod CIDR and InternalIP from Node
// objects. A Node is left out, with a reason in skipped, when it has no
// IPv4 InternalIP or IPv4 pod CIDR, or when its pod CIDR could take
// traffic that is not its pods': one that overlaps this node's pod CIDR or
// another node's (both are left out: which one is right is not known) or
// contains a node's address (a Node claiming 0.0.0.0/1 would otherwise
// get half of every destination, the underlay included), and when its
// address is inside a pod CIDR (the next hop would be a pod) or another
// Node's address too. Whoever can
// create a Node object (every kubelet can create its own) must not be able
// to draw other nodes' traffic to itself by what it writes there.
func peerNodes(nodes []*corev1.Node, self string, selfCIDR netip.Prefix) (peers []peerNode, skipped map[string]string) {
	skipped = map[string]string{}
	var cands []peerNode
	var nodeIPs []netip.Addr
	for _, n := range nodes {
		ip, ok := internalIPv4(n)
		if ok {
			nodeIPs = append(nodeIPs, ip)
		}
		if n.Name == self {
			continue
		}
		cidr, ok2 := podCIDRv4(n)
		switch {
		case !ok:
			skipped[n.Name] = "no IPv4 InternalIP address"
		case !ok2:
			skipped[n.Name] = "no IPv4 pod CIDR (spec.podCIDRs)"
		case selfCIDR.IsValid() && cidr.Overlaps(selfCIDR):
			skipped[n.Name] = fmt.Sprintf("pod CIDR %s overlaps this node's %s", cidr, selfCIDR)
		case selfCIDR.IsValid() && selfCIDR.Contains(ip):
			// A next hop inside this node's pod CIDR is one of its pods:
			// the other node's pods' traffic would go to it.
			skipped[n.Name] = fmt.Sprintf("address %s is in this node's pod CIDR %s", ip, selfCIDR)
		default:
			cands = append(cands, peerNode{Name: n.Name, IP: ip, CIDR: cidr})
		}
	}
	bad := map[string]bool{}
	for i, p := range cands {
		for _, q := range cands[i+1:] {
			if p.CIDR.Overlaps(q.CIDR) {
				bad[p.Name], bad[q.Name] = true, true
				skipped[p.Name] = fmt.Sprintf("pod CIDR %s overlaps node %s's %s", p.CIDR, q.Name, q.CIDR)
				skipped[q.Name] = fmt.Sprintf("pod CIDR %s overlaps node %s's %s", q.CIDR, p.Name, p.CIDR)
			}
		}
		for _, ip := range nodeIPs {
			if p.CIDR.Contains(ip) {
				bad[p.Name] = true
				skipped[p.Name] = fmt.Sprintf("pod CIDR %s contains node address %s", p.CIDR, ip)
			}
		}
		for _, q := range cands {
			if q.Name == p.Name {
				continue
			}
			if q.CIDR.Contains(p.IP) {
				bad[p.Name] = true
				skipped[p.Name] = fmt.Sprintf("address %s is in node %s's pod CIDR %s", p.IP, q.Name, q.CIDR)
			}
			if q.IP == p.IP {
				// Which of the two has the address is not known.
				bad[p.Name] = true
				skipped[p.Name] = fmt.Sprintf("address %s is node %s's too", p.IP, q.Name)
			}
		}
	}
	for _, p := range cands {
		if !bad[p.Name] {
			peers = append(peers, p)
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	return peers, skipped
}

// internalIPv4 is a Node's first IPv4 InternalIP that can be a next hop.
func internalIPv4(n *corev1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && ip.Is4() && ip.IsGlobalUnicast() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// podCIDRv4 is a Node's IPv4 pod CIDR (Kubernetes gives at most one per
// family), masked.
func podCIDRv4(n *corev1.Node) (netip.Prefix, bool) {
	for _, c := range append(slices.Clone(n.Spec.PodCIDRs), n.Spec.PodCIDR) {
		p, err := netip.ParsePrefix(c)
		if err == nil && p.Addr().Is4() {
			return p.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// vxlanGateway is the address a node's vxlan device carries and other
// nodes route its pod CIDR through: the CIDR's network address, which the
// IPAM never hands out (as flannel does).
func vxlanGateway(cidr netip.Prefix) netip.Addr { return cidr.Masked().Addr() }

// vxlanMAC is the MAC address of a node's vxlan device, derived from its
// pod CIDR so that every node knows every other's without publishing it
// (no write access to Node objects): locally administered, unicast.
func vxlanMAC(cidr netip.Prefix) net.HardwareAddr {
	a := cidr.Masked().Addr().As4()
	return net.HardwareAddr{0x0e, 0x6e, a[0], a[1], a[2], a[3]}
}

// VXLANOverhead is what encapsulation adds to a packet: outer IPv4 (20),
// UDP (8), VXLAN (8) and inner Ethernet (14) headers.
const VXLANOverhead = 50

// podMTU is the MTU of pods' interfaces: the uplink's, less the
// encapsulation in VXLAN mode.
func podMTU(mode string, uplinkMTU int) int {
	if mode == RoutingVXLAN {
		return uplinkMTU - VXLANOverhead
	}
	return uplinkMTU
}
