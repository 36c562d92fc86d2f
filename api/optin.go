package api

// The opt-in contract (ARCHITECTURE.md, "Opt-in and coexistence"). A
// namespace opts in with DataplaneModeLabel=DataplaneModeNodemesh (Istio
// ambient uses the same label with "ambient", Kmesh with "Kmesh"); a pod of
// an opted-in namespace opts out with the label set to DataplaneModeNone.
const (
	DataplaneModeLabel    = "istio.io/dataplane-mode"
	DataplaneModeNodemesh = "nodemesh"
	DataplaneModeNone     = "none"
	DataplaneModeAmbient  = "ambient"
)

// What Istio's sidecar mode uses, which nodemesh leaves to Istio: a
// namespace labelled for injection (IstioInjectionLabel=IstioInjectionEnabled,
// or any IstioRevisionLabel) and a pod with an IstioProxyContainer are not
// nodemesh's to redirect.
const (
	IstioInjectionLabel   = "istio-injection"
	IstioInjectionEnabled = "enabled"
	IstioRevisionLabel    = "istio.io/rev"
	// SidecarInjectLabel is the per-pod injection switch (true/false).
	SidecarInjectLabel  = "sidecar.istio.io/inject"
	IstioProxyContainer = "istio-proxy"
	// IstioProxyUID is the UID (and GID) Istio's proxies run as; their
	// connections are never redirected.
	IstioProxyUID = 1337
	// IstioSkipMark is the socket mark of traffic Istio's proxies send
	// that must not be captured again.
	IstioSkipMark = 0x539
	// InboundListenerMark is the SO_MARK of the node Envoy's inbound
	// listener (socket_options SOL_SOCKET/SO_MARK, STATE_PREBIND), which the
	// connections it accepts inherit: the eBPF capture hands packets only to
	// sockets that carry it (bpf.ProxyInboundSocketMark).
	InboundListenerMark = 0x0800_0000
)
