package xdstest

import (
	"context"
	"errors"
	"fmt"
	"io"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// RawADS is one ADS stream, state of the world or delta, on which a test
// plays a client that says what it likes (another node than its token's, a
// node switch, no node): what an attacker would send.
type RawADS struct {
	delta bool
	conn  *grpc.ClientConn
	sotw  discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstr  discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	// nonce and version of the last response: a later request ACKs it, as
	// a client's would (go-control-plane ignores a request with a stale
	// nonce).
	nonce, version string
}

// OpenRawADS dials addr with opts (DialOptions) and opens a stream; the
// error is the stream's opening (a failed TLS handshake shows here or at
// the first Next).
func OpenRawADS(ctx context.Context, addr string, delta bool, opts ...grpc.DialOption) (*RawADS, error) {
	conn, err := Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	c := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	s := &RawADS{delta: delta, conn: conn}
	if delta {
		s.dstr, err = c.DeltaAggregatedResources(ctx)
	} else {
		s.sotw, err = c.StreamAggregatedResources(ctx)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection.
func (s *RawADS) Close() error { return s.conn.Close() }

// RequestClusters subscribes to every cluster as node (nil: no node),
// acknowledging the last response if there was one.
func (s *RawADS) RequestClusters(node *corev3.Node) error {
	if s.delta {
		return s.dstr.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: s.nonce})
	}
	return s.sotw.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: s.nonce, VersionInfo: s.version})
}

// Next receives one response and returns the names of its resources.
func (s *RawADS) Next() ([]string, error) {
	var names []string
	if s.delta {
		r, err := s.dstr.Recv()
		if err != nil {
			return nil, err
		}
		s.nonce = r.GetNonce()
		for _, res := range r.GetResources() {
			names = append(names, res.GetName())
		}
		return names, nil
	}
	r, err := s.sotw.Recv()
	if err != nil {
		return nil, err
	}
	s.nonce, s.version = r.GetNonce(), r.GetVersionInfo()
	for _, a := range r.GetResources() {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			names = append(names, a.GetTypeUrl()) // not a cluster: still something received
			continue
		}
		names = append(names, c.GetName())
	}
	return names, nil
}

// Drain receives until the stream ends and returns every resource name
// received and the error the stream ended with.
func (s *RawADS) Drain() ([]string, error) {
	var all []string
	for {
		names, err := s.Next()
		if err != nil {
			return all, err
		}
		all = append(all, names...)
	}
}

// Attempt plays a client that asks for its clusters as first and, when
// later is set, once more as later after the first response, then receives
// until the stream ends (beforeDrain, if set, runs just before: a test
// ends a stream that is not refused with it). It returns every resource
// name received and the error the stream ended with.
func (s *RawADS) Attempt(first, later *corev3.Node, beforeDrain func()) ([]string, error) {
	if err := s.RequestClusters(first); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var got []string
	if later != nil {
		names, err := s.Next()
		if err != nil {
			return nil, fmt.Errorf("the client's own configuration: %w", err)
		}
		got = names
		if err := s.RequestClusters(later); err != nil && !errors.Is(err, io.EOF) {
			return got, err
		}
	}
	if beforeDrain != nil {
		beforeDrain()
	}
	rest, err := s.Drain()
	return append(got, rest...), err
}

// EnvoyNode is a node Envoy's node.
func EnvoyNode(id string) *corev3.Node { return &corev3.Node{Id: id} }

// GRPCNode is a proxyless gRPC client's node (metadata GENERATOR=grpc).
func GRPCNode(id string) *corev3.Node {
	return &corev3.Node{Id: id, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"GENERATOR": structpb.NewStringValue("grpc")}}}
}
