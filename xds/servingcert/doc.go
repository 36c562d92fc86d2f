// Package servingcert makes and serves the xDS server's TLS certificate: a
// self-signed CA (istiod's model: the controller is its own CA for the one
// certificate it serves), leaf certificates it issues for the controller's
// DNS names and renews before they expire, and a source that serves a
// certificate from files (an existing Secret, e.g. cert-manager's) and
// reloads it when they change.
//
// It is plain crypto/x509 and crypto/tls: where the CA is kept (a
// Kubernetes Secret) and where its bundle is published (a ConfigMap) is
// xds/kubeauth's business. It imports no client-go.
package servingcert
