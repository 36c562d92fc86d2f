package istio

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// maxDirectResponseBody is Istio's (and nodemesh's) limit on inline bodies.
const maxDirectResponseBody = 1 << 20

// retryOnPolicies are the retryOn tokens Istio accepts (Envoy's
// x-envoy-retry-on and x-envoy-retry-grpc-on conditions).
var retryOnPolicies = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
	"retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

// vsValidator collects the problems of one VirtualService.
type vsValidator struct {
	t   *translator
	ref ir.ResourceRef
	// rejected is set when Istio's validation (the admission webhook,
	// pkg/config/validation) refuses the resource: for Istio it does not
	// exist, so none of it applies.
	rejected *bool
}

func (v vsValidator) errorf(field ir.Path, format string, args ...any) {
	v.t.diags.Errorf(ir.CodeInvalidValue, v.ref, string(field), format, args...)
}

func (v vsValidator) unsupported(field ir.Path, format string, args ...any) {
	v.t.diags.Warnf(ir.CodeUnsupportedField, v.ref, string(field), format, args...)
}

// validateVirtualService applies Istio's validation to a VirtualService bound
// to the mesh. It returns nil when nothing applies. A VirtualService Istio's
// validation refuses is rejected whole (its admission webhook would not have
// stored it): it claims no host, which keeps the routes it would have without
// it. Rules only nodemesh (or Envoy) cannot serve are marked and left out of
// translation; the rest of the resource still applies — unless no rule is
// left, which rejects it too rather than emptying its hosts.
func (t *translator) validateVirtualService(obj *networkingv1.VirtualService) *vsInfo {
	ref := ir.ResourceRef{Kind: "VirtualService", Namespace: obj.Namespace, Name: obj.Name}
	v := vsValidator{t, ref, new(bool)}
	spec := &obj.Spec
	if len(spec.Hosts) == 0 {
		t.indexDelegate(obj) // delegate.go
		return nil
	}
	if len(spec.Gateways) > 0 && !slices.Contains(spec.Gateways, meshGateway) {
		t.diags.Infof(ir.CodeGatewayOnly, ref, "spec.gateways",
			"applies to gateways %v only, not to the mesh; nodemesh does not configure gateways", spec.Gateways)
		return nil
	}
	if !t.checkExportTo(ref, spec.ExportTo) {
		return nil
	}
	vs := &vsInfo{obj: obj, ref: ref, namespace: obj.Namespace, badHTTP: map[int]bool{}, badTCP: map[int]bool{},
		exportTo: exportToOf(obj.Namespace, spec.ExportTo, t.opts.DefaultVirtualServiceExportTo)}
	for i, h := range spec.Hosts {
		field := ir.Path("spec.hosts").Index(i)
		switch {
		case h == "":
			v.errorf(field, "host must not be empty")
		case h == "*":
			v.errorf(field, `the wildcard host "*" is not allowed for VirtualServices bound to the mesh`)
		case strings.Contains(h[1:], "*"):
			v.errorf(field, "a wildcard may only be the leftmost label of a host (*.example.com)")
		default:
			vs.hosts = append(vs.hosts, resolveHost(h, obj.Namespace, t.opts.ClusterDomain))
		}
	}
	if len(spec.Http) == 0 && len(spec.Tcp) == 0 && len(spec.Tls) == 0 {
		v.errorf("spec", "at least one of http, tcp or tls routes is required")
		return nil
	}
	if len(spec.Tls) > 0 {
		v.unsupported("spec.tls", "tls routes (SNI-based) are not supported yet; they are ignored")
	}
	for i, h := range spec.Http {
		if !v.httpRoute(ir.Path("spec.http").Index(i), h) {
			vs.badHTTP[i] = true
		}
	}
	for i, r := range spec.Tcp {
		if !v.tcpRoute(ir.Path("spec.tcp").Index(i), r) {
			vs.badTCP[i] = true
		}
	}
	switch {
	case *v.rejected:
		t.diags.Errorf(ir.CodeInvalidValue, ref, "",
			"VirtualService is rejected: Istio's validation refuses it (see the errors on its fields), so none of it applies; its hosts keep the routes they have without it")
		return nil
	case len(vs.badHTTP) == len(spec.Http) && len(vs.badTCP) == len(spec.Tcp) && len(vs.badHTTP)+len(vs.badTCP) > 0:
		t.diags.Errorf(ir.CodeInvalidValue, ref, "",
			"VirtualService is rejected: none of its rules can be served (see the errors on its fields), and it must not leave its hosts without routes; they keep the routes they have without it")
		return nil
	}
	return vs
}

func (v vsValidator) httpRoute(path ir.Path, h *networking.HTTPRoute) bool {
	ok := true
	// fail is what Istio's validation refuses; drop what only nodemesh or
	// Envoy cannot serve (the rule is left out, the rest stays).
	fail := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; Istio rejects the VirtualService", args...)
		ok, *v.rejected = false, true
	}
	drop := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; the rule is left out", args...)
		ok = false
	}
	if h.Delegate != nil {
		return v.rootRoute(path, h) // delegate.go
	}
	actions := 0
	for _, set := range []bool{len(h.Route) > 0, h.Redirect != nil, h.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	switch {
	case actions == 0:
		fail(path, "one of route, redirect or directResponse is required")
	case actions > 1:
		fail(path, "only one of route, redirect and directResponse may be set")
	}
	if h.Redirect != nil || h.DirectResponse != nil {
		if h.Rewrite != nil {
			fail(path.Field("rewrite"), "rewrite cannot be used with redirect or directResponse")
		}
		if h.Mirror != nil || len(h.Mirrors) > 0 {
			fail(path.Field("mirror"), "mirror cannot be used with redirect or directResponse")
		}
	}
	for j, m := range h.Match {
		v.match(path.Field("match").Index(j), m, fail, drop)
	}
	total := int64(0)
	for j, d := range h.Route {
		df := path.Field("route").Index(j)
		v.destination(df.Field("destination"), d.Destination, fail)
		if d.Weight < 0 {
			fail(df.Field("weight"), "weight must not be negative")
		}
		total += int64(d.Weight)
		v.headerOps(df.Field("headers"), d.Headers, fail)
	}
	if len(h.Route) > 1 && total == 0 {
		fail(path.Field("route"), "the weights of several destinations must not all be 0")
	}
	v.weightSum(path.Field("route"), len(h.Route), total, drop)
	if d := h.Timeout; d != nil && d.AsDuration() < 0 {
		fail(path.Field("timeout"), "timeout must not be negative")
	}
	if r := h.Retries; r != nil {
		rf := path.Field("retries")
		if r.Attempts < 0 {
			fail(rf.Field("attempts"), "attempts must not be negative")
		}
		if d := r.PerTryTimeout; d != nil && d.AsDuration() <= 0 {
			fail(rf.Field("perTryTimeout"), "perTryTimeout must be positive")
		}
		if d := r.Backoff; d != nil && d.AsDuration() <= 0 {
			fail(rf.Field("backoff"), "backoff must be positive")
		}
		for _, tok := range strings.Split(r.RetryOn, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" || slices.Contains(retryOnPolicies, tok) {
				continue
			}
			if n, err := strconv.Atoi(tok); err == nil && http.StatusText(n) != "" {
				continue
			}
			fail(rf.Field("retryOn"), "%q is not a retry condition (valid: %s, or an HTTP status code)", tok, strings.Join(retryOnPolicies, ", "))
		}
	}
	if f := h.Fault; f != nil {
		v.fault(path.Field("fault"), f, fail)
	}
	if rw := h.Rewrite; rw != nil {
		rf := path.Field("rewrite")
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			fail(rf, "only one of uri and uriRegexRewrite may be set")
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			if _, err := regexp.Compile(rr.Match); err != nil || rr.Match == "" {
				fail(rf.Field("uriRegexRewrite").Field("match"), "invalid RE2 regular expression %q", rr.Match)
			} else {
				v.regexSize(rf.Field("uriRegexRewrite").Field("match"), rr.Match, fail, drop)
			}
		}
	}
	if r := h.Redirect; r != nil {
		rf := path.Field("redirect")
		switch r.RedirectCode {
		case 0, 301, 302, 303, 307, 308:
		default:
			fail(rf.Field("redirectCode"), "redirectCode must be one of 301, 302, 303, 307, 308")
		}
		if r.Uri != "" && r.PrefixRewrite != "" {
			fail(rf, "only one of uri and prefixRewrite may be set")
		}
		if p := r.GetPort(); p > 65535 {
			fail(rf.Field("port"), "port must be at most 65535")
		}
	}
	if dr := h.DirectResponse; dr != nil {
		df := path.Field("directResponse")
		if dr.Status < 200 || dr.Status > 599 {
			fail(df.Field("status"), "status must be 200–599")
		}
		if n := len(dr.GetBody().GetString_()) + len(dr.GetBody().GetBytes()); n > maxDirectResponseBody {
			fail(df.Field("body"), "body is %d bytes; at most %d are allowed", n, maxDirectResponseBody)
		}
	}
	v.headerOps(path.Field("headers"), h.Headers, fail)
	if n := authoritySettings(h); n > 1 {
		fail(path, "the authority may be rewritten in one place only (rewrite.authority, headers or a destination's headers)")
	}
	if h.Mirror != nil && len(h.Mirrors) > 0 {
		fail(path.Field("mirrors"), "only one of mirror and mirrors may be set")
	}
	if h.Mirror != nil {
		v.destination(path.Field("mirror"), h.Mirror, fail)
	}
	if p := h.MirrorPercentage; p != nil && (p.Value < 0 || p.Value > 100) {
		fail(path.Field("mirrorPercentage"), "must be 0–100")
	}
	if p := h.MirrorPercent; p != nil && p.Value > 100 {
		fail(path.Field("mirrorPercent"), "must be 0–100")
	}
	for j, m := range h.Mirrors {
		mf := path.Field("mirrors").Index(j)
		v.destination(mf.Field("destination"), m.Destination, fail)
		if p := m.Percentage; p != nil && (p.Value < 0 || p.Value > 100) {
			fail(mf.Field("percentage"), "must be 0–100")
		}
	}
	if c := h.CorsPolicy; c != nil {
		cf := path.Field("corsPolicy")
		for j, o := range c.AllowOrigins {
			v.stringMatch(cf.Field("allowOrigins").Index(j), o, false, fail, drop)
		}
		if d := c.MaxAge; d != nil && d.AsDuration() < 0 {
			fail(cf.Field("maxAge"), "maxAge must not be negative")
		}
	}
	return ok
}

func authoritySettings(h *networking.HTTPRoute) int {
	n := 0
	if h.Rewrite.GetAuthority() != "" {
		n++
	}
	if hasAuthority(h.Headers) {
		n++
	}
	for _, d := range h.Route {
		if hasAuthority(d.Headers) {
			n++
			break
		}
	}
	return n
}

func hasAuthority(h *networking.Headers) bool {
	for _, m := range []map[string]string{h.GetRequest().GetSet(), h.GetRequest().GetAdd()} {
		for k := range m {
			if isAuthorityHeader(k) {
				return true
			}
		}
	}
	return false
}

type failFunc func(field ir.Path, format string, args ...any)

// jwtClaimPrefix starts a header match on a claim of the request's
// validated JWT (Istio: "@request.auth.claims.groups").
const jwtClaimPrefix = "@request.auth.claims"

func (v vsValidator) match(path ir.Path, m *networking.HTTPMatchRequest, fail, drop failFunc) {
	if m == nil {
		return
	}
	v.stringMatch(path.Field("uri"), m.Uri, true, fail, drop)
	v.stringMatch(path.Field("scheme"), m.Scheme, true, fail, drop)
	v.stringMatch(path.Field("method"), m.Method, true, fail, drop)
	v.stringMatch(path.Field("authority"), m.Authority, true, fail, drop)
	for _, set := range []struct {
		name string
		m    map[string]*networking.StringMatch
	}{{"headers", m.Headers}, {"withoutHeaders", m.WithoutHeaders}} {
		for k, sm := range set.m {
			f := path.Field(set.name).Field(k)
			switch {
			case k == "":
				fail(f, "header name must not be empty")
			case !strings.HasPrefix(k, jwtClaimPrefix) && !pseudoHeaders[k] && !validHeaderName.MatchString(k):
				// Istio's ValidateHTTPHeaderNameOrJwtClaimRoute; Envoy's
				// HeaderMatcher.name rejects NUL, CR and LF too.
				fail(f, "%q is not a valid header name", k)
			case strings.ToLower(k) != k:
				// Istio accepts (Envoy compares names case-insensitively);
				// nodemesh has always refused it.
				drop(f, "header name %q must be lower case", k)
			case strings.HasPrefix(k, jwtClaimPrefix):
				// Istio matches these against the claims of a JWT that
				// RequestAuthentication validated, not against a header;
				// matched as a literal header, anyone could send one. The
				// node Envoy validates tokens on the destination's inbound
				// listener (RequestAuthentication); routing happens on the
				// source's outbound one, where no token was validated.
				drop(f, "%s matches a JWT claim: the node Envoy validates tokens at the destination (inbound), after the route is chosen at the source (outbound), so nodemesh cannot route on claims", k)
			}
			v.stringMatch(f, sm, true, fail, drop)
		}
	}
	for k, sm := range m.QueryParams {
		v.stringMatch(path.Field("queryParams").Field(k), sm, true, fail, drop)
	}
	if m.Port > 65535 {
		fail(path.Field("port"), "port must be at most 65535")
	}
}

// stringMatch checks a StringMatch; an empty one is allowed where Istio reads
// it as "present".
func (v vsValidator) stringMatch(path ir.Path, m *networking.StringMatch, emptyOK bool, fail, drop failFunc) {
	if m == nil {
		return
	}
	switch mt := m.MatchType.(type) {
	case nil:
		if !emptyOK {
			fail(path, "one of exact, prefix or regex is required")
		}
	case *networking.StringMatch_Regex:
		if mt.Regex == "*" {
			return // Istio's "present" shorthand
		}
		if _, err := regexp.Compile(mt.Regex); err != nil {
			fail(path.Field("regex"), "invalid RE2 regular expression %q: %v", mt.Regex, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return
		}
		v.regexSize(path.Field("regex"), mt.Regex, fail, drop)
	}
}

func (v vsValidator) destination(path ir.Path, d *networking.Destination, fail failFunc) {
	switch {
	case d == nil:
		fail(path, "destination is required")
	case d.Host == "":
		fail(path.Field("host"), "destination host is required")
	case isWildcard(d.Host):
		fail(path.Field("host"), "destination host must not be a wildcard")
	case d.GetPort().GetNumber() > 65535:
		fail(path.Field("port"), "port must be at most 65535")
	}
}

func (v vsValidator) headerOps(path ir.Path, h *networking.Headers, fail failFunc) {
	if h == nil {
		return
	}
	for _, part := range []struct {
		name string
		ops  *networking.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		for _, kind := range []struct {
			name string
			m    map[string]string
		}{{"set", part.ops.GetSet()}, {"add", part.ops.GetAdd()}} {
			for k, val := range kind.m {
				f := path.Field(part.name).Field(kind.name)
				if k == "" {
					fail(f, "header name must not be empty")
				}
				v.headerOp(f, k, part.name == "request", fail)
				if err := headerValueError(val); err != nil {
					fail(f.Field(k), "header value %q: %v", val, err)
				}
			}
		}
		for _, k := range part.ops.GetRemove() {
			v.headerOp(path.Field(part.name).Field("remove"), k, false, fail)
		}
	}
}

func (v vsValidator) fault(path ir.Path, f *networking.HTTPFaultInjection, fail failFunc) {
	if f.Delay == nil && f.Abort == nil {
		fail(path, "one of delay or abort is required")
	}
	if d := f.Delay; d != nil {
		df := path.Field("delay")
		switch dt := d.HttpDelayType.(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			if dt.FixedDelay.AsDuration() <= 0 {
				fail(df.Field("fixedDelay"), "fixedDelay must be positive")
			}
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			// Istio's validateHTTPFaultInjectionDelay: an error.
			fail(df.Field("exponentialDelay"), "exponentialDelay is not supported (Istio's validation: not supported yet)")
		case nil:
			// Istio accepts a delay without a type; nothing is delayed.
			v.t.diags.Warnf(ir.CodeChangedBehavior, v.ref, string(df), "no fixedDelay is set, so no request is delayed (Istio accepts it and delays nothing)")
		}
		if p := d.Percentage; p != nil && (p.Value < 0 || p.Value > 100) {
			fail(df.Field("percentage"), "percentage must be 0–100")
		}
		if d.Percent < 0 || d.Percent > 100 {
			fail(df.Field("percent"), "percent must be 0–100")
		}
		if d.Percentage == nil && d.Percent == 0 {
			v.t.diags.Warnf(ir.CodeChangedBehavior, v.ref, string(df),
				"no percentage is set, so no request is delayed (Istio semantics); set percentage.value: 100 to delay every request")
		}
	}
	if a := f.Abort; a != nil {
		af := path.Field("abort")
		switch at := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if at.HttpStatus < 200 || at.HttpStatus > 599 {
				fail(af.Field("httpStatus"), "httpStatus must be 200–599")
			}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if _, ok := grpcCodes[at.GrpcStatus]; !ok {
				fail(af.Field("grpcStatus"), "%q is not a gRPC status name (e.g. UNAVAILABLE)", at.GrpcStatus)
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			// Istio's validateHTTPFaultInjectionAbort: an error.
			fail(af.Field("http2Error"), "HTTP/2 abort fault injection is not supported (Istio's validation: not supported yet)")
		case nil:
			// Istio's validation warns ("abort configured, but error type
			// not set"); nothing is aborted.
			v.t.diags.Warnf(ir.CodeChangedBehavior, v.ref, string(af), "abort configured, but error type not set: no request is aborted (Istio's warning)")
		}
		if p := a.Percentage; p != nil && (p.Value < 0 || p.Value > 100) {
			fail(af.Field("percentage"), "percentage must be 0–100")
		}
		if a.Percentage == nil {
			v.t.diags.Warnf(ir.CodeChangedBehavior, v.ref, string(af),
				"no percentage is set, so no request is aborted (Istio semantics); set percentage.value: 100 to abort every request")
		}
	}
}

func (v vsValidator) tcpRoute(path ir.Path, r *networking.TCPRoute) bool {
	ok := true
	fail := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; Istio rejects the VirtualService", args...)
		ok, *v.rejected = false, true
	}
	drop := func(field ir.Path, format string, args ...any) {
		v.errorf(field, format+"; the rule is left out", args...)
		ok = false
	}
	if len(r.Route) == 0 {
		fail(path.Field("route"), "at least one destination is required")
	}
	total := int64(0)
	for j, d := range r.Route {
		df := path.Field("route").Index(j)
		v.destination(df.Field("destination"), d.Destination, fail)
		if d.Weight < 0 {
			fail(df.Field("weight"), "weight must not be negative")
		}
		total += int64(d.Weight)
	}
	if len(r.Route) > 1 && total == 0 {
		fail(path.Field("route"), "the weights of several destinations must not all be 0")
	}
	v.weightSum(path.Field("route"), len(r.Route), total, drop)
	for j, m := range r.Match {
		mf := path.Field("match").Index(j)
		if len(m.DestinationSubnets) > 0 {
			v.unsupported(mf.Field("destinationSubnets"), "destinationSubnets is not supported yet; the rule is left out")
			ok = false
		}
		if m.SourceSubnet != "" {
			v.unsupported(mf.Field("sourceSubnet"), "sourceSubnet is not supported yet; the rule is left out")
			ok = false
		}
		if m.Port > 65535 {
			fail(mf.Field("port"), "port must be at most 65535")
		}
	}
	return ok
}

// grpcCodes maps gRPC status names to codes (Istio's SupportedGRPCStatus).
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
