package api

// Istio mTLS (docs/design/mtls.md): the node's SDS server and the node
// Envoy agree on the socket; the SDS server's token for Istio's CA has
// Istio's audience.
const (
	// SDSSocket is the node's SDS server's unix socket as both containers
	// mount it.
	SDSSocket = "/var/run/nodemesh/sds/socket"
	// IstioCAAudience is the audience of the token istiod's CA accepts.
	IstioCAAudience = "istio-ca"
)
