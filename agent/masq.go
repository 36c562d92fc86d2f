//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/bpf"
)

// Masquerading (docs/design/datapath.md, "Masquerading"): this node's pods'
// IPv4 traffic leaving through an uplink to a destination outside the
// cluster gets the uplink's address as source, in eBPF on the uplinks
// (bpf/c/masq.c), and its replies get the pod's back.

// linkLocal is never masqueraded: it does not leave the link (cloud
// metadata servers at 169.254.169.254 answer on it, and must see the
// node's own address only when the node itself asks).
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// minNATPorts is the smallest NAT port range accepted: the number of
// concurrent flows from this node's pods to one remote address and port.
const minNATPorts = 1024

// planNATPorts picks the NAT port range. The host's own connections take
// their source ports from its ephemeral range (net.ipv4.ip_local_port_range,
// ephemeral): a NAT port inside it could be the one the host picks next
// for a connection to the same remote, and that connection's replies would
// be translated to a pod. So the NAT range lies outside it: configured
// ("min-max") if it does, else the ports above it. Ports below 1024 are
// never used (privileged services).
func planNATPorts(ephemeral bpf.PortRange, configured string) (bpf.PortRange, error) {
	if configured != "" {
		r, err := parsePortRange(configured)
		if err != nil {
			return bpf.PortRange{}, err
		}
		if r.Min < 1024 {
			return bpf.PortRange{}, fmt.Errorf("masquerading port range %s: starts below 1024", r)
		}
		if r.Size() < minNATPorts {
			return bpf.PortRange{}, fmt.Errorf("masquerading port range %s: %d ports, want at least %d", r, r.Size(), minNATPorts)
		}
		if r.Overlaps(ephemeral) {
			return bpf.PortRange{}, fmt.Errorf("masquerading port range %s overlaps the node's ephemeral port range %s (net.ipv4.ip_local_port_range): the node's own connections would collide with pods'", r, ephemeral)
		}
		return r, nil
	}
	if ephemeral.Size() == 0 {
		return bpf.PortRange{}, fmt.Errorf("the node's ephemeral port range %s is invalid", ephemeral)
	}
	if 65535-int(ephemeral.Max) < minNATPorts {
		return bpf.PortRange{}, fmt.Errorf("the node's ephemeral port range %s (net.ipv4.ip_local_port_range) leaves fewer than %d ports above it for masquerading: set --masquerade-port-range outside it, or narrow it", ephemeral, minNATPorts)
	}
	return bpf.PortRange{Min: ephemeral.Max + 1, Max: 65535}, nil
}

// parsePortRange parses "min-max" (or "min max", as the sysctl shows it).
func parsePortRange(s string) (bpf.PortRange, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == '-' || r == ' ' || r == '\t' || r == '\n' })
	if len(f) != 2 {
		return bpf.PortRange{}, fmt.Errorf("port range %q: want min-max", s)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return bpf.PortRange{}, fmt.Errorf("port range %q: %w", s, err)
	}
	if lo == 0 || hi < lo {
		return bpf.PortRange{}, fmt.Errorf("port range %q: want 1 <= min <= max <= 65535", s)
	}
	return bpf.PortRange{Min: uint16(lo), Max: uint16(hi)}, nil
}

// masqExclusions are the destinations never masqueraded: this node's pod
// CIDR and the pod CIDRs of the peers the routes go to (as peerNodes
// validates them), every Node's IPv4 InternalIP, this node's configured
// addresses, link-local, and the user's list. The result is sorted and
// free of duplicates.
func masqExclusions(nodes []*corev1.Node, self string, selfCIDR netip.Prefix, nodeIPs []netip.Addr, user []netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{linkLocal}
	if selfCIDR.IsValid() {
		out = append(out, selfCIDR.Masked())
	}
	peers, _ := peerNodes(nodes, self, selfCIDR)
	for _, p := range peers {
		out = append(out, p.CIDR)
	}
	for _, n := range nodes {
		if ip, ok := internalIPv4(n); ok {
			out = append(out, netip.PrefixFrom(ip, 32))
		}
	}
	for _, ip := range nodeIPs {
		if ip.Is4() {
			out = append(out, netip.PrefixFrom(ip, 32))
		}
	}
	for _, p := range user {
		if p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// masqPins are the pin names of an uplink's masquerading links.
func masqPins(uplink string) (out, in string) {
	n := strings.ReplaceAll(uplink, ".", ":")
	return "masq_out_" + n, "masq_in_" + n
}

// setupMasquerade loads the masquerading programs and attaches them to the
// uplinks (not the vxlan device: what goes through it is pod-to-pod), or,
// disabled, turns them off and unpins their links.
func (a *Agent) setupMasquerade() error {
	if !a.cfg.Masquerade {
		if a.masq != nil {
			if err := a.masq.SetConfig(netip.Prefix{}, bpf.PortRange{}); err != nil {
				return err
			}
		}
		return a.removeMasqPins(nil)
	}
	var ephemeral string
	if err := inNetns(a.cfg.NodeNetns, func() error {
		b, err := os.ReadFile(filepath.Join(string(a.sysctls), "ipv4/ip_local_port_range"))
		ephemeral = string(b)
		return err
	}); err != nil {
		return fmt.Errorf("read the node's ephemeral port range: %w", err)
	}
	eph, err := parsePortRange(ephemeral)
	if err != nil {
		return fmt.Errorf("net.ipv4.ip_local_port_range: %w", err)
	}
	ports, err := planNATPorts(eph, a.cfg.MasqueradePortRange)
	if err != nil {
		return err
	}
	if err := a.masq.SetConfig(a.cfg.PodCIDR, ports); err != nil {
		return err
	}
	if err := a.syncMasqAddresses(); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, name := range a.uplinks {
		o, i := masqPins(name)
		want[o], want[i] = true, true
	}
	if err := a.removeMasqPins(want); err != nil {
		return err
	}
	return inNetns(a.cfg.NodeNetns, func() error {
		for _, name := range a.uplinks {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return fmt.Errorf("uplink %s: %w", name, err)
			}
			po, pi := masqPins(name)
			po, pi = filepath.Join(a.pinLinks, po), filepath.Join(a.pinLinks, pi)
			out, in, err := a.masq.AttachUplink(l.Attrs().Index, po, pi)
			if err != nil {
				// Stale pins of a deleted interface of that name: attach
				// afresh (as setupProxyReturn).
				_, e1 := os.Stat(po)
				_, e2 := os.Stat(pi)
				if e1 == nil || e2 == nil {
					_ = os.Remove(po)
					_ = os.Remove(pi)
					a.log.Info("uplink's pinned masquerading links were stale; attaching afresh", "uplink", name, "error", err)
					out, in, err = a.masq.AttachUplink(l.Attrs().Index, po, pi)
				}
			}
			if err != nil {
				return fmt.Errorf("masquerading on uplink %s: %w", name, err)
			}
			out.Close() // the pins keep them
			in.Close()
			a.log.Info("masquerading on uplink", "uplink", name, "ports", ports.String())
		}
		if len(a.uplinks) == 0 {
			a.log.Warn("masquerading enabled but no uplink found (no default route, no --uplink): pods' traffic leaves with their own addresses")
		}
		return nil
	})
}

// syncMasqAddresses points each uplink at its first global IPv4 address,
// the source masqueraded traffic leaves with. An uplink without one drops
// what it would masquerade (never lets it out with the pod's address).
func (a *Agent) syncMasqAddresses() error {
	addrs := map[int]netip.Addr{}
	for _, name := range a.uplinks {
		l, err := a.node.LinkByName(name)
		if err != nil {
			continue // gone: watchUplinks triggers a sync when it is back
		}
		as, err := a.node.AddrList(l, unix.AF_INET)
		if err != nil {
			return fmt.Errorf("addresses of uplink %s: %w", name, err)
		}
		for _, ad := range as {
			ip, ok := netip.AddrFromSlice(ad.IP.To4())
			if ok && ip.IsGlobalUnicast() && ad.Flags&unix.IFA_F_SECONDARY == 0 {
				addrs[l.Attrs().Index] = ip
				break
			}
		}
		if _, ok := addrs[l.Attrs().Index]; !ok {
			a.log.Warn("uplink has no IPv4 address: traffic it would masquerade is dropped", "uplink", name)
		}
	}
	return a.masq.SetAddresses(addrs)
}

// syncMasquerade makes the exclusions and addresses match the Nodes and the
// uplinks.
func (a *Agent) syncMasquerade() error {
	if !a.cfg.Masquerade {
		return nil
	}
	var nodes []*corev1.Node
	if a.informers != nil && a.informers.nodes != nil {
		var err error
		if nodes, err = a.informers.nodes.List(everything()); err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
	}
	ex := masqExclusions(nodes, a.cfg.NodeName, a.cfg.PodCIDR, a.cfg.NodeIPs, a.cfg.NonMasqueradeCIDRs)
	return errors.Join(a.masq.SetExclusions(ex), a.syncMasqAddresses())
}

// removeMasqPins unpins (and so detaches) the masquerading links but those
// in keep.
func (a *Agent) removeMasqPins(keep map[string]bool) error {
	var errs []error
	for _, pattern := range []string{"masq_out_*", "masq_in_*"} {
		pins, err := filepath.Glob(filepath.Join(a.pinLinks, pattern))
		if err != nil {
			return err
		}
		for _, p := range pins {
			if keep[filepath.Base(p)] {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove masquerading pin %s: %w", p, err))
				continue
			}
			a.log.Info("masquerading off an interface", "pin", filepath.Base(p))
		}
	}
	return errors.Join(errs...)
}
