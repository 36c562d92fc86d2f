// Package meshauth holds the names both ends of the controller's
// authentication agree on: the audiences of the ServiceAccount tokens the
// controller accepts, the header a debug token travels in, and the names
// of the objects the chart creates for it (ServiceAccounts, the CA Secret,
// the CA bundle ConfigMap). The chart's templates spell them too; the
// install package's tests check they match.
//
// It is a leaf: it imports nothing.
package meshauth

const (
	// XDSAudience is the audience of the tokens xDS clients present: the
	// node Envoys' projected ServiceAccount token, a proxyless gRPC
	// client's. A token of this audience is useless against the API
	// server, and a token for the API server (or any other audience) is
	// refused by the controller.
	XDSAudience = "nodemesh-xds"
	// DebugAudience is the audience of the tokens that read the
	// controller's /debug/ endpoints ('nodemesh proxy-config' requests one
	// for DebugServiceAccount).
	DebugAudience = "nodemesh-debug"
	// DebugTokenHeader carries a debug token through the API server's
	// service proxy, which consumes the Authorization header (it
	// authenticates the user with it) and forwards no identity. Talking
	// to the controller directly, "Authorization: Bearer" works too.
	DebugTokenHeader = "X-Nodemesh-Token"

	// ControllerService is the controller's Service: its TLS certificate's
	// names and the resource of the debug endpoints' access check (get
	// services/proxy on it).
	ControllerService = "nodemesh-controller"
	// NodeProxyServiceAccount is the node Envoys' ServiceAccount, in the
	// controller's namespace: its pods' tokens are served as the node
	// their pod runs on.
	NodeProxyServiceAccount = "nodemesh-envoy"
	// DebugServiceAccount is the ServiceAccount 'nodemesh proxy-config'
	// requests debug tokens for. It has no API permission but get
	// services/proxy on ControllerService, which is what the controller
	// checks.
	DebugServiceAccount = "nodemesh-debug"
	// CASecret keeps the controller's self-signed CA (CASecretCertKey,
	// CASecretKeyKey), in the controller's namespace.
	CASecret        = "nodemesh-controller-ca"
	CASecretCertKey = "ca.crt"
	CASecretKeyKey  = "ca.key"
	// CABundleConfigMap publishes the CA certificate that xDS clients
	// verify the controller with (key CABundleKey), as istiod's
	// istio-ca-root-cert.
	CABundleConfigMap = "nodemesh-ca-root-cert"
	CABundleKey       = "root-cert.pem"
)
