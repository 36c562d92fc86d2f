package sds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/nodemesh/nodemesh/internal/workloadcert"
)

// RootCASecret is the name of the trust bundle secret (Istio's
// security.RootCertReqResourceName).
const RootCASecret = "ROOTCA"

// Options configure a Server.
type Options struct {
	// Socket is the unix socket path; its directory is created or tightened
	// to 0700.
	Socket string
	// AllowedUIDs may connect (SO_PEERCRED); default: this process's user
	// only.
	AllowedUIDs []uint32
	// TrustAnchors are PEM roots always in ROOTCA (the mesh's root,
	// istio-ca-root-cert), besides the roots the CA returns with each
	// certificate.
	TrustAnchors []byte
	Logger       *slog.Logger
}

// Server is the node's SDS server.
type Server struct {
	log   *slog.Logger
	cache *cachev3.LinearCache
	grpc  *grpc.Server
	ln    net.Listener

	mu      sync.Mutex
	anchors []byte
	roots   map[string][]byte // identity → the root its certificate chains to
	// bundle is ROOTCA as last published (bundleSet: published at all).
	bundle    []byte
	bundleSet bool
}

// Listen prepares the socket (socket.go) and returns a Server; Serve
// serves it.
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := listenPrivate(o.Socket)
	if err != nil {
		return nil, err
	}
	uids := o.AllowedUIDs
	if len(uids) == 0 {
		uids = []uint32{uint32(euid())}
	}
	s := &Server{
		log:     o.Logger,
		cache:   cachev3.NewLinearCache(resourcev3.SecretType, cachev3.WithLogger(slogAdapter{o.Logger})),
		ln:      ln,
		anchors: bytes.TrimSpace(o.TrustAnchors),
		roots:   map[string][]byte{},
	}
	s.grpc = grpc.NewServer(grpc.Creds(peerCredentials{allowed: uids, log: o.Logger}))
	secretv3.RegisterSecretDiscoveryServiceServer(s.grpc, serverv3.NewServer(context.Background(), s.cache, nil))
	s.publishRoots()
	return s, nil
}

// Serve serves until Stop.
func (s *Server) Serve() error {
	if err := s.grpc.Serve(s.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("sds: %w", err)
	}
	return nil
}

// Stop ends every stream and closes the socket.
func (s *Server) Stop() { s.grpc.Stop() }

// Update serves iss as the secret named by its SPIFFE ID and adds its
// root to ROOTCA (workloadcert.Sink). Both change in one cache update, so
// a stream sees the certificate and the root it chains to together.
func (s *Server) Update(iss *workloadcert.Issued) {
	name := iss.ID.String()
	sec := &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(iss.ChainPEM),
		PrivateKey:       inline(iss.KeyPEM),
	}}}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roots[name] = bytes.TrimSpace(iss.RootPEM)
	update, del := s.rootsLocked()
	update[name] = sec
	if err := s.cache.UpdateResources(update, del); err != nil {
		s.log.Error("sds: update secret", "name", name, "err", err)
	}
}

// Remove stops serving an identity's secret (workloadcert.Sink); its root
// leaves ROOTCA unless another certificate or the anchors carry it.
func (s *Server) Remove(id workloadcert.ID) {
	name := id.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.roots, name)
	update, del := s.rootsLocked()
	if err := s.cache.UpdateResources(update, append(del, name)); err != nil {
		s.log.Error("sds: delete secret", "name", name, "err", err)
	}
}

func (s *Server) publishRoots() {
	s.mu.Lock()
	defer s.mu.Unlock()
	update, del := s.rootsLocked()
	if err := s.cache.UpdateResources(update, del); err != nil {
		s.log.Error("sds: trust bundle", "err", err)
	}
}

// rootsLocked computes ROOTCA: the distinct roots of the anchors and of
// every served certificate, sorted (two are served at once during a root
// rotation). It returns ROOTCA to update only when its content changed (no
// spurious push), or to delete when there is no root at all: a transport
// socket that needs it then waits (fails closed) rather than trusting
// nothing.
func (s *Server) rootsLocked() (map[string]cachetypes.Resource, []string) {
	update := map[string]cachetypes.Resource{}
	set := map[string]bool{}
	if len(s.anchors) > 0 {
		set[string(s.anchors)] = true
	}
	for _, r := range s.roots {
		set[string(r)] = true
	}
	var b bytes.Buffer
	for _, r := range slices.Sorted(maps.Keys(set)) {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	if bytes.Equal(b.Bytes(), s.bundle) && s.bundleSet {
		return update, nil
	}
	s.bundle, s.bundleSet = b.Bytes(), true
	if len(set) == 0 {
		return update, []string{RootCASecret}
	}
	update[RootCASecret] = &tlsv3.Secret{Name: RootCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(b.Bytes()),
	}}}
	return update, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: slices.Clone(b)}}
}

var _ workloadcert.Sink = (*Server)(nil)

// slogAdapter is go-control-plane's logger on slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debugf(format string, args ...any) { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a slogAdapter) Infof(format string, args ...any)  { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a slogAdapter) Warnf(format string, args ...any)  { a.l.Warn(fmt.Sprintf(format, args...)) }
func (a slogAdapter) Errorf(format string, args ...any) { a.l.Error(fmt.Sprintf(format, args...)) }
