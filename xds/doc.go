// Package xds serves translated configuration to node Envoys and proxyless
// gRPC clients over ADS (state of the world and delta).
//
// A Generation is the configuration of every node computed from one state of
// the cluster, as served. The translation — the default class, each node's
// source classes, its listener and class route configurations, endpoint-only
// recomputation, the gRPC clients' view, diagnostics — is the translator's
// (translate.Generation); this package keeps its results encoded once
// (wire.go) in resource sets shared by every node with the same content,
// with content-digest versions, and assembles each node's snapshot from
// them. Cache wraps go-control-plane's snapshot cache with what the
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
// xds/watch. This package (and every package under it) imports the
// translator only through its facade, translate, and translate/ir; it
// imports go-control-plane, never client-go (xds/watch and xds/kubeauth do),
// and never the agent or the installer (internal/archtest enforces it).
package xds
