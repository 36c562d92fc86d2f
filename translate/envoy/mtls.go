package envoy

import (
	"fmt"
	"slices"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	setfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	netsetfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tsinputv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/transport_socket/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio mTLS on outbound clusters (ir.IstioMTLS): Istio's transport socket
// matches — tlsMode-istio (UpstreamTlsContext with the workload certificate
// over SDS) and tlsMode-disabled (raw_buffer) — except that one node Envoy
// serves client pods of many identities, so there is one tlsMode-istio socket
// per client identity of the node, and Cluster.transport_socket_matcher
// (Envoy ≥ 1.37) picks it: the endpoint's tlsMode (EDS metadata), then the
// client's address, which the outbound listener's set_filter_state filter
// shares with the upstream (ClientAddressKey).
const (
	// SDSClusterName is the node Envoy's static cluster of the agent's SDS
	// server (Istio's name for the istio-agent's).
	SDSClusterName = "sds-grpc"
	// SDSRootCA is the SDS secret of the trust bundle (Istio's ROOTCA).
	SDSRootCA = "ROOTCA"
	// ClientAddressKey is the filter state key of the client's address.
	ClientAddressKey = "io.nodemesh.client_address"

	transportSocketMatchFilter = "envoy.transport_socket_match"
	tlsModeKey                 = "tlsMode"
	tlsModeIstio               = "istio"
	// SocketIstioPrefix + SPIFFE ID names an identity's mTLS socket.
	SocketIstioPrefix = "tlsMode-istio~"
	// SocketDisabled is the plaintext socket (Istio's tlsMode-disabled).
	SocketDisabled = "tlsMode-disabled"
	// SocketNoIdentity is the mTLS socket without a client certificate that
	// explicit ISTIO_MUTUAL falls back to for a client of no known identity:
	// an Istio server refuses it (it requires a client certificate), and it
	// is never plaintext.
	SocketNoIdentity = "tlsMode-istio-noidentity"

	rawBufferSocket          = "envoy.transport_sockets.raw_buffer"
	inputEndpointMetadata    = "envoy.matching.inputs.endpoint_metadata"
	inputFilterState         = "envoy.matching.inputs.transport_socket_filter_state"
	actionTransportSocket    = "envoy.matching.action.transport_socket.name"
	filterSetFilterState     = "envoy.filters.network.set_filter_state"
	filterStateStringFactory = "envoy.string"
)

// identityMatchKey is the legacy match criterion of an identity's socket: no
// endpoint carries it, so an Envoy that ignores transport_socket_matcher
// (older than 1.37) never picks another pod's certificate by metadata; it
// falls back to the socket with an empty match (plaintext, or no client
// certificate for ISTIO_MUTUAL) — it denies more.
const identityMatchKey = "io.nodemesh.client_identity"

// sdsSecret is Istio's SDS secret config: the agent's SDS cluster over
// gRPC, no initial fetch timeout.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_GRPC,
			TransportApiVersion:       corev3.ApiVersion_V3,
			GrpcServices:              []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSClusterName}}}},
			SetNodeOnFirstMessageOnly: true,
		}},
		InitialFetchTimeout: durationpb.New(0),
		ResourceApiVersion:  corev3.ApiVersion_V3,
	}}
}

// istioTLSContext is Istio's ISTIO_MUTUAL UpstreamTlsContext without the
// client certificate.
func istioTLSContext(m *ir.IstioMTLS) *tlsv3.UpstreamTlsContext {
	common := &tlsv3.CommonTlsContext{
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		AlpnProtocols: m.ALPN,
	}
	dvc := &tlsv3.CertificateValidationContext{}
	if !m.InsecureSkipVerify {
		for _, san := range m.SubjectAltNames {
			dvc.MatchSubjectAltNames = append(dvc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}})
		}
	}
	common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext:         dvc,
		ValidationContextSdsSecretConfig: sdsSecret(SDSRootCA),
	}}
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: m.SNI}
}

// certificatePart is the encoding of an UpstreamTlsContext holding only an
// identity's SDS certificate. Protobuf merges concatenated encodings
// (repeated fields append, messages merge), so a cluster's context encoded
// once plus this part is that context with the certificate: the per-node
// step encodes each cluster's context once, not once per identity.
func certificatePart(spiffe string) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(spiffe)},
	}})
}

var upstreamTLSType = "type.googleapis.com/" + string((&tlsv3.UpstreamTlsContext{}).ProtoReflect().Descriptor().FullName())

func rawSocket() (*corev3.TransportSocket, error) {
	a, err := toAny(&rawv3.RawBuffer{})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: rawBufferSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func typedConfig(name string, m proto.Message) (*xdscorev3.TypedExtensionConfig, error) {
	a, err := toAny(m)
	if err != nil {
		return nil, err
	}
	return &xdscorev3.TypedExtensionConfig{Name: name, TypedConfig: a}, nil
}

func socketAction(name string) (*xdsmatcherv3.Matcher_OnMatch, error) {
	tc, err := typedConfig(actionTransportSocket, &tsinputv3.TransportSocketNameAction{Name: name})
	if err != nil {
		return nil, err
	}
	return &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: tc}}, nil
}

// MTLSIdentities is what the per-node step needs of a node's client
// identities, computed once per node: the identities sorted, and each one's
// certificate part (see certificatePart).
type MTLSIdentities struct {
	ids   []ir.ClientIdentity
	parts [][]byte
}

// NewMTLSIdentities prepares a node's client identities.
func NewMTLSIdentities(ids []ir.ClientIdentity) (*MTLSIdentities, error) {
	out := &MTLSIdentities{ids: slices.Clone(ids)}
	slices.SortFunc(out.ids, func(a, b ir.ClientIdentity) int { return compareStrings(a.SPIFFE, b.SPIFFE) })
	seen := map[string]string{}
	for _, id := range out.ids {
		p, err := certificatePart(id.SPIFFE)
		if err != nil {
			return nil, err
		}
		out.parts = append(out.parts, p)
		for _, a := range id.Addresses {
			// An address is one pod's: two identities for one address
			// would let one pod present the other's certificate.
			if other, dup := seen[a]; dup && other != id.SPIFFE {
				return nil, fmt.Errorf("client address %s has two identities (%s, %s)", a, other, id.SPIFFE)
			}
			seen[a] = id.SPIFFE
		}
	}
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// WithIstioMTLS is a cluster with Istio mTLS for a node's client
// identities (nil: none, as the shared configuration has): shared is the
// cluster as New built it (not modified), m its ir.IstioMTLS.
func WithIstioMTLS(shared *clusterv3.Cluster, m *ir.IstioMTLS, ids *MTLSIdentities) (*clusterv3.Cluster, error) {
	out := proto.Clone(shared).(*clusterv3.Cluster)
	if err := applyIstioMTLS(out, m, ids); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", shared.GetName(), err)
	}
	return out, nil
}

// applyIstioMTLS sets a cluster's transport socket matches and matcher.
func applyIstioMTLS(c *clusterv3.Cluster, m *ir.IstioMTLS, ids *MTLSIdentities) error {
	if ids == nil {
		ids = &MTLSIdentities{}
	}
	base, err := proto.MarshalOptions{Deterministic: true}.Marshal(istioTLSContext(m))
	if err != nil {
		return fmt.Errorf("encode tls context: %w", err)
	}
	raw, err := rawSocket()
	if err != nil {
		return err
	}
	byClient := &xdsmatcherv3.Matcher_MatcherTree_MatchMap{Map: map[string]*xdsmatcherv3.Matcher_OnMatch{}}
	c.TransportSocketMatches = make([]*clusterv3.Cluster_TransportSocketMatch, 0, len(ids.ids)+2)
	for i, id := range ids.ids {
		name := SocketIstioPrefix + id.SPIFFE
		value := make([]byte, 0, len(base)+len(ids.parts[i]))
		value = append(append(value, base...), ids.parts[i]...)
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: name,
			Match: &structpb.Struct{Fields: map[string]*structpb.Value{
				tlsModeKey: structpb.NewStringValue(tlsModeIstio), identityMatchKey: structpb.NewStringValue(id.SPIFFE),
			}},
			TransportSocket: &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: upstreamTLSType, Value: value},
			}},
		})
		action, err := socketAction(name)
		if err != nil {
			return err
		}
		for _, a := range id.Addresses {
			byClient.Map[a] = action
		}
	}
	// The fallback: plaintext for auto-mTLS (as Istio sends to an endpoint
	// without a sidecar; a STRICT server refuses it), no certificate for
	// ISTIO_MUTUAL. Its empty match is what an Envoy that ignores the
	// matcher picks.
	fallback := SocketDisabled
	if m.Auto {
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: SocketDisabled, Match: &structpb.Struct{}, TransportSocket: raw,
		})
	} else {
		fallback = SocketNoIdentity
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: SocketNoIdentity, Match: &structpb.Struct{},
			TransportSocket: &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: upstreamTLSType, Value: base},
			}},
		})
	}
	onNoMatch, err := socketAction(fallback)
	if err != nil {
		return err
	}
	fsInput, err := typedConfig(inputFilterState, &tsinputv3.FilterStateInput{Key: ClientAddressKey})
	if err != nil {
		return err
	}
	clientMatcher := &xdsmatcherv3.Matcher{
		MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
			Input: fsInput, TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: byClient},
		}},
		OnNoMatch: onNoMatch,
	}
	if len(byClient.Map) == 0 {
		// No client on the node: an exact match map must not be empty.
		clientMatcher = &xdsmatcherv3.Matcher{OnNoMatch: onNoMatch}
	}
	if !m.Auto {
		c.TransportSocketMatcher = clientMatcher
		return nil
	}
	mdInput, err := typedConfig(inputEndpointMetadata, &tsinputv3.EndpointMetadataInput{
		Filter: transportSocketMatchFilter,
		Path:   []*tsinputv3.EndpointMetadataInput_PathSegment{{Segment: &tsinputv3.EndpointMetadataInput_PathSegment_Key{Key: tlsModeKey}}},
	})
	if err != nil {
		return err
	}
	c.TransportSocketMatcher = &xdsmatcherv3.Matcher{
		MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
			Input: mdInput,
			TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: &xdsmatcherv3.Matcher_MatcherTree_MatchMap{
				Map: map[string]*xdsmatcherv3.Matcher_OnMatch{tlsModeIstio: {OnMatch: &xdsmatcherv3.Matcher_OnMatch_Matcher{Matcher: clientMatcher}}},
			}},
		}},
		OnNoMatch: onNoMatch,
	}
	return nil
}

// endpointTLSModeIstio is Istio's endpoint metadata of a pod with a sidecar:
// envoy.transport_socket_match {tlsMode: istio}. Shared by every endpoint
// (immutable).
var endpointTLSModeIstio = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	transportSocketMatchFilter: {Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
}}

// shareClientAddressFilter is the network filter, first in every outbound
// chain, that stores the client's address (without port) in filter state
// shared with the upstream, where transport_socket_filter_state reads it.
// The key is nodemesh's own, so its factory is the generic string object's.
func shareClientAddressFilter() (*listenerv3.Filter, error) {
	a, err := toAny(&netsetfsv3.Config{OnNewConnection: []*setfsv3.FilterStateValue{{
		Key:        &setfsv3.FilterStateValue_ObjectKey{ObjectKey: ClientAddressKey},
		FactoryKey: filterStateStringFactory,
		Value: &setfsv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
			}},
		}},
		SharedWithUpstream: setfsv3.FilterStateValue_ONCE,
	}}})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: filterSetFilterState, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// matcherSocketNames are the transport socket names a matcher's actions
// select (an action of another type yields its type URL, which names no
// socket: the validator reports it).
func matcherSocketNames(m *xdsmatcherv3.Matcher) []string {
	var out []string
	var onMatch func(om *xdsmatcherv3.Matcher_OnMatch)
	var walk func(m *xdsmatcherv3.Matcher)
	onMatch = func(om *xdsmatcherv3.Matcher_OnMatch) {
		switch {
		case om == nil:
		case om.GetMatcher() != nil:
			walk(om.GetMatcher())
		case om.GetAction() != nil:
			var a tsinputv3.TransportSocketNameAction
			if err := om.GetAction().GetTypedConfig().UnmarshalTo(&a); err != nil {
				out = append(out, om.GetAction().GetTypedConfig().GetTypeUrl())
				return
			}
			out = append(out, a.GetName())
		}
	}
	walk = func(m *xdsmatcherv3.Matcher) {
		if m == nil {
			return
		}
		onMatch(m.GetOnNoMatch())
		tree := m.GetMatcherTree()
		for _, om := range tree.GetExactMatchMap().GetMap() {
			onMatch(om)
		}
		for _, om := range tree.GetPrefixMatchMap().GetMap() {
			onMatch(om)
		}
		for _, fm := range m.GetMatcherList().GetMatchers() {
			onMatch(fm.GetOnMatch())
		}
	}
	walk(m)
	return out
}
