package ir

// Discovery says how a cluster finds its endpoints.
type Discovery string

const (
	// DiscoveryEDS: endpoints come from a ClusterEndpoints of the same name.
	DiscoveryEDS Discovery = "EDS"
	// DiscoveryOriginalDst: connect to the connection's original destination
	// (headless Services, PassthroughCluster, loadBalancer PASSTHROUGH).
	DiscoveryOriginalDst Discovery = "ORIGINAL_DST"
	// DiscoveryStatic: a fixed (possibly empty) endpoint list; BlackHoleCluster.
	DiscoveryStatic Discovery = "STATIC"
	// DiscoveryStrictDNS resolves every host of the cluster's own endpoint
	// list and balances over all the addresses (ServiceEntry resolution
	// DNS, Istio's STRICT_DNS).
	DiscoveryStrictDNS Discovery = "STRICT_DNS"
	// DiscoveryLogicalDNS connects to the first address the name resolves
	// to (ServiceEntry resolution DNS_ROUND_ROBIN, Istio's LOGICAL_DNS).
	DiscoveryLogicalDNS Discovery = "LOGICAL_DNS"
)

// IsDNS says whether the cluster resolves its endpoints' host names itself.
func (d Discovery) IsDNS() bool { return d == DiscoveryStrictDNS || d == DiscoveryLogicalDNS }

// LBPolicy is Envoy's load-balancing policy.
type LBPolicy string

const (
	LBLeastRequest    LBPolicy = "LEAST_REQUEST"
	LBRoundRobin      LBPolicy = "ROUND_ROBIN"
	LBRandom          LBPolicy = "RANDOM"
	LBRingHash        LBPolicy = "RING_HASH"
	LBMaglev          LBPolicy = "MAGLEV"
	LBClusterProvided LBPolicy = "CLUSTER_PROVIDED"
)

// Protocol is the application protocol of a Service port after Istio's
// protocol selection.
type Protocol string

const (
	ProtocolHTTP    Protocol = "HTTP"
	ProtocolHTTP2   Protocol = "HTTP2"
	ProtocolGRPC    Protocol = "GRPC"
	ProtocolGRPCWeb Protocol = "GRPC-Web"
	ProtocolTCP     Protocol = "TCP"
	ProtocolTLS     Protocol = "TLS"
	ProtocolHTTPS   Protocol = "HTTPS"
	ProtocolMongo   Protocol = "Mongo"
	ProtocolMySQL   Protocol = "MySQL"
	ProtocolRedis   Protocol = "Redis"
	ProtocolUDP     Protocol = "UDP"
	// ProtocolUnknown ports are detected at run time (Istio's protocol sniffing).
	ProtocolUnknown Protocol = "Unknown"
)

// IsHTTP reports whether the port is served by the HTTP connection manager.
func (p Protocol) IsHTTP() bool {
	switch p {
	case ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolGRPCWeb:
		return true
	}
	return false
}

// IsHTTP2 reports whether upstream connections must speak HTTP/2.
func (p Protocol) IsHTTP2() bool {
	return p == ProtocolHTTP2 || p == ProtocolGRPC
}

// ServiceRef identifies the Service behind a cluster.
type ServiceRef struct {
	Host      string `json:"host"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// Cluster is one upstream cluster with its policies.
type Cluster struct {
	Name      string      `json:"name"`
	Service   *ServiceRef `json:"service,omitempty"`
	Port      uint32      `json:"port,omitempty"`
	Subset    string      `json:"subset,omitempty"`
	Protocol  Protocol    `json:"protocol,omitempty"`
	Discovery Discovery   `json:"discovery"`
	// Origin is the DestinationRule whose policy applies, if any.
	Origin *ResourceRef `json:"origin,omitempty"`
	// LoadAssignment are the endpoints of a DNS cluster, which Envoy
	// resolves itself: host names or addresses, carried in the cluster as
	// Istio does (DNS clusters have no EDS assignment).
	LoadAssignment []Endpoint `json:"loadAssignment,omitempty"`
	// OriginalDstPort is the port an ORIGINAL_DST cluster connects to
	// instead of the dialled one (ServiceEntry resolution NONE with
	// targetPort: Istio's upstream_port_override).
	OriginalDstPort uint32 `json:"originalDstPort,omitempty"`

	ConnectTimeout Duration     `json:"connectTimeout"`
	LoadBalancer   LoadBalancer `json:"loadBalancer"`
	// CircuitBreaker is nil only for BlackHoleCluster, as in Istio.
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// HealthyPanicThreshold in percent; Istio sets 0 (panic mode off).
	HealthyPanicThreshold *float64          `json:"healthyPanicThreshold,omitempty"`
	HTTP                  *HTTPOptions      `json:"http,omitempty"`
	TCPKeepalive          *TCPKeepalive     `json:"tcpKeepalive,omitempty"`
	Outlier               *OutlierDetection `json:"outlierDetection,omitempty"`
	TLS                   *UpstreamTLS      `json:"tls,omitempty"`
	// IstioMTLS is Istio mutual TLS with the client pod's own workload
	// certificate (auto-mTLS, or DestinationRule ISTIO_MUTUAL): the
	// certificate depends on the client, so the socket is chosen per client
	// on each node (see ClientIdentity). Only with Options.IstioMTLS.
	IstioMTLS *IstioMTLS `json:"istioMTLS,omitempty"`
}

// IstioMTLS is Istio's ISTIO_MUTUAL client TLS of a cluster, without the
// certificate (which is the client's).
type IstioMTLS struct {
	// Auto is Istio's auto-mTLS: only endpoints that carry tlsMode istio
	// (pods with a sidecar) get mTLS, the others plaintext. Otherwise
	// (DestinationRule ISTIO_MUTUAL) every endpoint gets mTLS.
	Auto bool `json:"auto,omitempty"`
	// SNI is outbound_.PORT_.SUBSET_.HOST unless the DestinationRule sets one.
	SNI string `json:"sni"`
	// SubjectAltNames are the destination's SPIFFE IDs (its service
	// accounts) unless the DestinationRule sets them.
	SubjectAltNames []string `json:"subjectAltNames,omitempty"`
	ALPN            []string `json:"alpn"`
	// InsecureSkipVerify is the DestinationRule's (SAN check off).
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// ClientIdentity is a workload identity of client pods on a node and the
// addresses of those pods: connections from those addresses present that
// identity's certificate.
type ClientIdentity struct {
	// SPIFFE is spiffe://TRUST_DOMAIN/ns/NS/sa/SA; it names the SDS
	// certificate.
	SPIFFE    string   `json:"spiffe"`
	Addresses []string `json:"addresses"`
}

// LoadBalancer is the cluster's balancing algorithm and its tuning.
type LoadBalancer struct {
	Policy LBPolicy `json:"policy"`
	// RingHashMinSize and MaglevTableSize tune the consistent-hash policies.
	RingHashMinSize uint64     `json:"ringHashMinSize,omitempty"`
	MaglevTableSize uint64     `json:"maglevTableSize,omitempty"`
	SlowStart       *SlowStart `json:"slowStart,omitempty"`
}

// SlowStart is DestinationRule warmup.
type SlowStart struct {
	Window Duration `json:"window"`
	// Aggression and MinWeightPercent are nil when Envoy's defaults apply
	// (the deprecated warmupDurationSecs sets the window only).
	Aggression       *float64 `json:"aggression,omitempty"`
	MinWeightPercent *float64 `json:"minWeightPercent,omitempty"`
}

// CircuitBreaker thresholds; Istio's defaults are all MaxUint32.
type CircuitBreaker struct {
	MaxConnections     uint32       `json:"maxConnections"`
	MaxPendingRequests uint32       `json:"maxPendingRequests"`
	MaxRequests        uint32       `json:"maxRequests"`
	MaxRetries         uint32       `json:"maxRetries"`
	RetryBudget        *RetryBudget `json:"retryBudget,omitempty"`
}

// RetryBudget limits concurrent retries relative to active requests.
type RetryBudget struct {
	Percent             float64 `json:"percent"`
	MinRetryConcurrency uint32  `json:"minRetryConcurrency"`
}

// HTTPOptions are upstream HTTP protocol options.
type HTTPOptions struct {
	// HTTP2 makes upstream connections speak HTTP/2 (prior knowledge).
	HTTP2 bool `json:"http2,omitempty"`
	// UseClientProtocol speaks whatever the downstream spoke.
	UseClientProtocol        bool      `json:"useClientProtocol,omitempty"`
	IdleTimeout              *Duration `json:"idleTimeout,omitempty"`
	MaxRequestsPerConnection uint32    `json:"maxRequestsPerConnection,omitempty"`
	MaxConnectionDuration    *Duration `json:"maxConnectionDuration,omitempty"`
	MaxConcurrentStreams     uint32    `json:"maxConcurrentStreams,omitempty"`
	// HTTP2KeepaliveInterval and HTTP2KeepaliveTimeout send HTTP/2 PINGs.
	HTTP2KeepaliveInterval *Duration `json:"http2KeepaliveInterval,omitempty"`
	HTTP2KeepaliveTimeout  *Duration `json:"http2KeepaliveTimeout,omitempty"`
	// AutoSNI sets SNI from the request's Host; AutoSANValidation checks the
	// server certificate against it.
	AutoSNI           bool `json:"autoSNI,omitempty"`
	AutoSANValidation bool `json:"autoSANValidation,omitempty"`
}

// TCPKeepalive probes idle upstream connections.
type TCPKeepalive struct {
	Probes   uint32    `json:"probes,omitempty"`
	Time     *Duration `json:"time,omitempty"`
	Interval *Duration `json:"interval,omitempty"`
}

// OutlierDetection ejects failing endpoints.
type OutlierDetection struct {
	Consecutive5xx                 *uint32   `json:"consecutive5xx,omitempty"`
	EnforcingConsecutive5xx        *uint32   `json:"enforcingConsecutive5xx,omitempty"`
	ConsecutiveGatewayFailure      *uint32   `json:"consecutiveGatewayFailure,omitempty"`
	EnforcingConsecutiveGateway    *uint32   `json:"enforcingConsecutiveGatewayFailure,omitempty"`
	ConsecutiveLocalOriginFailure  *uint32   `json:"consecutiveLocalOriginFailure,omitempty"`
	EnforcingLocalOriginFailure    *uint32   `json:"enforcingConsecutiveLocalOriginFailure,omitempty"`
	SplitExternalLocalOriginErrors bool      `json:"splitExternalLocalOriginErrors,omitempty"`
	Interval                       *Duration `json:"interval,omitempty"`
	BaseEjectionTime               *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent             *uint32   `json:"maxEjectionPercent,omitempty"`
}

// TLSMode is DestinationRule's client TLS mode.
type TLSMode string

const (
	TLSSimple TLSMode = "SIMPLE"
	TLSMutual TLSMode = "MUTUAL"
)

// UpstreamTLS originates TLS to the upstream.
type UpstreamTLS struct {
	Mode               TLSMode  `json:"mode"`
	SNI                string   `json:"sni,omitempty"`
	SubjectAltNames    []string `json:"subjectAltNames,omitempty"`
	CACertificates     string   `json:"caCertificates,omitempty"`
	CACRL              string   `json:"caCrl,omitempty"`
	ClientCertificate  string   `json:"clientCertificate,omitempty"`
	PrivateKey         string   `json:"privateKey,omitempty"`
	InsecureSkipVerify bool     `json:"insecureSkipVerify,omitempty"`
	ALPN               []string `json:"alpn,omitempty"`
	// CredentialName is the DestinationRule's credentialName: the client
	// certificate and CA come over SDS as Istio names them (kubernetes://NAME,
	// kubernetes://NAME-cacert) instead of files.
	CredentialName string `json:"credentialName,omitempty"`
}

// ClusterEndpoints is one EDS resource.
type ClusterEndpoints struct {
	Cluster   string     `json:"cluster"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one upstream address.
type Endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// Zone and Node are informational (from EndpointSlices and Pods).
	Zone string `json:"zone,omitempty"`
	Node string `json:"node,omitempty"`
	// Pod is namespace/name when known.
	Pod string `json:"pod,omitempty"`
	// Weight is a ServiceEntry endpoint's load-balancing weight (0: unset).
	Weight uint32 `json:"weight,omitempty"`
	// IstioMTLS marks a pod with an Istio sidecar (label
	// security.istio.io/tlsMode=istio and an istio-proxy container): its
	// endpoint metadata says tlsMode istio, which auto-mTLS keys on. Only
	// with Options.IstioMTLS.
	IstioMTLS bool `json:"istioMTLS,omitempty"`
}
