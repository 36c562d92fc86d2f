package istio

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// delegateMesh is the Services the delegation tests route between:
// productpage (ports 80 and 8080) whose VirtualService delegates, pp-v1,
// pp-v2, pp-v3 and mirror as destinations in default, and a pp-v1 in team
// (where short names of team's delegates resolve).
const delegateMesh = `
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: http-alt, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: pp-v1, namespace: default}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pp-v2, namespace: default}
spec: {clusterIP: 10.96.0.12, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pp-v3, namespace: default}
spec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: mirror, namespace: default}
spec: {clusterIP: 10.96.0.14, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pp-v1, namespace: team}
spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 80}]}
`

// delegation translates delegateMesh plus docs.
func delegation(t *testing.T, docs string) *Prepared {
	t.Helper()
	l := input.NewLoader("default")
	l.LoadBytes("delegate.yaml", []byte(delegateMesh+"---\n"+docs))
	if d := l.Diagnostics(); d.HasErrors() {
		t.Fatalf("load: %v", d)
	}
	return Prepare(l.Bag(), Options{})
}

// productpageRoutes renders the routes productpage's virtual host has on
// port for a client of class cl (the default class when nil).
func productpageRoutes(t *testing.T, p *Prepared, port uint32, cl *Class) []string {
	t.Helper()
	if cl == nil {
		cl = DefaultClass()
	}
	var out []string
	for _, rc := range p.t.routeConfigs(cl) {
		if rc.Name != ir.RouteConfigName(port) {
			continue
		}
		for _, vh := range rc.VirtualHosts {
			if vh.Name != ir.VirtualHostName("productpage.default.svc.cluster.local", port) {
				continue
			}
			for _, r := range vh.Routes {
				out = append(out, describeRoute(r))
			}
		}
	}
	return out
}

// describeRoute renders what a test decides on: the match, the
// destinations (host, namespace when not default, subset-less), and the
// root fields a delegate may inherit.
func describeRoute(r ir.Route) string {
	var b strings.Builder
	switch p := r.Match.Path; {
	case p.Exact != "":
		b.WriteString("exact:" + p.Exact)
	case p.Regex != "":
		b.WriteString("regex:" + p.Regex)
	default:
		b.WriteString("prefix:" + p.Prefix)
	}
	sm := func(m ir.StringMatch) string {
		switch {
		case m.Exact != nil:
			return "=" + *m.Exact
		case m.Prefix != nil:
			return "^" + *m.Prefix
		case m.Regex != nil:
			return "~" + *m.Regex
		}
		return "?"
	}
	for _, h := range r.Match.Headers {
		b.WriteString(" ")
		if h.Invert {
			b.WriteString("!")
		}
		if h.Present {
			b.WriteString(h.Name + "?")
		} else {
			b.WriteString(h.Name + sm(h.Value))
		}
	}
	for _, q := range r.Match.QueryParams {
		if q.Present {
			b.WriteString(" &" + q.Name + "?")
		} else {
			b.WriteString(" &" + q.Name + sm(q.Value))
		}
	}
	host := func(cluster string) string {
		_, _, fqdn, ok := ir.ParseOutboundClusterName(cluster)
		if !ok {
			return cluster
		}
		name, rest, _ := strings.Cut(fqdn, ".")
		if ns, _, _ := strings.Cut(rest, "."); ns != "default" {
			return name + "." + ns
		}
		return name
	}
	switch {
	case r.Forward != nil:
		var ds []string
		for _, d := range r.Forward.Destinations {
			ds = append(ds, host(d.Cluster))
		}
		b.WriteString(" -> " + strings.Join(ds, ","))
		for _, m := range r.Forward.Mirrors {
			b.WriteString(" mirror=" + host(m.Cluster))
		}
		if r.Forward.Timeout != 0 {
			b.WriteString(" timeout=" + r.Forward.Timeout.String())
		}
	case r.DirectResponse != nil:
		fmt.Fprintf(&b, " -> direct %d", r.DirectResponse.Status)
	case r.Redirect != nil:
		b.WriteString(" -> redirect")
	}
	for _, h := range r.Headers.Request {
		b.WriteString(" +" + h.Name + ":" + h.Value)
	}
	for _, h := range r.Headers.RequestRemove {
		b.WriteString(" -" + h)
	}
	if r.Name != "" {
		b.WriteString(" name=" + r.Name)
	}
	return b.String()
}

// delegateDiags are the diagnostics with the Delegate code, as
// "severity resource field".
func delegateDiags(p *Prepared) []string {
	var out []string
	for _, d := range p.Diagnostics() {
		if d.Code == ir.CodeDelegate {
			out = append(out, fmt.Sprintf("%s %s %s", d.Severity, d.Resource, d.Field))
		}
	}
	return out
}

// TestDelegateMatchMerge ports the decisions of istiod's
// TestMergeHTTPMatchRequests and TestHasConflict
// (pilot/pkg/model/virtualservice_test.go) to nodemesh's output: a root
// rule with match root delegates to a rule with match leaf (routing to
// pp-v1); the root's next rule sends everything else to pp-v3. The routes
// productpage then has are the merged matches, in order — or only the
// fallback when Istio finds a conflict, which is also a Delegate warning on
// the delegate's rule.
func TestDelegateMatchMerge(t *testing.T) {
	const fallback = "prefix:/ -> pp-v3"
	type tc struct {
		root, leaf string // flow YAML lists of HTTPMatchRequest; "" is no match
		port       uint32 // the route configuration looked at (80 when 0)
		labels     map[string]string
		want       []string // nil: the delegate's rule is dropped
		// whole: want is every route (the merged match catches all, so
		// the fallback is never emitted); otherwise the fallback follows.
		whole bool
	}
	cases := map[string]tc{
		// TestMergeHTTPMatchRequests
		"MergeHTTPMatchRequests/url match": {
			root: `[{uri: {prefix: /productpage}}]`, leaf: `[{uri: {exact: /productpage/v1}}]`,
			want: []string{"exact:/productpage/v1 -> pp-v1"}},
		"MergeHTTPMatchRequests/url regex noconflict": {
			root: `[{uri: {regex: ^/productpage}}]`, leaf: `[{}]`,
			want: []string{"regex:^/productpage -> pp-v1"}},
		"MergeHTTPMatchRequests/url regex conflict": {
			root: `[{uri: {regex: ^/productpage}}]`, leaf: `[{uri: {prefix: /productpage}}]`},
		"MergeHTTPMatchRequests/multi url match": {
			root: `[{uri: {prefix: /productpage}}, {uri: {prefix: /reviews}}]`,
			leaf: `[{uri: {exact: /productpage/v1}}, {uri: {exact: /reviews/v1}}]`,
			want: []string{"exact:/productpage/v1 -> pp-v1", "exact:/reviews/v1 -> pp-v1"}},
		"MergeHTTPMatchRequests/url mismatch": {
			root: `[{uri: {prefix: /productpage}}]`, leaf: `[{uri: {exact: /reviews}}]`},
		"MergeHTTPMatchRequests/url match, one leaf match conflicts": {
			root: `[{uri: {prefix: /productpage}}]`, leaf: `[{uri: {exact: /productpage/v1}}, {uri: {exact: /reviews}}]`},
		"MergeHTTPMatchRequests/headers, empty leaf": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: ``,
			want: []string{"prefix:/ header=h1 -> pp-v1"}},
		"MergeHTTPMatchRequests/headers conflict": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: `[{headers: {header: {exact: h2}}}]`},
		"MergeHTTPMatchRequests/headers united": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: `[{headers: {header-2: {exact: h2}}}]`,
			want: []string{"prefix:/ header=h1 header-2=h2 -> pp-v1"}},
		"MergeHTTPMatchRequests/complicated merge": {
			root: `[{uri: {prefix: /productpage}, headers: {header: {exact: h1}}, port: 8080, authority: {exact: productpage.com}}]`,
			leaf: `[{uri: {exact: /productpage/v1}}, {uri: {exact: /productpage/v2}}]`, port: 8080,
			want: []string{
				"exact:/productpage/v1 header=h1 :authority=productpage.com -> pp-v1",
				"exact:/productpage/v2 header=h1 :authority=productpage.com -> pp-v1",
			}},
		"MergeHTTPMatchRequests/complicated merge, other port": {
			root: `[{uri: {prefix: /productpage}, port: 8080}]`, leaf: `[{uri: {exact: /productpage/v1}}]`,
			want: []string{fallback}},
		"MergeHTTPMatchRequests/conflicted merge": {
			root: `[{uri: {prefix: /productpage}, headers: {header: {exact: h1}}, port: 8080, authority: {exact: productpage.com}}]`,
			leaf: `[{uri: {exact: /productpage/v1}}, {uri: {exact: /productpage/v2}, port: 9090}]`, port: 8080},
		"MergeHTTPMatchRequests/gateway merge": {
			root: `[{uri: {prefix: /productpage}, gateways: [ingress-gateway, mesh]}]`,
			leaf: `[{uri: {exact: /productpage/v1}, gateways: [ingress-gateway]}, {uri: {exact: /productpage/v2}, gateways: [mesh]}]`,
			// The merged ingress-gateway match is not for sidecars.
			want: []string{"exact:/productpage/v2 -> pp-v1"}},
		"MergeHTTPMatchRequests/gateway conflicted merge": {
			root: `[{uri: {prefix: /productpage}, gateways: [ingress-gateway]}]`,
			leaf: `[{uri: {exact: /productpage/v1}, gateways: [ingress-gateway]}, {uri: {exact: /productpage/v2}, gateways: [mesh]}]`},
		"MergeHTTPMatchRequests/source labels merge": {
			root: `[{sourceLabels: {app: test}}]`, leaf: `[{sourceLabels: {version: v1}}]`,
			labels: map[string]string{"app": "test", "version": "v1"},
			want:   []string{"prefix:/ -> pp-v1"}, whole: true},
		"MergeHTTPMatchRequests/source labels merge, client without the delegate's label": {
			root: `[{sourceLabels: {app: test}}]`, leaf: `[{sourceLabels: {version: v1}}]`,
			labels: map[string]string{"app": "test"},
			want:   []string{fallback}},
		"MergeHTTPMatchRequests/source labels merge, client without the root's label": {
			root: `[{sourceLabels: {app: test}}]`, leaf: `[{sourceLabels: {version: v1}}]`,
			labels: map[string]string{"version": "v1"},
			want:   []string{fallback}},

		// TestHasConflict
		"HasConflict/regex uri": {
			root: `[{uri: {regex: ^/productpage}}]`, leaf: `[{uri: {prefix: /productpage/v2}}]`},
		"HasConflict/regex uri in root and delegate does not have uri": {
			root: `[{uri: {regex: ^/productpage}}]`, leaf: `[{headers: {x: {exact: "1"}}}]`,
			want: []string{"regex:^/productpage x=1 -> pp-v1"}},
		"HasConflict/regex uri in delegate and root does not have uri": {
			root: `[{headers: {x: {exact: "1"}}}]`, leaf: `[{uri: {regex: ^/productpage}}]`,
			want: []string{"regex:^/productpage x=1 -> pp-v1"}},
		"HasConflict/regex uri in root and delegate has conflicting uri match": {
			root: `[{uri: {regex: ^/productpage}}]`, leaf: `[{uri: {prefix: /productpage}}]`},
		"HasConflict/regex uri in delegate and root has conflicting uri match": {
			root: `[{uri: {prefix: /productpage}}]`, leaf: `[{uri: {regex: ^/productpage}}]`},
		"HasConflict/match uri": {
			root: `[{uri: {prefix: /productpage}}]`, leaf: `[{uri: {prefix: /productpage/v2}}]`,
			want: []string{"prefix:/productpage/v2 -> pp-v1"}},
		"HasConflict/mismatch uri": {
			root: `[{uri: {prefix: /productpage/v2}}]`, leaf: `[{uri: {prefix: /productpage}}]`},
		"HasConflict/match uri exact in prefix": {
			root: `[{uri: {prefix: /productpage/v2}}]`, leaf: `[{uri: {exact: /productpage/v2}}]`,
			want: []string{"exact:/productpage/v2 -> pp-v1"}},
		"HasConflict/exact uri in root, prefix in delegate": {
			root: `[{uri: {exact: /productpage}}]`, leaf: `[{uri: {prefix: /productpage}}]`},
		"HasConflict/headers not equal": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: `[{headers: {header: {exact: h2}}}]`},
		"HasConflict/headers equal": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: `[{headers: {header: {exact: h1}}}]`,
			want: []string{"prefix:/ header=h1 -> pp-v1"}},
		"HasConflict/headers match": {
			root: `[{headers: {header: {prefix: h1}}}]`, leaf: `[{headers: {header: {exact: h1-v1}}}]`,
			want: []string{"prefix:/ header=h1-v1 -> pp-v1"}},
		"HasConflict/headers mismatch": {
			root: `[{headers: {header: {prefix: h1}}}]`, leaf: `[{headers: {header: {exact: h2}}}]`},
		"HasConflict/headers prefix mismatch": {
			root: `[{headers: {header: {prefix: h1}}}]`, leaf: `[{headers: {header: {prefix: h2}}}]`},
		"HasConflict/diff headers": {
			root: `[{headers: {header: {exact: h1}}}]`, leaf: `[{headers: {header-2: {exact: h2}}}]`,
			want: []string{"prefix:/ header=h1 header-2=h2 -> pp-v1"}},
		"HasConflict/withoutHeaders mismatch": {
			root: `[{withoutHeaders: {header: {prefix: h1}}}]`, leaf: `[{withoutHeaders: {header: {exact: h2}}}]`},
		"HasConflict/presence headers": {
			root: `[{headers: {header: {}}}]`, leaf: `[{headers: {header: {exact: h1}}}]`},
		"HasConflict/query params": {
			root: `[{queryParams: {v: {exact: "1"}}}]`, leaf: `[{queryParams: {v: {exact: "2"}}}]`},
		"HasConflict/port only in delegate": {
			root: `[{uri: {prefix: /p}}]`, leaf: `[{port: 8080}]`, port: 8080,
			want: []string{"prefix:/p -> pp-v1"}},
		"HasConflict/port only in root": {
			root: `[{port: 8080}]`, leaf: `[{uri: {prefix: /p}}]`, port: 8080,
			want: []string{"prefix:/p -> pp-v1"}},
		"HasConflict/port mismatch": {
			root: `[{port: 8080}]`, leaf: `[{port: 8090}]`, port: 8080},
		"HasConflict/ignoreUriCase mismatch": {
			root: `[{uri: {prefix: /p}, ignoreUriCase: true}]`, leaf: `[{uri: {prefix: /p/a}}]`},
		"HasConflict/sourceLabels mismatch": {
			root: `[{sourceLabels: {a: b}}]`, leaf: `[{sourceLabels: {a: c}}]`, labels: map[string]string{"a": "b"}},
		"HasConflict/sourceNamespace mismatch": {
			root: `[{sourceNamespace: test1}]`, leaf: `[{sourceNamespace: test2}]`},
		"HasConflict/sourceNamespace only in root": {
			// Istio: a root sourceNamespace needs the same one in the leaf.
			root: `[{sourceNamespace: test1}]`, leaf: `[{uri: {prefix: /p}}]`},
		"HasConflict/root has less gateways than delegate": {
			root: `[{gateways: [ingress-gateway]}]`, leaf: `[{gateways: [ingress-gateway, mesh]}]`},
		"HasConflict/root has less gateways than delegate, counting repeats": {
			// Istio compares the counts before the sets.
			root: `[{gateways: [mesh]}]`, leaf: `[{gateways: [mesh, mesh]}]`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rootMatch, leafMatch := "", ""
			if c.root != "" {
				rootMatch = "match: " + c.root
			}
			if c.leaf != "" {
				leafMatch = "match: " + c.leaf
			}
			p := delegation(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - %s
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - %s
    route: [{destination: {host: pp-v1}}]
`, rootMatch, leafMatch))
			port := c.port
			if port == 0 {
				port = 80
			}
			var cl *Class
			if c.labels != nil {
				cl = &Class{Name: "c", Namespace: "default", Labels: c.labels}
			}
			got := productpageRoutes(t, p, port, cl)
			want := c.want
			conflict := want == nil
			if conflict {
				want = []string{fallback}
			} else if !c.whole && want[len(want)-1] != fallback {
				want = append(want, fallback)
			}
			if !slices.Equal(got, want) {
				t.Errorf("routes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			wantDiag := "warning VirtualService default/pp spec.http[0].match"
			if has := slices.Contains(delegateDiags(p), wantDiag); has != conflict {
				t.Errorf("conflict warning %q reported: %v, want %v (Delegate diagnostics: %v)", wantDiag, has, conflict, delegateDiags(p))
			}
		})
	}
}

// TestDelegateVirtualServices ports the cases of istiod's TestMergeHttpRoutes
// (virtualservice_test.go) and TestControllerMergeVirtualServices
// (virtualservice_controller_test.go; there bound to gateways, here to the
// mesh) to nodemesh's output, with the cases of the delegation rules istiod
// applies around them: visibility, missing delegates, one level only, short
// names resolved in the delegate's namespace, and what a root rule passes on.
func TestDelegateVirtualServices(t *testing.T) {
	type tc struct {
		docs  string
		port  uint32 // 80 when 0
		want  []string
		diags []string // the Delegate diagnostics, sorted
		// errors are substrings of error diagnostics that must be reported.
		errors []string
	}
	const root = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
`
	const defaultRoute = "prefix:/ -> productpage name=default"
	cases := map[string]tc{
		"MergeHttpRoutes/root catch all": {docs: root + `
  http:
  - timeout: 10s
    headers: {request: {add: {istio: test}, remove: [trace-id]}}
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /productpage/v1}, headers: {version: {exact: v1}}}]
    route: [{destination: {host: pp-v1}}]
  - match: [{uri: {prefix: /productpage/v2}, headers: {version: {exact: v2}}}, {headers: {version: {exact: v2}}, queryParams: {version: {exact: v2}}}]
    route: [{destination: {host: pp-v2}}]
`, want: []string{
			"prefix:/productpage/v1 version=v1 -> pp-v1 timeout=10s +istio:test -trace-id",
			"prefix:/productpage/v2 version=v2 -> pp-v2 timeout=10s +istio:test -trace-id",
			"prefix:/ version=v2 &version=v2 -> pp-v2 timeout=10s +istio:test -trace-id",
		}},
		"MergeHttpRoutes/delegate with empty match": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}, port: 8080}]
    delegate: {name: pp, namespace: default}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /productpage/v1}, headers: {version: {exact: v1}}}]
    route: [{destination: {host: pp-v1}}]
  - match: [{uri: {prefix: /productpage/v2}, headers: {version: {exact: v2}}}, {headers: {version: {exact: v2}}, queryParams: {version: {exact: v2}}}]
    route: [{destination: {host: pp-v2}}]
  - route: [{destination: {host: pp-v3}}]
`, port: 8080, want: []string{
			"prefix:/productpage/v1 version=v1 -> pp-v1",
			"prefix:/productpage/v2 version=v2 -> pp-v2",
			"prefix:/productpage version=v2 &version=v2 -> pp-v2",
			"prefix:/productpage -> pp-v3",
		}},
		"MergeHttpRoutes/delegate with empty match, the root's port": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}, port: 8080}]
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v3}}]
`, port: 80, want: []string{defaultRoute}},
		"MergeHttpRoutes/delegate with mirrors": {docs: root + `
  http:
  - mirrors: [{destination: {host: mirror}}]
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /productpage/v1}}]
    mirrors: [{destination: {host: pp-v2}}]
    route: [{destination: {host: pp-v1}}]
  - route: [{destination: {host: pp-v3}}]
`, want: []string{
			"prefix:/productpage/v1 -> pp-v1 mirror=pp-v2",
			"prefix:/ -> pp-v3 mirror=mirror",
		}},
		"MergeHttpRoutes/multiple header merge": {docs: root + `
  http:
  - match: [{headers: {header1: {regex: regex}}}, {headers: {header2: {exact: exact}}}]
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ header1~regex -> pp-v1", "prefix:/ header2=exact -> pp-v1"}},
		"MergeHttpRoutes/names joined": {docs: root + `
  http:
  - name: root
    match: [{name: m, uri: {prefix: /a}}]
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - name: leaf
    match: [{name: n, uri: {prefix: /a/b}}]
    route: [{destination: {host: pp-v1}}]
  - route: [{destination: {host: pp-v2}}]
`, want: []string{"prefix:/a/b -> pp-v1 name=root-leaf.m-n", "prefix:/a -> pp-v2 name=root.m"}},
		"ControllerMergeVirtualServices/one delegate vs": {docs: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{defaultRoute}, diags: []string{"info VirtualService default/pp spec.hosts"}},
		"ControllerMergeVirtualServices/root and delegate vs, short names in the delegate's namespace": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}}, {uri: {exact: /login}}]
    delegate: {name: pp, namespace: team}
  - route: [{destination: {host: pp-v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: team}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/productpage -> pp-v1.team", "exact:/login -> pp-v1.team", "prefix:/ -> pp-v1"}},
		"ControllerMergeVirtualServices/root's mirror resolves in the root's namespace": {docs: root + `
  http:
  - mirror: {host: pp-v1}
    delegate: {name: pp, namespace: team}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: team}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v1.team mirror=pp-v1"}},
		"ControllerMergeVirtualServices/root and conflicted delegate vs": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}}, {uri: {exact: /login}}]
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /productpage/v1}}]
    route: [{destination: {host: pp-v1}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: pp-v2}}]
`, want: []string{"prefix:/productpage/v1 -> pp-v1", "prefix:/ -> pp-v3"},
			diags: []string{"warning VirtualService default/pp spec.http[1].match"}},
		"ControllerMergeVirtualServices/multiple routes delegate to one": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}}]
    delegate: {name: pp}
  - match: [{uri: {prefix: /legacy}}]
    timeout: 5s
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/productpage -> pp-v1", "prefix:/legacy -> pp-v1 timeout=5s"}},
		"ControllerMergeVirtualServices/delegate not exported to root vs namespace": {docs: root + `
  http:
  - match: [{uri: {prefix: /productpage}}]
    delegate: {name: pp, namespace: team}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: team}
spec:
  exportTo: ["."]
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v3"}, diags: []string{"warning VirtualService default/productpage spec.http[0].delegate"}},
		"delegate exported to the root's namespace by name": {docs: root + `
  http:
  - delegate: {name: pp, namespace: team}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: team}
spec:
  exportTo: [default]
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v1.team"}},
		"a delegate of a gateway-only root is not reported unused": {docs: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [ingress]
  http:
  - delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{defaultRoute}},
		"missing delegate drops only its rule": {docs: root + `
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: nowhere}
  - route: [{destination: {host: pp-v3}}]
`, want: []string{"prefix:/ -> pp-v3"}, diags: []string{"warning VirtualService default/productpage spec.http[0].delegate"}},
		"a VirtualService with hosts is no delegate": {docs: root + `
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: other}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other, namespace: default}
spec:
  hosts: [pp-v2]
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v3"}, diags: []string{"warning VirtualService default/productpage spec.http[0].delegate"}},
		"one level: a delegate's rule cannot delegate": {docs: root + `
  http:
  - delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /deeper}}]
    delegate: {name: pp2}
  - route: [{destination: {host: pp-v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp2, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v2}}]
`, want: []string{"prefix:/ -> pp-v1"}, diags: []string{"info VirtualService default/pp2 spec.hosts"},
			errors: []string{"cannot delegate again"}},
		"a delegate with gateways is rejected": {docs: root + `
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  gateways: [mesh]
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v3"}, diags: []string{"warning VirtualService default/productpage spec.http[0].delegate"},
			errors: []string{"must not name gateways"}},
		"a rule that delegates cannot route": {docs: root + `
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: pp-v2}}]
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/ -> pp-v3"}, errors: []string{"must not set route"}},
		"the delegate's own fields win over the root's": {docs: root + `
  http:
  - timeout: 10s
    headers: {request: {set: {x-root: "1"}}}
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /fast}}]
    timeout: 1s
    headers: {request: {set: {x-leaf: "1"}}}
    route: [{destination: {host: pp-v1}}]
  - route: [{destination: {host: pp-v2}}]
`, want: []string{"prefix:/fast -> pp-v1 timeout=1s +x-leaf:1", "prefix:/ -> pp-v2 timeout=10s +x-root:1"}},
		"the root's directResponse is passed on": {docs: root + `
  http:
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 410}
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/gone -> direct 410", "prefix:/ -> pp-v3"}},
		"a delegate Istio's validation refuses is rejected whole, and the root's rule dropped": {docs: root + `
  http:
  - delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /bad}}]
    route: [{destination: {host: pp-v1}, weight: -1}]
  - route: [{destination: {host: pp-v2}}]
`, want: []string{"prefix:/ -> productpage name=default"}, errors: []string{"weight must not be negative", "VirtualService is rejected"},
			diags: []string{"warning VirtualService default/productpage spec.http[0].delegate"}},
		"a delegate's gateways override the root's client restriction (as in Istio), with a warning": {docs: root + `
  http:
  - match: [{sourceLabels: {app: trusted}}]
    delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /admin}, gateways: [mesh]}]
    route: [{destination: {host: pp-v1}}]
`, want: []string{"prefix:/admin -> pp-v1", "prefix:/ -> pp-v3"},
			diags: []string{"warning VirtualService default/pp spec.http[0].match[0].gateways"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := delegation(t, c.docs)
			port := c.port
			if port == 0 {
				port = 80
			}
			if got := productpageRoutes(t, p, port, nil); !slices.Equal(got, c.want) {
				t.Errorf("routes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
			got := delegateDiags(p)
			slices.Sort(got)
			if !slices.Equal(got, c.diags) {
				t.Errorf("Delegate diagnostics %q, want %q", got, c.diags)
			}
			for _, e := range c.errors {
				if !slices.ContainsFunc(p.Diagnostics(), func(d ir.Diagnostic) bool {
					return d.Severity == ir.SeverityError && strings.Contains(d.Message, e)
				}) {
					t.Errorf("no error %q; diagnostics:\n%v", e, p.Diagnostics())
				}
			}
		})
	}
}

// TestDelegateOrigin: a delegated route names the delegate and its rule as
// its origin (diagnostics and NACK Events about it go to the delegate's
// owner); the virtual host stays the root's.
func TestDelegateOrigin(t *testing.T) {
	p := delegation(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - route: [{destination: {host: pp-v3}}]
    match: [{uri: {prefix: /v3}}]
  - delegate: {name: pp, namespace: team}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /x}}]
    route: [{destination: {host: pp-v1}}]
  - route: [{destination: {host: nowhere}}]
`)
	var vh *ir.VirtualHost
	for _, rc := range p.Base.RouteConfigs {
		for i := range rc.VirtualHosts {
			if rc.Name == ir.RouteConfigName(80) && rc.VirtualHosts[i].Name == ir.VirtualHostName("productpage.default.svc.cluster.local", 80) {
				vh = &rc.VirtualHosts[i]
			}
		}
	}
	if vh == nil {
		t.Fatal("no virtual host for productpage:80")
	}
	rootRef := ir.ResourceRef{Kind: "VirtualService", Namespace: "default", Name: "productpage"}
	delegateRef := ir.ResourceRef{Kind: "VirtualService", Namespace: "team", Name: "pp"}
	if vh.Origin == nil || *vh.Origin != rootRef {
		t.Errorf("virtual host origin %v, want %v", vh.Origin, rootRef)
	}
	type origin struct {
		ref   ir.ResourceRef
		field string
	}
	var got []origin
	for _, r := range vh.Routes {
		got = append(got, origin{*r.Origin, r.OriginField})
	}
	want := []origin{{rootRef, "spec.http[0]"}, {delegateRef, "spec.http[0]"}}
	if !slices.Equal(got, want) {
		t.Errorf("route origins %v, want %v", got, want)
	}
	// The delegate's rule to a missing host is reported on the delegate.
	if !slices.ContainsFunc(p.Diagnostics(), func(d ir.Diagnostic) bool {
		return d.Code == ir.CodeHostNotFound && d.Resource == delegateRef && d.Field == "spec.http[1].route[0].destination.host" &&
			strings.Contains(d.Message, "nowhere.team.svc.cluster.local")
	}) {
		t.Errorf("no HostNotFound on the delegate's rule; diagnostics:\n%v", p.Diagnostics())
	}
}

// TestDelegateSourceSelectors: the sourceNamespace and sourceLabels of a
// delegate's matches decide source classes like a root's own do, so that
// clients of that namespace or with those labels get the delegated routing.
func TestDelegateSourceSelectors(t *testing.T) {
	p := delegation(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - delegate: {name: pp}
  - route: [{destination: {host: pp-v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{sourceNamespace: ops}]
    route: [{destination: {host: pp-v1}}]
  - match: [{sourceLabels: {app: canary}}]
    route: [{destination: {host: pp-v2}}]
`)
	if !p.routingNamespaces["ops"] {
		t.Errorf("routing namespaces %v lack ops, the delegate's sourceNamespace", p.routingNamespaces)
	}
	if !slices.ContainsFunc(p.sourceLabels, func(l map[string]string) bool { return len(l) == 1 && l["app"] == "canary" }) {
		t.Errorf("source label selectors %v lack the delegate's app=canary", p.sourceLabels)
	}
	for name, c := range map[string]struct {
		cl   *Class
		want string
	}{
		"ops":    {&Class{Name: "ops", Namespace: "ops"}, "prefix:/ -> pp-v1"},
		"canary": {&Class{Name: "canary", Namespace: "default", Labels: map[string]string{"app": "canary"}}, "prefix:/ -> pp-v2"},
		"other":  {&Class{Name: "other", Namespace: "default"}, "prefix:/ -> pp-v3"},
	} {
		if got := productpageRoutes(t, p, 80, c.cl); len(got) == 0 || got[0] != c.want {
			t.Errorf("%s: routes %q, want %q first", name, got, c.want)
		}
	}
}

// TestDelegateNullMatches: null match entries (which the loader's schema
// check reports, but a program building a Bag may pass) are read as empty
// matches, never a panic.
func TestDelegateNullMatches(t *testing.T) {
	l := input.NewLoader("default")
	l.LoadBytes("delegate.yaml", []byte(delegateMesh+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - match: [{uri: {prefix: /a}, sourceLabels: {app: x}}]
    delegate: {name: pp}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /a/b}}]
    route: [{destination: {host: pp-v1}}]
`))
	bag := l.Bag()
	for _, vs := range bag.VirtualServices {
		vs.Spec.Http[0].Match = append(vs.Spec.Http[0].Match, nil)
	}
	p := Prepare(bag, Options{})
	// Each leaf match ANDed with each root match, a null one matching all.
	want := []string{"prefix:/a/b -> pp-v1", "prefix:/a/b -> pp-v1", "prefix:/a -> pp-v1", "prefix:/ -> pp-v1"}
	if got := productpageRoutes(t, p, 80, &Class{Name: "x", Labels: map[string]string{"app": "x"}}); !slices.Equal(got, want) {
		t.Errorf("routes %q, want %q", got, want)
	}
}

// TestExportedTo is Istio's visibility of a resource of namespace "team" to
// namespace "shop" (convertExportToSet; an empty exportTo is the mesh
// default "*").
func TestExportedTo(t *testing.T) {
	for name, c := range map[string]struct {
		exportTo []string
		want     bool
	}{
		"empty (mesh default *)": {nil, true},
		"*":                      {[]string{"*"}, true},
		". (own namespace)":      {[]string{"."}, false},
		"the namespace":          {[]string{"shop"}, true},
		"another namespace":      {[]string{"ops"}, false},
		"~ (none)":               {[]string{"~"}, false},
		"several":                {[]string{".", "shop"}, true},
	} {
		if got := exportToOf("team", c.exportTo, nil).visibleTo("shop"); got != c.want {
			t.Errorf("%s: exportTo %q visible to shop: %v, want %v", name, c.exportTo, got, c.want)
		}
	}
	if !exportToOf("team", []string{"."}, nil).visibleTo("team") {
		t.Error(`"." does not export to the owner's own namespace`)
	}
}
