package xds

import (
	"context"
	"errors"
	"net"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryservice "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
)

// DefaultPort is the xDS port, as Istio's (plaintext, in-cluster).
const DefaultPort = 15010

// Server is the ADS gRPC server (state of the world and delta).
type Server struct {
	grpc *grpc.Server
}

// NewServer serves a cache. ctx bounds the xDS streams' lifetime.
func NewServer(ctx context.Context, c *Cache) *Server {
	if c.budget == nil {
		c.budget = newSendBudget(DefaultSendBudget)
	}
	gs := grpc.NewServer(
		grpc.StreamInterceptor(c.budget.interceptor),
		grpc.MaxConcurrentStreams(1<<20),
		// Node Envoys keep their streams open for days; let them probe.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Responses are few and large (a node's clusters in one message):
		// no pooled buffers for them (codec.go).
		grpc.ForceServerCodecV2(plainCodec{}),
		experimental.BufferPool(mem.NopBufferPool{}),
		// Idle streams (most of them, most of the time) give their write
		// buffer back.
		grpc.SharedWriteBuffer(true),
	)
	srv := serverv3.NewServer(ctx, c, c)
	discoveryservice.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	return &Server{grpc: gs}
}

// Serve accepts connections until Stop.
func (s *Server) Serve(l net.Listener) error {
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops accepting streams and waits for open ones to finish, up to the
// context's deadline, then closes them.
func (s *Server) Stop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}
