//go:build linux

package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// HostVethName is the name of a pod's host-side veth: "nm" and twelve hex
// digits of a hash of the container ID and interface name (interface names
// are at most 15 characters; container IDs are longer).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "nm" + hex.EncodeToString(sum[:])[:12]
}

// podLink is what a pod's veth looks like once set up.
type podLink struct {
	hostName  string
	hostIndex int
	hostMAC   net.HardwareAddr
	podMAC    net.HardwareAddr
	podIfName string
	podAddr   netip.Addr
	gateway   netip.Addr
	netnsPath string
	mtu       int
	// ipv6Off disables IPv6 on one end of the pair, in the calling
	// thread's namespace: the host end before it goes up, the pod end
	// before it goes up (see ipv6.go).
	ipv6Off     func(ifName string) error
	nodeNetns   string
	alreadyHere bool // the veth existed (a repeated ADD)
}

func prefix32(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

// createVeth creates the pod's veth pair (host side down, in the node's
// namespace; pod side named ifName, in the pod's) and configures the pod
// side: its address as a /32, a link-scope route to the gateway and the
// default route through it (a routed design, no bridge). The host side is
// configured and brought up by upHost, after the policy programs are
// attached, so no packet passes before policy applies.
func createVeth(node *netlink.Handle, pl *podLink) error {
	if existing, err := node.LinkByName(pl.hostName); err == nil {
		// A repeated ADD: keep the pair if its peer is the pod's interface.
		if ok, _ := peerPresent(pl); ok {
			pl.hostIndex = existing.Attrs().Index
			pl.hostMAC = existing.Attrs().HardwareAddr
			pl.alreadyHere = true
			return configurePodSide(pl)
		}
		if err := node.LinkDel(existing); err != nil {
			return fmt.Errorf("delete stale veth %s: %w", pl.hostName, err)
		}
	}
	podNS, err := netns.GetFromPath(pl.netnsPath)
	if err != nil {
		return fmt.Errorf("open pod netns %s: %w", pl.netnsPath, err)
	}
	defer podNS.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: pl.hostName, MTU: pl.mtu},
		PeerName:      pl.podIfName,
		PeerNamespace: netlink.NsFd(int(podNS)),
		PeerMTU:       uint32(pl.mtu),
	}
	if err := node.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s: interface %s already exists in the pod's netns: %w", pl.hostName, pl.podIfName, err)
		}
		return fmt.Errorf("create veth %s: %w", pl.hostName, err)
	}
	host, err := node.LinkByName(pl.hostName)
	if err != nil {
		return fmt.Errorf("find new veth %s: %w", pl.hostName, err)
	}
	pl.hostIndex = host.Attrs().Index
	pl.hostMAC = host.Attrs().HardwareAddr
	if err := inNetns(pl.nodeNetns, func() error { return pl.ipv6Off(pl.hostName) }); err != nil {
		_ = node.LinkDel(host)
		return fmt.Errorf("host end %s: %w", pl.hostName, err)
	}
	if err := configurePodSide(pl); err != nil {
		_ = node.LinkDel(host)
		return err
	}
	return nil
}

func peerPresent(pl *podLink) (bool, error) {
	h, err := netlinkAt(pl.netnsPath)
	if err != nil {
		return false, err
	}
	defer h.Delete()
	l, err := h.LinkByName(pl.podIfName)
	if err != nil {
		return false, nil
	}
	_, isVeth := l.(*netlink.Veth)
	return isVeth, nil
}

func configurePodSide(pl *podLink) error {
	h, err := netlinkAt(pl.netnsPath)
	if err != nil {
		return err
	}
	defer h.Delete()
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up in pod: %w", err)
		}
	}
	l, err := h.LinkByName(pl.podIfName)
	if err != nil {
		return fmt.Errorf("find %s in pod: %w", pl.podIfName, err)
	}
	pl.podMAC = l.Attrs().HardwareAddr
	if err := inNetns(pl.netnsPath, func() error { return pl.ipv6Off(pl.podIfName) }); err != nil {
		return fmt.Errorf("pod end %s: %w", pl.podIfName, err)
	}
	if err := h.AddrReplace(l, &netlink.Addr{IPNet: prefix32(pl.podAddr)}); err != nil {
		return fmt.Errorf("add %s to %s in pod: %w", pl.podAddr, pl.podIfName, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in pod: %w", pl.podIfName, err)
	}
	routes := []*netlink.Route{
		{LinkIndex: l.Attrs().Index, Dst: prefix32(pl.gateway), Scope: netlink.SCOPE_LINK},
		{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Gw: pl.gateway.AsSlice(), Src: pl.podAddr.AsSlice()},
	}
	for _, r := range routes {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s in pod: %w", r, err)
		}
	}
	return nil
}

// upHost gives the host side the gateway address (the same /32 on every
// pod's veth, so pods resolve the gateway on their link), brings it up and
// routes the pod's address to it.
func upHost(node *netlink.Handle, pl *podLink) error {
	l, err := node.LinkByIndex(pl.hostIndex)
	if err != nil {
		return fmt.Errorf("find host veth %s: %w", pl.hostName, err)
	}
	if err := node.AddrReplace(l, &netlink.Addr{IPNet: prefix32(pl.gateway)}); err != nil {
		return fmt.Errorf("add gateway address to %s: %w", pl.hostName, err)
	}
	if err := node.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", pl.hostName, err)
	}
	r := &netlink.Route{LinkIndex: pl.hostIndex, Dst: prefix32(pl.podAddr), Scope: netlink.SCOPE_LINK, Src: pl.gateway.AsSlice()}
	if err := node.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s to %s: %w", pl.podAddr, pl.hostName, err)
	}
	return nil
}

// deleteVeth removes the host side (the kernel removes the pod side, its
// addresses and routes, and detaches tcx programs). A veth that is not there
// is not an error.
func deleteVeth(node *netlink.Handle, name string) error {
	l, err := node.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if err := node.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// checkVeth verifies what createVeth and upHost set up.
func checkVeth(node *netlink.Handle, pl *podLink) error {
	l, err := node.LinkByName(pl.hostName)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", pl.hostName, err)
	}
	if l.Attrs().Index != pl.hostIndex {
		return fmt.Errorf("host veth %s has ifindex %d, the agent attached ifindex %d", pl.hostName, l.Attrs().Index, pl.hostIndex)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", pl.hostName)
	}
	h, err := netlinkAt(pl.netnsPath)
	if err != nil {
		return err
	}
	defer h.Delete()
	pod, err := h.LinkByName(pl.podIfName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", pl.podIfName, err)
	}
	addrs, err := h.AddrList(pod, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", pl.podIfName, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip == pl.podAddr {
			return nil
		}
	}
	return fmt.Errorf("pod interface %s lacks address %s", pl.podIfName, pl.podAddr)
}

func netipPrefix32(r *endpointRecord) netip.Prefix { return netip.PrefixFrom(r.IP, 32) }
