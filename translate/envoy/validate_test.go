package envoy

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// baseline is a small, valid node configuration: an outbound listener with an
// HTTP and a TCP chain, one route configuration with a single-destination and
// a weighted route, and three EDS clusters with their assignments.
func baseline(t *testing.T) *Resources {
	t.Helper()
	api := func(sub string) string { return ir.OutboundClusterName(8080, sub, "api.default.svc.cluster.local") }
	db := ir.OutboundClusterName(5432, "", "db.default.svc.cluster.local")
	origin := &ir.ResourceRef{Kind: "VirtualService", Namespace: "default", Name: "api"}
	m := &ir.Model{
		Listeners: []ir.Listener{{
			Name: ir.OutboundListenerName, Address: "0.0.0.0", Port: ir.OutboundCapturePort, OriginalDestination: true, SniffHTTP: true,
			FilterChains: []ir.FilterChain{
				{Name: "0.0.0.0_8080", Match: ir.FilterChainMatch{DestinationPort: 8080, ApplicationProtocols: []string{"http/1.1", "h2c"}},
					HTTP: &ir.HTTPConnectionManager{StatPrefix: "outbound_0.0.0.0_8080", RouteConfigName: "8080"}},
				{Name: "10.96.0.20_5432", Match: ir.FilterChainMatch{DestinationPort: 5432, DestinationPrefixes: []string{"10.96.0.20/32"}},
					TCP: &ir.TCPProxy{StatPrefix: db, Destinations: []ir.WeightedDestination{{Cluster: db}}}},
			},
		}},
		RouteConfigs: []ir.RouteConfig{{Name: "8080", VirtualHosts: []ir.VirtualHost{{
			Name: "api.default.svc.cluster.local:8080", Domains: []string{"api", "api.default.svc.cluster.local"},
			Routes: []ir.Route{
				{Name: "canary", Origin: origin, Match: ir.RouteMatch{Path: ir.PathMatch{Prefix: "/canary"}},
					Forward: &ir.ForwardAction{Weighted: true, Destinations: []ir.WeightedDestination{{Cluster: api("v1"), Weight: 90}, {Cluster: api("v2"), Weight: 10}}},
					Fault:   &ir.Fault{Abort: &ir.FaultAbort{HTTPStatus: 503, Percent: 10}}},
				{Name: "rest", Origin: origin, Match: ir.RouteMatch{Path: ir.PathMatch{Prefix: "/"}},
					Forward: &ir.ForwardAction{Destinations: []ir.WeightedDestination{{Cluster: api("")}}, Timeout: ir.Duration(time.Second),
						Retry: &ir.RetryPolicy{Attempts: 2, RetryOn: "5xx"}}},
			},
		}}}},
	}
	for _, name := range []string{api(""), api("v1"), api("v2"), db} {
		m.Clusters = append(m.Clusters, ir.Cluster{Name: name, Discovery: ir.DiscoveryEDS, ConnectTimeout: ir.Duration(10 * time.Second),
			LoadBalancer: ir.LoadBalancer{Policy: ir.LBLeastRequest}, CircuitBreaker: &ir.CircuitBreaker{}})
		m.Endpoints = append(m.Endpoints, ir.ClusterEndpoints{Cluster: name, Endpoints: []ir.Endpoint{{Address: "10.244.1.10", Port: 8080}}})
	}
	r, diags := Build(m)
	if len(diags) > 0 {
		t.Fatalf("baseline does not validate: %v", diags)
	}
	return r
}

func hcmOf(t *testing.T, r *Resources) (*hcmv3.HttpConnectionManager, func()) {
	t.Helper()
	f := r.Listeners[0].FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	return h, func() {
		a, err := anypb.New(h)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	}
}

func routeAt(r *Resources, i int) *routev3.Route { return r.Routes[0].VirtualHosts[0].Routes[i] }

// TestValidateCatchesEachMistake breaks a valid configuration in one way at a
// time and checks that Validate reports it, at the right unit. pgv records
// whether go-control-plane's own checks (ValidateAll on the resource, and
// Snapshot.Consistent) would have caught it: most they do not.
func TestValidateCatchesEachMistake(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, r *Resources)
		want    string // substring of the problem
		unit    string // Problem.String prefix: which unit is blamed
		gcp     bool   // caught by go-control-plane's ValidateAll or Consistent
	}{
		{"route to a missing cluster", func(t *testing.T, r *Resources) {
			routeAt(r, 1).GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "outbound|8080||nope"}
		}, `cluster "outbound|8080||nope" does not exist`, `RouteConfiguration "8080" virtual host "api.default.svc.cluster.local:8080" route 1`, false},
		{"weighted route to a missing cluster", func(t *testing.T, r *Resources) {
			routeAt(r, 0).GetRoute().GetWeightedClusters().Clusters[1].Name = "gone"
		}, `cluster "gone" does not exist`, `route 0`, false},
		{"total weight 0", func(t *testing.T, r *Resources) {
			for _, c := range routeAt(r, 0).GetRoute().GetWeightedClusters().Clusters {
				c.Weight = wrapperspb.UInt32(0)
			}
		}, "total weight of 0", `route 0`, false},
		{"regex that does not compile", func(t *testing.T, r *Resources) {
			routeAt(r, 1).Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(["}}
		}, "does not compile", `route 1`, false},
		{"regex in a header matcher", func(t *testing.T, r *Resources) {
			routeAt(r, 1).Match.Headers = []*routev3.HeaderMatcher{{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a{2,1}"}}}}}}
		}, "does not compile", `route 1`, false},
		{"regex over the node's RE2 program size", func(t *testing.T, r *Resources) {
			routeAt(r, 1).Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `/[\p{L}\p{N}]{40}`}}
		}, "re2.max_program_size.error_level", `route 1`, false},
		{"regex over the RE2 limit in a rewrite", func(t *testing.T, r *Resources) {
			routeAt(r, 1).GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: `\p{L}{40}`}, Substitution: "/"}
		}, "re2.max_program_size.error_level", `route 1`, false},
		{"weights over 2^32-1", func(t *testing.T, r *Resources) {
			for _, c := range routeAt(r, 0).GetRoute().GetWeightedClusters().Clusters {
				c.Weight = wrapperspb.UInt32(1 << 31)
			}
		}, "over 4294967295", `route 0`, false},
		{"un-escaped % in a header value", func(t *testing.T, r *Resources) {
			routeAt(r, 1).ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-ratio", Value: "50%"}}}
		}, "un-escaped %", `route 1`, false},
		{"unterminated header variable", func(t *testing.T, r *Resources) {
			routeAt(r, 1).RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-host", Value: "%HOSTNAME"}}}
		}, "un-terminated", `route 1`, false},
		{"pseudo-header set", func(t *testing.T, r *Resources) {
			routeAt(r, 1).RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":path", Value: "/x"}}}
		}, "may not be modified", `route 1`, false},
		{"Host removed", func(t *testing.T, r *Resources) {
			r.Routes[0].VirtualHosts[0].RequestHeadersToRemove = []string{"Host"}
		}, "may not be removed", `RouteConfiguration "8080" virtual host "api.default.svc.cluster.local:8080": `, false},
		{"negative timeout", func(t *testing.T, r *Resources) {
			routeAt(r, 1).GetRoute().Timeout = durationpb.New(-time.Second)
		}, "negative", `route 1`, false},
		{"negative per-try timeout", func(t *testing.T, r *Resources) {
			routeAt(r, 1).GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(-time.Millisecond)
		}, "negative", `route 1`, false},
		{"retries 0 (gRPC rejects)", func(t *testing.T, r *Resources) {
			routeAt(r, 1).GetRoute().RetryPolicy.NumRetries = wrapperspb.UInt32(0)
		}, "0 retries", `route 1`, false},
		{"fault percentage above 100 % inside an Any", func(t *testing.T, r *Resources) {
			a, _ := anypb.New(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503},
				Percentage: &typev3.FractionalPercent{Numerator: 2500000, Denominator: typev3.FractionalPercent_MILLION}}})
			routeAt(r, 0).TypedPerFilterConfig[filterFault] = a
		}, "above 100%", `route 0`, false},
		{"fault status 99 inside an Any", func(t *testing.T, r *Resources) {
			a, _ := anypb.New(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 99}}})
			routeAt(r, 0).TypedPerFilterConfig[filterFault] = a
		}, "HttpStatus", `route 0`, false},
		{"empty HCM stat_prefix inside an Any", func(t *testing.T, r *Resources) {
			h, put := hcmOf(t, r)
			h.StatPrefix = ""
			put()
		}, "StatPrefix", `filter chain "0.0.0.0_8080"`, false},
		{"HCM without the router last", func(t *testing.T, r *Resources) {
			h, put := hcmOf(t, r)
			h.HttpFilters = h.HttpFilters[:len(h.HttpFilters)-1]
			put()
		}, "must be the router", `filter chain "0.0.0.0_8080"`, false},
		{"listener to a missing route configuration", func(t *testing.T, r *Resources) {
			h, put := hcmOf(t, r)
			h.GetRds().RouteConfigName = "9999"
			put()
		}, `route configuration "9999" does not exist`, `filter chain "0.0.0.0_8080"`, true},
		{"tcp proxy to a missing cluster", func(t *testing.T, r *Resources) {
			r.Clusters = r.Clusters[:3]
			r.Endpoints = r.Endpoints[:3]
		}, `cluster "outbound|5432||db.default.svc.cluster.local" does not exist`, `filter chain "10.96.0.20_5432"`, false},
		{"tcp proxy weights over 2^32-1", func(t *testing.T, r *Resources) {
			fc := r.Listeners[0].FilterChains[1]
			tp := &tcpproxyv3.TcpProxy{}
			if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(tp); err != nil {
				t.Fatal(err)
			}
			db := tp.GetCluster()
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
				Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: db, Weight: 1 << 31}, {Name: db, Weight: 1 << 31}}}}
			a, err := anypb.New(tp)
			if err != nil {
				t.Fatal(err)
			}
			fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}, "over 4294967295", `filter chain "10.96.0.20_5432"`, false},
		{"two filter chains with the same match", func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			dup := proto.Clone(l.FilterChains[1]).(*listenerv3.FilterChain)
			dup.Name = "copy"
			l.FilterChains = append(l.FilterChains, dup)
		}, "filter chain match is the same", `filter chain "copy"`, false},
		{"two filter chains sharing a source prefix", func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			a := proto.Clone(l.FilterChains[1]).(*listenerv3.FilterChain)
			a.Name = "a"
			a.FilterChainMatch.SourcePrefixRanges = []*corev3.CidrRange{{AddressPrefix: "10.1.0.5", PrefixLen: wrapperspb.UInt32(32)}, {AddressPrefix: "10.1.0.6", PrefixLen: wrapperspb.UInt32(32)}}
			b := proto.Clone(a).(*listenerv3.FilterChain)
			b.Name = "b"
			b.FilterChainMatch.SourcePrefixRanges = b.FilterChainMatch.SourcePrefixRanges[1:]
			l.FilterChains = append(l.FilterChains, a, b)
		}, `source prefix 10.1.0.6/32 is also chain "a"'s`, `filter chain "b"`, false},
		{"duplicate domains", func(t *testing.T, r *Resources) {
			vh := proto.Clone(r.Routes[0].VirtualHosts[0]).(*routev3.VirtualHost)
			vh.Name, vh.Domains = "other:8080", []string{"other", "API"}
			r.Routes[0].VirtualHosts = append(r.Routes[0].VirtualHosts, vh)
		}, `domain "API" is also a domain`, `virtual host "other:8080"`, false},
		{"EDS cluster without assignment", func(t *testing.T, r *Resources) {
			r.Endpoints = r.Endpoints[1:]
		}, "has no ClusterLoadAssignment", `Cluster "outbound|8080||api`, true},
		{"assignment without cluster", func(t *testing.T, r *Resources) {
			r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: "orphan"})
		}, `no EDS cluster "orphan"`, `ClusterLoadAssignment "orphan"`, true},
		{"EDS cluster without eds_cluster_config", func(t *testing.T, r *Resources) {
			r.Clusters[0].EdsClusterConfig = nil
		}, "without eds_cluster_config", `Cluster "outbound|8080||api`, false},
		{"duplicate cluster names", func(t *testing.T, r *Resources) {
			r.Clusters = append(r.Clusters, proto.Clone(r.Clusters[0]).(*clusterv3.Cluster))
		}, "duplicate cluster name", `Cluster "outbound|8080||api`, false},
		{"maglev table size not prime", func(t *testing.T, r *Resources) {
			c := r.Clusters[0]
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(1000)}}
		}, "not a prime", `Cluster "outbound|8080||api`, false},
		{"negative connect timeout", func(t *testing.T, r *Resources) {
			r.Clusters[0].ConnectTimeout = durationpb.New(-time.Second)
		}, "ConnectTimeout", `Cluster "outbound|8080||api`, true},
		{"endpoint address that is not an IP", func(t *testing.T, r *Resources) {
			r.Endpoints[0].Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
		}, "not an IP address", `ClusterLoadAssignment`, false},
		{"Any that cannot be unpacked", func(t *testing.T, r *Resources) {
			routeAt(r, 0).TypedPerFilterConfig[filterFault] = &anypb.Any{TypeUrl: "type.googleapis.com/not.a.Type"}
		}, "cannot unpack", `route 0`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := baseline(t)
			tc.breakIt(t, r)
			problems := Validate(r)
			var found *Problem
			for i := range problems {
				if strings.Contains(problems[i].String(), tc.want) {
					found = &problems[i]
					break
				}
			}
			if found == nil {
				t.Fatalf("no problem mentions %q; got %v", tc.want, problems)
			}
			if !strings.Contains(found.String(), tc.unit) {
				t.Errorf("problem blames %q, want %q", found.String(), tc.unit)
			}
			if got := goControlPlaneCatches(r); got != tc.gcp {
				t.Errorf("go-control-plane catches it: %v, want %v (update the table)", got, tc.gcp)
			}
		})
	}
}

// goControlPlaneCatches runs go-control-plane's own checks: ValidateAll on
// every resource (which does not look inside Any) and Snapshot.Consistent.
func goControlPlaneCatches(r *Resources) bool {
	var res []types.Resource
	for _, m := range r.Listeners {
		res = append(res, m)
	}
	all := map[resourcev3.Type][]types.Resource{resourcev3.ListenerType: res}
	for _, m := range r.Routes {
		all[resourcev3.RouteType] = append(all[resourcev3.RouteType], m)
	}
	for _, m := range r.Clusters {
		all[resourcev3.ClusterType] = append(all[resourcev3.ClusterType], m)
	}
	for _, m := range r.Endpoints {
		all[resourcev3.EndpointType] = append(all[resourcev3.EndpointType], m)
	}
	for _, list := range all {
		for _, m := range list {
			if v, ok := m.(validatable); ok && v.ValidateAll() != nil {
				return true
			}
		}
	}
	snap, err := cachev3.NewSnapshot("1", all)
	if err != nil {
		return true
	}
	return snap.Consistent() != nil
}

// TestRepairWithholdsOnlyTheBrokenUnit checks that a broken route, cluster or
// filter chain is withheld while everything else is still served, and that
// what depended on a withheld cluster goes too.
func TestRepairWithholdsOnlyTheBrokenUnit(t *testing.T) {
	t.Run("bad route", func(t *testing.T) {
		r := baseline(t)
		routeAt(r, 1).Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(["}}
		diags := Repair(r)
		if len(diags) != 1 || diags[0].Code != ir.CodeInvalidXDS || diags[0].Resource.Name != "api" {
			t.Fatalf("diagnostics = %v", diags)
		}
		if n := len(r.Routes[0].VirtualHosts[0].Routes); n != 1 || routeAt(r, 0).GetName() != "canary" {
			t.Errorf("want only the canary route left, have %d routes", n)
		}
		if len(r.Clusters) != 4 || len(r.Listeners) != 1 {
			t.Errorf("other resources were withheld")
		}
	})
	t.Run("bad cluster takes its routes along", func(t *testing.T) {
		r := baseline(t)
		r.Clusters[1].ConnectTimeout = durationpb.New(-time.Second) // outbound|8080|v1|api
		Repair(r)
		if len(r.Clusters) != 3 {
			t.Errorf("clusters = %d, want 3", len(r.Clusters))
		}
		if len(r.Endpoints) != 3 {
			t.Errorf("orphaned assignment kept: %d", len(r.Endpoints))
		}
		if n := len(r.Routes[0].VirtualHosts[0].Routes); n != 1 || routeAt(r, 0).GetName() != "rest" {
			t.Errorf("the weighted route to the withheld cluster should go, the other stay")
		}
		if problems := Validate(r); len(problems) != 0 {
			t.Errorf("still invalid: %v", problems)
		}
	})
	t.Run("bad chain", func(t *testing.T) {
		r := baseline(t)
		h, put := hcmOf(t, r)
		h.StatPrefix = ""
		put()
		Repair(r)
		if len(r.Listeners) != 1 || len(r.Listeners[0].FilterChains) != 1 || r.Listeners[0].FilterChains[0].GetName() != "10.96.0.20_5432" {
			t.Errorf("want the TCP chain kept and the HTTP chain withheld")
		}
	})
}

func TestOrigins(t *testing.T) {
	r := baseline(t)
	want := []ir.ResourceRef{{Kind: "VirtualService", Namespace: "default", Name: "api"}}
	if got := Origins(r.Routes[0]); !slices.Equal(got, want) {
		t.Errorf("origins of the route configuration: %v, want %v (once, though two routes carry it)", got, want)
	}
	if got := Origins(r.Clusters[0]); len(got) != 0 {
		t.Errorf("origins of a cluster without metadata: %v", got)
	}
}
