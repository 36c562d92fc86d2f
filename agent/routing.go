//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Cross-node routing (docs/design/datapath.md, "Cross-node traffic"): the
// agent routes every other node's pod CIDR, learnt from Node objects, via
// that node's address (native) or through a vxlan device (vxlan).
const (
	// RouteProtocol marks the routes the agent installs (rtm_protocol), so
	// that it lists and removes its own routes only. 201 is unassigned in
	// iproute2's rt_protos and used by no CNI we know of.
	RouteProtocol netlink.RouteProtocol = 201
	// VXLANDevice is the name of the agent's vxlan device.
	VXLANDevice = "nodemesh-vxlan"
	// DefaultVXLANPort is the Linux kernel's VXLAN port, which Cilium and
	// flannel use too (IANA's is 4789).
	DefaultVXLANPort = 8472
	// DefaultVXLANVNI is the VXLAN network identifier of the pod network.
	DefaultVXLANVNI = 2
)

// routeSet is what the agent wants in the node's routing state for its
// peers: routes by destination, and in VXLAN mode the neighbour (gateway →
// MAC) and FDB (MAC → node address) entries.
type routeSet struct {
	routes map[netip.Prefix]netip.Addr // pod CIDR → next hop
	neigh  map[netip.Addr]string       // vxlan gateway → MAC
	fdb    map[string]netip.Addr       // MAC → node address
}

// wantRoutes is which routes, neighbours and FDB entries the peers need in
// mode.
func wantRoutes(mode string, peers []peerNode) routeSet {
	rs := routeSet{routes: map[netip.Prefix]netip.Addr{}, neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{}}
	for _, p := range peers {
		switch mode {
		case RoutingNative:
			rs.routes[p.CIDR] = p.IP
		case RoutingVXLAN:
			gw, mac := vxlanGateway(p.CIDR), vxlanMAC(p.CIDR).String()
			rs.routes[p.CIDR] = gw
			rs.neigh[gw] = mac
			rs.fdb[mac] = p.IP
		}
	}
	return rs
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// ownRoutes lists the agent's routes (by protocol) in the main table.
func ownRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	rs, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list the agent's routes: %w", err)
	}
	return rs, nil
}

// othersRoutes are the main table's IPv4 routes that are not the agent's,
// by destination, with their protocol.
func othersRoutes(h *netlink.Handle) (map[netip.Prefix]netlink.RouteProtocol, error) {
	rs, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := map[netip.Prefix]netlink.RouteProtocol{}
	for _, r := range rs {
		if r.Protocol == RouteProtocol || r.Type != unix.RTN_UNICAST {
			continue
		}
		if dst, ok := prefixOf(r.Dst); ok {
			out[dst] = r.Protocol
		}
	}
	return out, nil
}

// applyRoutes makes the node's routes, neighbours and FDB entries those of
// want, removing the agent's own that are not wanted. vxlan is the vxlan
// device's index (0: none). It carries on past errors and returns them
// all, by destination, so that one bad Node does not keep the others'
// routes out.
func applyRoutes(h *netlink.Handle, want routeSet, vxlan int) error {
	var errs []error
	have, err := ownRoutes(h)
	if err != nil {
		return err
	}
	for _, r := range have {
		dst, ok := prefixOf(r.Dst)
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		if ok {
			if via, wanted := want.routes[dst]; wanted && via == gw && (vxlan == 0) == (r.LinkIndex != vxlan) {
				continue
			}
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
		}
	}
	others, err := othersRoutes(h)
	if err != nil {
		return err
	}
	for dst, via := range want.routes {
		if proto, taken := others[dst]; taken {
			// Another's route (a primary CNI's, the cloud's, an
			// administrator's): replacing it would take its traffic.
			errs = append(errs, fmt.Errorf("route %s: the node has a route to it already (protocol %s), which nodemesh does not replace", dst, proto))
			continue
		}
		r := &netlink.Route{Dst: ipNet(dst), Gw: via.AsSlice(), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
		if vxlan != 0 {
			r.LinkIndex, r.Flags = vxlan, int(netlink.FLAG_ONLINK)
		}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", dst, via, err))
		}
	}
	if vxlan == 0 {
		return errors.Join(errs...)
	}
	neighs, err := h.NeighList(vxlan, unix.AF_INET)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list neighbours of %s: %w", VXLANDevice, err))...)
	}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP.To4())
		if mac, ok := want.neigh[ip]; ok && mac == n.HardwareAddr.String() && n.State == netlink.NUD_PERMANENT {
			delete(want.neigh, ip)
			continue
		}
		if err := h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", n.IP, err))
		}
	}
	for ip, mac := range want.neigh {
		hw, _ := net.ParseMAC(mac)
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: vxlan, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: hw}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s at %s: %w", ip, mac, err))
		}
	}
	fdb, err := h.NeighList(vxlan, unix.AF_BRIDGE)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list the FDB of %s: %w", VXLANDevice, err))...)
	}
	wantFDB := maps.Clone(want.fdb)
	for _, n := range fdb {
		dst, _ := netip.AddrFromSlice(n.IP.To4())
		if ip, ok := wantFDB[n.HardwareAddr.String()]; ok && ip == dst {
			delete(wantFDB, n.HardwareAddr.String())
			continue
		}
		if err := h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete FDB entry %s: %w", n.HardwareAddr, err))
		}
	}
	for mac, ip := range wantFDB {
		hw, _ := net.ParseMAC(mac)
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: vxlan, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw}); err != nil {
			errs = append(errs, fmt.Errorf("FDB entry %s → %s: %w", mac, ip, err))
		}
	}
	return errors.Join(errs...)
}

// ensureVXLAN creates (or keeps, or re-creates when its VNI or port
// changed) the vxlan device: the MAC derived from this node's pod CIDR,
// the CIDR's network address as its address, no learning (entries come
// from Node objects only, never from what arrives), up.
func ensureVXLAN(h *netlink.Handle, podCIDR netip.Prefix, vni, port, mtu int) (int, error) {
	mac := vxlanMAC(podCIDR)
	if l, err := h.LinkByName(VXLANDevice); err == nil {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.VxlanId != vni || v.Port != port || v.Learning {
			if err := h.LinkDel(l); err != nil {
				return 0, fmt.Errorf("delete %s to re-create it: %w", VXLANDevice, err)
			}
		}
	}
	l, err := h.LinkByName(VXLANDevice)
	if err != nil {
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: mtu, HardwareAddr: mac},
			VxlanId: vni, Port: port, Learning: false}
		if err := h.LinkAdd(vx); err != nil {
			return 0, fmt.Errorf("create %s (VNI %d, port %d): %w", VXLANDevice, vni, port, err)
		}
		if l, err = h.LinkByName(VXLANDevice); err != nil {
			return 0, fmt.Errorf("find %s: %w", VXLANDevice, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return 0, fmt.Errorf("set the MAC of %s: %w", VXLANDevice, err)
		}
	}
	if l.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return 0, fmt.Errorf("set the MTU of %s to %d: %w", VXLANDevice, mtu, err)
		}
	}
	if err := h.AddrReplace(l, &netlink.Addr{IPNet: prefix32(vxlanGateway(podCIDR))}); err != nil {
		return 0, fmt.Errorf("address of %s: %w", VXLANDevice, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return 0, fmt.Errorf("set %s up: %w", VXLANDevice, err)
	}
	return l.Attrs().Index, nil
}

// removeRouting deletes the agent's routes and its vxlan device (with its
// neighbours and FDB); what is missing is fine.
func removeRouting(h *netlink.Handle) error {
	var errs []error
	if l, err := h.LinkByName(VXLANDevice); err == nil {
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", VXLANDevice, err))
		}
	}
	rs, err := ownRoutes(h)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range rs {
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// uplinkMTU is the smallest MTU of the uplinks (1500 without any).
func uplinkMTU(h *netlink.Handle, uplinks []string) (int, error) {
	mtu := 0
	for _, name := range uplinks {
		l, err := h.LinkByName(name)
		if err != nil {
			return 0, fmt.Errorf("uplink %s: %w", name, err)
		}
		if m := l.Attrs().MTU; mtu == 0 || m < mtu {
			mtu = m
		}
	}
	if mtu == 0 {
		mtu = 1500
	}
	return mtu, nil
}

// setupRouting prepares the mode's device at start: in VXLAN mode the
// vxlan device; otherwise a vxlan device and routes an agent of another
// mode left are removed.
func (a *Agent) setupRouting() error {
	if a.cfg.RoutingMode != RoutingVXLAN {
		if a.cfg.RoutingMode == RoutingNone {
			return removeRouting(a.node)
		}
		if l, err := a.node.LinkByName(VXLANDevice); err == nil {
			return a.node.LinkDel(l)
		}
		return nil
	}
	idx, err := ensureVXLAN(a.node, a.cfg.PodCIDR, a.cfg.VXLANVNI, a.cfg.VXLANPort, a.cfg.MTU)
	if err != nil {
		return err
	}
	a.vxlanIndex = idx
	return nil
}

// syncRoutes makes the routes to the other nodes' pod CIDRs match the Node
// objects. Errors are logged, not returned: a Node whose address cannot be
// a next hop must keep neither the agent from being ready nor the other
// nodes' routes out; the next sync tries again.
func (a *Agent) syncRoutes() {
	if a.cfg.RoutingMode == RoutingNone || a.informers.nodes == nil {
		return
	}
	nodes, err := a.informers.nodes.List(everything())
	if err != nil {
		a.log.Warn("list nodes", "error", err)
		return
	}
	peers, skipped := peerNodes(nodes, a.cfg.NodeName, a.cfg.PodCIDR)
	if !maps.Equal(skipped, a.lastSkipped) {
		for name, why := range skipped {
			if a.lastSkipped[name] != why {
				a.log.Warn("no route to a node's pods", "node", name, "reason", why)
			}
		}
		a.lastSkipped = skipped
	}
	err = applyRoutes(a.node, wantRoutes(a.cfg.RoutingMode, peers), a.vxlanIndex)
	a.metrics.peerNodes.WithLabelValues("routed").Set(float64(len(peers)))
	a.metrics.peerNodes.WithLabelValues("skipped").Set(float64(len(skipped)))
	if err != nil {
		a.metrics.routeErrors.Inc()
		if err.Error() != a.lastRouteErr {
			a.log.Warn("routes to other nodes' pods; retrying every 10s", "error", err)
		}
		a.lastRouteErr = err.Error()
		time.AfterFunc(10*time.Second, a.Trigger)
	} else {
		a.lastRouteErr = ""
	}
}

// watchUplinks asks for a sync whenever an uplink changes: the kernel
// removes IPv4 routes through a link that goes down, without telling, and
// they must be put back once it is up again.
func (a *Agent) watchUplinks(ctx context.Context) error {
	if a.cfg.RoutingMode == RoutingNone {
		return nil
	}
	ns := netns.None()
	var err error
	if a.cfg.NodeNetns == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(a.cfg.NodeNetns)
	}
	if err != nil {
		return fmt.Errorf("node netns: %w", err)
	}
	defer ns.Close()
	watched := map[string]bool{VXLANDevice: true}
	for _, u := range a.uplinks {
		watched[u] = true
	}
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: &ns,
		ErrorCallback: func(err error) { a.log.Warn("link updates", "error", err) }}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-ch:
				if !ok {
					return
				}
				if u.Link != nil && watched[u.Link.Attrs().Name] {
					a.Trigger()
				}
			}
		}
	}()
	return nil
}
