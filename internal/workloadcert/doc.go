// Package workloadcert obtains the SPIFFE certificates of the workloads of
// one node from Istio's CA, as ztunnel does: a key per workload identity
// (ECDSA P-256, as istio-agent), a CSR naming
// spiffe://<trust-domain>/ns/<ns>/sa/<sa>, and istio.v1.auth's
// IstioCertificateService/CreateCertificate over TLS, authenticated by the
// node component's own projected token (audience istio-ca) and asking for
// the workload's identity through node impersonation (the request metadata
// ImpersonatedIdentity; istiod grants it only to callers listed in
// CA_TRUSTED_NODE_ACCOUNTS, for identities with a pod on the caller's node).
//
// A Manager keeps one certificate per identity of the node's meshed pods,
// rotates it at half its lifetime (istio-agent's SECRET_GRACE_PERIOD_RATIO,
// with its ±1% jitter), retries failures with a bounded backoff, drops an
// identity when its last pod leaves, and hands every change to a Sink (the
// SDS server). Keys never leave the process.
//
// It imports client-go, gRPC and istio.io/api's generated CA client; no
// go-control-plane, nothing of nodemesh but api.
package workloadcert
