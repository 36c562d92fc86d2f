package xds

import (
	"errors"
	"path/filepath"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/api"
)

// SDSClusterName is the static cluster of the node's SDS server (Istio's
// name): transport sockets fetch workload certificates (secrets named by
// SPIFFE ID) and ROOTCA through it.
const SDSClusterName = "sds-grpc"

// DefaultSDSSocket is where the node Envoy DaemonSet mounts the SDS
// server's socket (mtls.enabled).
const DefaultSDSSocket = api.SDSSocket

// sdsCluster is Istio's sds-grpc cluster: a unix socket (pipe address),
// HTTP/2 for gRPC.
func sdsCluster(socket string) (*clusterv3.Cluster, error) {
	if !filepath.IsAbs(socket) {
		return nil, errors.New("the SDS socket must be an absolute path")
	}
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                 SDSClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: SDSClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
					Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: socket}},
				}}},
			}}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts},
	}, nil
}

// validateSDSCluster: the sds-grpc cluster reaches the node's SDS server
// only on its unix socket (never a network address, where another host
// could answer with certificates), over HTTP/2.
func validateSDSCluster(c *clusterv3.Cluster) error {
	eps := c.GetLoadAssignment().GetEndpoints()
	if c.GetType() != clusterv3.Cluster_STATIC || len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 ||
		!filepath.IsAbs(eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath()) {
		return errors.New("bootstrap: the " + SDSClusterName + " cluster must be one static unix socket (pipe) endpoint")
	}
	opts := &httpv3.HttpProtocolOptions{}
	if a := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a == nil || a.UnmarshalTo(opts) != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		return errors.New("bootstrap: the " + SDSClusterName + " cluster must speak HTTP/2 (gRPC)")
	}
	return nil
}

// SDSConfigSource is how a transport socket names the node's SDS server:
// delta gRPC to the sds-grpc cluster. Delta, because only delta SDS can
// tell Envoy that a secret is gone (state-of-the-world SDS responses carry
// changed secrets only).
func SDSConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_DELTA_GRPC,
			TransportApiVersion:       corev3.ApiVersion_V3,
			SetNodeOnFirstMessageOnly: true,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSClusterName},
			}}},
		}},
	}
}
