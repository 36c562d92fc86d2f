package api

// The controller's authentication: both ends agree on these.
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
)
