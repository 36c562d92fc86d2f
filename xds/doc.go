// Package xds serves translated configuration to node Envoys and proxyless
// gRPC clients over ADS (state of the world and delta).
//
// A Generation is the configuration of every node computed from one state of
// the cluster: the default class's resources are built and validated once and
// shared; each node adds its own listener and the route configurations of its
// source classes. Cache wraps go-control-plane's snapshot cache with what the
// snapshot cache lacks: content-hash versions (an unchanged resource keeps its
// version across generations and controller restarts), per-resource versions
// for delta xDS, and NACK safety — a node that rejects a configuration is put
// back on the last one it accepted and is not sent the rejected content again.
//
// Server serves it over ADS to authenticated clients only: every stream's
// bearer token goes through an Authenticator before the handler runs, and
// the node of every request it receives is checked against what that
// client may be served (auth.go); Debug authorizes /debug/ the same way.
// The Kubernetes implementations (TokenReview, SubjectAccessReview) are in
// xds/kubeauth, the serving certificate in xds/servingcert.
//
// The watch → translate → push loop that feeds it from a live cluster is in
// xds/watch. This package imports translate and go-control-plane, never
// client-go; the xds packages reach the translator through its facade
// (package translate) and translate/ir only, and never import the agent or
// the installer (internal/archtest).
package xds
