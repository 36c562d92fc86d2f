package api

// The release: where nodemesh is installed unless told otherwise.
const (
	DefaultNamespace   = "nodemesh-system"
	DefaultReleaseName = "nodemesh"
)

// Component names: the chart names the controller's Deployment, Service
// and ServiceAccount, and the agent's and node Envoys' DaemonSets and
// ServiceAccounts after them (its _helpers.tpl); Events name them as their
// source.
const (
	ControllerName = "nodemesh-controller"
	AgentName      = "nodemesh-agent"
	EnvoyName      = "nodemesh-envoy"
)

// Objects the controller's authentication relies on, in the controller's
// namespace.
const (
	// ControllerService is the controller's Service: its TLS certificate's
	// names and the resource of the debug endpoints' access check (get
	// services/proxy on it).
	ControllerService = ControllerName
	// NodeProxyServiceAccount is the node Envoys' ServiceAccount: its
	// pods' tokens are served as the node their pod runs on.
	NodeProxyServiceAccount = EnvoyName
	// DebugServiceAccount is the ServiceAccount 'nodemesh proxy-config'
	// requests debug tokens for. It has no API permission but get
	// services/proxy on ControllerService, which is what the controller
	// checks.
	DebugServiceAccount = "nodemesh-debug"
	// CASecret keeps the controller's self-signed CA (CASecretCertKey,
	// CASecretKeyKey).
	CASecret        = "nodemesh-controller-ca"
	CASecretCertKey = "ca.crt"
	CASecretKeyKey  = "ca.key"
	// CABundleConfigMap publishes the CA certificate that xDS clients
	// verify the controller with (key CABundleKey), as istiod's
	// istio-ca-root-cert.
	CABundleConfigMap = "nodemesh-ca-root-cert"
	CABundleKey       = "root-cert.pem"
)

// Labels nodemesh puts on what it creates.
const (
	// PartOfLabel=PartOfValue marks every object of nodemesh (the chart's,
	// the CRDs, the CA Secret and bundle the controller writes).
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOfValue = "nodemesh"
)

// NodeCleanedReason is the reason of the Event an agent records on its
// DaemonSet once it has removed nodemesh from its node during an
// uninstall; the installer waits for one per node.
const NodeCleanedReason = "NodeCleaned"
