package istio

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"slices"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's cluster defaults (pilot/pkg/networking/core/cluster_builder.go).
const (
	defaultConnectTimeout  = 10 * time.Second
	defaultRingSize        = 1024
	passthroughIdleTimeout = 5 * time.Minute
)

// buildClusters emits, for every Service port, outbound|<port>||<fqdn> and one
// outbound|<port>|<subset>|<fqdn> per DestinationRule subset, with their EDS
// assignments, plus PassthroughCluster and BlackHoleCluster. Those are
// shaped by the DestinationRule the default class sees (the one in the
// Service's or the root namespace exported to "*"), and keep Istio's names.
//
// A class whose namespace sees another DestinationRule for the Service (one
// in its own namespace, or one exported to it by name) needs clusters shaped
// by that rule — its subsets and traffic policy — as its sidecar would have:
// a variant per distinct rule seen, named clusterName, built for the
// namespaces whose pods can be classes and whose namespace can change
// routing (classNamespaces). Their number is
// bounded by the configuration (distinct rules seen per host), not by pods.
func (t *translator) buildClusters(m *ir.Model) {
	t.variants = map[*service][]drVariant{}
	for _, s := range t.serviceList {
		dr := t.destinationRule(s, "")
		t.noEndpoints(s)
		t.addClusters(m, s, "", dr)
		for _, ns := range t.classNamespaces {
			v := t.destinationRule(s, ns)
			tag := t.variantTag(s, ns)
			if tag == "" || slices.ContainsFunc(t.variants[s], func(have drVariant) bool { return have.tag == tag }) {
				continue
			}
			t.variants[s] = append(t.variants[s], drVariant{tag: tag, dr: v})
			t.addClusters(m, s, tag, v)
		}
	}
	m.Clusters = append(m.Clusters,
		// Unknown destinations pass through (ALLOW_ANY), speaking the client's
		// protocol, with Istio's 5-minute idle timeout.
		ir.Cluster{
			Name: ir.PassthroughCluster, Discovery: ir.DiscoveryOriginalDst,
			ConnectTimeout: ir.Duration(defaultConnectTimeout),
			LoadBalancer:   ir.LoadBalancer{Policy: ir.LBClusterProvided},
			CircuitBreaker: defaultCircuitBreaker(),
			HTTP:           &ir.HTTPOptions{UseClientProtocol: true, IdleTimeout: ir.D(passthroughIdleTimeout)},
		},
		ir.Cluster{
			Name: ir.BlackHoleCluster, Discovery: ir.DiscoveryStatic,
			ConnectTimeout: ir.Duration(defaultConnectTimeout),
			LoadBalancer:   ir.LoadBalancer{Policy: ir.LBRoundRobin},
		},
	)
}

// drVariant is a set of clusters of a Service shaped by a DestinationRule
// the default class does not see.
type drVariant struct {
	tag string
	dr  *mergedDR
}

// addClusters adds a Service's clusters (one per port, and per port and
// subset) shaped by a DestinationRule, with a variant tag ("" for Istio's).
func (t *translator) addClusters(m *ir.Model, s *service, tag string, dr *mergedDR) {
	for _, p := range s.ports {
		t.addCluster(m, s, p, nil, dr, tag)
		if dr == nil {
			continue
		}
		for _, ss := range dr.subsets {
			t.addCluster(m, s, p, ss, dr, tag)
		}
	}
}

// variantTag tells apart the clusters a client namespace needs from
// Istio's: "" when it sees the DestinationRule the default class sees,
// else "~" and a digest of the rules it sees. "~" is in no subset name
// (DNS-1123 labels), so a variant never collides with an Istio name.
func (t *translator) variantTag(s *service, clientNamespace string) string {
	if clientNamespace == "" {
		return ""
	}
	id := t.destinationRule(s, clientNamespace).ID()
	if id == t.destinationRule(s, "").ID() {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return "~" + hex.EncodeToString(sum[:])[:8]
}

// clusterName is the cluster a class's route sends a Service's port and
// subset to: Istio's outbound|PORT|SUBSET|HOST when the class sees the
// default class's DestinationRule, else outbound|PORT|SUBSET~TAG|HOST, the
// variant shaped by the rule it sees (docs/parity.md).
func (t *translator) clusterName(s *service, port uint32, subset string, cl *Class) string {
	return ir.OutboundClusterName(port, subset+t.variantTag(s, cl.Namespace), s.fqdn)
}

// noEndpoints explains a Service without endpoints (an endpoint diagnostic).
func (t *translator) noEndpoints(s *service) {
	if len(t.endpoints[s]) > 0 || s.headless {
		return
	}
	d := t.epDiags[s]
	if e := s.entry; e != nil {
		if e.resolution == networking.ServiceEntry_NONE {
			return // its clusters connect to the original destination
		}
		d.Infof(ir.CodeNoEndpoints, s.ref, "", "no endpoint for host %s (no spec.endpoints and no ready Pod matches spec.workloadSelector); its clusters are empty", s.fqdn)
	} else if len(s.selector) > 0 {
		d.Infof(ir.CodeNoEndpoints, s.ref, "", "no ready endpoint for %s in the input (no EndpointSlice and no running Pod with an IP matches the selector); its clusters are empty", s.name)
	} else {
		d.Infof(ir.CodeNoEndpoints, s.ref, "", "Service has no selector and the input has no EndpointSlice for it; its clusters are empty")
	}
	t.epDiags[s] = d
}

// clusterEndpoints is the assignment of a Service's cluster for a port and
// subset; a subset that selects none of the Service's endpoints is an
// endpoint diagnostic.
func (t *translator) clusterEndpoints(s *service, name string, port uint32, ss *subsetInfo) ir.ClusterEndpoints {
	var subsetLabels selector
	if ss != nil {
		subsetLabels = ss.selector
	}
	all := t.endpoints[s]
	eps := subsetEndpoints(all, port, subsetLabels, t.opts.IstioMTLS)
	if ss != nil && len(eps) == 0 && len(all) > 0 {
		d := t.epDiags[s]
		d.Warnf(ir.CodeNoEndpoints, ss.dr.ref, string(ss.field.Field("labels")),
			"subset %q selects none of the %d endpoints of %s; requests routed to it fail with 503 (no healthy upstream)", ss.name, len(all), s.name)
		t.epDiags[s] = d
	}
	return ir.ClusterEndpoints{Cluster: name, Endpoints: eps}
}

func defaultCircuitBreaker() *ir.CircuitBreaker {
	return &ir.CircuitBreaker{MaxConnections: math.MaxUint32, MaxPendingRequests: math.MaxUint32, MaxRequests: math.MaxUint32, MaxRetries: math.MaxUint32}
}

func (t *translator) addCluster(m *ir.Model, s *service, p servicePort, ss *subsetInfo, dr *mergedDR, tag string) {
	subset := ""
	if ss != nil {
		subset = ss.name
	}
	zero := 0.0
	c := ir.Cluster{
		Name:                  ir.OutboundClusterName(p.port, subset+tag, s.fqdn),
		Service:               s.serviceRef(),
		Port:                  p.port,
		Subset:                subset,
		Protocol:              p.protocol,
		Discovery:             ir.DiscoveryEDS,
		ConnectTimeout:        ir.Duration(defaultConnectTimeout),
		LoadBalancer:          ir.LoadBalancer{Policy: ir.LBLeastRequest},
		CircuitBreaker:        defaultCircuitBreaker(),
		HealthyPanicThreshold: &zero,
	}
	switch {
	case p.protocol.IsHTTP2():
		c.HTTP = &ir.HTTPOptions{HTTP2: true}
	case p.protocol == ir.ProtocolUnknown:
		// Sniffed ports forward whatever protocol the client spoke.
		c.HTTP = &ir.HTTPOptions{UseClientProtocol: true}
	}
	if s.headless {
		// Clients of a headless Service pick the pod themselves; keep their choice.
		c.Discovery = ir.DiscoveryOriginalDst
		c.LoadBalancer.Policy = ir.LBClusterProvided
	}
	if e := s.entry; e != nil {
		c.Discovery = entryDiscovery(e.resolution)
		if c.Discovery == ir.DiscoveryOriginalDst {
			// resolution NONE: the client's own destination, on targetPort
			// when set (Istio's PassthroughTargetPorts →
			// upstream_port_override).
			c.LoadBalancer.Policy = ir.LBClusterProvided
			if tp := p.targetPort.IntVal; tp > 0 {
				c.OriginalDstPort = uint32(tp)
			}
		}
	}
	var tp *networking.TrafficPolicy
	if dr != nil {
		// Istio points every cluster of a host at the merged rule's first
		// DestinationRule.
		c.Origin = &dr.owner.ref
		tp = dr.trafficPolicy(p.port, ss)
		applyTrafficPolicy(&c, tp, p.protocol)
		// Istio's applyLoadBalancer: an ORIGINAL_DST cluster keeps
		// CLUSTER_PROVIDED whatever the rule says.
		if (s.headless || c.Discovery == ir.DiscoveryOriginalDst) && c.LoadBalancer.Policy != ir.LBClusterProvided {
			c.LoadBalancer = ir.LoadBalancer{Policy: ir.LBClusterProvided}
		}
	}
	if t.opts.IstioMTLS {
		t.applyIstioMTLS(&c, s, tp.GetTls())
		if c.TLS != nil && c.TLS.CredentialName != "" && dr != nil {
			// The Secret is the DestinationRule's namespace's, named as
			// Istio's kubernetes://NAMESPACE/NAME: one node Envoy serves
			// clients of many namespaces, so the name alone is ambiguous.
			c.TLS.CredentialName = "kubernetes://" + dr.owner.ref.Namespace + "/" + c.TLS.CredentialName
		}
	} else if c.TLS != nil {
		c.TLS.CredentialName = "" // not loaded without the SDS server (reported)
	}
	if c.Discovery.IsDNS() {
		// DNS clusters carry their endpoints (host names Envoy resolves).
		c.LoadAssignment = t.clusterEndpoints(s, c.Name, p.port, ss).Endpoints
		if c.Discovery == ir.DiscoveryLogicalDNS && len(c.LoadAssignment) > 1 {
			// LOGICAL_DNS takes exactly one endpoint (a workloadSelector
			// can pick more): the first, by address.
			t.diags.Warnf(ir.CodeChangedBehavior, s.ref, "spec.resolution",
				"resolution DNS_ROUND_ROBIN uses one endpoint; %s of cluster %s is used, %d others are not", c.LoadAssignment[0].Address, c.Name, len(c.LoadAssignment)-1)
			c.LoadAssignment = c.LoadAssignment[:1]
		}
		if c.Discovery == ir.DiscoveryLogicalDNS && len(c.LoadAssignment) == 0 {
			// Envoy rejects a LOGICAL_DNS cluster without its one endpoint
			// (the whole CDS update with it); istiod leaves such a cluster
			// out. An empty STRICT_DNS cluster fails its requests the same
			// way (503) without taking the other clusters down.
			c.Discovery = ir.DiscoveryStrictDNS
		}
	}
	m.Clusters = append(m.Clusters, c)
	if c.Discovery != ir.DiscoveryEDS {
		return
	}
	m.Endpoints = append(m.Endpoints, t.clusterEndpoints(s, c.Name, p.port, ss))
}

// applyTrafficPolicy maps a DestinationRule traffic policy onto a cluster
// (Istio's applyTrafficPolicy: load balancer, connection pool, outlier
// detection, TLS).
func applyTrafficPolicy(c *ir.Cluster, tp *networking.TrafficPolicy, proto ir.Protocol) {
	if tp == nil {
		return
	}
	applyLoadBalancer(c, tp.LoadBalancer)
	applyConnectionPool(c, tp.ConnectionPool, proto)
	applyOutlierDetection(c, tp.OutlierDetection)
	applyTLS(c, tp.Tls, proto)
	if rb := tp.RetryBudget; rb != nil {
		b := &ir.RetryBudget{Percent: 20, MinRetryConcurrency: 3}
		if rb.Percent != nil {
			b.Percent = rb.Percent.Value
		}
		if rb.MinRetryConcurrency > 0 {
			b.MinRetryConcurrency = rb.MinRetryConcurrency
		}
		c.CircuitBreaker.RetryBudget = b
	}
}

func applyLoadBalancer(c *ir.Cluster, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		c.LoadBalancer.Policy = ir.LBRoundRobin
	case networking.LoadBalancerSettings_RANDOM:
		c.LoadBalancer.Policy = ir.LBRandom
	case networking.LoadBalancerSettings_LEAST_CONN, networking.LoadBalancerSettings_LEAST_REQUEST:
		c.LoadBalancer.Policy = ir.LBLeastRequest
	case networking.LoadBalancerSettings_PASSTHROUGH:
		c.Discovery = ir.DiscoveryOriginalDst
		c.LoadBalancer.Policy = ir.LBClusterProvided
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		switch {
		case ch.GetMaglev() != nil:
			c.LoadBalancer.Policy = ir.LBMaglev
			c.LoadBalancer.MaglevTableSize = ch.GetMaglev().TableSize
		case ch.GetRingHash() != nil:
			c.LoadBalancer.Policy = ir.LBRingHash
			c.LoadBalancer.RingHashMinSize = ch.GetRingHash().MinimumRingSize
		default:
			c.LoadBalancer.Policy = ir.LBRingHash
			c.LoadBalancer.RingHashMinSize = defaultRingSize
			if ch.MinimumRingSize != 0 { // deprecated, still honoured by Istio
				c.LoadBalancer.RingHashMinSize = ch.MinimumRingSize
			}
		}
	}
	// Slow start applies to round robin and least request only.
	if c.LoadBalancer.Policy != ir.LBRoundRobin && c.LoadBalancer.Policy != ir.LBLeastRequest {
		return
	}
	switch {
	case lb.Warmup != nil:
		// Istio's setWarmup: aggression 1 and 10 % unless set.
		aggression, minWeight := 1.0, 10.0
		if lb.Warmup.Aggression != nil {
			aggression = lb.Warmup.Aggression.Value
		}
		if lb.Warmup.MinimumPercent != nil {
			minWeight = lb.Warmup.MinimumPercent.Value
		}
		c.LoadBalancer.SlowStart = &ir.SlowStart{Window: ir.Duration(lb.Warmup.Duration.AsDuration()), Aggression: &aggression, MinWeightPercent: &minWeight}
	case lb.WarmupDurationSecs != nil:
		// Istio's setSlowStartConfig (deprecated field): the window only.
		c.LoadBalancer.SlowStart = &ir.SlowStart{Window: ir.Duration(lb.WarmupDurationSecs.AsDuration())}
	}
}

func applyConnectionPool(c *ir.Cluster, cp *networking.ConnectionPoolSettings, proto ir.Protocol) {
	if cp == nil {
		return
	}
	httpOpts := func() *ir.HTTPOptions {
		if c.HTTP == nil {
			c.HTTP = &ir.HTTPOptions{}
		}
		return c.HTTP
	}
	var idle *ir.Duration
	if h := cp.Http; h != nil {
		if h.Http2MaxRequests > 0 {
			c.CircuitBreaker.MaxRequests = uint32(h.Http2MaxRequests)
		}
		if h.Http1MaxPendingRequests > 0 {
			c.CircuitBreaker.MaxPendingRequests = uint32(h.Http1MaxPendingRequests)
		}
		if h.MaxRetries > 0 {
			c.CircuitBreaker.MaxRetries = uint32(h.MaxRetries)
		}
		if h.IdleTimeout != nil {
			idle = ir.D(h.IdleTimeout.AsDuration())
		}
		if h.MaxRequestsPerConnection > 0 {
			httpOpts().MaxRequestsPerConnection = uint32(h.MaxRequestsPerConnection)
		}
		if h.MaxConcurrentStreams > 0 {
			httpOpts().MaxConcurrentStreams = uint32(h.MaxConcurrentStreams)
		}
		if h.H2UpgradePolicy == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && proto == ir.ProtocolHTTP {
			httpOpts().HTTP2 = true
		}
		if h.UseClientProtocol {
			o := httpOpts()
			o.UseClientProtocol, o.HTTP2 = true, false
		}
		if ka := h.Http2KeepAlive; ka != nil {
			o := httpOpts()
			if ka.Interval != nil {
				o.HTTP2KeepaliveInterval = ir.D(ka.Interval.AsDuration())
			}
			if ka.Timeout != nil {
				o.HTTP2KeepaliveTimeout = ir.D(ka.Timeout.AsDuration())
			}
		}
	}
	if tcp := cp.Tcp; tcp != nil {
		if tcp.ConnectTimeout != nil {
			c.ConnectTimeout = ir.Duration(tcp.ConnectTimeout.AsDuration())
		}
		if tcp.MaxConnections > 0 {
			c.CircuitBreaker.MaxConnections = uint32(tcp.MaxConnections)
		}
		if tcp.MaxConnectionDuration != nil {
			httpOpts().MaxConnectionDuration = ir.D(tcp.MaxConnectionDuration.AsDuration())
		}
		if idle == nil && tcp.IdleTimeout != nil {
			idle = ir.D(tcp.IdleTimeout.AsDuration())
		}
		if ka := tcp.TcpKeepalive; ka != nil {
			k := &ir.TCPKeepalive{Probes: ka.Probes}
			if ka.Time != nil {
				k.Time = ir.D(ka.Time.AsDuration())
			}
			if ka.Interval != nil {
				k.Interval = ir.D(ka.Interval.AsDuration())
			}
			c.TCPKeepalive = k
		}
	}
	if idle != nil {
		httpOpts().IdleTimeout = idle
	}
	// Istio's applyConnectionPool writes maxConcurrentStreams and the HTTP/2
	// keepalive into the cluster's explicit HTTP/2 options only; a cluster
	// that forwards the client's protocol (useClientProtocol, sniffed ports:
	// setUseDownstreamProtocol starts from fresh HTTP/2 options) or speaks
	// HTTP/1.1 never gets them.
	if o := c.HTTP; o != nil && (!o.HTTP2 || o.UseClientProtocol || proto == ir.ProtocolUnknown) {
		o.MaxConcurrentStreams, o.HTTP2KeepaliveInterval, o.HTTP2KeepaliveTimeout = 0, nil, nil
	}
}

func u32(v uint32) *uint32 { return &v }

func applyOutlierDetection(c *ir.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	// Istio's applyOutlierDetection (pilot/pkg/networking/core/
	// cluster_traffic_policy.go). The deprecated consecutiveErrors is ignored
	// there — neither mapped to 5xx nor to gateway errors — and only warned
	// about by validation (validate_dr.go); so it is here. consecutive5xxErrors
	// and consecutiveGatewayErrors are independent: each, when set, sets its
	// own threshold and enforcement (100%, 0% when the threshold is 0), and
	// Envoy's defaults (5 consecutive 5xx, enforced) stay for an unset one.
	out := &ir.OutlierDetection{}
	if e := od.Consecutive_5XxErrors; e != nil {
		out.Consecutive5xx = u32(e.Value)
		out.EnforcingConsecutive5xx = u32(enforcing(e.Value))
	}
	if e := od.ConsecutiveGatewayErrors; e != nil {
		out.ConsecutiveGatewayFailure = u32(e.Value)
		out.EnforcingConsecutiveGateway = u32(enforcing(e.Value))
	}
	if od.Interval != nil {
		out.Interval = ir.D(od.Interval.AsDuration())
	}
	if od.BaseEjectionTime != nil {
		out.BaseEjectionTime = ir.D(od.BaseEjectionTime.AsDuration())
	}
	if od.MaxEjectionPercent > 0 {
		out.MaxEjectionPercent = u32(uint32(od.MaxEjectionPercent))
	}
	if od.SplitExternalLocalOriginErrors {
		out.SplitExternalLocalOriginErrors = true
		if v := od.ConsecutiveLocalOriginFailures.GetValue(); v > 0 {
			out.ConsecutiveLocalOriginFailure = u32(v)
			out.EnforcingLocalOriginFailure = u32(100)
		}
	}
	c.Outlier = out
	mh := float64(od.MinHealthPercent)
	c.HealthyPanicThreshold = &mh
}

func enforcing(v uint32) uint32 {
	if v > 0 {
		return 100
	}
	return 0
}

func applyTLS(c *ir.Cluster, tls *networking.ClientTLSSettings, proto ir.Protocol) {
	if tls == nil {
		return
	}
	var mode ir.TLSMode
	switch tls.Mode {
	case networking.ClientTLSSettings_SIMPLE:
		mode = ir.TLSSimple
	case networking.ClientTLSSettings_MUTUAL:
		mode = ir.TLSMutual
	default: // DISABLE; ISTIO_MUTUAL is applyIstioMTLS's (plaintext without Options.IstioMTLS, reported)
		c.TLS = nil
		return
	}
	u := &ir.UpstreamTLS{
		Mode:               mode,
		SNI:                tls.Sni,
		SubjectAltNames:    tls.SubjectAltNames,
		CACertificates:     tls.CaCertificates,
		CACRL:              tls.CaCrl,
		InsecureSkipVerify: tls.InsecureSkipVerify.GetValue(),
		CredentialName:     tls.CredentialName,
	}
	if mode == ir.TLSMutual {
		u.ClientCertificate, u.PrivateKey = tls.ClientCertificate, tls.PrivateKey
	}
	if proto.IsHTTP2() || (c.HTTP != nil && c.HTTP.HTTP2) {
		u.ALPN = []string{"h2"}
	}
	c.TLS = u
	// With no SNI configured, HTTP clusters take SNI (and SAN validation) from
	// the request's host, as Istio's auto-SNI does.
	if u.SNI == "" && (proto.IsHTTP() || proto == ir.ProtocolUnknown) {
		if c.HTTP == nil {
			c.HTTP = &ir.HTTPOptions{}
		}
		c.HTTP.AutoSNI = true
		c.HTTP.AutoSANValidation = len(u.SubjectAltNames) == 0 && !u.InsecureSkipVerify
	}
}
