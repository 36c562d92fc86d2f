//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/bpf"
)

// The node-proxy return path (docs/design/datapath.md, "The node proxy
// hop"): the node Envoy connects to a pod with the client pod's address as
// source (original_src), so the destination's policy sees the client's
// identity; the programs hand the replies to Envoy's socket and mark them,
// and this policy routing rule delivers marked packets locally.
const (
	// ProxyReturnMark is the mark (and mask) of such replies. It avoids the
	// bits kube-proxy (0x4000, 0x8000), Istio (0xfff) and Cilium (0xf00,
	// 0xffff0000 with identities) use.
	ProxyReturnMark uint32 = 0x0400_0000
	// ProxyReturnTable is the routing table with the local default route.
	ProxyReturnTable = 15001
	// proxyReturnPriority puts the rule before the main table's (32766).
	proxyReturnPriority = 100
)

func proxyReturnRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Mark = ProxyReturnMark
	m := ProxyReturnMark
	r.Mask = &m
	r.Table = ProxyReturnTable
	r.Priority = proxyReturnPriority
	return r
}

func proxyReturnRoute(lo int) *netlink.Route {
	return &netlink.Route{Table: ProxyReturnTable, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, LinkIndex: lo,
		Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
}

// setupProxyReturn configures the return path in the node's network
// namespace: the programs' configuration, the routing rule and table, and
// from_uplink on the uplinks (pinned, replacing the program of a pin an
// earlier agent left). With DisableProxyReturn it takes all of it away.
func (a *Agent) setupProxyReturn() error {
	// Inbound capture (docs/design/datapath.md, "Inbound capture") hands
	// packets to the node Envoy's inbound listener; its upstream
	// connections need the return path. Unset, captured packets are dropped
	// (the agent then writes no capture entries).
	inbound := bpf.InboundProxy{}
	if !a.cfg.DisableInboundCapture { // (set whenever DisableProxyReturn is: Config.defaults)
		inbound = bpf.InboundProxy{Port: bpf.ProxyInboundPort, Mark: ProxyReturnMark, SocketMark: bpf.ProxyInboundSocketMark}
	}
	if err := a.pol.SetInboundProxy(inbound); err != nil {
		return fmt.Errorf("inbound capture: %w", err)
	}
	if inbound.Port == 0 {
		// Off: an earlier agent's captures would now be dropped — take
		// them away once; from then on the map is left alone.
		have, err := a.pol.InboundCaptures()
		if err != nil {
			return fmt.Errorf("inbound capture: %w", err)
		}
		for _, ap := range have {
			if err := a.pol.DeleteInboundCapture(ap.Addr(), ap.Port()); err != nil {
				return fmt.Errorf("inbound capture: %w", err)
			}
		}
	}
	if a.cfg.DisableProxyReturn {
		if err := a.pol.SetProxyReturn(netip.Prefix{}, 0); err != nil {
			return err
		}
		return errors.Join(a.removeUplinkPins(nil), inNetns(a.cfg.NodeNetns, func() error { return removeProxyReturnRouting(a.sysctls) }))
	}
	if err := a.pol.SetProxyReturn(a.cfg.PodCIDR, ProxyReturnMark); err != nil {
		return err
	}
	return inNetns(a.cfg.NodeNetns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("lo: %w", err)
		}
		if err := netlink.RouteReplace(proxyReturnRoute(lo.Attrs().Index)); err != nil {
			return fmt.Errorf("local route of table %d: %w", ProxyReturnTable, err)
		}
		if err := netlink.RuleAdd(proxyReturnRule()); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("routing rule for mark %#x: %w", ProxyReturnMark, err)
		}
		// A reply of a server on the node sent back in through lo (to_pod,
		// proxy_local_return) has a local source address: IP takes it for
		// a martian unless lo accepts local sources. Nothing else arrives
		// on lo without a route already attached.
		if err := a.sysctls.write("ipv4/conf/lo/accept_local", "1"); err != nil {
			return err
		}
		uplinks := a.uplinks
		if a.cfg.RoutingMode == RoutingVXLAN {
			// Replies from other nodes come out of the vxlan device,
			// decapsulated.
			uplinks = append(slices.Clone(uplinks), VXLANDevice)
		}
		want := map[string]bool{}
		for _, name := range uplinks {
			want[uplinkPin(name)] = true
		}
		if err := a.removeUplinkPins(want); err != nil {
			return err
		}
		for _, name := range uplinks {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return fmt.Errorf("uplink %s: %w", name, err)
			}
			pin := filepath.Join(a.pinLinks, uplinkPin(name))
			att, err := a.pol.AttachUplink(l.Attrs().Index, bpf.AttachOptions{PinPath: pin})
			if err != nil {
				// The pin may hold the link of an interface of that name
				// that was deleted since (a vxlan device re-created with
				// another VNI, a NIC re-plugged): the kernel severed it,
				// and it cannot be updated. Attach afresh.
				if rerr := os.Remove(pin); rerr == nil {
					a.log.Info("uplink's pinned link was stale; attaching afresh", "uplink", name, "error", err)
					att, err = a.pol.AttachUplink(l.Attrs().Index, bpf.AttachOptions{PinPath: pin})
				}
			}
			if err != nil {
				return fmt.Errorf("uplink %s: %w", name, err)
			}
			att.Close() // the pin keeps it
			a.log.Info("proxy return path on uplink", "uplink", name, "mode", att.Mode())
		}
		if len(a.uplinks) == 0 {
			a.log.Warn("no uplink found (no default route, no --uplink): replies from other nodes to the node proxy's connections will not reach it")
		}
		return nil
	})
}

// uplinkPin is the pin name of an uplink's program. bpffs refuses names
// with a dot (VLAN interfaces have one: eth0.100); ':' is never in an
// interface name, so the mapping stays one to one.
func uplinkPin(name string) string { return "uplink_" + strings.ReplaceAll(name, ".", ":") }

// removeUplinkPins unpins (and so detaches) the uplink programs of
// interfaces that are not uplinks any more, keeping the pins in keep.
func (a *Agent) removeUplinkPins(keep map[string]bool) error {
	pins, err := filepath.Glob(filepath.Join(a.pinLinks, uplinkPin("*")))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pins {
		if keep[filepath.Base(p)] {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove uplink pin %s: %w", p, err))
			continue
		}
		a.log.Info("proxy return path off an interface that is no uplink any more", "pin", filepath.Base(p))
	}
	return errors.Join(errs...)
}

// resolveUplinks is configured, or else the interfaces of the default
// routes of the calling thread's network namespace.
func resolveUplinks(configured []string) ([]string, error) {
	if len(configured) > 0 {
		return configured, nil
	}
	return defaultRouteLinks()
}

// defaultRouteLinks are the interfaces of the IPv4 default routes of the
// calling thread's network namespace.
func defaultRouteLinks() ([]string, error) {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil || seen[l.Attrs().Name] {
			continue
		}
		seen[l.Attrs().Name] = true
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

// removeProxyReturnRouting deletes the rule and the table's route and sets
// lo's accept_local back to the kernel's default, in the calling thread's
// network namespace; missing ones are fine.
func removeProxyReturnRouting(sysctls netSysctls) error {
	var errs []error
	if err := sysctls.write("ipv4/conf/lo/accept_local", "0"); err != nil {
		errs = append(errs, err)
	}
	if err := netlink.RuleDel(proxyReturnRule()); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("delete the routing rule for mark %#x: %w", ProxyReturnMark, err))
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.RouteDel(proxyReturnRoute(lo.Attrs().Index)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete the local route of table %d: %w", ProxyReturnTable, err))
		}
	}
	return errors.Join(errs...)
}
