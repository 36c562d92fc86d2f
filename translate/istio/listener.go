package istio

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// httpALPN are the application protocols Envoy's HTTP inspector reports.
var httpALPN = []string{"http/1.1", "h2c"}

// listener builds the node's outbound capture listener for a class. The node agent
// redirects opted-in connections to it and the original destination is
// restored, so filter chains select on the address the client dialled:
//
//   - 0.0.0.0_<port>: HTTP to a port some Service serves as HTTP goes to the
//     route configuration "<port>" (the Host header picks the Service);
//   - <ClusterIP>_<port>: TCP Services (and the TCP half of protocol-sniffed
//     ports) are told apart by address and proxied to their cluster;
//   - anything else passes through to its original destination, except
//     connections to the capture port itself, which are dropped (no loops).
func (t *translator) listener(cl *Class) ir.Listener {
	l := ir.Listener{
		Name:                ir.OutboundListenerName,
		Address:             "0.0.0.0",
		Port:                ir.OutboundCapturePort,
		OriginalDestination: true,
		// The node proxy is a hop on the client's path, not a client: the
		// destination's policy must see the client pod's address.
		PreserveClientAddress: true,
		FilterChains: []ir.FilterChain{{
			Name:  ir.BlackHoleFilterChain,
			Match: ir.FilterChainMatch{DestinationPort: ir.OutboundCapturePort},
			TCP:   &ir.TCPProxy{StatPrefix: ir.BlackHoleCluster, Destinations: []ir.WeightedDestination{{Cluster: ir.BlackHoleCluster}}},
		}},
		DefaultChain: &ir.FilterChain{
			Name: ir.PassthroughFilterChain,
			TCP:  &ir.TCPProxy{StatPrefix: ir.PassthroughCluster, Destinations: []ir.WeightedDestination{{Cluster: ir.PassthroughCluster}}},
		},
	}
	if t.opts.registryOnly() {
		// Istio's buildOutboundCatchAllNetworkFiltersOnly: the chain keeps
		// its name; under REGISTRY_ONLY it goes to BlackHoleCluster.
		l.DefaultChain.TCP = &ir.TCPProxy{StatPrefix: ir.BlackHoleCluster, Destinations: []ir.WeightedDestination{{Cluster: ir.BlackHoleCluster}}}
	}
	httpPorts := t.httpPorts()
	for _, port := range slices.Sorted(maps.Keys(httpPorts)) {
		if port == ir.OutboundCapturePort {
			continue
		}
		l.FilterChains = append(l.FilterChains, ir.FilterChain{
			Name:  ir.HTTPFilterChainName(port),
			Match: ir.FilterChainMatch{DestinationPort: port, ApplicationProtocols: httpALPN},
			HTTP:  &ir.HTTPConnectionManager{StatPrefix: ir.HTTPStatPrefix(port), RouteConfigName: ir.RouteConfigName(port)},
		})
		l.SniffHTTP = true
	}
	used := map[string]*service{} // <prefix>_<port> → the Service that has it
	for _, s := range t.serviceList {
		for _, p := range s.ports {
			if p.protocol.IsHTTP() || p.port == ir.OutboundCapturePort {
				continue
			}
			if s.entry != nil && len(s.entry.prefixes) == 0 {
				if !t.serviceVisible(s, cl.Namespace) {
					// Not exported to the class: its sidecar has no such
					// chain; the connection takes the port's default.
					continue
				}
				if fc, ok := t.entryChain(s, p, cl, used); ok {
					l.FilterChains = append(l.FilterChains, fc)
				}
				continue
			}
			prefixes := t.destinationPrefixes(s)
			if len(prefixes) == 0 {
				if !s.headless {
					t.diags.Infof(ir.CodeChangedBehavior, s.ref, string(p.field),
						"the input gives no clusterIP, so TCP traffic to port %d cannot be told apart by address; it passes through unrouted (translate from a cluster, or set spec.clusterIP)", p.port)
				}
				continue
			}
			name := ir.TCPFilterChainName(s.vip, p.port)
			if s.headless || s.entry != nil {
				name = ir.TCPFilterChainName(s.fqdn, p.port)
			}
			conflict := false
			for _, pr := range prefixes {
				if owner, dup := used[ir.TCPFilterChainName(pr, p.port)]; dup {
					t.diags.Errorf(ir.CodeConflict, s.ref, string(p.field),
						"address %s port %d is also used by %s; this port is not routed", pr, p.port, owner.ref)
					conflict = true
					break
				}
			}
			if conflict {
				continue
			}
			for _, pr := range prefixes {
				used[ir.TCPFilterChainName(pr, p.port)] = s
			}
			tcp := t.tcpProxy(s, p, cl)
			if !t.serviceVisible(s, cl.Namespace) {
				// Not exported to the class: its sidecar would have no
				// listener for it and pass the connection through.
				tcp = &ir.TCPProxy{Destinations: []ir.WeightedDestination{{Cluster: ir.PassthroughCluster}}}
			}
			tcp.StatPrefix = tcp.Destinations[0].Cluster
			if tcp.Weighted() && tcp.Origin != nil {
				// Istio's buildOutboundNetworkFiltersWithWeightedClusters:
				// weighted routes count under <VirtualService>.<namespace>.
				tcp.StatPrefix = tcp.Origin.Name + "." + tcp.Origin.Namespace
			}
			if p.protocol == ir.ProtocolUnknown {
				l.FilterChains = append(l.FilterChains, ir.FilterChain{
					Name:  name + "-http",
					Match: ir.FilterChainMatch{DestinationPort: p.port, DestinationPrefixes: prefixes, ApplicationProtocols: httpALPN},
					HTTP:  &ir.HTTPConnectionManager{StatPrefix: ir.HTTPStatPrefix(p.port), RouteConfigName: ir.RouteConfigName(p.port)},
				})
			}
			l.FilterChains = append(l.FilterChains, ir.FilterChain{
				Name:  name,
				Match: ir.FilterChainMatch{DestinationPort: p.port, DestinationPrefixes: prefixes},
				TCP:   tcp,
			})
		}
	}
	sortChains(l.FilterChains)
	return l
}

// sortChains orders filter chains for people (Envoy picks chains by
// specificity, not position): by port, address-specific chains before the
// catch-all ones, then by name, so a class's chain follows the one it
// refines. The blackhole chain (port 15001) stays first.
func sortChains(chains []ir.FilterChain) {
	slices.SortStableFunc(chains, func(a, b ir.FilterChain) int {
		ab, bb := a.Name == ir.BlackHoleFilterChain, b.Name == ir.BlackHoleFilterChain
		if ab != bb {
			if ab {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Match.DestinationPort, b.Match.DestinationPort),
			-cmp.Compare(len(a.Match.DestinationPrefixes), len(b.Match.DestinationPrefixes)),
			cmp.Compare(a.Name, b.Name))
	})
}

// hostPrefix is an address as a single-host CIDR ("" when it does not parse).
func hostPrefix(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	return netip.PrefixFrom(ip, ip.BitLen()).String()
}

// destinationPrefixes are the addresses clients dial for a Service: its
// ClusterIP, or for a headless Service the addresses of its endpoints.
func (t *translator) destinationPrefixes(s *service) []string {
	if s.entry != nil {
		return s.entry.prefixes
	}
	var addrs []string
	if s.vip != "" {
		addrs = []string{s.vip}
	} else if s.headless {
		for _, e := range t.endpoints[s] {
			addrs = append(addrs, e.address)
		}
	}
	var out []string
	for _, a := range addrs {
		p := hostPrefix(a)
		if p == "" {
			t.diags.Errorf(ir.CodeInvalidValue, s.ref, "spec.clusterIP", "%q is not an IP address", a)
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tcpProxy routes a TCP port: the first tcp rule of the Service's
// VirtualService that matches the port and the class, or the Service itself.
func (t *translator) tcpProxy(s *service, p servicePort, cl *Class) *ir.TCPProxy {
	out := &ir.TCPProxy{}
	dr := t.destinationRule(s, cl.Namespace)
	if dr != nil && dr.owner != nil {
		// Istio's buildOutboundNetworkFilters* (networkfilter.go) read the
		// DestinationRule's top-level connection pool only: portLevelSettings
		// and subsets shape the clusters, not the listener's timeouts.
		tcp := dr.owner.policy.GetConnectionPool().GetTcp()
		if d := tcp.GetIdleTimeout(); d != nil {
			out.IdleTimeout = ir.D(d.AsDuration())
		}
		if d := tcp.GetMaxConnectionDuration(); d != nil {
			out.MaxDownstreamConnectionDuration = ir.D(d.AsDuration())
		}
	}
	out.Destinations = []ir.WeightedDestination{{Cluster: t.clusterName(s, p.port, "", cl)}}
	if vs := t.vsFor(cl.Namespace)[s]; vs != nil {
		if dests, ok := t.tcpRoute(vs, p.port, cl); ok {
			out.Destinations, out.Origin = dests, &vs.ref
		}
	}
	subset := ""
	if len(out.Destinations) == 1 && !out.Weighted() {
		_, subset, _, _ = ir.ParseOutboundClusterName(out.Destinations[0].Cluster)
		// A class's variant cluster (clusterName) names its subset
		// SUBSET~TAG: the subset is the part before the tag.
		subset, _, _ = strings.Cut(subset, "~")
	}
	out.HashSourceIP = dr.tcpHashSourceIP(subset)
	return out
}

// tcpHashSourceIP is Istio's maybeSetHashPolicy (networkfilter.go): a
// consistentHash by source IP on the DestinationRule's top-level load
// balancer, unless the subset of a single destination sets a load balancer
// of its own (weighted routes consult the top level only). Port-level
// settings are not consulted.
func (m *mergedDR) tcpHashSourceIP(subset string) bool {
	if m == nil || m.owner == nil {
		return false
	}
	use := m.owner.policy.GetLoadBalancer().GetConsistentHash().GetUseSourceIp()
	if ss := m.subset(subset); ss != nil && subset != "" && ss.policy.GetLoadBalancer() != nil {
		use = ss.policy.GetLoadBalancer().GetConsistentHash().GetUseSourceIp()
	}
	return use
}

func (t *translator) tcpRoute(vs *vsInfo, port uint32, cl *Class) ([]ir.WeightedDestination, bool) {
	for i, r := range vs.obj.Spec.Tcp {
		path := ir.Path("spec.tcp").Index(i)
		if vs.badTCP[i] {
			continue
		}
		applies := len(r.Match) == 0
		for j, m := range r.Match {
			if m.Port != 0 && m.Port != port {
				continue
			}
			if !cl.l4Match(m) {
				t.sourceSelectorNote(vs, path.Field("match").Index(j), m.Gateways, m.SourceLabels, m.SourceNamespace)
				continue
			}
			applies = true
			break
		}
		if !applies {
			continue
		}
		var out []ir.WeightedDestination
		ok := true
		for j, d := range r.Route {
			if d.Weight == 0 && len(r.Route) > 1 {
				continue
			}
			cluster, _, resolved := t.resolveDestination(vs, path.Field("route").Index(j).Field("destination"), d.Destination, port, cl)
			if !resolved {
				ok = false
				break
			}
			w := uint32(d.Weight)
			if len(r.Route) == 1 {
				w = 0
			}
			out = append(out, ir.WeightedDestination{Cluster: cluster, Weight: w})
		}
		if ok {
			return out, true
		}
	}
	return nil, false
}

// entryChain is the filter chain of a ServiceEntry port without addresses,
// as Istio's sidecar outbound listener builds it for a service whose
// address is 0.0.0.0 (buildSidecarOutboundTLSFilterChainOpts and
// buildSidecarOutboundTCPFilterChainOpts):
//
//   - TLS and HTTPS ports match the host by SNI (server_names), so that
//     several entries share port 443;
//   - any other TCP port takes every connection to the port that no more
//     specific chain (a Service's address) claims: the host cannot be
//     told from the destination address. The first entry of a port has
//     it; a later one is a conflict, as in Istio.
func (t *translator) entryChain(s *service, p servicePort, cl *Class, used map[string]*service) (ir.FilterChain, bool) {
	tcp := t.tcpProxy(s, p, cl)
	tcp.StatPrefix = tcp.Destinations[0].Cluster
	fc := ir.FilterChain{Name: ir.TCPFilterChainName(s.fqdn, p.port), Match: ir.FilterChainMatch{DestinationPort: p.port}, TCP: tcp}
	if p.protocol == ir.ProtocolTLS || p.protocol == ir.ProtocolHTTPS {
		fc.Match.ServerNames = []string{s.fqdn}
		return fc, true
	}
	key := ir.TCPFilterChainName("*", p.port)
	if owner, dup := used[key]; dup {
		t.diags.Warnf(ir.CodeConflict, s.ref, string(p.field),
			"%s port %d has no addresses and %s already takes every other connection to that port; this port of %s is not routed (set spec.addresses to tell them apart)", p.protocol, p.port, owner.ref, s.fqdn)
		return ir.FilterChain{}, false
	}
	used[key] = s
	t.diags.Infof(ir.CodeChangedBehavior, s.ref, string(p.field),
		"%s port %d has no addresses: every connection to port %d that no Service address claims goes to %s, as in Istio", p.protocol, p.port, p.port, s.fqdn)
	return fc, true
}
