package xds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authenticator decides who an xDS client is from the bearer token its
// stream carries (gRPC metadata "authorization: Bearer <token>"). The
// controller's is xds/kubeauth (a projected ServiceAccount token verified
// with TokenReview); tests use xdstest's. There is no way to serve xDS
// without one.
type Authenticator interface {
	// Authenticate returns the principal the token belongs to, or a
	// *Refusal. It is called before the stream's handler runs, with a
	// context bounded by AuthTimeout; it must not block beyond it.
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// Principal is an authenticated xDS client.
type Principal interface {
	// AuthorizeNode returns nil when the principal may be served as node,
	// or a *Refusal. It is called for every request that carries a node,
	// on the stream's receive path: it must not block (no API calls).
	AuthorizeNode(node *corev3.Node) error
	// String names the principal in logs and refusals (never the token).
	String() string
}

// Refusal is why a client was refused: a gRPC code (Unauthenticated when
// its credential is missing or invalid, PermissionDenied when it is valid
// but does not allow what was asked, Unavailable when it could not be
// checked), a reason (a metric label: a short fixed word, never client
// data) and a message for the client.
type Refusal struct {
	Code    codes.Code
	Reason  string
	Message string
}

// Refusal reasons (the reason label of nodemesh_auth_refusals_total).
const (
	ReasonNoToken      = "no-token"       // no bearer token
	ReasonBadToken     = "bad-token"      // not a token of ours: malformed, expired, other audience
	ReasonRejected     = "rejected"       // the API server does not accept it
	ReasonUnavailable  = "unavailable"    // it could not be checked (API server down, overloaded)
	ReasonNotPodBound  = "not-pod-bound"  // not bound to a pod
	ReasonPod          = "pod"            // the bound pod is gone, replaced or finished
	ReasonNoNode       = "no-node"        // the first request names no node
	ReasonWrongNode    = "wrong-node"     // the node ID is not the client's
	ReasonNodeSwitch   = "node-switch"    // a later request names another node than the stream's
	ReasonForbidden    = "forbidden"      // authenticated, but not allowed (debug endpoints)
	ReasonNotNodeProxy = "not-node-proxy" // a pod that is not a node proxy asks to be served as a node
)

func (r *Refusal) Error() string { return r.Message }

// GRPCStatus makes a Refusal a gRPC status error.
func (r *Refusal) GRPCStatus() *status.Status { return status.New(r.Code, r.Message) }

// Refuse returns a *Refusal.
func Refuse(code codes.Code, reason, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// asRefusal turns any error into a Refusal (an error that is not one is an
// internal failure: Unavailable, so that the client retries).
func asRefusal(err error) *Refusal {
	var r *Refusal
	if errors.As(err, &r) {
		return r
	}
	return Refuse(codes.Unavailable, ReasonUnavailable, "cannot authenticate: %v", err)
}

// AuthMetrics count refused clients of the xDS and debug endpoints.
type AuthMetrics struct {
	// Refusals is by endpoint (xds, debug) and reason; no label carries
	// client data (node IDs, names, tokens), so a client cannot grow it.
	Refusals *prometheus.CounterVec
}

// NewAuthMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewAuthMetrics(reg prometheus.Registerer) *AuthMetrics {
	m := &AuthMetrics{Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemesh_auth_refusals_total",
		Help: "Clients refused by the xDS server or the debug endpoints, by endpoint and reason.",
	}, []string{"endpoint", "reason"})}
	if reg != nil {
		reg.MustRegister(m.Refusals)
	}
	return m
}

// streamAuth authenticates every stream and authorizes every node ID its
// requests name.
type streamAuth struct {
	auth    Authenticator
	metrics *AuthMetrics
	log     *refusalLog
}

// interceptor authenticates the stream's token before the handler runs,
// then checks the node of every request the handler receives: the first
// request must name a node the principal may be served, and any later
// request that names a node (go-control-plane's servers switch a stream to
// it) must name the same one. A refused request never reaches the handler:
// RecvMsg fails, go-control-plane ends the stream, and the interceptor
// returns the refusal (go-control-plane returns nil for a failed receive).
func (a *streamAuth) interceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	p, err := a.authenticate(ctx)
	if err != nil {
		return a.refuse(ctx, "", err)
	}
	s := &authStream{ServerStream: ss, a: a, principal: p}
	herr := handler(srv, s)
	if r := s.refusal(); r != nil {
		return r
	}
	return herr
}

// AuthTimeout bounds a stream's authentication (TokenReview and pod lookup
// on a cache miss).
const AuthTimeout = 10 * time.Second

func (a *streamAuth) authenticate(ctx context.Context) (Principal, error) {
	token, err := BearerToken(metadata.ValueFromIncomingContext(ctx, "authorization"))
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, AuthTimeout)
	defer cancel()
	p, err := a.auth.Authenticate(actx, token)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, Refuse(codes.Unauthenticated, ReasonRejected, "token not accepted")
	}
	return p, nil
}

// BearerToken extracts the token of an "authorization: Bearer <token>"
// value (one value, case-insensitive scheme).
func BearerToken(values []string) (string, error) {
	if len(values) == 0 {
		return "", Refuse(codes.Unauthenticated, ReasonNoToken,
			`no credentials: send a projected ServiceAccount token as "authorization: Bearer <token>"`)
	}
	if len(values) > 1 {
		return "", Refuse(codes.Unauthenticated, ReasonBadToken, "more than one authorization value")
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", Refuse(codes.Unauthenticated, ReasonBadToken, `the authorization value is not "Bearer <token>"`)
	}
	return token, nil
}

// refuse counts and logs a refusal and returns it as a status error.
func (a *streamAuth) refuse(ctx context.Context, principal string, err error) error {
	r := asRefusal(err)
	a.metrics.Refusals.WithLabelValues("xds", r.Reason).Inc()
	client := ""
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		client = pr.Addr.String()
		if i := strings.LastIndexByte(client, ':'); i > 0 {
			client = client[:i] // the host: a client reconnects from new ports
		}
	}
	a.log.refused("xds", client, principal, r)
	return r
}

// authStream checks the node of every request received.
type authStream struct {
	grpc.ServerStream
	a         *streamAuth
	principal Principal

	mu      sync.Mutex
	node    *corev3.Node // the node the stream is authorized for
	refused error
}

type noded interface{ GetNode() *corev3.Node }

func (s *authStream) RecvMsg(m any) error {
	if err := s.refusal(); err != nil {
		return err
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	req, ok := m.(noded)
	if !ok {
		return nil
	}
	node := req.GetNode()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch {
	case node == nil && s.node == nil:
		err = Refuse(codes.PermissionDenied, ReasonNoNode, "the first request of a stream must name its node")
	case node == nil:
		return nil // the stream's node, as go-control-plane fills it in
	case s.node != nil && !sameNode(node, s.node):
		err = Refuse(codes.PermissionDenied, ReasonNodeSwitch, "a stream serves one node: %q, not %q", NodeIDForMessage(s.node.GetId()), NodeIDForMessage(node.GetId()))
	default:
		// Every request that names a node is checked against the principal,
		// even the same node again: the check is cheap and pure.
		if aerr := s.principal.AuthorizeNode(node); aerr != nil {
			err = aerr
		}
	}
	if err != nil {
		s.refused = s.a.refuse(s.Context(), s.principal.String(), err)
		return s.refused
	}
	s.node = node
	return nil
}

// SendMsg sends nothing once the stream was refused.
func (s *authStream) SendMsg(m any) error {
	if err := s.refusal(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

func (s *authStream) refusal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// NodeIDForMessage bounds a client-supplied node ID quoted in a message or
// log line (a DNS name is at most 253 bytes; Istio's proxyless IDs are a
// little longer).
func NodeIDForMessage(id string) string { return truncate(id, 320) }

// sameNode compares what authorization and serving depend on: the ID and
// the kind (a gRPC client and an Envoy of the same ID get different
// configurations).
func sameNode(a, b *corev3.Node) bool {
	return a.GetId() == b.GetId() && KindOf(a) == KindOf(b)
}
