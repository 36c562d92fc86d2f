package xds

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
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// forGRPC is the configuration of a proxyless gRPC client, shared by every
// such client of a generation (they see the default class). gRPC reads the
// same route configurations as Envoy, through api_listeners named after the
// targets it dials (xds:///<fqdn>:<port>), with what gRPC cannot use left
// out: Envoy-only clusters (pass-through, black hole, original destination),
// the allow_any virtual host, CORS, and file-based TLS (gRPC takes
// certificates from certificate providers). Timeouts are also given as
// max_stream_duration, which is what gRPC honours (gRFC A31).
func (g *Generation) forGRPC(node string) *Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.grpc == nil {
		g.grpc = g.buildGRPC()
	}
	cfg := *g.grpc
	cfg.Node = node
	return &cfg
}

// buildGRPC builds the gRPC view from the shared configuration, decoded
// (a generation keeps only encodings).
func (g *Generation) buildGRPC() *Config {
	base, err := snapshotResources(snapshot(map[string]*resourceSet{
		resourcev3.RouteType: g.routes, resourcev3.ClusterType: g.clusters,
	}))
	if err != nil {
		// Encodings made by this process always decode.
		g.partDiags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: "Generation"}, "", "gRPC configuration withheld: %v", err)
		base = &envoy.Resources{}
	}
	// The assignments are served as they are (g.endpoints); the checks
	// below only need to know which exist.
	r := &envoy.Resources{}
	for name := range g.endpoints.items {
		r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: name})
	}
	for _, c := range edsOnly(base.Clusters) {
		r.Clusters = append(r.Clusters, g.grpcCluster(c))
	}
	for _, rc := range base.Routes {
		grc := grpcRouteConfig(rc)
		r.Routes = append(r.Routes, grc)
		for _, vh := range grc.GetVirtualHosts() {
			l, err := apiListener(vh.GetName(), grc.GetName())
			if err != nil {
				g.partDiags.Errorf(ir.CodeInvalidXDS, ir.ResourceRef{Kind: envoy.TypeListener, Name: vh.GetName()}, "", "gRPC listener withheld: %v", err)
				continue
			}
			r.Listeners = append(r.Listeners, l)
		}
	}
	g.partDiags = append(g.partDiags, envoy.Repair(r)...)
	cfg := newConfig("", GRPCNode, map[string]*resourceSet{
		resourcev3.ListenerType: encodeSet(r.Listeners),
		resourcev3.RouteType:    encodeSet(r.Routes),
		resourcev3.ClusterType:  encodeSet(r.Clusters),
		resourcev3.EndpointType: g.endpoints,
	})
	cfg.Generation = g.ID
	return cfg
}

func grpcRouteConfig(in *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	rc := proto.Clone(in).(*routev3.RouteConfiguration)
	var vhosts []*routev3.VirtualHost
	for _, vh := range rc.VirtualHosts {
		if vh.GetName() == ir.AllowAnyVirtualHost {
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
func (g *Generation) grpcCluster(c *clusterv3.Cluster) *clusterv3.Cluster {
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
