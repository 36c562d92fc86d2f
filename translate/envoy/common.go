package envoy

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Extension names (Envoy's well-known filter names).
const (
	filterHCM           = "envoy.filters.network.http_connection_manager"
	filterTCPProxy      = "envoy.filters.network.tcp_proxy"
	filterOriginalDst   = "envoy.filters.listener.original_dst"
	filterOriginalSrc   = "envoy.filters.listener.original_src"
	filterHTTPInspector = "envoy.filters.listener.http_inspector"
	filterTLSInspector  = "envoy.filters.listener.tls_inspector"
	filterFault         = "envoy.filters.http.fault"
	filterCORS          = "envoy.filters.http.cors"
	filterRouter        = "envoy.filters.http.router"
	httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	transportSocketTLS  = "envoy.transport_sockets.tls"
	previousHosts       = "envoy.retry_host_predicates.previous_hosts"
	previousPriorities  = "envoy.retry_priorities.previous_priorities"
)

// maxDirectResponseBody matches Istio's 1 MiB limit.
const maxDirectResponseBody = 1 << 20

// toAny packs a message. Marshalling only fails on invalid UTF-8 in a string
// field, which the caller reports as an invalid resource.
func toAny(m proto.Message) (*anypb.Any, error) {
	a, err := packDeterministic(m)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// packDeterministic packs a message with its map entries in a fixed order
// (an RBAC filter's policies are a map): the packed bytes are what
// resource versions digest and what `nodemesh translate` and the controller
// must print and serve identically.
func packDeterministic(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// adsConfigSource fetches a resource over the same ADS stream, without an
// initial-fetch timeout (Istio's settings).
func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		InitialFetchTimeout:   durationpb.New(0),
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func dur(d ir.Duration) *durationpb.Duration { return durationpb.New(time.Duration(d)) }

func durp(d *ir.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return dur(*d)
}

// percentMillion converts a percentage (0–100) to Envoy's per-million form,
// as Istio does (value × 10⁴ over MILLION).
func percentMillion(p float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(p * 10000), Denominator: typev3.FractionalPercent_MILLION}
}

func stringMatcher(m ir.StringMatch) *matcherv3.StringMatcher {
	switch {
	case m.Exact != nil:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: *m.Exact}}
	case m.Prefix != nil:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: *m.Prefix}}
	case m.Regex != nil:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: *m.Regex}}}
	}
	return nil
}

// configMetadata is filter_metadata.istio.config, which istioctl and
// nodemesh use to trace a route back to its Istio resource.
func configMetadata(ref *ir.ResourceRef) (*corev3.Metadata, error) {
	if ref == nil {
		return nil, nil
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
		"config": structpb.NewStringValue(ir.ConfigPath(ref.Kind, ref.Namespace, ref.Name)),
	}}}}, nil
}

// Origins lists the Kubernetes resources a built resource came from, read
// back from its filter_metadata.istio.config (and istio.services) entries
// anywhere inside it, each once, in order of appearance. It is how a
// rejection by a node is traced back to the VirtualServices and
// DestinationRules behind the rejected configuration.
func Origins(m proto.Message) []ir.ResourceRef {
	var out []ir.ResourceRef
	seen := map[ir.ResourceRef]bool{}
	var walk func(protoreflect.Message)
	walk = func(msg protoreflect.Message) {
		if md, ok := msg.Interface().(*corev3.Metadata); ok {
			if ref := origin(md); ref != nil && !seen[*ref] {
				seen[*ref] = true
				out = append(out, *ref)
			}
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
				return true
			}
			switch {
			case fd.IsList():
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message())
				}
			case fd.IsMap():
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
						walk(mv.Message())
						return true
					})
				}
			default:
				walk(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return out
}
