// Package sds serves workload certificates to the node Envoy over the
// Secret Discovery Service, on a unix socket only the node's proxy can
// reach. It is go-control-plane's SDS server over a LinearCache of
// secrets: one tls_certificate secret per workload identity, named by its
// SPIFFE ID, and the trust bundle as the validation_context secret
// "ROOTCA" — Istio's names, so transport sockets read like istiod's.
//
// Whoever connects to the socket is served private keys, so the socket is
// guarded three ways (socket.go): its directory is made 0700 and must be
// owned by this process's user (a symlink or someone else's directory is
// refused), the socket is 0600, and every connection's peer credentials
// (SO_PEERCRED) must name an allowed user before gRPC reads a byte.
//
// The certificates come from internal/workloadcert (Server is its Sink).
// Like the rest of xds it imports go-control-plane and never the agent.
package sds
