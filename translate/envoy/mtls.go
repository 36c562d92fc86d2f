package envoy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

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
	"google.golang.org/protobuf/reflect/protoreflect"
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
// client's identity, which the outbound listener decided once per
// connection (the client's filter chain, see ir.FilterChain.ClientIdentity)
// and shares with the upstream (ClientIdentityKey).
const (
	// SDSClusterName is the node Envoy's static cluster of the agent's SDS
	// server (Istio's name for the istio-agent's).
	SDSClusterName = "sds-grpc"
	// SDSRootCA is the SDS secret of the trust bundle (Istio's ROOTCA).
	SDSRootCA = "ROOTCA"
	// ClientIdentityKey is the filter state key of the client's SPIFFE ID.
	ClientIdentityKey = "io.nodemesh.client_identity"

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

// ValidSPIFFE checks that a SPIFFE ID is spiffe://TRUST_DOMAIN/PATH with the
// characters the SPIFFE ID specification allows: the listener stores it
// literally in a substitution format string (where "%" would be an
// operator) and SDS names the certificate by it.
func ValidSPIFFE(id string) error {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return fmt.Errorf("SPIFFE ID %q does not start with spiffe://", id)
	}
	td, path, _ := strings.Cut(rest, "/")
	if td == "" || len(id) > 2048 {
		return fmt.Errorf("SPIFFE ID %q has no trust domain or is too long", id)
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("SPIFFE ID %q: trust domain character %q", id, r)
		}
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("SPIFFE ID %q: empty or dot path segment", id)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
				return fmt.Errorf("SPIFFE ID %q: path character %q", id, r)
			}
		}
	}
	return nil
}

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

// MTLSIdentities are a node's client identities as the per-node step
// needs them, prepared and validated once per identity set: the SPIFFE IDs
// sorted, each one's certificate part (see certificatePart), and the
// transport socket matchers, which depend on the identities alone (shared by
// every cluster of the set: they must not be modified). Not safe for
// concurrent use.
type MTLSIdentities struct {
	ids   []string
	parts [][]byte
	// matchers and their socket names by ir.IstioMTLS.Auto, built and
	// validated on first use.
	matchers map[bool]*xdsmatcherv3.Matcher
	selects  map[bool][]string
	raw      *corev3.TransportSocket
	check    *checker
}

// NewMTLSIdentities prepares and validates a node's client identities
// (SPIFFE IDs; the order does not matter, a duplicate is an error).
func NewMTLSIdentities(spiffes []string) (*MTLSIdentities, error) {
	out := &MTLSIdentities{
		ids: slices.Sorted(slices.Values(spiffes)), matchers: map[bool]*xdsmatcherv3.Matcher{}, selects: map[bool][]string{},
		check: &checker{validator: &validator{own: &Refs{}, extra: &Refs{}}, plans: map[protoreflect.MessageDescriptor][]protoreflect.FieldDescriptor{}},
	}
	for i, id := range out.ids {
		if i > 0 && out.ids[i-1] == id {
			return nil, fmt.Errorf("client identity %s twice", id)
		}
		if err := ValidSPIFFE(id); err != nil {
			return nil, err
		}
		if err := out.validate(sdsSecret(id)); err != nil {
			return nil, fmt.Errorf("certificate of %s: %w", id, err)
		}
		p, err := certificatePart(id)
		if err != nil {
			return nil, err
		}
		out.parts = append(out.parts, p)
	}
	raw, err := rawSocket()
	if err != nil {
		return nil, err
	}
	if err := out.validate(raw); err != nil {
		return nil, err
	}
	out.raw = raw
	return out, nil
}

// sharedIdentities are the identities of the shared configuration: none,
// and no validation here (the validator checks the whole shared cluster).
func sharedIdentities() (*MTLSIdentities, error) {
	raw, err := rawSocket()
	if err != nil {
		return nil, err
	}
	return &MTLSIdentities{matchers: map[bool]*xdsmatcherv3.Matcher{}, selects: map[bool][]string{}, raw: raw}, nil
}

// validate runs the validator's deep check (protoc-gen-validate, packed
// Anys included) on one message (nothing for sharedIdentities).
func (ids *MTLSIdentities) validate(m proto.Message) error {
	if ids.check == nil {
		return nil
	}
	ids.check.problems = nil
	ids.check.deep(Problem{}, m)
	if len(ids.check.problems) > 0 {
		return errors.New(ids.check.problems[0].Message)
	}
	return nil
}

// matcher is the transport socket matcher of clusters with Istio mTLS
// (auto: auto-mTLS, else ISTIO_MUTUAL), validated, with the socket names it
// selects: endpoint tlsMode istio (auto-mTLS only) → the client identity in
// filter state → that identity's socket; anything else → the fallback.
func (ids *MTLSIdentities) matcher(auto bool) (*xdsmatcherv3.Matcher, []string, error) {
	if m := ids.matchers[auto]; m != nil {
		return m, ids.selects[auto], nil
	}
	fallback := SocketDisabled
	if !auto {
		fallback = SocketNoIdentity
	}
	onNoMatch, err := socketAction(fallback)
	if err != nil {
		return nil, nil, err
	}
	byIdentity := &xdsmatcherv3.Matcher_MatcherTree_MatchMap{Map: make(map[string]*xdsmatcherv3.Matcher_OnMatch, len(ids.ids))}
	for _, id := range ids.ids {
		if byIdentity.Map[id], err = socketAction(SocketIstioPrefix + id); err != nil {
			return nil, nil, err
		}
	}
	fsInput, err := typedConfig(inputFilterState, &tsinputv3.FilterStateInput{Key: ClientIdentityKey})
	if err != nil {
		return nil, nil, err
	}
	m := &xdsmatcherv3.Matcher{
		MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
			Input: fsInput, TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: byIdentity},
		}},
		OnNoMatch: onNoMatch,
	}
	if len(ids.ids) == 0 {
		// No client on the node: an exact match map must not be empty.
		m = &xdsmatcherv3.Matcher{OnNoMatch: onNoMatch}
	}
	if auto {
		mdInput, err := typedConfig(inputEndpointMetadata, &tsinputv3.EndpointMetadataInput{
			Filter: transportSocketMatchFilter,
			Path:   []*tsinputv3.EndpointMetadataInput_PathSegment{{Segment: &tsinputv3.EndpointMetadataInput_PathSegment_Key{Key: tlsModeKey}}},
		})
		if err != nil {
			return nil, nil, err
		}
		m = &xdsmatcherv3.Matcher{
			MatcherType: &xdsmatcherv3.Matcher_MatcherTree_{MatcherTree: &xdsmatcherv3.Matcher_MatcherTree{
				Input: mdInput,
				TreeType: &xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: &xdsmatcherv3.Matcher_MatcherTree_MatchMap{
					Map: map[string]*xdsmatcherv3.Matcher_OnMatch{tlsModeIstio: {OnMatch: &xdsmatcherv3.Matcher_OnMatch_Matcher{Matcher: m}}},
				}},
			}},
			OnNoMatch: onNoMatch,
		}
	}
	if err := ids.validate(m); err != nil {
		return nil, nil, fmt.Errorf("transport socket matcher: %w", err)
	}
	ids.matchers[auto], ids.selects[auto] = m, matcherSocketNames(m)
	return m, ids.selects[auto], nil
}

// WithIstioMTLS is a cluster with Istio mTLS for a node's client
// identities (nil: none, as the shared configuration has): shared is the
// cluster as New built it (not modified), m its ir.IstioMTLS. It is
// validated as the validator would, but cheaply (see validateIstioMTLS).
func WithIstioMTLS(shared *clusterv3.Cluster, m *ir.IstioMTLS, ids *MTLSIdentities) (*clusterv3.Cluster, error) {
	out := proto.Clone(shared).(*clusterv3.Cluster)
	if ids == nil {
		var err error
		if ids, err = NewMTLSIdentities(nil); err != nil {
			return nil, err
		}
	}
	if err := applyIstioMTLS(out, m, ids); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", shared.GetName(), err)
	}
	if err := ids.validateIstioMTLS(out, m); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", shared.GetName(), err)
	}
	return out, nil
}

// validateIstioMTLS validates what applyIstioMTLS set on a cluster whose
// other fields were validated already (the shared cluster): as the
// validator's deep check of the whole cluster would, without unpacking
// every identity's socket. The identity sockets differ only in the SDS
// certificate's name (their encodings are the cluster's context plus an
// identity's certificate part; protobuf merges concatenated encodings), so
// the context is validated once with the first identity's certificate
// (the template) and once without (the ISTIO_MUTUAL fallback socket),
// each identity's certificate once per identity set (NewMTLSIdentities),
// the matcher once per identity set; what remains per socket is its
// shape — its name and type, checked here — and the validator's
// matcher → socket name check.
func (ids *MTLSIdentities) validateIstioMTLS(c *clusterv3.Cluster, m *ir.IstioMTLS) error {
	ctx := istioTLSContext(m)
	if !m.Auto || len(ids.ids) == 0 {
		if err := ids.validate(ctx); err != nil {
			return fmt.Errorf("tls context: %w", err)
		}
	}
	if len(ids.ids) > 0 {
		ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(ids.ids[0])}
		if err := ids.validate(ctx); err != nil {
			return fmt.Errorf("tls context: %w", err)
		}
	}
	_, selects, err := ids.matcher(m.Auto)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(c.GetTransportSocketMatches()))
	for i, tsm := range c.GetTransportSocketMatches() {
		if err := tsm.ValidateAll(); err != nil {
			return err
		}
		want, typ := SocketIstioPrefix, upstreamTLSType
		switch {
		case i < len(ids.ids):
			want += ids.ids[i]
		case m.Auto:
			want, typ = SocketDisabled, ids.raw.GetTypedConfig().GetTypeUrl()
		default:
			want = SocketNoIdentity
		}
		if tsm.GetName() != want || tsm.GetTransportSocket().GetTypedConfig().GetTypeUrl() != typ {
			return fmt.Errorf("transport socket match %d is %q (%s), want %q (%s)", i, tsm.GetName(), tsm.GetTransportSocket().GetTypedConfig().GetTypeUrl(), want, typ)
		}
		names = append(names, tsm.GetName())
	}
	if len(names) != len(ids.ids)+1 {
		return fmt.Errorf("%d transport socket matches, want %d", len(names), len(ids.ids)+1)
	}
	if p := socketMatcherProblems(names, selects); len(p) > 0 {
		return errors.New(p[0])
	}
	return nil
}

// applyIstioMTLS sets a cluster's transport socket matches and matcher.
func applyIstioMTLS(c *clusterv3.Cluster, m *ir.IstioMTLS, ids *MTLSIdentities) error {
	base, err := proto.MarshalOptions{Deterministic: true}.Marshal(istioTLSContext(m))
	if err != nil {
		return fmt.Errorf("encode tls context: %w", err)
	}
	matcher, _, err := ids.matcher(m.Auto)
	if err != nil {
		return err
	}
	c.TransportSocketMatches = make([]*clusterv3.Cluster_TransportSocketMatch, 0, len(ids.ids)+1)
	for i, id := range ids.ids {
		value := make([]byte, 0, len(base)+len(ids.parts[i]))
		value = append(append(value, base...), ids.parts[i]...)
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: SocketIstioPrefix + id,
			Match: &structpb.Struct{Fields: map[string]*structpb.Value{
				tlsModeKey: structpb.NewStringValue(tlsModeIstio), identityMatchKey: structpb.NewStringValue(id),
			}},
			TransportSocket: &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: upstreamTLSType, Value: value},
			}},
		})
	}
	// The fallback: plaintext for auto-mTLS (as Istio sends to an endpoint
	// without a sidecar; a STRICT server refuses it), no certificate for
	// ISTIO_MUTUAL. Its empty match is what an Envoy that ignores the
	// matcher picks.
	if m.Auto {
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: SocketDisabled, Match: &structpb.Struct{}, TransportSocket: ids.raw,
		})
	} else {
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: SocketNoIdentity, Match: &structpb.Struct{},
			TransportSocket: &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: upstreamTLSType, Value: base},
			}},
		})
	}
	c.TransportSocketMatcher = matcher
	return nil
}

// endpointTLSModeIstio is Istio's endpoint metadata of a pod with a sidecar:
// envoy.transport_socket_match {tlsMode: istio}. Shared by every endpoint
// (immutable).
var endpointTLSModeIstio = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	transportSocketMatchFilter: {Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
}}

// clientIdentityFilter is the network filter, first in an outbound chain
// of one client identity, that stores the identity (its SPIFFE ID,
// literally) in filter state shared with the upstream, where
// transport_socket_filter_state reads it. The key is nodemesh's own, so its
// factory is the generic string object's; read-only, so that no later
// filter can replace it.
func clientIdentityFilter(spiffe string) (*listenerv3.Filter, error) {
	// A literal in a substitution format string: ValidSPIFFE admits no "%".
	if err := ValidSPIFFE(spiffe); err != nil {
		return nil, err
	}
	a, err := toAny(&netsetfsv3.Config{OnNewConnection: []*setfsv3.FilterStateValue{{
		Key:        &setfsv3.FilterStateValue_ObjectKey{ObjectKey: ClientIdentityKey},
		FactoryKey: filterStateStringFactory,
		Value: &setfsv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: spiffe},
			}},
		}},
		ReadOnly:           true,
		SharedWithUpstream: setfsv3.FilterStateValue_ONCE,
	}}})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: filterSetFilterState, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// socketMatcherProblems are the validator's checks of a transport socket
// matcher against a cluster's transport socket matches: the names are
// unique (the matcher selects by name) and every name the matcher selects
// is one of them.
func socketMatcherProblems(matches, selects []string) []string {
	var out []string
	names := make(map[string]bool, len(matches))
	for _, n := range matches {
		if names[n] {
			out = append(out, fmt.Sprintf("duplicate transport socket match name %q (the matcher selects by name)", n))
		}
		names[n] = true
	}
	for _, n := range selects {
		if !names[n] {
			out = append(out, fmt.Sprintf("transport socket matcher selects %q, which is not among the transport socket matches", n))
		}
	}
	return out
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
