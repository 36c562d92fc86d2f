package envoy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// The node Envoy's inbound listener (docs/design/policy.md §7.2): the
// connections the agent captures (bpf_sk_assign) to a pod port whose
// authorization needs HTTP facts arrive here, still addressed to the pod;
// each {pod, port} has a filter chain shaped as Istio's sidecar inbound
// chain for that port (its RBAC filters, then the router), whose route goes
// to the connection's original destination, from the client's own address.

// InboundChain is one captured {pod, port} of a node.
type InboundChain struct {
	// Pod names the pod (diagnostics).
	Pod ir.ResourceRef
	// Addresses are the pod's IPs: the chain matches connections to them.
	Addresses []string
	Port      uint32
	Protocol  ir.Protocol
	// Authn are HTTP filters that run before the RBAC filters: the hook for
	// envoy.filters.http.jwt_authn of the pod's RequestAuthentications
	// (issue 14 §3), whose metadata requestPrincipals and request.auth.*
	// conditions match. Until it is set those never match (as in Istio for
	// a workload without a RequestAuthentication).
	Authn []*hcmv3.HttpFilter
	// RBAC are the pod's RBAC filters for the port (BuildRBAC, HTTP), in
	// Istio's order.
	RBAC []RBACFilter
	// DenyAll makes the chain deny every request: its RBAC could not be
	// built, and an unenforceable policy must deny, never allow.
	DenyAll bool
	// MTLS terminates Istio mTLS on the port (inbound_mtls.go); nil: the
	// plaintext chain only. A chain whose Protocol is not HTTP proxies TCP
	// (tcp_proxy, no RBAC: a port captured only for mTLS, whose
	// authorization the agent's eBPF gate keeps).
	MTLS *InboundMTLS
}

// Name is the chain's name: Istio's inbound chain name (0.0.0.0_9080) with
// the pod's first address instead of the wildcard.
func (c *InboundChain) Name() string {
	a := "0.0.0.0"
	if len(c.Addresses) > 0 {
		a = c.Addresses[0]
	}
	return a + "_" + strconv.FormatUint(uint64(c.Port), 10)
}

// InboundClusterName is Istio's inbound cluster name for a port
// (inbound|9080||): an ORIGINAL_DST cluster.
func InboundClusterName(port uint32) string {
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||"
}

// inboundConnectTimeout is Istio's default connect timeout (meshConfig
// connectTimeout), which its inbound clusters use.
const inboundConnectTimeout = 10 * time.Second

// BuildInbound builds the inbound listener of a node and its clusters (one
// ORIGINAL_DST cluster per port), validated as every resource is (Repair);
// a chain that fails validation is withheld — its connections then match
// no chain and are closed. Nothing is returned for no chains: a node
// without captured pods has no inbound listener.
func BuildInbound(chains []InboundChain) (*Resources, ir.Diagnostics) {
	if len(chains) == 0 {
		return &Resources{}, nil
	}
	var diags ir.Diagnostics
	l := &listenerv3.Listener{
		Name: ir.InboundListenerName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: ir.InboundCapturePort},
		}}},
		// Connections arrive with the pod's address as their local one
		// (bpf_sk_assign keeps the tuple): the socket must accept them.
		Transparent:      wrapperspb.Bool(true),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		// The eBPF capture hands packets only to sockets with this mark
		// (setting it needs CAP_NET_ADMIN): a process that merely binds
		// the port gets nothing (docs/design/datapath.md, "Inbound
		// capture").
		SocketOptions: []*corev3.SocketOption{{
			Description: "nodemesh inbound listener mark",
			Level:       1,  // SOL_SOCKET
			Name:        36, // SO_MARK
			Value:       &corev3.SocketOption_IntValue{IntValue: api.InboundListenerMark},
			State:       corev3.SocketOption_STATE_PREBIND,
		}},
	}
	odst, err := toAny(&originaldstv3.OriginalDst{})
	if err != nil {
		return nil, append(diags, inboundError(err))
	}
	// As the outbound listener's PreserveClientAddress: bind_port false, so
	// that pooled upstream connections (one pool per client address) never
	// collide on a tuple; the pod sees its client's address, which its eBPF
	// policy and its logs read.
	// Mark 0x539 (Istio's "do not capture again"): the agent's
	// cgroup/connect4 sends the node Envoy's other upstream connections to
	// a captured pod of this node here; this one must reach the pod.
	osrc, err := toAny(&originalsrcv3.OriginalSrc{BindPort: false, Mark: api.IstioSkipMark})
	if err != nil {
		return nil, append(diags, inboundError(err))
	}
	l.ListenerFilters = []*listenerv3.ListenerFilter{
		// Harmless with sk_assign (the local address already is the
		// original destination); it makes iptables-style redirects work too.
		{Name: filterOriginalDst, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: odst}},
		{Name: filterOriginalSrc, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: osrc}},
	}
	ports := map[uint32]bool{}
	mtls := false
	for i := range chains {
		c := &chains[i]
		fcs, err := inboundChains(c)
		if err != nil {
			diags.Errorf(ir.CodeInvalidXDS, c.Pod, "", "inbound filter chain %s withheld (its connections are closed): %v", c.Name(), err)
			continue
		}
		l.FilterChains = append(l.FilterChains, fcs...)
		ports[c.Port] = true
		mtls = mtls || c.MTLS != nil
	}
	if mtls {
		// Chains match the transport protocol and ALPN: istiod's
		// tls_inspector, after original_dst as in its listener (only then:
		// without mTLS chains the listener stays as it was).
		ti, err := tlsInspector()
		if err != nil {
			return nil, append(diags, inboundError(err))
		}
		l.ListenerFilters = append(l.ListenerFilters[:1], append([]*listenerv3.ListenerFilter{ti}, l.ListenerFilters[1:]...)...)
		l.ListenerFiltersTimeout = listenerFiltersTimeout
		l.ContinueOnListenerFiltersTimeout = true
	}
	// No default chain: a captured connection that matches no chain is
	// closed (a pod or port the controller does not know of yet).
	r := &Resources{Listeners: []*listenerv3.Listener{l}}
	for _, p := range slices.Sorted(maps.Keys(ports)) {
		c, err := inboundCluster(p)
		if err != nil {
			return nil, append(diags, inboundError(err))
		}
		r.Clusters = append(r.Clusters, c)
	}
	diags = append(diags, Repair(r)...)
	return r, diags
}

func inboundError(err error) ir.Diagnostic {
	return ir.Diagnostic{Severity: ir.SeverityError, Code: ir.CodeInvalidXDS,
		Resource: ir.ResourceRef{Kind: TypeListener, Name: ir.InboundListenerName}, Message: "withheld: " + err.Error()}
}

// inboundChains are one {pod, port}'s chains: the plaintext chain
// (inboundChain), or with MTLS the chains that terminate Istio mTLS.
func inboundChains(c *InboundChain) ([]*listenerv3.FilterChain, error) {
	if c.MTLS == nil {
		fc, err := inboundChain(c, false)
		if err != nil {
			return nil, err
		}
		return []*listenerv3.FilterChain{fc}, nil
	}
	plain, err := inboundChain(c, false)
	if err != nil {
		return nil, err
	}
	tls, err := inboundChain(c, true)
	if err != nil {
		return nil, err
	}
	return mtlsChains(c, plain, tls.Filters)
}

// inboundChain is one {pod, port}'s chain: Istio's inbound HTTP connection
// manager for the port (inline route configuration inbound|PORT||, one
// virtual host, one route to the inbound cluster), with the pod's RBAC; for
// a port that is not HTTP, tcp_proxy to the inbound cluster. mtls: the
// chain's connections carry a verified client certificate.
func inboundChain(c *InboundChain, mtls bool) (*listenerv3.FilterChain, error) {
	var prefixes []*corev3.CidrRange
	for _, a := range c.Addresses {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("pod address %q: %w", a, err)
		}
		prefixes = append(prefixes, cidrOf(netip.PrefixFrom(addr, addr.BitLen())))
	}
	if len(prefixes) == 0 {
		// A chain without addresses would match the port of every pod.
		return nil, fmt.Errorf("pod has no address")
	}
	match := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(c.Port), PrefixRanges: prefixes}
	if !c.Protocol.IsHTTP() {
		if c.MTLS == nil {
			// Only mTLS termination captures a TCP port.
			return nil, fmt.Errorf("port %d is not HTTP and terminates no mTLS", c.Port)
		}
		fs, err := inboundTCPFilters(c.Port)
		if err != nil {
			return nil, err
		}
		return &listenerv3.FilterChain{Name: c.Name(), FilterChainMatch: match, Filters: fs}, nil
	}
	var filters []*hcmv3.HttpFilter
	filters = append(filters, c.Authn...)
	if c.DenyAll {
		// An ALLOW filter without policies: every request is denied (403),
		// as istiod's allow-nothing.
		a, err := toAny(&rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})
		if err != nil {
			return nil, err
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: FilterHTTPRBAC, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	} else {
		for _, f := range c.RBAC {
			hf, err := f.HTTPFilter()
			if err != nil {
				return nil, err
			}
			filters = append(filters, hf)
		}
	}
	router, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: filterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})

	port := strconv.FormatUint(uint64(c.Port), 10)
	cluster := InboundClusterName(c.Port)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound_" + c.Name() + ";",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: cluster,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "inbound|http|" + port,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
						Timeout:          durationpb.New(0),
						RetryPolicy:      &routev3.RetryPolicy{RetryOn: "reset-before-request", NumRetries: wrapperspb.UInt32(2)},
						MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{
							MaxStreamDuration: durationpb.New(0), GrpcTimeoutHeaderMax: durationpb.New(0),
						},
					}},
				}},
			}},
			ValidateClusters: wrapperspb.Bool(false),
		}},
		HttpFilters:      filters,
		ServerName:       "istio-envoy",
		UseRemoteAddress: wrapperspb.Bool(false),
		// No client certificate is presented here (no mTLS yet): a client's
		// own x-forwarded-client-cert header must not reach the pod as if
		// the proxy had vouched for it (Istio: APPEND_FORWARD, of a
		// certificate it verified).
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
		Proxy_100Continue:        true,
		UpgradeConfigs:           []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		// The RBAC's path rules assume normalized paths (istiod's default
		// pathNormalization): without it /a/../admin passes a rule on /admin.
		NormalizePath:                wrapperspb.Bool(true),
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
		StreamIdleTimeout:            durationpb.New(0),
	}
	if mtls {
		// A verified client certificate: Istio's details of it for the
		// pod, after what the client's own proxy forwarded.
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true}
	}
	a, err := toAny(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{
		Name:             c.Name(),
		FilterChainMatch: match,
		Filters:          []*listenerv3.Filter{{Name: filterHCM, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}},
	}, nil
}

// inboundCluster is Istio's inbound cluster of a port: the connection's
// original destination (the pod), speaking the client's HTTP version.
func inboundCluster(port uint32) (*clusterv3.Cluster, error) {
	opts, err := toAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	name := InboundClusterName(port)
	max32 := wrapperspb.UInt32(^uint32(0))
	return &clusterv3.Cluster{
		Name:                          name,
		AltStatName:                   name + ";",
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout:                durationpb.New(inboundConnectTimeout),
		LbPolicy:                      clusterv3.Cluster_CLUSTER_PROVIDED,
		CircuitBreakers:               &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: max32, MaxPendingRequests: max32, MaxRequests: max32, MaxRetries: max32}}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptions: opts},
	}, nil
}
