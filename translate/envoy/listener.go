package envoy

import (
	"fmt"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// buildListener converts an IR listener. Each filter chain is built on its
// own so that a broken one can be reported without losing the others.
func buildListener(l ir.Listener) (*listenerv3.Listener, error) {
	out := &listenerv3.Listener{
		Name: l.Name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: l.Address, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: l.Port},
		}}},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}
	if l.OriginalDestination {
		a, err := toAny(&originaldstv3.OriginalDst{})
		if err != nil {
			return nil, err
		}
		out.ListenerFilters = append(out.ListenerFilters, &listenerv3.ListenerFilter{
			Name: filterOriginalDst, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
		})
	}
	if l.PreserveClientAddress {
		// bind_port false: the client's address with a port of the kernel's
		// choosing, so that Envoy's pooled upstream connections (one pool per
		// client address) never collide on a tuple.
		a, err := toAny(&originalsrcv3.OriginalSrc{BindPort: false})
		if err != nil {
			return nil, err
		}
		out.ListenerFilters = append(out.ListenerFilters, &listenerv3.ListenerFilter{
			Name: filterOriginalSrc, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
		})
	}
	if l.SniffHTTP {
		a, err := toAny(&httpinspectorv3.HttpInspector{})
		if err != nil {
			return nil, err
		}
		out.ListenerFilters = append(out.ListenerFilters, &listenerv3.ListenerFilter{
			Name: filterHTTPInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
			// Only inspect ports that have HTTP chains, so that server-first
			// TCP protocols elsewhere are never held up waiting for bytes.
			FilterDisabled: notPortsOf(l.FilterChains, func(fc ir.FilterChain) bool { return fc.HTTP != nil }),
		})
		// Wait for the client's first bytes as Istio does (no timeout), and
		// fall back to the remaining chains if inspection gives up.
		out.ListenerFiltersTimeout = durationpb.New(0)
		out.ContinueOnListenerFiltersTimeout = true
	}
	if tlsPorts := notPortsOf(l.FilterChains, func(fc ir.FilterChain) bool { return len(fc.Match.ServerNames) > 0 }); tlsPorts != nil {
		// Chains that match a ServiceEntry host by SNI need the TLS
		// inspector (Istio adds it for the same chains). Like the HTTP
		// inspector it is only enabled on those ports: it waits for the
		// client's first bytes, which a server-first protocol never sends.
		a, err := toAny(&tlsinspectorv3.TlsInspector{})
		if err != nil {
			return nil, err
		}
		out.ListenerFilters = append(out.ListenerFilters, &listenerv3.ListenerFilter{
			Name: filterTLSInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
			FilterDisabled: tlsPorts,
		})
		out.ListenerFiltersTimeout = durationpb.New(0)
		out.ContinueOnListenerFiltersTimeout = true
	}
	for _, fc := range l.FilterChains {
		c, err := buildFilterChain(fc)
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", fc.Name, err)
		}
		out.FilterChains = append(out.FilterChains, c)
	}
	if l.DefaultChain != nil {
		c, err := buildFilterChain(*l.DefaultChain)
		if err != nil {
			return nil, fmt.Errorf("default filter chain: %w", err)
		}
		out.DefaultFilterChain = c
	}
	return out, nil
}

// notPortsOf is a predicate that is true for connections to ports without a
// filter chain of the kind want selects (nil when no chain is of that kind).
func notPortsOf(chains []ir.FilterChain, want func(ir.FilterChain) bool) *listenerv3.ListenerFilterChainMatchPredicate {
	var rules []*listenerv3.ListenerFilterChainMatchPredicate
	seen := map[uint32]bool{}
	for _, fc := range chains {
		p := fc.Match.DestinationPort
		if !want(fc) || p == 0 || seen[p] {
			continue
		}
		seen[p] = true
		rules = append(rules, &listenerv3.ListenerFilterChainMatchPredicate{
			Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
				DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
			},
		})
	}
	var httpPort *listenerv3.ListenerFilterChainMatchPredicate
	switch len(rules) {
	case 0:
		return nil
	case 1:
		httpPort = rules[0]
	default:
		httpPort = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
			OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
		}}
	}
	return &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{NotMatch: httpPort}}
}

func buildFilterChain(fc ir.FilterChain) (*listenerv3.FilterChain, error) {
	out := &listenerv3.FilterChain{Name: fc.Name}
	m := fc.Match
	if m.DestinationPort != 0 || len(m.DestinationPrefixes) > 0 || len(m.ApplicationProtocols) > 0 || len(m.SourcePrefixes) > 0 || len(m.ServerNames) > 0 {
		fcm := &listenerv3.FilterChainMatch{ApplicationProtocols: m.ApplicationProtocols, ServerNames: m.ServerNames}
		if len(m.ServerNames) > 0 {
			fcm.TransportProtocol = "tls"
		}
		if m.DestinationPort != 0 {
			fcm.DestinationPort = wrapperspb.UInt32(m.DestinationPort)
		}
		var err error
		if fcm.PrefixRanges, err = cidrRanges(m.DestinationPrefixes); err != nil {
			return nil, err
		}
		if fcm.SourcePrefixRanges, err = cidrRanges(m.SourcePrefixes); err != nil {
			return nil, err
		}
		out.FilterChainMatch = fcm
	}
	switch {
	case fc.HTTP != nil:
		f, err := hcmFilter(fc.HTTP)
		if err != nil {
			return nil, err
		}
		out.Filters = []*listenerv3.Filter{f}
	case fc.TCP != nil:
		f, err := tcpProxyFilter(fc.TCP)
		if err != nil {
			return nil, err
		}
		out.Filters = []*listenerv3.Filter{f}
	}
	if fc.ClientIdentity != "" && len(out.Filters) > 0 {
		f, err := clientIdentityFilter(fc.ClientIdentity)
		if err != nil {
			return nil, err
		}
		out.Filters = append([]*listenerv3.Filter{f}, out.Filters...)
	}
	return out, nil
}

func cidrRanges(prefixes []string) ([]*corev3.CidrRange, error) {
	var out []*corev3.CidrRange
	for _, p := range prefixes {
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("prefix %q: %w", p, err)
		}
		out = append(out, &corev3.CidrRange{AddressPrefix: pr.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(pr.Bits()))})
	}
	return out, nil
}

// hcmFilter is the HTTP connection manager of an outbound chain: routes over
// RDS, and the fault and CORS filters before the router, as Istio configures
// them (both empty here and enabled per route).
func hcmFilter(h *ir.HTTPConnectionManager) (*listenerv3.Filter, error) {
	var filters []*hcmv3.HttpFilter
	for _, hf := range []struct {
		name   string
		config proto.Message
	}{
		{filterFault, &faultv3.HTTPFault{}},
		{filterCORS, &corsv3.Cors{}},
		{filterRouter, &routerv3.Router{}},
	} {
		a, err := toAny(hf.config)
		if err != nil {
			return nil, err
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: hf.name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	}
	cfg := &hcmv3.HttpConnectionManager{
		StatPrefix: h.StatPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsConfigSource(), RouteConfigName: h.RouteConfigName,
		}},
		HttpFilters:                  filters,
		UseRemoteAddress:             wrapperspb.Bool(false),
		UpgradeConfigs:               []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		NormalizePath:                wrapperspb.Bool(true),
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
		StreamIdleTimeout:            durationpb.New(0),
	}
	a, err := toAny(cfg)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: filterHCM, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

func tcpProxyFilter(t *ir.TCPProxy) (*listenerv3.Filter, error) {
	cfg := &tcpproxyv3.TcpProxy{StatPrefix: t.StatPrefix, IdleTimeout: durp(t.IdleTimeout), MaxDownstreamConnectionDuration: durp(t.MaxDownstreamConnectionDuration)}
	if t.HashSourceIP {
		cfg.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	}
	if len(t.Destinations) == 1 && t.Destinations[0].Weight == 0 {
		cfg.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: t.Destinations[0].Cluster}
	} else {
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for _, d := range t.Destinations {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: d.Cluster, Weight: d.Weight})
		}
		cfg.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	a, err := toAny(cfg)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: filterTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// RouteConfigNames lists the route configurations a listener's HTTP
// connection managers (filter chains and api_listener) fetch over RDS, in
// order of appearance, each once.
func RouteConfigNames(l *listenerv3.Listener) []string {
	var out []string
	seen := map[string]bool{}
	add := func(tc *anypb.Any) {
		h := &hcmv3.HttpConnectionManager{}
		if tc == nil || !tc.MessageIs(h) || tc.UnmarshalTo(h) != nil {
			return
		}
		if n := h.GetRds().GetRouteConfigName(); n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			add(f.GetTypedConfig())
		}
	}
	for _, f := range l.GetDefaultFilterChain().GetFilters() {
		add(f.GetTypedConfig())
	}
	add(l.GetApiListener().GetApiListener())
	return out
}
