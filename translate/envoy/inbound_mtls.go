package envoy

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Inbound Istio mTLS termination (docs/design/policy.md §10): a captured
// {pod, port} that sidecar clients may send Istio mTLS to gets istiod's
// sidecar inbound chains for the pod's PeerAuthentication mode — a chain for
// Istio's mTLS (transport protocol tls and Istio's ALPN, a
// DownstreamTlsContext with the pod's own certificate over SDS, a client
// certificate required and verified against the mesh's roots and trust
// domain) and, under PERMISSIVE, the plaintext chain(s). Both run the same
// filters (the pod's HTTP connection manager, or tcp_proxy for a port
// captured only for mTLS), and the listener's original_src makes the pod
// see the client's own address either way.

// InboundMTLS is how a chain terminates Istio mTLS.
type InboundMTLS struct {
	// Strict: only the mTLS chain (plaintext to the port is closed);
	// otherwise PERMISSIVE: plaintext chains too.
	Strict bool
	// Certificate is the pod's SPIFFE ID, the SDS secret of its certificate
	// (served by the agent's SDS server on the pod's node).
	Certificate string
	// TrustDomain is the mesh's: the client certificate must carry a
	// spiffe://TRUST_DOMAIN/ URI SAN (istiod's match).
	TrustDomain string
}

const (
	transportTLS = "tls"
	transportRaw = "raw_buffer"
)

// istioInboundALPN are the ALPN values of an Istio client's mTLS that the
// inbound mTLS chain matches (istiod's allIstioMtlsALPNs, in its order).
var istioInboundALPN = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// istioInboundTLSALPN is what the server side offers (istiod's inbound
// mTLS ALPN without istio-peer-exchange: nodemesh runs no metadata
// exchange filter, so negotiating it would hand the exchange's bytes to
// the pod).
var istioInboundTLSALPN = []string{"h2", "http/1.1"}

// istioCipherSuites are istiod's default TLS 1.2 cipher suites for inbound
// mTLS (security.DefaultCipherSuites; TLS 1.3 suites are not configurable).
var istioCipherSuites = []string{
	"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256",
}

// InboundTLSContext is the DownstreamTlsContext of a pod's mTLS chain:
// istiod's for a sidecar's inbound mTLS with the pod's SPIFFE ID as the
// certificate (Istio's sidecar names it "default": one identity per proxy).
func InboundTLSContext(m *InboundMTLS) (*tlsv3.DownstreamTlsContext, error) {
	if err := ValidSPIFFE(m.Certificate); err != nil {
		return nil, fmt.Errorf("pod certificate: %w", err)
	}
	if err := ValidSPIFFE("spiffe://" + m.TrustDomain + "/x"); err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", m.TrustDomain, err)
	}
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				CipherSuites: istioCipherSuites,
			},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{inboundSDSSecret(m.Certificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchSubjectAltNames: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + m.TrustDomain + "/"}}},
				},
				ValidationContextSdsSecretConfig: inboundSDSSecret(SDSRootCA),
			}},
			AlpnProtocols: istioInboundTLSALPN,
		},
		RequireClientCertificate: wrapperspb.Bool(true),
	}, nil
}

// inboundSDSFetchTimeout bounds how long a listener update waits for an
// inbound chain's secrets. istiod's 0 (wait for ever) suits a sidecar,
// whose agent always has its one certificate; the node Envoy's inbound
// listener serves every captured pod of the node, and a listener that
// keeps warming keeps its previous version — and so its previous RBAC
// (a new DENY would not apply) — for every pod because one pod's
// certificate is late. After the timeout the listener is updated and a
// chain whose secret is still missing fails its handshakes (Envoy's
// not-ready TLS socket): closed, never plaintext.
var inboundSDSFetchTimeout = durationpb.New(15 * time.Second)

func inboundSDSSecret(name string) *tlsv3.SdsSecretConfig {
	s := sdsSecret(name)
	s.SdsConfig.InitialFetchTimeout = inboundSDSFetchTimeout
	return s
}

// tlsInspector is istiod's tls_inspector listener filter: it reads the
// ClientHello so that chains can match the transport protocol and ALPN.
func tlsInspector() (*listenerv3.ListenerFilter, error) {
	a, err := toAny(&tlsinspectorv3.TlsInspector{InitialReadBufferSize: wrapperspb.UInt32(512)})
	if err != nil {
		return nil, err
	}
	return &listenerv3.ListenerFilter{Name: filterTLSInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a}}, nil
}

// inboundTCPFilters is istiod's inbound TCP chain: tcp_proxy to the port's
// ORIGINAL_DST cluster.
func inboundTCPFilters(port uint32) ([]*listenerv3.Filter, error) {
	cluster := InboundClusterName(port)
	a, err := toAny(&tcpproxyv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		return nil, err
	}
	return []*listenerv3.Filter{{Name: filterTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}, nil
}

// mtlsChains turns a {pod, port}'s plaintext chain into its chains with
// mTLS termination: the mTLS chain with tlsFilters (the same filters, but
// for the HTTP connection manager's client certificate details), then
// under PERMISSIVE the plaintext chain for raw_buffer and, for a TCP port,
// TLS that is not Istio's passed through to the pod (the pod's own TLS).
func mtlsChains(c *InboundChain, plain *listenerv3.FilterChain, tlsFilters []*listenerv3.Filter) ([]*listenerv3.FilterChain, error) {
	ctx, err := InboundTLSContext(c.MTLS)
	if err != nil {
		return nil, err
	}
	ts, err := toAny(ctx)
	if err != nil {
		return nil, err
	}
	match := func(transport string, alpn []string) *listenerv3.FilterChainMatch {
		return &listenerv3.FilterChainMatch{DestinationPort: plain.FilterChainMatch.DestinationPort, PrefixRanges: plain.FilterChainMatch.PrefixRanges,
			TransportProtocol: transport, ApplicationProtocols: alpn}
	}
	// Chain names are unique within a listener (istiod repeats 0.0.0.0_9080;
	// the plaintext chain keeps the name it has without mTLS).
	out := []*listenerv3.FilterChain{{
		Name:             plain.Name + "-mtls",
		FilterChainMatch: match(transportTLS, istioInboundALPN),
		Filters:          tlsFilters,
		TransportSocket:  &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts}},
	}}
	if c.MTLS.Strict {
		return out, nil
	}
	out = append(out, &listenerv3.FilterChain{Name: plain.Name, FilterChainMatch: match(transportRaw, nil), Filters: plain.Filters})
	if !c.Protocol.IsHTTP() {
		out = append(out, &listenerv3.FilterChain{Name: plain.Name + "-tls-passthrough", FilterChainMatch: match(transportTLS, nil), Filters: plain.Filters})
	}
	return out, nil
}

// listenerFiltersTimeout is istiod's for its inbound listener: no timeout
// for tls_inspector, continue when one is configured.
var listenerFiltersTimeout = durationpb.New(0)
