package envoy

import (
	"cmp"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

var lbPolicies = map[ir.LBPolicy]clusterv3.Cluster_LbPolicy{
	ir.LBLeastRequest:    clusterv3.Cluster_LEAST_REQUEST,
	ir.LBRoundRobin:      clusterv3.Cluster_ROUND_ROBIN,
	ir.LBRandom:          clusterv3.Cluster_RANDOM,
	ir.LBRingHash:        clusterv3.Cluster_RING_HASH,
	ir.LBMaglev:          clusterv3.Cluster_MAGLEV,
	ir.LBClusterProvided: clusterv3.Cluster_CLUSTER_PROVIDED,
}

var discoveryTypes = map[ir.Discovery]clusterv3.Cluster_DiscoveryType{
	ir.DiscoveryEDS:         clusterv3.Cluster_EDS,
	ir.DiscoveryOriginalDst: clusterv3.Cluster_ORIGINAL_DST,
	ir.DiscoveryStatic:      clusterv3.Cluster_STATIC,
	ir.DiscoveryStrictDNS:   clusterv3.Cluster_STRICT_DNS,
	ir.DiscoveryLogicalDNS:  clusterv3.Cluster_LOGICAL_DNS,
}

// buildCluster converts an IR cluster; services holds the shared metadata
// values of the Services (see clusterMetadata).
func buildCluster(c *ir.Cluster, services map[*ir.ServiceRef]*structpb.Value) (*clusterv3.Cluster, error) {
	out := &clusterv3.Cluster{
		Name:                 c.Name,
		AltStatName:          c.Name + ";",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discoveryTypes[c.Discovery]},
		ConnectTimeout:       dur(c.ConnectTimeout),
		LbPolicy:             lbPolicies[c.LoadBalancer.Policy],
		CircuitBreakers:      circuitBreakers(c.CircuitBreaker),
	}
	switch {
	case c.Discovery == ir.DiscoveryEDS:
		out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: c.Name}
	case c.Discovery.IsDNS():
		// Istio's buildCluster (cluster_builder.go) for STRICT_DNS and
		// LOGICAL_DNS: IPv4 lookups (SelectDNSLookupFamily for an IPv4
		// proxy), the records' TTL, and the endpoints in the cluster.
		out.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		out.RespectDnsTtl = true //nolint:staticcheck // what Istio sets; the replacement is not in every Envoy yet
		out.LoadAssignment = buildEndpoints(&ir.ClusterEndpoints{Cluster: c.Name, Endpoints: c.LoadAssignment}, sharedEndpoints(&ir.Model{
			Endpoints: []ir.ClusterEndpoints{{Cluster: c.Name, Endpoints: c.LoadAssignment}},
		}))
	case c.Discovery == ir.DiscoveryOriginalDst && c.OriginalDstPort != 0:
		out.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UpstreamPortOverride: wrapperspb.UInt32(c.OriginalDstPort),
		}}
	}
	if c.HealthyPanicThreshold != nil {
		out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: *c.HealthyPanicThreshold}}
	}
	switch lb := c.LoadBalancer; lb.Policy {
	case ir.LBRingHash:
		rh := &clusterv3.Cluster_RingHashLbConfig{}
		if lb.RingHashMinSize > 0 {
			rh.MinimumRingSize = wrapperspb.UInt64(lb.RingHashMinSize)
		}
		out.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: rh}
	case ir.LBMaglev:
		if lb.MaglevTableSize > 0 {
			out.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(lb.MaglevTableSize)}}
		}
	case ir.LBRoundRobin:
		if ss := slowStart(lb.SlowStart); ss != nil {
			out.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
		}
	case ir.LBLeastRequest:
		if ss := slowStart(lb.SlowStart); ss != nil {
			out.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
		}
	}
	if od := c.Outlier; od != nil {
		out.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:                        u32(od.Consecutive5xx),
			EnforcingConsecutive_5Xx:               u32(od.EnforcingConsecutive5xx),
			ConsecutiveGatewayFailure:              u32(od.ConsecutiveGatewayFailure),
			EnforcingConsecutiveGatewayFailure:     u32(od.EnforcingConsecutiveGateway),
			ConsecutiveLocalOriginFailure:          u32(od.ConsecutiveLocalOriginFailure),
			EnforcingConsecutiveLocalOriginFailure: u32(od.EnforcingLocalOriginFailure),
			SplitExternalLocalOriginErrors:         od.SplitExternalLocalOriginErrors,
			Interval:                               durp(od.Interval),
			BaseEjectionTime:                       durp(od.BaseEjectionTime),
			MaxEjectionPercent:                     u32(od.MaxEjectionPercent),
			// Istio turns success-rate ejection off.
			EnforcingSuccessRate: wrapperspb.UInt32(0),
		}
		if od.SplitExternalLocalOriginErrors {
			out.OutlierDetection.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
		}
	}
	if k := c.TCPKeepalive; k != nil {
		ka := &corev3.TcpKeepalive{}
		if k.Probes > 0 {
			ka.KeepaliveProbes = wrapperspb.UInt32(k.Probes)
		}
		if k.Time != nil {
			ka.KeepaliveTime = wrapperspb.UInt32(uint32(k.Time.Std().Seconds()))
		}
		if k.Interval != nil {
			ka.KeepaliveInterval = wrapperspb.UInt32(uint32(k.Interval.Std().Seconds()))
		}
		out.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: ka}
	}
	if c.HTTP != nil {
		a, err := toAny(httpOptions(c.HTTP, c.Protocol))
		if err != nil {
			return nil, err
		}
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: a}
	}
	if c.TLS != nil {
		a, err := toAny(upstreamTLS(c.TLS))
		if err != nil {
			return nil, err
		}
		out.TransportSocket = &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	if c.IstioMTLS != nil {
		// The shared configuration knows no client: every connection gets
		// the fallback socket until the node's step (WithIstioMTLS) adds
		// its clients' identities.
		ids, err := sharedIdentities()
		if err != nil {
			return nil, err
		}
		if err := applyIstioMTLS(out, c.IstioMTLS, ids); err != nil {
			return nil, err
		}
	}
	if c.Service != nil {
		out.Metadata = clusterMetadata(c, services[c.Service])
	}
	return out, nil
}

func u32(v *uint32) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(*v)
}

func circuitBreakers(cb *ir.CircuitBreaker) *clusterv3.CircuitBreakers {
	if cb == nil {
		return nil
	}
	t := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(cb.MaxConnections),
		MaxPendingRequests: wrapperspb.UInt32(cb.MaxPendingRequests),
		MaxRequests:        wrapperspb.UInt32(cb.MaxRequests),
		MaxRetries:         wrapperspb.UInt32(cb.MaxRetries),
	}
	if rb := cb.RetryBudget; rb != nil {
		t.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: rb.Percent},
			MinRetryConcurrency: wrapperspb.UInt32(rb.MinRetryConcurrency),
		}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
}

func slowStart(s *ir.SlowStart) *clusterv3.Cluster_SlowStartConfig {
	if s == nil {
		return nil
	}
	out := &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: dur(s.Window)}
	if s.Aggression != nil {
		// Istio's setWarmup uses the runtime key "(", which no runtime
		// layer can name: the aggression the DestinationRule sets is final.
		out.Aggression = &corev3.RuntimeDouble{DefaultValue: *s.Aggression, RuntimeKey: "("}
	}
	if s.MinWeightPercent != nil {
		out.MinWeightPercent = &typev3.Percent{Value: *s.MinWeightPercent}
	}
	return out
}

// httpOptions are the upstream HTTP protocol options. Envoy requires a
// protocol choice: HTTP/2 for h2 ports, the client's protocol for sniffed
// ports or useClientProtocol, HTTP/1.1 otherwise.
func httpOptions(h *ir.HTTPOptions, proto ir.Protocol) *httpv3.HttpProtocolOptions {
	out := &httpv3.HttpProtocolOptions{}
	if h.IdleTimeout != nil || h.MaxRequestsPerConnection > 0 || h.MaxConnectionDuration != nil {
		common := &corev3.HttpProtocolOptions{IdleTimeout: durp(h.IdleTimeout), MaxConnectionDuration: durp(h.MaxConnectionDuration)}
		if h.MaxRequestsPerConnection > 0 {
			common.MaxRequestsPerConnection = wrapperspb.UInt32(h.MaxRequestsPerConnection)
		}
		out.CommonHttpProtocolOptions = common
	}
	if h.AutoSNI {
		out.UpstreamHttpProtocolOptions = &corev3.UpstreamHttpProtocolOptions{AutoSni: true, AutoSanValidation: h.AutoSANValidation}
	}
	h2 := &corev3.Http2ProtocolOptions{}
	if h.MaxConcurrentStreams > 0 {
		h2.MaxConcurrentStreams = wrapperspb.UInt32(h.MaxConcurrentStreams)
	}
	if h.HTTP2KeepaliveInterval != nil || h.HTTP2KeepaliveTimeout != nil {
		h2.ConnectionKeepalive = &corev3.KeepaliveSettings{Interval: durp(h.HTTP2KeepaliveInterval), Timeout: durp(h.HTTP2KeepaliveTimeout)}
	}
	switch {
	case h.UseClientProtocol || proto == ir.ProtocolUnknown:
		out.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: h2,
			}}
	case h.HTTP2:
		out.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
		}}
	default:
		out.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	return out
}

// upstreamTLS originates TLS with certificates read from files on the node,
// since the node proxy has no Istio agent serving SDS.
func upstreamTLS(t *ir.UpstreamTLS) *tlsv3.UpstreamTlsContext {
	common := &tlsv3.CommonTlsContext{
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		AlpnProtocols: t.ALPN,
	}
	if t.CredentialName != "" {
		// Istio's ApplyCustomSDSToClientCommonTLSContext: the certificate
		// (MUTUAL) and the CA (NAME-cacert) over SDS.
		if t.Mode == ir.TLSMutual {
			common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(t.CredentialName)}
		}
		if !t.InsecureSkipVerify {
			vc := &tlsv3.CertificateValidationContext{}
			for _, san := range t.SubjectAltNames {
				vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}})
			}
			common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: vc, ValidationContextSdsSecretConfig: sdsSecret(t.CredentialName + "-cacert"),
			}}
		}
		return &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: t.SNI}
	}
	if t.Mode == ir.TLSMutual && t.ClientCertificate != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.ClientCertificate),
			PrivateKey:       fileSource(t.PrivateKey),
		}}
	}
	if !t.InsecureSkipVerify && (t.CACertificates != "" || len(t.SubjectAltNames) > 0) {
		vc := &tlsv3.CertificateValidationContext{}
		if t.CACertificates != "" {
			vc.TrustedCa = fileSource(t.CACertificates)
		}
		if t.CACRL != "" {
			vc.Crl = fileSource(t.CACRL)
		}
		for _, san := range t.SubjectAltNames {
			typ := tlsv3.SubjectAltNameMatcher_DNS
			if len(san) > 9 && san[:9] == "spiffe://" {
				typ = tlsv3.SubjectAltNameMatcher_URI
			}
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
				SanType: typ, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}},
			})
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: t.SNI}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// endpointKey identifies an upstream address.
type endpointKey struct {
	address string
	port    uint32
	weight  uint32
}

// sharedEndpoints builds one LbEndpoint per distinct address: the clusters
// of a Service and its subsets list the same pods, and the messages are
// immutable once built, so the assignments share them. Endpoints are the
// largest part of a node's configuration.
func sharedEndpoints(m *ir.Model) map[endpointKey]*endpointv3.LbEndpoint {
	out := map[endpointKey]*endpointv3.LbEndpoint{}
	var todo []*ir.Endpoint
	for i := range m.Endpoints {
		for j := range m.Endpoints[i].Endpoints {
			e := &m.Endpoints[i].Endpoints[j]
			k := endpointKey{e.Address, e.Port, e.Weight}
			if _, ok := out[k]; !ok {
				out[k] = nil
				todo = append(todo, e)
			}
		}
	}
	n := len(todo)
	lbs := make([]endpointv3.LbEndpoint, n)
	hosts := make([]endpointv3.LbEndpoint_Endpoint, n)
	eps := make([]endpointv3.Endpoint, n)
	addrs := make([]corev3.Address, n)
	sockAddrs := make([]corev3.Address_SocketAddress, n)
	socks := make([]corev3.SocketAddress, n)
	ports := make([]corev3.SocketAddress_PortValue, n)
	for i, e := range todo {
		if e.IstioMTLS {
			lbs[i].Metadata = endpointTLSModeIstio
		}
		ports[i].PortValue = e.Port
		socks[i].Address, socks[i].PortSpecifier = e.Address, &ports[i]
		sockAddrs[i].SocketAddress = &socks[i]
		addrs[i].Address = &sockAddrs[i]
		eps[i].Address = &addrs[i]
		hosts[i].Endpoint = &eps[i]
		lbs[i].HostIdentifier = &hosts[i]
		if e.Weight > 0 {
			lbs[i].LoadBalancingWeight = wrapperspb.UInt32(e.Weight)
		}
		out[endpointKey{e.Address, e.Port, e.Weight}] = &lbs[i]
	}
	return out
}

// buildEndpoints groups endpoints by zone into one locality each. Every
// locality has a Locality (empty when the zone is unknown, as Istio emits)
// and a weight: gRPC rejects a locality without the one and ignores a
// locality without the other.
func buildEndpoints(ce *ir.ClusterEndpoints, shared map[endpointKey]*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: ce.Cluster}
	for i := range ce.Endpoints {
		e := &ce.Endpoints[i]
		var loc *endpointv3.LocalityLbEndpoints
		for _, l := range out.Endpoints { // few zones: a scan beats a map
			if l.GetLocality().GetZone() == e.Zone {
				loc = l
				break
			}
		}
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{
				Locality:    &corev3.Locality{Zone: e.Zone},
				LbEndpoints: make([]*endpointv3.LbEndpoint, 0, len(ce.Endpoints)),
			}
			out.Endpoints = append(out.Endpoints, loc)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, shared[endpointKey{e.Address, e.Port, e.Weight}])
	}
	for _, loc := range out.Endpoints {
		// The sum of the endpoints' weights (1 when unset), as Istio's
		// endpoint builder weighs a locality.
		var w uint32
		for _, lb := range loc.LbEndpoints {
			w += max(1, lb.GetLoadBalancingWeight().GetValue())
		}
		loc.LoadBalancingWeight = wrapperspb.UInt32(w)
	}
	slices.SortFunc(out.Endpoints, func(a, b *endpointv3.LocalityLbEndpoints) int {
		return cmp.Compare(a.GetLocality().GetZone(), b.GetLocality().GetZone())
	})
	return out
}

// serviceValue is Istio's metadata entry for a Service: [{host, name, namespace}].
func serviceValue(s *ir.ServiceRef) *structpb.Value {
	svc := &structpb.Struct{Fields: map[string]*structpb.Value{
		"host":      structpb.NewStringValue(s.Host),
		"name":      structpb.NewStringValue(s.Name),
		"namespace": structpb.NewStringValue(s.Namespace),
	}}
	return structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStructValue(svc)}})
}

// clusterMetadata is Istio's filter_metadata.istio of an outbound cluster:
// the DestinationRule (config), the Service and the subset. The Service
// value is shared between clusters and must not be modified.
func clusterMetadata(c *ir.Cluster, service *structpb.Value) *corev3.Metadata {
	if service == nil {
		service = serviceValue(c.Service)
	}
	fields := map[string]*structpb.Value{"services": service}
	if c.Origin != nil {
		fields["config"] = structpb.NewStringValue(ir.ConfigPath(c.Origin.Kind, c.Origin.Namespace, c.Origin.Name))
	}
	if c.Subset != "" {
		fields["subset"] = structpb.NewStringValue(c.Subset)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: fields}}}
}
