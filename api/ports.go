package api

// Ports. They follow Istio's so that Istio users and tools recognise them
// (ARCHITECTURE.md).
const (
	// OutboundCapturePort is the node Envoy's outbound listener: the eBPF
	// redirect sends opted-in pods' connections to Services here.
	OutboundCapturePort = 15001
	// InboundCapturePort is the node Envoy's inbound listener.
	InboundCapturePort = 15006
	// EnvoyAdminPort is the node Envoy's admin interface (localhost only).
	EnvoyAdminPort = 15000
	// EnvoyStatsPort serves the node Envoy's Prometheus stats.
	EnvoyStatsPort = 15090
	// HBONEPort is Istio's HBONE tunnel port; traffic to it is never
	// redirected.
	HBONEPort = 15008
	// XDSPort is the controller's ADS gRPC server (TLS).
	XDSPort = 15010
	// MonitoringPort is the controller's /healthz, /readyz, /metrics and
	// (authenticated) /debug/ endpoints.
	MonitoringPort = 15014
	// AgentMetricsPort is the agent's /healthz, /readyz and /metrics on the
	// host network (the chart's agent.metricsPort default and the agent's
	// --metrics-address default).
	AgentMetricsPort = 15020
)
