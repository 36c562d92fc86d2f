// Package kubeauth authenticates the controller's clients with Kubernetes,
// as istiod does, and keeps the controller's serving CA in Kubernetes.
//
//   - XDS authenticates ADS streams: a projected ServiceAccount token of
//     audience api.XDSAudience, verified with the TokenReview API and
//     bound to a pod; the pod must be a node proxy of this release (its
//     ServiceAccount) running on the node it asks to be served, or a
//     proxyless gRPC client asking with its own node ID (nodeid.go).
//   - Debug authorizes the /debug/ endpoints: a token of audience
//     api.DebugAudience whose user may get services/proxy on the
//     controller's Service (a SubjectAccessReview) — whoever could reach
//     the endpoints through the API server's service proxy.
//   - Verified tokens are cached until they expire (bounded), so a
//     reconnect costs no TokenReview; TokenReviews and pod lookups run a
//     few at a time, each with a timeout.
//   - LoadCA keeps the self-signed CA in a Secret of the controller's
//     namespace; Publisher publishes its certificate in a ConfigMap that
//     the node Envoys mount.
//
// It imports client-go; package xds stays free of it (the interfaces are
// xds.Authenticator and xds.DebugAuthorizer).
package kubeauth
