package envoy

import (
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// GRPC is the configuration of a proxyless gRPC client made from a node
// Envoy's shared configuration: its route configurations and clusters
// (base; not modified) and the names of its assignments, which the client
// is served as they are (the returned Endpoints are only their names, for
// validation). gRPC reads the same route configurations as Envoy, through
// api_listeners named after the targets it dials (xds:///<fqdn>:<port>),
// with what gRPC cannot use left out: Envoy-only clusters (pass-through,
// black hole, original destination), the allow_any virtual host, CORS, and
// file-based TLS (gRPC takes certificates from certificate providers).
// Timeouts are also given as max_stream_duration, which is what gRPC
// honours (gRFC A31). What fails validation is withheld and reported.
func GRPC(base *Resources, assignments []string) (*Resources, ir.Diagnostics) {
	var diags ir.Diagnostics
	r := &Resources{}
	for _, name := range assignments {
		r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: name})
	}
	for _, c := range base.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			r.Clusters = append(r.Clusters, grpcCluster(c))
		}
	}
	for _, rc := range base.Routes {
		grc := grpcRouteConfig(rc)
		r.Routes = append(r.Routes, grc)
		for _, vh := range grc.GetVirtualHosts() {
			l, err := apiListener(vh.GetName(), grc.GetName())
			if err != nil {
				diags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: TypeListener, Name: vh.GetName()}, "", "gRPC listener withheld: %v", err)
				continue
			}
			r.Listeners = append(r.Listeners, l)
		}
	}
	return r, append(diags, Repair(r)...)
}

func grpcRouteConfig(in *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	rc := proto.Clone(in).(*routev3.RouteConfiguration)
	var vhosts []*routev3.VirtualHost
	for _, vh := range rc.VirtualHosts {
		if vh.GetName() == ir.AllowAnyVirtualHost || vh.GetName() == ir.BlockAllVirtualHost {
			continue
		}
		for _, r := range vh.Routes {
			delete(r.TypedPerFilterConfig, "envoy.filters.http.cors")
			if a := r.GetRoute(); a != nil && a.GetTimeout().AsDuration() > 0 {
				a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(a.GetTimeout().AsDuration())}
			}
		}
		vhosts = append(vhosts, vh)
	}
	rc.VirtualHosts = vhosts
	return rc
}

// apiListener is a gRPC client listener: an HTTP connection manager with
// the route configuration over ADS and the fault and router filters.
func apiListener(name, routeConfig string) (*listenerv3.Listener, error) {
	fault, err := anypb.New(&faultv3.HTTPFault{})
	if err != nil {
		return nil, err
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: strings.ReplaceAll(name, ":", "_"),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: routeConfig,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
	}
	a, err := anypb.New(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: a}}, nil
}

// grpcCluster adapts a cluster to what gRPC accepts: no file-based TLS, and
// its load-balancing policies (round robin, least request, ring hash; gRPC
// rejects a cluster with any other).
func grpcCluster(c *clusterv3.Cluster) *clusterv3.Cluster {
	lb := c.GetLbPolicy()
	supported := lb == clusterv3.Cluster_ROUND_ROBIN || lb == clusterv3.Cluster_LEAST_REQUEST || lb == clusterv3.Cluster_RING_HASH
	if c.GetTransportSocket() == nil && supported {
		return c
	}
	c = proto.Clone(c).(*clusterv3.Cluster)
	c.TransportSocket = nil
	switch lb {
	case clusterv3.Cluster_MAGLEV:
		c.LbPolicy, c.LbConfig = clusterv3.Cluster_RING_HASH, nil
	case clusterv3.Cluster_RANDOM:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	return c
}
