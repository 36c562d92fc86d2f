package translate

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// WriteSummary prints what a person needs to check a translation: for each
// route configuration, virtual host and route, the match, the destinations
// with their weights and the policies on the route; then the clusters with
// their load balancing, circuit breakers, outlier detection and TLS; the
// listener's filter chains; and the diagnostics. It is rendered from the
// validated xDS, so it shows exactly what a node would be served.
func WriteSummary(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	writeRoutes(tw, r.XDS)
	fmt.Fprintln(tw)
	writeClusters(tw, r.XDS)
	fmt.Fprintln(tw)
	writeListeners(tw, r.XDS)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return writeDiagnostics(w, r.Diagnostics)
}

// Sections of WriteResources.
const (
	SectionListeners = "listeners"
	SectionRoutes    = "routes"
	SectionClusters  = "clusters"
	SectionEndpoints = "endpoints"
)

// WriteResources prints the summary tables of some resources (what
// `nodemesh proxy-config` shows of a node), in the order of sections.
func WriteResources(w io.Writer, x *envoy.Resources, sections ...string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, s := range sections {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		switch s {
		case SectionListeners:
			writeListeners(tw, x)
		case SectionRoutes:
			writeRoutes(tw, x)
		case SectionClusters:
			writeClusters(tw, x)
		case SectionEndpoints:
			writeEndpoints(tw, x)
		default:
			return fmt.Errorf("unknown section %q", s)
		}
	}
	return tw.Flush()
}

func writeEndpoints(w io.Writer, x *envoy.Resources) {
	fmt.Fprintln(w, "ENDPOINT\tLOCALITY\tWEIGHT\tCLUSTER")
	for _, cla := range x.Endpoints {
		n := 0
		for _, loc := range cla.GetEndpoints() {
			zone := loc.GetLocality().GetZone()
			if zone == "" {
				zone = "-"
			}
			for _, e := range loc.GetLbEndpoints() {
				n++
				a := e.GetEndpoint().GetAddress().GetSocketAddress()
				weight := "1"
				if lw := e.GetLoadBalancingWeight(); lw != nil {
					weight = strconv.Itoa(int(lw.GetValue()))
				}
				fmt.Fprintf(w, "%s:%d\t%s\t%s\t%s\n", a.GetAddress(), a.GetPortValue(), zone, weight, cla.GetClusterName())
			}
		}
		if n == 0 {
			fmt.Fprintf(w, "(none)\t-\t-\t%s\n", cla.GetClusterName())
		}
	}
}

func writeRoutes(w io.Writer, x *envoy.Resources) {
	fmt.Fprintln(w, "ROUTE CONFIG\tVIRTUAL HOST\tMATCH\tDESTINATIONS\tPOLICIES")
	for _, rc := range x.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			if len(vh.GetRoutes()) == 0 {
				fmt.Fprintf(w, "%s\t%s\t(no routes: 404)\t-\t-\n", rc.GetName(), vh.GetName())
			}
			for _, rt := range vh.GetRoutes() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", rc.GetName(), vh.GetName(), matchString(rt.GetMatch()), destString(rt), policyString(rt))
			}
		}
	}
}

func matchString(m *routev3.RouteMatch) string {
	var parts []string
	switch {
	case m.GetPath() != "":
		parts = append(parts, "path="+m.GetPath())
	case m.GetSafeRegex() != nil:
		parts = append(parts, "path~"+m.GetSafeRegex().GetRegex())
	default:
		parts = append(parts, m.GetPrefix()+"*")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		parts = append(parts, "(ignore case)")
	}
	for _, h := range m.GetHeaders() {
		parts = append(parts, headerMatchString(h.GetName(), h.GetPresentMatch(), h.GetStringMatch(), h.GetInvertMatch()))
	}
	for _, q := range m.GetQueryParameters() {
		parts = append(parts, "?"+headerMatchString(q.GetName(), q.GetPresentMatch(), q.GetStringMatch(), false))
	}
	return strings.Join(parts, " ")
}

func headerMatchString(name string, present bool, sm *matcherv3.StringMatcher, invert bool) string {
	op, val := "", ""
	switch {
	case present:
		op = " present"
	case sm.GetExact() != "" || sm.GetMatchPattern() == nil:
		op, val = "=", sm.GetExact()
	case sm.GetPrefix() != "":
		op, val = "^=", sm.GetPrefix()
	case sm.GetSafeRegex() != nil:
		op, val = "~", sm.GetSafeRegex().GetRegex()
	}
	s := name + op + val
	if invert {
		s = "!(" + s + ")"
	}
	return s
}

func destString(rt *routev3.Route) string {
	switch {
	case rt.GetRedirect() != nil:
		rd := rt.GetRedirect()
		return fmt.Sprintf("redirect %d to %s%s", redirectCode(rd.GetResponseCode()), rd.GetHostRedirect(), rd.GetPathRedirect()+rd.GetPrefixRewrite())
	case rt.GetDirectResponse() != nil:
		return fmt.Sprintf("direct response %d", rt.GetDirectResponse().GetStatus())
	}
	a := rt.GetRoute()
	if c := a.GetCluster(); c != "" {
		return c
	}
	var out []string
	total := uint32(0)
	for _, c := range a.GetWeightedClusters().GetClusters() {
		total += c.GetWeight().GetValue()
	}
	for _, c := range a.GetWeightedClusters().GetClusters() {
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(c.GetWeight().GetValue()) / float64(total)
		}
		out = append(out, fmt.Sprintf("%s %s%%", c.GetName(), strconv.FormatFloat(pct, 'f', -1, 64)))
	}
	return strings.Join(out, ", ")
}

func redirectCode(c routev3.RedirectAction_RedirectResponseCode) int {
	return map[routev3.RedirectAction_RedirectResponseCode]int{
		routev3.RedirectAction_MOVED_PERMANENTLY: 301, routev3.RedirectAction_FOUND: 302, routev3.RedirectAction_SEE_OTHER: 303,
		routev3.RedirectAction_TEMPORARY_REDIRECT: 307, routev3.RedirectAction_PERMANENT_REDIRECT: 308,
	}[c]
}

func durString(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

func pctString(p *typev3.FractionalPercent) string {
	v := float64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_MILLION:
		v /= 10000
	case typev3.FractionalPercent_TEN_THOUSAND:
		v /= 100
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + "%"
}

func policyString(rt *routev3.Route) string {
	var p []string
	if a := rt.GetRoute(); a != nil {
		if t := a.GetTimeout(); t != nil && t.AsDuration() > 0 {
			p = append(p, "timeout "+durString(t))
		} else {
			p = append(p, "no timeout")
		}
		if rp := a.GetRetryPolicy(); rp != nil {
			s := fmt.Sprintf("retry %d× on %s", rp.GetNumRetries().GetValue(), rp.GetRetryOn())
			if len(rp.GetRetriableStatusCodes()) > 0 {
				s += fmt.Sprintf(" %v", rp.GetRetriableStatusCodes())
			}
			if t := rp.GetPerTryTimeout(); t != nil {
				s += " per-try " + durString(t)
			}
			p = append(p, s)
		} else {
			p = append(p, "no retries")
		}
		if a.GetPrefixRewrite() != "" {
			p = append(p, "rewrite "+a.GetPrefixRewrite())
		}
		if rr := a.GetRegexRewrite(); rr != nil {
			p = append(p, fmt.Sprintf("rewrite %s→%s", rr.GetPattern().GetRegex(), rr.GetSubstitution()))
		}
		if h := a.GetHostRewriteLiteral(); h != "" {
			p = append(p, "authority "+h)
		}
		for _, m := range a.GetRequestMirrorPolicies() {
			p = append(p, "mirror "+m.GetCluster()+" "+pctString(m.GetRuntimeFraction().GetDefaultValue()))
		}
		for _, h := range a.GetHashPolicy() {
			switch {
			case h.GetHeader() != nil:
				p = append(p, "hash header "+h.GetHeader().GetHeaderName())
			case h.GetCookie() != nil:
				p = append(p, "hash cookie "+h.GetCookie().GetName())
			case h.GetQueryParameter() != nil:
				p = append(p, "hash query "+h.GetQueryParameter().GetName())
			default:
				p = append(p, "hash source IP")
			}
		}
	}
	if a := rt.GetTypedPerFilterConfig()["envoy.filters.http.fault"]; a != nil {
		f := &faultv3.HTTPFault{}
		if a.UnmarshalTo(f) == nil {
			if d := f.GetDelay(); d != nil {
				p = append(p, fmt.Sprintf("fault delay %s @%s", durString(d.GetFixedDelay()), pctString(d.GetPercentage())))
			}
			if ab := f.GetAbort(); ab != nil {
				code := strconv.Itoa(int(ab.GetHttpStatus()))
				if ab.GetErrorType() != nil && ab.GetHttpStatus() == 0 {
					code = "grpc " + strconv.Itoa(int(ab.GetGrpcStatus()))
				}
				p = append(p, fmt.Sprintf("fault abort %s @%s", code, pctString(ab.GetPercentage())))
			}
		}
	}
	if a := rt.GetTypedPerFilterConfig()["envoy.filters.http.cors"]; a != nil {
		c := &corsv3.CorsPolicy{}
		if a.UnmarshalTo(c) == nil {
			p = append(p, fmt.Sprintf("cors %d origins", len(c.GetAllowOriginStringMatch())))
		}
	}
	if n := len(rt.GetRequestHeadersToAdd()) + len(rt.GetRequestHeadersToRemove()) + len(rt.GetResponseHeadersToAdd()) + len(rt.GetResponseHeadersToRemove()); n > 0 {
		p = append(p, fmt.Sprintf("%d header ops", n))
	}
	return strings.Join(p, "; ")
}

func writeClusters(w io.Writer, x *envoy.Resources) {
	eps := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, e := range x.Endpoints {
		eps[e.GetClusterName()] = e
	}
	fmt.Fprintln(w, "CLUSTER\tTYPE\tENDPOINTS\tLOAD BALANCING\tCIRCUIT BREAKERS\tOUTLIER DETECTION\tTLS\tPROTOCOL")
	for _, c := range x.Clusters {
		n := "-"
		if c.GetType() == clusterv3.Cluster_EDS {
			count := 0
			for _, loc := range eps[c.GetName()].GetEndpoints() {
				count += len(loc.GetLbEndpoints())
			}
			n = strconv.Itoa(count)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.GetName(), c.GetType(), n, lbString(c), cbString(c), outlierString(c), tlsString(c), protocolString(c))
	}
}

func lbString(c *clusterv3.Cluster) string {
	s := c.GetLbPolicy().String()
	switch {
	case c.GetRingHashLbConfig() != nil:
		s += fmt.Sprintf(" min-ring %d", c.GetRingHashLbConfig().GetMinimumRingSize().GetValue())
	case c.GetMaglevLbConfig() != nil:
		s += fmt.Sprintf(" table %d", c.GetMaglevLbConfig().GetTableSize().GetValue())
	case c.GetLeastRequestLbConfig().GetSlowStartConfig() != nil:
		s += " slow-start " + durString(c.GetLeastRequestLbConfig().GetSlowStartConfig().GetSlowStartWindow())
	case c.GetRoundRobinLbConfig().GetSlowStartConfig() != nil:
		s += " slow-start " + durString(c.GetRoundRobinLbConfig().GetSlowStartConfig().GetSlowStartWindow())
	}
	return s
}

const maxUint32 = 1<<32 - 1

func cbString(c *clusterv3.Cluster) string {
	var parts []string
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		for _, f := range []struct {
			name string
			v    uint32
		}{
			{"conns", t.GetMaxConnections().GetValue()}, {"pending", t.GetMaxPendingRequests().GetValue()},
			{"requests", t.GetMaxRequests().GetValue()}, {"retries", t.GetMaxRetries().GetValue()},
		} {
			if f.v != maxUint32 {
				parts = append(parts, fmt.Sprintf("%s %d", f.name, f.v))
			}
		}
	}
	if len(parts) == 0 {
		return "max"
	}
	return strings.Join(parts, ", ")
}

func outlierString(c *clusterv3.Cluster) string {
	od := c.GetOutlierDetection()
	if od == nil {
		return "-"
	}
	var parts []string
	if v := od.GetConsecutive_5Xx(); v != nil {
		parts = append(parts, fmt.Sprintf("5xx %d", v.GetValue()))
	}
	if v := od.GetConsecutiveGatewayFailure(); v != nil {
		parts = append(parts, fmt.Sprintf("gateway %d", v.GetValue()))
	}
	if d := od.GetInterval(); d != nil {
		parts = append(parts, "every "+durString(d))
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		parts = append(parts, "eject "+durString(d))
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		parts = append(parts, fmt.Sprintf("max %d%%", v.GetValue()))
	}
	if len(parts) == 0 {
		return "on"
	}
	return strings.Join(parts, ", ")
}

func tlsString(c *clusterv3.Cluster) string {
	ts := c.GetTransportSocket()
	if ts == nil {
		return "-"
	}
	t := &tlsv3.UpstreamTlsContext{}
	if ts.GetTypedConfig().UnmarshalTo(t) != nil {
		return ts.GetName()
	}
	mode := "SIMPLE"
	if len(t.GetCommonTlsContext().GetTlsCertificates()) > 0 {
		mode = "MUTUAL"
	}
	if t.GetSni() != "" {
		mode += " sni " + t.GetSni()
	}
	return mode
}

func protocolString(c *clusterv3.Cluster) string {
	a := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if a == nil {
		return "-"
	}
	h := &httpv3.HttpProtocolOptions{}
	if a.UnmarshalTo(h) != nil {
		return "?"
	}
	switch {
	case h.GetUseDownstreamProtocolConfig() != nil:
		return "client's"
	case h.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
		return "HTTP/2"
	default:
		return "HTTP/1.1"
	}
}

func writeListeners(w io.Writer, x *envoy.Resources) {
	fmt.Fprintln(w, "LISTENER\tFILTER CHAIN\tMATCH\tTO")
	for _, l := range x.Listeners {
		addr := l.GetAddress().GetSocketAddress()
		name := fmt.Sprintf("%s %s:%d", l.GetName(), addr.GetAddress(), addr.GetPortValue())
		chains := slices.Clone(l.GetFilterChains())
		if d := l.GetDefaultFilterChain(); d != nil {
			chains = append(chains, d)
		}
		for _, fc := range chains {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", name, fc.GetName(), chainMatchString(fc.GetFilterChainMatch()), chainTarget(fc))
		}
		if api := l.GetApiListener().GetApiListener(); api != nil {
			// A proxyless gRPC client's listener: its target and route
			// configuration.
			h := &hcmv3.HttpConnectionManager{}
			to := "-"
			if api.UnmarshalTo(h) == nil && h.GetRds() != nil {
				to = "Route: " + h.GetRds().GetRouteConfigName()
			}
			fmt.Fprintf(w, "%s\t(api_listener)\t-\t%s\n", l.GetName(), to)
		}
	}
}

func chainMatchString(m *listenerv3.FilterChainMatch) string {
	if m == nil {
		return "(anything else)"
	}
	var parts []string
	if p := m.GetDestinationPort(); p != nil {
		parts = append(parts, fmt.Sprintf("port %d", p.GetValue()))
	}
	for _, r := range m.GetPrefixRanges() {
		parts = append(parts, fmt.Sprintf("dst %s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
	}
	if len(m.GetApplicationProtocols()) > 0 {
		parts = append(parts, "http")
	}
	for _, r := range m.GetSourcePrefixRanges() {
		parts = append(parts, fmt.Sprintf("src %s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
	}
	return strings.Join(parts, " ")
}

func chainTarget(fc *listenerv3.FilterChain) string {
	for _, f := range fc.GetFilters() {
		a := f.GetTypedConfig()
		h := &hcmv3.HttpConnectionManager{}
		if a.MessageIs(h) && a.UnmarshalTo(h) == nil {
			if rc := h.GetRouteConfig(); rc != nil {
				// An inbound chain: its inline route and RBAC filters.
				to := "routes " + strconv.Quote(rc.GetName()) + " (inline)"
				for _, hf := range h.GetHttpFilters() {
					r := &rbachttpv3.RBAC{}
					if hf.GetName() == envoy.FilterHTTPRBAC && hf.GetTypedConfig().UnmarshalTo(r) == nil {
						to += fmt.Sprintf("; rbac %s %d", r.GetRules().GetAction(), len(r.GetRules().GetPolicies()))
						if n := len(r.GetShadowRules().GetPolicies()); n > 0 {
							to += fmt.Sprintf(" (+%d dry-run)", n)
						}
					}
				}
				return to
			}
			return "routes " + strconv.Quote(h.GetRds().GetRouteConfigName())
		}
		t := &tcpproxyv3.TcpProxy{}
		if a.MessageIs(t) && a.UnmarshalTo(t) == nil {
			if c := t.GetCluster(); c != "" {
				return "tcp " + c
			}
			var parts []string
			for _, c := range t.GetWeightedClusters().GetClusters() {
				parts = append(parts, fmt.Sprintf("%s w%d", c.GetName(), c.GetWeight()))
			}
			return "tcp " + strings.Join(parts, ", ")
		}
	}
	return "-"
}

func writeDiagnostics(w io.Writer, ds ir.Diagnostics) error {
	fmt.Fprintf(w, "DIAGNOSTICS: %d errors, %d warnings, %d info\n", ds.Count(ir.SeverityError), ds.Count(ir.SeverityWarning), ds.Count(ir.SeverityInfo))
	for _, d := range ds {
		if _, err := fmt.Fprintln(w, "  "+d.String()); err != nil {
			return err
		}
	}
	return nil
}
