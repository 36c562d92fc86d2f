package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryservice "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/nodemesh/nodemesh/api"
)

// DefaultPort is the xDS port, as Istio's (TLS, clients authenticated by a
// projected ServiceAccount token).
const DefaultPort = api.XDSPort

// Server is the ADS gRPC server (state of the world and delta).
type Server struct {
	grpc *grpc.Server
}

// ServerOptions say how clients are authenticated and how the server is
// reached.
type ServerOptions struct {
	// Auth authenticates every stream and authorizes every node its
	// requests name. Required: there is no unauthenticated xDS server.
	Auth Authenticator
	// TLS is the server's TLS configuration (its certificate); nil serves
	// plaintext, which only 'nodemesh-controller run
	// --xds-insecure-plaintext' asks for (local development): the bearer
	// tokens then cross the network in the clear.
	TLS *tls.Config
	// MaxConnectionAge closes a connection after about this long (with a
	// few seconds' grace), so a client re-authenticates with its current
	// token and a token that expired or whose pod is gone stops being
	// served, as istiod does (30m). Zero: connections live forever.
	MaxConnectionAge time.Duration
	// Logger receives refusals (throttled); nil discards them.
	Logger *slog.Logger
	// Metrics counts refusals; nil counts into unregistered metrics.
	Metrics *AuthMetrics
}

// NewServer serves a cache. ctx bounds the xDS streams' lifetime.
func NewServer(ctx context.Context, c *Cache, o ServerOptions) (*Server, error) {
	if o.Auth == nil {
		return nil, errors.New("xDS server: an authenticator is required")
	}
	if o.Metrics == nil {
		o.Metrics = NewAuthMetrics(nil)
	}
	if c.budget == nil {
		c.budget = newSendBudget(DefaultSendBudget)
	}
	auth := &streamAuth{auth: o.Auth, metrics: o.Metrics, log: newRefusalLog(o.Logger)}
	params := keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	if o.MaxConnectionAge > 0 {
		params.MaxConnectionAge, params.MaxConnectionAgeGrace = o.MaxConnectionAge, 10*time.Second
	}
	opts := []grpc.ServerOption{
		// Authentication first: a refused stream costs no send budget.
		grpc.ChainStreamInterceptor(auth.interceptor, c.budget.interceptor),
		// Unary xDS does not exist; refuse any unary call the same way.
		grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, errUnary
		}),
		grpc.MaxConcurrentStreams(1 << 20),
		// Node Envoys keep their streams open for days; let them probe.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(params),
		// Responses are few and large (a node's clusters in one message):
		// no pooled buffers for them (codec.go).
		grpc.ForceServerCodecV2(plainCodec{}),
		experimental.BufferPool(mem.NopBufferPool{}),
		// Idle streams (most of them, most of the time) give their write
		// buffer back.
		grpc.SharedWriteBuffer(true),
	}
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	gs := grpc.NewServer(opts...)
	srv := serverv3.NewServer(ctx, c, c)
	discoveryservice.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	return &Server{grpc: gs}, nil
}

// errUnary refuses the services' unary Fetch methods (REST-style xDS):
// nothing uses them, and they would bypass the stream's node checks.
var errUnary = status.Error(codes.Unimplemented, "xDS is served on streams only (the Fetch methods are disabled)")

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
