package ir

// Model is everything one node Envoy is given. The slices are sorted by name
// so that the same input always gives the same Model.
type Model struct {
	Listeners    []Listener         `json:"listeners"`
	RouteConfigs []RouteConfig      `json:"routeConfigs"`
	Clusters     []Cluster          `json:"clusters"`
	Endpoints    []ClusterEndpoints `json:"endpoints"`
	// SourceClasses lists the groups of client pods that see the same routing.
	// Offline translation without pods has exactly one, the default class.
	SourceClasses []SourceClass `json:"sourceClasses,omitempty"`
}

// SourceClass is a group of client pods that see the same routing (see
// ARCHITECTURE.md, "The per-node difference that matters").
type SourceClass struct {
	Name string `json:"name"`
	// Namespace of the clients; empty for the default class, which stands for
	// any client that no other class describes.
	Namespace string `json:"namespace,omitempty"`
	// Labels the routing decisions of this class depended on.
	Labels map[string]string `json:"labels,omitempty"`
	// SourcePrefixes are the client addresses (CIDR) this class matches.
	SourcePrefixes []string `json:"sourcePrefixes,omitempty"`
}

// Listener is a socket the node Envoy listens on.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// OriginalDestination restores the pre-redirect destination (SO_ORIGINAL_DST)
	// so that filter chains can match on it.
	OriginalDestination bool `json:"originalDestination,omitempty"`
	// PreserveClientAddress connects upstream from the client's own address
	// (Envoy original_src), so that the destination's L3/L4 policy sees the
	// client's identity rather than the node's; the agent hands the replies
	// back to the proxy (docs/design/datapath.md, "The node proxy hop").
	PreserveClientAddress bool `json:"preserveClientAddress,omitempty"`
	// SniffHTTP enables HTTP detection for chains that match on it.
	SniffHTTP    bool          `json:"sniffHTTP,omitempty"`
	FilterChains []FilterChain `json:"filterChains"`
	// DefaultChain handles connections no filter chain matches.
	DefaultChain *FilterChain `json:"defaultChain,omitempty"`
}

// FilterChain handles the connections its Match selects.
type FilterChain struct {
	Name  string           `json:"name"`
	Match FilterChainMatch `json:"match,omitzero"`
	// Exactly one of HTTP or TCP is set.
	HTTP *HTTPConnectionManager `json:"http,omitempty"`
	TCP  *TCPProxy              `json:"tcp,omitempty"`
	// ClientIdentity is the SPIFFE ID of the clients this chain serves
	// (Istio mTLS): the chain stores it in filter state shared with the
	// upstream, where the clusters' transport socket matchers read it to
	// pick that identity's certificate. The chain's source match holds only
	// pods of that identity. Empty: no identity, no certificate.
	ClientIdentity string `json:"clientIdentity,omitempty"`
}

// FilterChainMatch selects connections by their (original) destination and
// source. Empty fields match anything.
type FilterChainMatch struct {
	DestinationPort     uint32   `json:"destinationPort,omitempty"`
	DestinationPrefixes []string `json:"destinationPrefixes,omitempty"`
	// ApplicationProtocols set by HTTP detection, e.g. http/1.1, h2c.
	ApplicationProtocols []string `json:"applicationProtocols,omitempty"`
	SourcePrefixes       []string `json:"sourcePrefixes,omitempty"`
	// ServerNames match the TLS SNI (a TLS inspector reads it): ServiceEntry
	// hosts on TLS ports, as Istio's outbound listener matches them.
	ServerNames []string `json:"serverNames,omitempty"`
}

// HTTPConnectionManager terminates HTTP and routes with a route configuration.
type HTTPConnectionManager struct {
	StatPrefix      string `json:"statPrefix"`
	RouteConfigName string `json:"routeConfig"`
}

// TCPProxy forwards bytes to one cluster or a weighted set.
type TCPProxy struct {
	StatPrefix   string                `json:"statPrefix"`
	Destinations []WeightedDestination `json:"destinations"`
	IdleTimeout  *Duration             `json:"idleTimeout,omitempty"`
	// MaxDownstreamConnectionDuration closes client connections after it.
	MaxDownstreamConnectionDuration *Duration `json:"maxDownstreamConnectionDuration,omitempty"`
	// HashSourceIP picks the upstream host by the client's address
	// (consistentHash useSourceIp).
	HashSourceIP bool `json:"hashSourceIP,omitempty"`
	// Origin is the VirtualService tcp route this came from, if any.
	Origin *ResourceRef `json:"origin,omitempty"`
}

// Weighted reports whether the proxy splits by weight: a VirtualService tcp
// route with several destinations (those of weight 0 left out), as opposed to
// one destination, whose weight is 0.
func (t *TCPProxy) Weighted() bool {
	return len(t.Destinations) > 1 || (len(t.Destinations) == 1 && t.Destinations[0].Weight > 0)
}

// RouteConfig is one RDS resource: the HTTP routing for one destination port.
type RouteConfig struct {
	Name         string        `json:"name"`
	VirtualHosts []VirtualHost `json:"virtualHosts"`
}

// VirtualHost groups routes by Host/:authority.
type VirtualHost struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	Routes  []Route  `json:"routes"`
	// Origin is the VirtualService that owns the host, if any.
	Origin *ResourceRef `json:"origin,omitempty"`
}

// Route is one match → action rule, in evaluation order.
type Route struct {
	Name   string       `json:"name,omitempty"`
	Origin *ResourceRef `json:"origin,omitempty"`
	// OriginField is the path of the http rule in the origin, e.g. spec.http[2].
	OriginField string     `json:"originField,omitempty"`
	Match       RouteMatch `json:"match"`
	StatPrefix  string     `json:"statPrefix,omitempty"`
	// Exactly one of Forward, Redirect or DirectResponse is set.
	Forward        *ForwardAction  `json:"forward,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty"`
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`

	Headers   HeaderOps `json:"headers,omitzero"`
	Fault     *Fault    `json:"fault,omitempty"`
	CORS      *CORS     `json:"cors,omitempty"`
	Decorator string    `json:"decorator,omitempty"`
}

// StringMatch is Istio's StringMatch: exactly one field is set.
type StringMatch struct {
	Exact  *string `json:"exact,omitempty"`
	Prefix *string `json:"prefix,omitempty"`
	Regex  *string `json:"regex,omitempty"`
}

// PathMatch selects the request path. Prefix "/" matches everything.
type PathMatch struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Regex  string `json:"regex,omitempty"`
}

// RouteMatch is a conjunction of conditions.
type RouteMatch struct {
	Path PathMatch `json:"path"`
	// CaseSensitive is nil for routes Istio generates without a match.
	CaseSensitive *bool         `json:"caseSensitive,omitempty"`
	Headers       []HeaderMatch `json:"headers,omitempty"`
	QueryParams   []QueryMatch  `json:"queryParams,omitempty"`
}

// HeaderMatch matches one request header (pseudo-headers included).
type HeaderMatch struct {
	Name string `json:"name"`
	// Present matches on presence alone (Istio's regex "*").
	Present bool        `json:"present,omitempty"`
	Value   StringMatch `json:"value,omitzero"`
	// Invert negates the match (withoutHeaders).
	Invert bool `json:"invert,omitempty"`
	// TreatMissingAsEmpty makes an inverted value match apply to absent headers.
	TreatMissingAsEmpty bool `json:"treatMissingAsEmpty,omitempty"`
}

// QueryMatch matches one query parameter.
type QueryMatch struct {
	Name    string      `json:"name"`
	Present bool        `json:"present,omitempty"`
	Value   StringMatch `json:"value,omitzero"`
}

// ForwardAction sends the request to one or more clusters.
type ForwardAction struct {
	// Destinations has one entry for a single destination; Weighted is set
	// when Istio emits weighted_clusters (several destinations).
	Destinations []WeightedDestination `json:"destinations"`
	Weighted     bool                  `json:"weighted,omitempty"`
	// Timeout 0 disables the route timeout (Istio's default).
	Timeout       Duration      `json:"timeout"`
	Retry         *RetryPolicy  `json:"retry,omitempty"`
	PrefixRewrite string        `json:"prefixRewrite,omitempty"`
	RegexRewrite  *RegexRewrite `json:"regexRewrite,omitempty"`
	HostRewrite   string        `json:"hostRewrite,omitempty"`
	Mirrors       []Mirror      `json:"mirrors,omitempty"`
	HashPolicies  []HashPolicy  `json:"hashPolicies,omitempty"`
}

// WeightedDestination is one cluster of a route or TCP proxy.
type WeightedDestination struct {
	Cluster     string    `json:"cluster"`
	Weight      uint32    `json:"weight,omitempty"`
	Headers     HeaderOps `json:"headers,omitzero"`
	HostRewrite string    `json:"hostRewrite,omitempty"`
}

// RegexRewrite rewrites the path with an RE2 pattern.
type RegexRewrite struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

// HeaderOps manipulates request and response headers. Request and Response
// operations apply in order; Append adds a value instead of overwriting.
type HeaderOps struct {
	Request        []HeaderOp `json:"request,omitempty"`
	RequestRemove  []string   `json:"requestRemove,omitempty"`
	Response       []HeaderOp `json:"response,omitempty"`
	ResponseRemove []string   `json:"responseRemove,omitempty"`
}

// IsZero reports whether no operation is set.
func (h HeaderOps) IsZero() bool {
	return len(h.Request)+len(h.RequestRemove)+len(h.Response)+len(h.ResponseRemove) == 0
}

// Append adds the operations of o after those of h.
func (h *HeaderOps) Append(o HeaderOps) {
	h.Request = append(h.Request, o.Request...)
	h.RequestRemove = append(h.RequestRemove, o.RequestRemove...)
	h.Response = append(h.Response, o.Response...)
	h.ResponseRemove = append(h.ResponseRemove, o.ResponseRemove...)
}

// HeaderOp sets (or, with Append, adds) one header.
type HeaderOp struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Append bool   `json:"append,omitempty"`
}

// Header is a name/value pair.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RetryPolicy is Envoy's retry policy as Istio fills it.
type RetryPolicy struct {
	Attempts             uint32    `json:"attempts"`
	RetryOn              string    `json:"retryOn"`
	RetriableStatusCodes []uint32  `json:"retriableStatusCodes,omitempty"`
	PerTryTimeout        *Duration `json:"perTryTimeout,omitempty"`
	// PreviousHosts avoids retrying on a host already tried.
	PreviousHosts bool `json:"previousHosts,omitempty"`
	// HostSelectionMaxAttempts bounds host re-selection for PreviousHosts.
	HostSelectionMaxAttempts int64 `json:"hostSelectionMaxAttempts,omitempty"`
	// RetryRemoteLocalities prefers other localities on retry.
	RetryRemoteLocalities bool      `json:"retryRemoteLocalities,omitempty"`
	BackoffBase           *Duration `json:"backoffBase,omitempty"`
}

// Fault injects delays and aborts. Percentages are 0–100.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

type FaultDelay struct {
	Fixed   Duration `json:"fixed"`
	Percent float64  `json:"percent"`
	// IntegerPercent is set when the deprecated integer percent was used;
	// Istio then emits the fraction over 100 instead of over a million.
	IntegerPercent bool `json:"integerPercent,omitempty"`
}

// FaultAbort aborts with an HTTP status or a gRPC status code.
type FaultAbort struct {
	HTTPStatus uint32  `json:"httpStatus,omitempty"`
	GRPCStatus *uint32 `json:"grpcStatus,omitempty"`
	Percent    float64 `json:"percent"`
}

// CORS is a per-route CORS policy.
type CORS struct {
	AllowOrigins     []StringMatch `json:"allowOrigins,omitempty"`
	AllowMethods     []string      `json:"allowMethods,omitempty"`
	AllowHeaders     []string      `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string      `json:"exposeHeaders,omitempty"`
	MaxAge           *Duration     `json:"maxAge,omitempty"`
	AllowCredentials *bool         `json:"allowCredentials,omitempty"`
	// ForwardNotMatchingPreflights is false only for unmatchedPreflights: IGNORE.
	ForwardNotMatchingPreflights bool `json:"forwardNotMatchingPreflights"`
}

// Mirror copies a fraction of requests to another cluster.
type Mirror struct {
	Cluster string  `json:"cluster"`
	Percent float64 `json:"percent"`
}

// HashPolicy feeds consistent-hash load balancing. Exactly one field is set.
type HashPolicy struct {
	Header     string      `json:"header,omitempty"`
	Cookie     *HashCookie `json:"cookie,omitempty"`
	SourceIP   bool        `json:"sourceIP,omitempty"`
	QueryParam string      `json:"queryParam,omitempty"`
}

type HashCookie struct {
	Name       string    `json:"name"`
	Path       string    `json:"path,omitempty"`
	TTL        *Duration `json:"ttl,omitempty"`
	Attributes []Header  `json:"attributes,omitempty"`
}

// Redirect answers with an HTTP redirect.
type Redirect struct {
	Host string `json:"host,omitempty"`
	// Path replaces the whole path; PrefixRewrite only the matched prefix.
	Path          string `json:"path,omitempty"`
	PrefixRewrite string `json:"prefixRewrite,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Port          uint32 `json:"port,omitempty"`
	// Code is one of 301, 302, 303, 307, 308.
	Code uint32 `json:"code"`
}

// DirectResponse answers without an upstream.
type DirectResponse struct {
	Status uint32 `json:"status"`
	Body   string `json:"body,omitempty"`
	// BodyIsBytes is set when Istio's body.bytes was used.
	BodyIsBytes bool `json:"bodyIsBytes,omitempty"`
}
