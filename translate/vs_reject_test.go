package translate

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// vsRejectBase is a Service api on port 8080 and a DestinationRule with
// two subsets; cases add one VirtualService for it.
const vsRejectBase = `
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
`

// apiRoutes returns the routes of api's virtual host on port 8080 in the
// emitted xDS (nil when there is no such virtual host).
func apiRoutes(t *testing.T, r *Result) []*routev3.Route {
	t.Helper()
	for _, rc := range r.XDS.Routes {
		if rc.GetName() != "8080" {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if strings.HasPrefix(vh.GetName(), "api.default.svc.cluster.local") {
				return vh.GetRoutes()
			}
		}
	}
	t.Fatalf("no virtual host for api on 8080")
	return nil
}

// TestInvalidVirtualServiceRejectedWhole: a VirtualService Istio's
// validation (its admission webhook, pkg/config/validation) refuses does not
// exist for Istio. Before, nodemesh left the invalid rule out and kept the
// VirtualService's claim on the host, so a VirtualService whose only rule was
// invalid left the host with no route at all (404 for every request, and the
// route configuration NACKed for a NUL). Now the whole VirtualService is
// rejected (an error naming it and the field) and the host keeps its default
// route, as in Istio.
func TestInvalidVirtualServiceRejectedWhole(t *testing.T) {
	for name, tc := range map[string]struct {
		http  string
		field string
		msg   string
	}{
		"negative weight": {
			http:  `[{route: [{destination: {host: api, subset: v1}, weight: -1}]}]`,
			field: "spec.http[0].route[0].weight", msg: "negative",
		},
		"NUL in a request header value": {
			http:  `[{headers: {request: {set: {x-user: "a\u0000b"}}}, route: [{destination: {host: api}}]}]`,
			field: "spec.http[0].headers", msg: "header value",
		},
		"NUL in a header match name": {
			http:  `[{match: [{headers: {"x-a\u0000b": {exact: v}}}], route: [{destination: {host: api}}]}]`,
			field: "spec.http[0].match[0].headers", msg: "not a valid header name",
		},
		"unescaped percent in a header value": {
			http:  `[{headers: {response: {add: {x-ratio: "100%"}}}, route: [{destination: {host: api}}]}]`,
			field: "spec.http[0].headers", msg: "header value",
		},
		"regex longer than Istio allows": {
			http:  `[{match: [{uri: {regex: "/` + strings.Repeat("a", 1100) + `"}}], route: [{destination: {host: api}}]}]`,
			field: "spec.http[0].match[0].uri.regex", msg: "1024",
		},
		"exponentialDelay (Istio: not supported yet)": {
			http:  `[{fault: {delay: {exponentialDelay: 1s, percentage: {value: 100}}}, route: [{destination: {host: api, subset: v1}}]}]`,
			field: "spec.http[0].fault.delay.exponentialDelay", msg: "exponentialDelay",
		},
		"http2Error (Istio: not supported yet)": {
			http:  `[{fault: {abort: {http2Error: REFUSED_STREAM, percentage: {value: 100}}}, route: [{destination: {host: api, subset: v1}}]}]`,
			field: "spec.http[0].fault.abort.http2Error", msg: "HTTP/2 abort",
		},
		"invalid rule among valid ones": {
			http:  `[{match: [{uri: {prefix: /a}}], route: [{destination: {host: api, subset: v1}}]}, {route: [{destination: {host: api, subset: v2}, weight: -5}]}]`,
			field: "spec.http[1].route[0].weight", msg: "negative",
		},
	} {
		t.Run(name, func(t *testing.T) {
			bag, diags := LoadBytes("vs.yaml", []byte(vsRejectBase+`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http: `+tc.http+"\n"), "default")
			if diags.HasErrors() {
				t.Fatalf("load: %v", diags)
			}
			r := Translate(bag, diags, Options{})
			var named, whole bool
			for _, d := range r.Diagnostics {
				if d.Severity != ir.SeverityError || d.Resource.Kind != "VirtualService" || d.Resource.Name != "api" {
					continue
				}
				if strings.HasPrefix(d.Field, tc.field) && strings.Contains(d.Message, tc.msg) {
					named = true
				}
				if strings.Contains(d.Message, "VirtualService is rejected") {
					whole = true
				}
			}
			if !named || !whole {
				t.Errorf("want an error on %s (%q) and one rejecting the VirtualService; diagnostics:\n%v", tc.field, tc.msg, r.Diagnostics)
			}
			for _, d := range r.Diagnostics {
				if d.Code == ir.CodeInvalidXDS {
					t.Errorf("invalid xDS reached the Envoy layer: %v", d)
				}
			}
			routes := apiRoutes(t, r)
			if len(routes) != 1 || routes[0].GetName() != ir.DefaultRouteName ||
				routes[0].GetRoute().GetCluster() != "outbound|8080||api.default.svc.cluster.local" {
				t.Errorf("api's routes: want only the default route to the Service, got %v", routes)
			}
		})
	}
}

// TestNoServableRuleIsAnError: a VirtualService Istio accepts whose rules
// for a port are all left out by warnings only (here: its destination is a
// Service not exported to the client — the default class) leaves the host without a route on
// that port — every request refused. nodemesh keeps refusing (it never
// routes where the VirtualService does not say) but that is an error now,
// not a warning that is easy to miss.
func TestNoServableRuleIsAnError(t *testing.T) {
	bag, diags := LoadBytes("vs.yaml", []byte(vsRejectBase+`
apiVersion: v1
kind: Service
metadata: {name: private, namespace: default, annotations: {networking.istio.io/exportTo: "."}}
spec:
  clusterIP: 10.96.0.12
  selector: {app: private}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - route: [{destination: {host: private}}]
`), "default")
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	r := Translate(bag, diags, Options{})
	found := false
	for _, d := range r.Diagnostics {
		if d.Severity == ir.SeverityError && d.Resource.Name == "api" && strings.Contains(d.Message, "none of its rules for port 8080 can be served") {
			found = true
		}
	}
	if !found {
		t.Errorf("no error says api is left without routes on 8080; diagnostics:\n%v", r.Diagnostics)
	}
	if routes := apiRoutes(t, r); len(routes) != 0 {
		t.Errorf("api's routes: want none (refused, never routed elsewhere), got %v", routes)
	}
}

// TestFaultWithoutTypeAccepted: Istio accepts a delay or an abort without
// its type (a warning for the abort) and injects nothing: the rule routes,
// no error.
func TestFaultWithoutTypeAccepted(t *testing.T) {
	for name, fault := range map[string]string{
		"delay without fixedDelay": `{delay: {percentage: {value: 100}}}`,
		"abort without error type": `{abort: {percentage: {value: 100}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			bag, diags := LoadBytes("vs.yaml", []byte(vsRejectBase+`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http: [{fault: `+fault+`, route: [{destination: {host: api, subset: v1}}]}]
`), "default")
			if diags.HasErrors() {
				t.Fatalf("load: %v", diags)
			}
			r := Translate(bag, diags, Options{})
			for _, d := range r.Diagnostics {
				if d.Severity == ir.SeverityError {
					t.Errorf("error for what Istio accepts: %v", d)
				}
			}
			routes := apiRoutes(t, r)
			if len(routes) != 1 || routes[0].GetRoute().GetCluster() != "outbound|8080|v1|api.default.svc.cluster.local" {
				t.Fatalf("api's routes: want the rule to v1, got %v", routes)
			}
			if fs := routes[0].GetTypedPerFilterConfig(); len(fs) != 0 {
				t.Errorf("a fault is injected: %v", fs)
			}
		})
	}
}
