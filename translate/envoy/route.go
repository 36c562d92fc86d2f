package envoy

import (
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

func buildRouteConfig(rc ir.RouteConfig) (*routev3.RouteConfiguration, error) {
	out := &routev3.RouteConfiguration{
		Name: rc.Name,
		// Routes may point at clusters that are still warming; Istio relies on
		// nodemesh-style validation instead of Envoy's.
		ValidateClusters:               wrapperspb.Bool(false),
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(maxDirectResponseBody),
	}
	for _, vh := range rc.VirtualHosts {
		v := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains, IncludeRequestAttemptCount: true}
		for i := range vh.Routes {
			r, err := buildRoute(&vh.Routes[i])
			if err != nil {
				return nil, fmt.Errorf("virtual host %s route %d: %w", vh.Name, i, err)
			}
			v.Routes = append(v.Routes, r)
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

func buildRoute(r *ir.Route) (*routev3.Route, error) {
	out := &routev3.Route{Name: r.Name, Match: routeMatch(r.Match), StatPrefix: r.StatPrefix}
	var err error
	if out.Metadata, err = configMetadata(r.Origin); err != nil {
		return nil, err
	}
	if r.Decorator != "" {
		out.Decorator = &routev3.Decorator{Operation: r.Decorator}
	}
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = headerOps(r.Headers.Request), r.Headers.RequestRemove
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = headerOps(r.Headers.Response), r.Headers.ResponseRemove
	switch {
	case r.Redirect != nil:
		out.Action = &routev3.Route_Redirect{Redirect: redirectAction(r.Redirect)}
	case r.DirectResponse != nil:
		out.Action = &routev3.Route_DirectResponse{DirectResponse: directResponse(r.DirectResponse)}
	case r.Forward != nil:
		a, err := routeAction(r.Forward)
		if err != nil {
			return nil, err
		}
		out.Action = &routev3.Route_Route{Route: a}
	}
	if r.Fault != nil || r.CORS != nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	if r.Fault != nil {
		a, err := toAny(httpFault(r.Fault))
		if err != nil {
			return nil, err
		}
		out.TypedPerFilterConfig[filterFault] = a
	}
	if r.CORS != nil {
		a, err := toAny(corsPolicy(r.CORS))
		if err != nil {
			return nil, err
		}
		out.TypedPerFilterConfig[filterCORS] = a
	}
	return out, nil
}

func routeMatch(m ir.RouteMatch) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch p := m.Path; {
	case p.Exact != "":
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Exact}
	case p.Regex != "":
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Regex}}
	default:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.Prefix}
	}
	if m.CaseSensitive != nil {
		out.CaseSensitive = wrapperspb.Bool(*m.CaseSensitive)
	}
	for _, h := range m.Headers {
		hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert, TreatMissingHeaderAsEmpty: h.TreatMissingAsEmpty}
		if h.Present {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else if sm := stringMatcher(h.Value); sm != nil {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
		out.Headers = append(out.Headers, hm)
	}
	for _, q := range m.QueryParams {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		if q.Present {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else if sm := stringMatcher(q.Value); sm != nil {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		out.QueryParameters = append(out.QueryParameters, qm)
	}
	return out
}

func headerOps(ops []ir.HeaderOp) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range ops {
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if h.Append {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value}, AppendAction: action})
	}
	return out
}

func routeAction(f *ir.ForwardAction) (*routev3.RouteAction, error) {
	timeout := dur(f.Timeout)
	out := &routev3.RouteAction{
		Timeout: timeout,
		// Istio sets the deprecated max_grpc_timeout to the route timeout so
		// that gRPC requests honour it too (0 = disabled).
		MaxGrpcTimeout: timeout,
		PrefixRewrite:  f.PrefixRewrite,
	}
	if !f.Weighted {
		out.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: f.Destinations[0].Cluster}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, d := range f.Destinations {
			cw := &routev3.WeightedCluster_ClusterWeight{
				Name:                    d.Cluster,
				Weight:                  wrapperspb.UInt32(d.Weight),
				RequestHeadersToAdd:     headerOps(d.Headers.Request),
				RequestHeadersToRemove:  d.Headers.RequestRemove,
				ResponseHeadersToAdd:    headerOps(d.Headers.Response),
				ResponseHeadersToRemove: d.Headers.ResponseRemove,
			}
			if d.HostRewrite != "" {
				cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: d.HostRewrite}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		out.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if rr := f.RegexRewrite; rr != nil {
		out.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: rr.Pattern}, Substitution: rr.Substitution}
	}
	if f.HostRewrite != "" {
		out.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: f.HostRewrite}
	}
	for _, m := range f.Mirrors {
		out.RequestMirrorPolicies = append(out.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:                       m.Cluster,
			RuntimeFraction:               &corev3.RuntimeFractionalPercent{DefaultValue: percentMillion(m.Percent)},
			TraceSampled:                  wrapperspb.Bool(false),
			DisableShadowHostSuffixAppend: true,
		})
	}
	for _, h := range f.HashPolicies {
		out.HashPolicy = append(out.HashPolicy, hashPolicy(h))
	}
	if f.Retry != nil {
		rp, err := retryPolicy(f.Retry)
		if err != nil {
			return nil, err
		}
		out.RetryPolicy = rp
	}
	return out, nil
}

func hashPolicy(h ir.HashPolicy) *routev3.RouteAction_HashPolicy {
	switch {
	case h.Header != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}}
	case h.Cookie != nil:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie.Name, Path: h.Cookie.Path, Ttl: durp(h.Cookie.TTL)}
		for _, a := range h.Cookie.Attributes {
			c.Attributes = append(c.Attributes, &routev3.RouteAction_HashPolicy_CookieAttribute{Name: a.Name, Value: a.Value})
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	case h.QueryParam != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.QueryParam}}}
	default:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: h.SourceIP}}}
	}
}

func retryPolicy(r *ir.RetryPolicy) (*routev3.RetryPolicy, error) {
	out := &routev3.RetryPolicy{
		RetryOn:                       r.RetryOn,
		NumRetries:                    wrapperspb.UInt32(r.Attempts),
		PerTryTimeout:                 durp(r.PerTryTimeout),
		RetriableStatusCodes:          r.RetriableStatusCodes,
		HostSelectionRetryMaxAttempts: r.HostSelectionMaxAttempts,
	}
	if r.PreviousHosts {
		a, err := toAny(&previoushostsv3.PreviousHostsPredicate{})
		if err != nil {
			return nil, err
		}
		out.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
			Name: previousHosts, ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: a},
		}}
	}
	if r.RetryRemoteLocalities {
		a, err := toAny(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})
		if err != nil {
			return nil, err
		}
		out.RetryPriority = &routev3.RetryPolicy_RetryPriority{
			Name: previousPriorities, ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: a},
		}
	}
	if r.BackoffBase != nil {
		out.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durp(r.BackoffBase)}
	}
	return out, nil
}

var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func redirectAction(r *ir.Redirect) *routev3.RedirectAction {
	out := &routev3.RedirectAction{HostRedirect: r.Host, PortRedirect: r.Port, ResponseCode: redirectCodes[r.Code]}
	switch {
	case r.PrefixRewrite != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.PrefixRewrite}
	case r.Path != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Path}
	}
	if r.Scheme != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	return out
}

func directResponse(d *ir.DirectResponse) *routev3.DirectResponseAction {
	out := &routev3.DirectResponseAction{Status: d.Status}
	switch {
	case d.BodyIsBytes:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(d.Body)}}
	case d.Body != "":
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: d.Body}}
	}
	return out
}

func httpFault(f *ir.Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: dur(d.Fixed)},
			Percentage:         percentMillion(d.Percent),
		}
		if d.IntegerPercent {
			out.Delay.Percentage = &typev3.FractionalPercent{Numerator: uint32(d.Percent), Denominator: typev3.FractionalPercent_HUNDRED}
		}
	}
	if a := f.Abort; a != nil {
		fa := &faultv3.FaultAbort{Percentage: percentMillion(a.Percent)}
		if a.GRPCStatus != nil {
			fa.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: *a.GRPCStatus}
		} else {
			fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: a.HTTPStatus}
		}
		out.Abort = fa
	}
	return out
}

func corsPolicy(c *ir.CORS) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.AllowMethods, ","),
		AllowHeaders:  strings.Join(c.AllowHeaders, ","),
		ExposeHeaders: strings.Join(c.ExposeHeaders, ","),
		FilterEnabled: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
			Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED,
		}},
		ForwardNotMatchingPreflights: wrapperspb.Bool(c.ForwardNotMatchingPreflights),
	}
	for _, o := range c.AllowOrigins {
		if sm := stringMatcher(o); sm != nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	}
	if c.MaxAge != nil {
		out.MaxAge = strconv.FormatInt(int64(c.MaxAge.Std().Seconds()), 10)
	}
	if c.AllowCredentials != nil {
		out.AllowCredentials = wrapperspb.Bool(*c.AllowCredentials)
	}
	return out
}
