package xds

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Names in the node Envoy's bootstrap.
const (
	// XDSClusterName is the static cluster of the controller (Istio's name).
	XDSClusterName = "xds-grpc"
	// StatsClusterName points the stats listener at the admin interface.
	StatsClusterName = "prometheus_stats"
	// StatsListenerName serves /stats/prometheus on the stats port.
	StatsListenerName = "prometheus_stats"
	// DefaultAdminPort and DefaultStatsPort are Istio's.
	DefaultAdminPort = api.EnvoyAdminPort
	DefaultStatsPort = api.EnvoyStatsPort
	// ServiceCluster is the node Envoys' service cluster (node.cluster).
	ServiceCluster = "nodemesh-node"
	// FileBasedMetadata is Envoy's call-credentials plugin that reads a
	// header value from a file for every stream (istio-agent-less Istio
	// bootstraps used it for the projected token, too).
	FileBasedMetadata = "envoy.grpc_credentials.file_based_metadata"
	// DefaultTokenFile and DefaultCAFile are where the node Envoy
	// DaemonSet mounts the projected xDS token and the controller's CA
	// bundle.
	DefaultTokenFile = "/var/run/secrets/nodemesh/xds/token"
	DefaultCAFile    = "/var/run/secrets/nodemesh/ca/root-cert.pem"
)

// BootstrapOptions describe a node Envoy.
type BootstrapOptions struct {
	// Node is the Kubernetes node name: the Envoy node ID the controller
	// serves by.
	Node string
	// Controller is the controller's xDS address, host:port (a DNS name is
	// resolved by Envoy, STRICT_DNS).
	Controller string
	// AdminPort is bound on 127.0.0.1 only; StatsPort on every address.
	AdminPort, StatsPort uint32
	// Delta selects incremental xDS (DELTA_GRPC) rather than state of the
	// world (GRPC).
	Delta bool
	// TokenFile is the projected ServiceAccount token (audience
	// nodemesh-xds) Envoy sends as "authorization: Bearer" on every xDS
	// stream; it is read again for each stream, so the kubelet's renewals
	// are picked up.
	TokenFile string
	// CAFile is the CA bundle Envoy verifies the controller's certificate
	// with.
	CAFile string
	// ServerName is the name the controller's certificate is verified for:
	// the host of Controller by default; required when that is an IP
	// address (the certificate names the Service).
	ServerName string
	// Insecure connects without TLS, to a controller run with
	// --xds-insecure-plaintext (local development only), sending
	// StaticToken as fixed initial metadata (Envoy's own gRPC client cannot
	// re-read a file): the token is frozen into the bootstrap and must be
	// rewritten when it expires.
	Insecure    bool
	StaticToken string
	// SDSSocket, when set, adds the sds-grpc static cluster pointing at
	// the node's SDS server (workload certificates; mtls.enabled).
	SDSSocket string
}

// Bootstrap is a node Envoy's bootstrap: ADS to the controller (node ID =
// node name), the admin interface on 127.0.0.1, and Prometheus stats on the
// stats port, as Istio's proxies have them. It is validated before it is
// returned.
//
// The ADS stream is a google_grpc service: TLS verified with CAFile, and
// the token of TokenFile as call credentials (Envoy's file_based_metadata
// plugin). Envoy's own gRPC client (envoy_grpc) can only send fixed
// initial_metadata, which would freeze the token the bootstrap was written
// with while the kubelet renews it every ~50 minutes; Istio's bootstraps
// did exactly this before istio-agent proxied xDS. With Insecure it is
// plaintext envoy_grpc to a static cluster, without a token.
func Bootstrap(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.Node == "" {
		return nil, errors.New("the node name is required (the Envoy node ID the controller serves)")
	}
	if o.AdminPort == 0 {
		o.AdminPort = DefaultAdminPort
	}
	if o.StatsPort == 0 {
		o.StatsPort = DefaultStatsPort
	}
	host, portStr, err := net.SplitHostPort(o.Controller)
	if err != nil {
		return nil, fmt.Errorf("controller address %q: %w", o.Controller, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("controller address %q: invalid port", o.Controller)
	}
	statsListener, err := statsListener(o.StatsPort)
	if err != nil {
		return nil, err
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	clusters := []*clusterv3.Cluster{staticCluster(StatsClusterName, "127.0.0.1", o.AdminPort)}
	if o.SDSSocket != "" {
		sds, err := sdsCluster(o.SDSSocket)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, sds)
	}
	var adsService *corev3.GrpcService
	if o.Insecure {
		if o.TokenFile != "" || o.CAFile != "" || o.ServerName != "" {
			return nil, errors.New("an insecure (plaintext) bootstrap has no token file, CA or server name")
		}
		if o.StaticToken == "" {
			return nil, errors.New("the controller authenticates every client: an insecure bootstrap needs a token too")
		}
		xdsCluster, err := xdsCluster(host, uint32(port))
		if err != nil {
			return nil, err
		}
		clusters = append([]*clusterv3.Cluster{xdsCluster}, clusters...)
		adsService = &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName}},
			InitialMetadata: []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + o.StaticToken}},
		}
	} else {
		if o.StaticToken != "" {
			return nil, errors.New("a static token is for insecure bootstraps only: over TLS, Envoy reads the token file for every stream")
		}
		if adsService, err = secureADS(o, host); err != nil {
			return nil, err
		}
	}
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id:      o.Node,
			Cluster: ServiceCluster,
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				"NODE_NAME": structpb.NewStringValue(o.Node),
			}},
		},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress("127.0.0.1", o.AdminPort),
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   apiType,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{adsService},
			},
			CdsConfig: ads,
			LdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{statsListener},
			Clusters:  clusters,
		},
		// Istio's setting: no global connection limit (Envoy warns when unset).
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
			Name: "global config",
			LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: &structpb.Struct{Fields: map[string]*structpb.Value{
				"overload.global_downstream_max_connections": structpb.NewNumberValue(2147483647),
				// Istio's value (tools/packaging/common/envoy_bootstrap.json):
				// Envoy's default, 100, rejects a path regex with a single
				// Unicode class. The translator validates every regex
				// against this same limit (ir.RE2MaxProgramSize).
				"re2.max_program_size.error_level": structpb.NewNumberValue(ir.RE2MaxProgramSize),
			}}},
		}}},
	}
	if err := ValidateBootstrap(b); err != nil {
		return nil, err
	}
	return b, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func staticCluster(name, host string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(250 * time.Millisecond),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
			}}}},
		},
	}
}

// xdsCluster is the controller: HTTP/2 (gRPC), with keepalives so that a
// dead connection is noticed, and limits high enough never to queue xDS.
func xdsCluster(host string, port uint32) (*clusterv3.Cluster, error) {
	c := staticCluster(XDSClusterName, host, port)
	c.ConnectTimeout = durationpb.New(time.Second)
	if _, err := netip.ParseAddr(host); err != nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(10 * time.Second)},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	max := wrapperspb.UInt32(100000)
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority: corev3.RoutingPriority_DEFAULT, MaxConnections: max, MaxPendingRequests: max, MaxRequests: max, MaxRetries: wrapperspb.UInt32(3),
	}}}
	c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{KeepaliveTime: wrapperspb.UInt32(300)}}
	return c, nil
}

// statsListener serves /stats/prometheus (the admin interface's, through the
// prometheus_stats cluster) on the stats port, as Istio's proxies do.
func statsListener(port uint32) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "stats",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "prometheus_stats",
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "prometheus_stats", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/stats/prometheus"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: StatsClusterName},
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    StatsListenerName,
		Address: socketAddress("0.0.0.0", port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}, nil
}

// ValidateBootstrap checks a bootstrap with go-control-plane's field rules
// and with the translator's validator for its static listeners and clusters
// (inside packed configs too): references resolve, the router is last; the
// ADS service verifies the controller with a CA file and sends the token
// file (or, plaintext, its cluster exists and speaks HTTP/2).
func ValidateBootstrap(b *bootstrapv3.Bootstrap) error {
	if err := b.ValidateAll(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	r := &translate.Resources{Listeners: b.GetStaticResources().GetListeners(), Clusters: b.GetStaticResources().GetClusters()}
	// Inline route configurations are validated as route configurations.
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(h) && f.GetTypedConfig().UnmarshalTo(h) == nil && h.GetRouteConfig() != nil {
					r.Routes = append(r.Routes, h.GetRouteConfig())
				}
			}
		}
	}
	if problems := translate.Validate(r); len(problems) > 0 {
		return fmt.Errorf("bootstrap: %s", problems[0])
	}
	for _, c := range r.Clusters {
		if c.GetName() == SDSClusterName {
			if err := validateSDSCluster(c); err != nil {
				return err
			}
		}
	}
	svcs := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()
	if len(svcs) != 1 {
		return errors.New("bootstrap: ADS needs exactly one gRPC service")
	}
	if g := svcs[0].GetGoogleGrpc(); g != nil {
		return validateSecureADS(g)
	}
	var ads *clusterv3.Cluster
	for _, c := range r.Clusters {
		if c.GetName() == svcs[0].GetEnvoyGrpc().GetClusterName() {
			ads = c
		}
	}
	if ads == nil {
		return errors.New("bootstrap: the ADS cluster is not defined")
	}
	opts := &httpv3.HttpProtocolOptions{}
	if a := ads.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a == nil || a.UnmarshalTo(opts) != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		return errors.New("bootstrap: the ADS cluster must speak HTTP/2 (gRPC)")
	}
	return nil
}
