package translate

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/internal/rbaceval"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

const (
	inboundNS       = "testdata/inbound/namespace-default.yaml"
	inboundBookinfo = "testdata/inbound/bookinfo-nodemesh.yaml"
	authzHTTPSample = "../../shared/conformance/istio-bookinfo/security/authz-http-bookinfo.yaml"
	oracleLDS       = "../../shared/conformance/istio-oracle/bookinfo-baseline/lds.json"
	oracleCDS       = "../../shared/conformance/istio-oracle/bookinfo-baseline/cds.json"
)

// forNode translates files for a node as `nodemesh translate --node` does.
func forNode(t *testing.T, node string, files ...string) *Result {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("fixture %s: %v", f, err)
		}
	}
	bag, diags, err := Load(files, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	return Translate(bag, diags, Options{Node: node})
}

// forNodeYAML translates manifests for a node.
func forNodeYAML(t *testing.T, node string, docs ...string) *Result {
	t.Helper()
	bag, diags := LoadBytes("test.yaml", []byte(strings.Join(docs, "\n---\n")), "default")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return Translate(bag, diags, Options{Node: node})
}

func inboundOf(r *Result) *listenerv3.Listener {
	for _, l := range r.XDS.Listeners {
		if l.GetName() == ir.InboundListenerName {
			return l
		}
	}
	return nil
}

// chainFor finds the inbound chain of a pod address and port.
func chainFor(t *testing.T, l *listenerv3.Listener, addr string, port uint32) *listenerv3.FilterChain {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		if m.GetDestinationPort().GetValue() != port {
			continue
		}
		for _, p := range m.GetPrefixRanges() {
			if p.GetAddressPrefix() == addr && p.GetPrefixLen().GetValue() == 32 {
				return fc
			}
		}
	}
	t.Fatalf("no inbound chain for %s:%d", addr, port)
	return nil
}

func chainHCM(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	h := &hcmv3.HttpConnectionManager{}
	if len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(h) != nil {
		t.Fatalf("chain %s: not one HTTP connection manager", fc.GetName())
	}
	return h
}

// chainRBAC is the RBAC filters of a chain, in order.
func chainRBAC(t *testing.T, fc *listenerv3.FilterChain) []*rbachttpv3.RBAC {
	t.Helper()
	var out []*rbachttpv3.RBAC
	for _, f := range chainHCM(t, fc).GetHttpFilters() {
		if f.GetName() != envoy.FilterHTTPRBAC {
			continue
		}
		r := &rbachttpv3.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func allowed(t *testing.T, fc *listenerv3.FilterChain, r rbaceval.Request) bool {
	t.Helper()
	ok, err := rbaceval.Allowed(chainRBAC(t, fc), &r)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func req(method, path, from string) rbaceval.Request {
	return rbaceval.Request{Method: method, Path: path, Host: "x", Source: netip.MustParseAddr(from), DestinationPort: 9080}
}

// TestInboundBookinfoAuthz: Istio's authz-http task policies on bookinfo
// migrated to nodemesh give each node a chain per local bookinfo pod
// (productpage, details, reviews on node-1; ratings and reviews on node-2)
// with that pod's RBAC, and the served RBAC decides as Istio does:
// productpage-viewer lets GET in and keeps POST out; details and ratings
// admit GET from the principal named (its pods' addresses) only.
func TestInboundBookinfoAuthz(t *testing.T) {
	const (
		productpage = "10.244.1.11"
		details     = "10.244.1.12"
		ratings     = "10.244.2.13"
		reviewsV1   = "10.244.1.14"
		reviewsV2   = "10.244.2.15"
		reviewsV3   = "10.244.2.16"
		stranger    = "10.244.9.9"
	)
	nodes := map[string]*listenerv3.Listener{}
	for _, n := range []string{"node-1", "node-2"} {
		r := forNode(t, n, inboundNS, inboundBookinfo, authzHTTPSample)
		for _, d := range r.Diagnostics {
			if d.Severity == ir.SeverityError {
				t.Errorf("%s: %v", n, d)
			}
		}
		if nodes[n] = inboundOf(r); nodes[n] == nil {
			t.Fatalf("%s has no inbound listener", n)
		}
	}
	var names []string
	for n, l := range nodes {
		for _, fc := range l.GetFilterChains() {
			names = append(names, n+" "+fc.GetName())
		}
	}
	sort.Strings(names)
	want := []string{"node-1 10.244.1.11_9080", "node-1 10.244.1.12_9080", "node-1 10.244.1.14_9080",
		"node-2 10.244.2.13_9080", "node-2 10.244.2.15_9080", "node-2 10.244.2.16_9080"}
	if !slices.Equal(names, want) {
		t.Errorf("chains %v, want %v", names, want)
	}
	tests := map[string]struct {
		node, pod string
		req       rbaceval.Request
		allow     bool
	}{
		"productpage: GET from anyone":             {"node-1", productpage, req("GET", "/productpage", stranger), true},
		"productpage: POST is denied":              {"node-1", productpage, req("POST", "/productpage", stranger), false},
		"details: GET from productpage":            {"node-1", details, req("GET", "/details/0", productpage), true},
		"details: GET from ratings is denied":      {"node-1", details, req("GET", "/details/0", ratings), false},
		"details: POST from productpage is denied": {"node-1", details, req("POST", "/details/0", productpage), false},
		"reviews: GET from productpage":            {"node-1", reviewsV1, req("GET", "/reviews/0", productpage), true},
		"reviews: GET from a stranger is denied":   {"node-1", reviewsV1, req("GET", "/reviews/0", stranger), false},
		"ratings: GET from reviews v2":             {"node-2", ratings, req("GET", "/ratings/0", reviewsV2), true},
		"ratings: GET from reviews v3":             {"node-2", ratings, req("GET", "/ratings/0", reviewsV3), true},
		"ratings: GET from productpage is denied":  {"node-2", ratings, req("GET", "/ratings/0", productpage), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := allowed(t, chainFor(t, nodes[tc.node], tc.pod, 9080), tc.req); got != tc.allow {
				t.Errorf("allowed %v, want %v", got, tc.allow)
			}
		})
	}
}

// TestInboundPeersByAddress: principals, namespaces and trust domains (and
// their not* forms) match by the addresses of the pods that have them —
// the inbound listener sees plaintext from the client's own address, so an
// `authenticated` principal would never match: a DENY by principal would
// never fire (the attack), an ALLOW by principal admit nobody.
func TestInboundPeersByAddress(t *testing.T) {
	const (
		web     = "10.0.0.10" // shop/web (sa web), the destination
		client  = "10.0.0.11" // shop/client (sa client)
		other   = "10.0.0.12" // other/tool (sa default)
		outside = "192.0.2.1" // no pod
	)
	base := `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: nodemesh}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: app, image: web}]}
status: {phase: Running, podIP: 10.0.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n2, serviceAccountName: client, containers: [{name: app, image: client}]}
status: {phase: Running, podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: other}
spec: {nodeName: n2, containers: [{name: app, image: tool}]}
status: {phase: Running, podIP: 10.0.0.12}`
	policy := func(action, rule string) string {
		return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ` + action + `
  rules:
  - ` + rule
	}
	type want map[string]bool // source → allowed (GET)
	tests := map[string]struct {
		policy string
		want   want
	}{
		"DENY by principal fires for that principal's pods": {policy("DENY", `{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: true, outside: true}},
		"ALLOW by principal admits that principal's pods only": {policy("ALLOW", `{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: true, other: false, outside: false}},
		"ALLOW by namespace": {policy("ALLOW", `{from: [{source: {namespaces: [other]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: true, outside: false}},
		"DENY notPrincipals: everyone but the principal, what is no pod included": {policy("DENY", `{from: [{source: {notPrincipals: [cluster.local/ns/shop/sa/client]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: true, other: false, outside: false}},
		"ALLOW notNamespaces admits what is no pod (no principal), as Istio": {policy("ALLOW", `{from: [{source: {notNamespaces: [shop]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: true, outside: true}},
		"ALLOW principal AND ipBlocks: the intersection": {policy("ALLOW", `{from: [{source: {namespaces: [shop, other], ipBlocks: [10.0.0.12/32]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: true, outside: false}},
		"ALLOW a principal no pod has admits nobody": {policy("ALLOW", `{from: [{source: {principals: [cluster.local/ns/shop/sa/ghost]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: false, outside: false}},
		"ALLOW a serviceAccount of any trust domain": {policy("ALLOW", `{from: [{source: {serviceAccounts: [shop/client]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: true, other: false, outside: false}},
		"ALLOW another trust domain admits nobody": {policy("ALLOW", `{from: [{source: {principals: [example.org/ns/shop/sa/client]}}], to: [{operation: {methods: [GET]}}]}`),
			want{client: false, other: false, outside: false}},
		"DENY source.principal in when": {policy("DENY", `{to: [{operation: {methods: [GET]}}], when: [{key: source.principal, values: [cluster.local/ns/other/sa/default]}]}`),
			want{client: true, other: false, outside: true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := forNodeYAML(t, "n1", base, tc.policy)
			l := inboundOf(r)
			if l == nil {
				t.Fatalf("no inbound listener: %v", r.Diagnostics)
			}
			fc := chainFor(t, l, web, 8080)
			for src, allow := range tc.want {
				q := req("GET", "/", src)
				q.DestinationPort = 8080
				if got := allowed(t, fc, q); got != allow {
					t.Errorf("GET from %s: allowed %v, want %v", src, got, allow)
				}
			}
		})
	}
}

// TestInboundDenyAllWhenRBACFails: a pod whose RBAC cannot be built gets
// chains that deny every request, and an error; never chains without RBAC.
func TestInboundDenyAllWhenRBACFails(t *testing.T) {
	bag, diags := LoadBytes("t.yaml", []byte(`apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: app, image: web}]}
status: {phase: Running, podIP: 10.0.0.10}`), "default")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	// A header condition without a name: protoc-gen-validate refuses the
	// RBAC policy (the translation never writes one; a bug might).
	broken := ir.Policy{Source: ir.ResourceRef{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "broken"},
		Gate: ir.GateAuthorization, Action: ir.PolicyDeny, Scope: ir.PolicyScope{Namespace: "shop"},
		Rules: []ir.PolicyRule{{Field: "spec.rules[0]", Clauses: []ir.PolicyClause{{Matches: []ir.PolicyMatch{{
			L7: []ir.L7Condition{{Attribute: ir.L7Header, Values: []ir.Glob{"x"}}}}}}}}}}
	s := &authzState{opts: AuthzOptions{TrustDomain: "cluster.local"}, pols: []ir.Policy{broken}}
	chains, ds := s.chains([]inboundPod{{pod: bag.Pods[0], ports: []CapturedPort{{Port: 8080, Protocol: ir.ProtocolHTTP}}, policies: []int{0}}})
	if len(chains) != 1 || !chains[0].DenyAll {
		t.Fatalf("chains %+v, want one that denies all", chains)
	}
	if !ds.HasErrors() {
		t.Errorf("no error: %v", ds)
	}
	r, bds := envoy.BuildInbound(chains)
	if bds.HasErrors() || len(r.Listeners) != 1 {
		t.Fatalf("built %v, %v", r, bds)
	}
	fc := chainFor(t, r.Listeners[0], "10.0.0.10", 8080)
	for _, m := range []string{"GET", "POST"} {
		q := req(m, "/", "10.0.0.1")
		q.DestinationPort = 8080
		if allowed(t, fc, q) {
			t.Errorf("%s allowed by a chain whose RBAC failed", m)
		}
	}
}

// TestNoInboundWithoutCapture: a node whose pods need no HTTP fact has no
// inbound listener and no inbound cluster, and its key is that of a node
// without policies (nodes keep sharing their parts).
func TestNoInboundWithoutCapture(t *testing.T) {
	r := forNode(t, "node-1", inboundNS, inboundBookinfo)
	if inboundOf(r) != nil {
		t.Error("an inbound listener without any policy")
	}
	l4 := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: default}
spec: {rules: [{from: [{source: {namespaces: [default]}}]}]}`
	var data []byte
	for _, f := range []string{inboundNS, inboundBookinfo} {
		d, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, d...), "\n---\n"...)
	}
	r = forNodeYAML(t, "node-1", string(data), l4)
	if inboundOf(r) != nil {
		t.Error("an inbound listener for an L4-only policy")
	}
	for _, c := range r.XDS.Clusters {
		if strings.HasPrefix(c.GetName(), "inbound|") {
			t.Errorf("cluster %s without an inbound listener", c.GetName())
		}
	}
	bag, _ := LoadBytes("t.yaml", append(data, []byte("\n---\n"+l4)...), "default")
	plain, _ := LoadBytes("t.yaml", data, "default")
	g, _ := New(bag, nil, Options{})
	gp, _ := New(plain, nil, Options{})
	if a, b := g.NodeClasses("node-1").Key, gp.NodeClasses("node-1").Key; a != b {
		t.Errorf("key %q with an L4-only policy, %q without", a, b)
	}
}

// oracleInbound is the 9080 plaintext chain of productpage's
// virtualInbound listener (the listener without its chains, the chain's
// HTTP connection manager) and its inbound cluster, as istiod emitted them.
func oracleInbound(t *testing.T) (listener, hcm, cluster map[string]any) {
	t.Helper()
	var lds, cds any
	for f, into := range map[string]*any{oracleLDS: &lds, oracleCDS: &cds} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Skipf("oracle %s: %v", f, err)
		}
		if err := json.Unmarshal(data, into); err != nil {
			t.Fatal(err)
		}
	}
	var walk func(v any, f func(map[string]any))
	walk = func(v any, f func(map[string]any)) {
		switch x := v.(type) {
		case map[string]any:
			f(x)
			for _, c := range x {
				walk(c, f)
			}
		case []any:
			for _, c := range x {
				walk(c, f)
			}
		}
	}
	walk(lds, func(m map[string]any) {
		if m["name"] != "virtualInbound" || m["filterChains"] == nil {
			return
		}
		listener = map[string]any{}
		for k, v := range m {
			if k != "filterChains" {
				listener[k] = v
			}
		}
		for _, fc := range m["filterChains"].([]any) {
			fcm, _ := fc.(map[string]any)["filterChainMatch"].(map[string]any)
			if fcm["destinationPort"] != float64(9080) || fcm["transportProtocol"] != "raw_buffer" {
				continue
			}
			for _, f := range fc.(map[string]any)["filters"].([]any) {
				if f.(map[string]any)["name"] == "envoy.filters.network.http_connection_manager" {
					hcm = f.(map[string]any)["typedConfig"].(map[string]any)
				}
			}
		}
	})
	walk(cds, func(m map[string]any) {
		if m["name"] == "inbound|9080||" {
			cluster = m
		}
	})
	if listener == nil || hcm == nil || cluster == nil {
		t.Fatal("the oracle has no virtualInbound 9080 chain or inbound|9080|| cluster")
	}
	return listener, hcm, cluster
}

func asMap(t *testing.T, m proto.Message) map[string]any {
	t.Helper()
	data, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// compareFields compares two JSON objects field by field: every field must
// be equal unless diffs names it (an intended difference, with why; listed
// in docs/parity.md), and every intended difference must still differ.
func compareFields(t *testing.T, what string, ours, istio map[string]any, diffs map[string]string) {
	t.Helper()
	keys := map[string]bool{}
	for k := range ours {
		keys[k] = true
	}
	for k := range istio {
		keys[k] = true
	}
	for k := range diffs {
		keys[k] = true // (a difference both left out is no difference)
	}
	for k := range keys {
		same := reflect.DeepEqual(ours[k], istio[k])
		if _, intended := diffs[k]; intended {
			if same {
				t.Errorf("%s.%s: listed as an intended difference but equal to Istio's", what, k)
			}
			continue
		}
		if !same {
			t.Errorf("%s.%s differs from Istio's:\n ours:  %v\n istio: %v", what, k, ours[k], istio[k])
		}
	}
}

// TestInboundVsIstioOracle: the inbound listener, a chain and its cluster
// against productpage's sidecar inbound listener (virtualInbound), its 9080
// plaintext chain and inbound|9080|| cluster as istiod emits them: the
// same, field by field, except the differences listed here (and in
// docs/parity.md), each of which must still be a difference.
func TestInboundVsIstioOracle(t *testing.T) {
	istioListener, istioHCM, istioCluster := oracleInbound(t)
	r := forNode(t, "node-1", inboundNS, inboundBookinfo, authzHTTPSample)
	l := inboundOf(r)
	if l == nil {
		t.Fatal("no inbound listener")
	}
	fc := chainFor(t, l, "10.244.1.11", 9080)
	lm := proto.Clone(l).(*listenerv3.Listener)
	lm.FilterChains = nil
	compareFields(t, "listener", asMap(t, lm), istioListener, map[string]string{
		"transparent":                          "connections keep the pod's address (bpf_sk_assign): the socket must accept non-local addresses",
		"listenerFilters":                      "original_src (the pod sees its client's address) instead of tls_inspector and http_inspector (no mTLS, HTTP ports only)",
		"listenerFiltersTimeout":               "no inspector waits for bytes",
		"continueOnListenerFiltersTimeout":     "no inspector waits for bytes",
		"maxConnectionsToAcceptPerSocketEvent": "Envoy's default",
		"socketOptions":                        "SO_MARK 0x08000000: the eBPF capture hands packets only to a socket with the proxy's mark",
	})
	h := chainHCM(t, fc)
	ours := asMap(t, h)
	delete(istioHCM, "@type") // the Any around it, not a field
	compareFields(t, "hcm", ours, istioHCM, map[string]string{
		"statPrefix":                  "inbound_<pod IP>_9080; — one chain per pod, not 0.0.0.0",
		"httpFilters":                 "compared below",
		"routeConfig":                 "compared below",
		"tracing":                     "no tracing configured by nodemesh",
		"requestIdExtension":          "Envoy's default (uuid) without tracing",
		"forwardClientCertDetails":    "SANITIZE: no client certificate is verified (no mTLS yet), a client's own x-forwarded-client-cert must not pass",
		"setCurrentClientCertDetails": "no client certificate",
	})
	// The route configuration: the same but for the tracing decorator.
	rc, irc := ours["routeConfig"].(map[string]any), istioHCM["routeConfig"].(map[string]any)
	compareFields(t, "routeConfig", rc, irc, map[string]string{"virtualHosts": "compared below"})
	vh := rc["virtualHosts"].([]any)[0].(map[string]any)
	ivh := irc["virtualHosts"].([]any)[0].(map[string]any)
	compareFields(t, "virtualHost", vh, ivh, map[string]string{"routes": "compared below"})
	route, iroute := vh["routes"].([]any)[0].(map[string]any), ivh["routes"].([]any)[0].(map[string]any)
	compareFields(t, "route", route, iroute, map[string]string{"decorator": "no tracing"})
	// HTTP filters: ours are [jwt_authn hook] RBAC… router; Istio's telemetry
	// and no-op filters are left out on purpose.
	var mine, theirs []string
	for _, f := range h.GetHttpFilters() {
		mine = append(mine, f.GetName())
	}
	for _, f := range istioHCM["httpFilters"].([]any) {
		theirs = append(theirs, f.(map[string]any)["name"].(string))
	}
	leftOut := map[string]bool{"istio.metadata_exchange": true, "envoy.filters.http.grpc_stats": true,
		"envoy.filters.http.fault": true, "envoy.filters.http.cors": true}
	for _, n := range theirs {
		if !slices.Contains(mine, n) && !leftOut[n] {
			t.Errorf("Istio's HTTP filter %s is missing", n)
		}
	}
	if len(mine) < 2 || mine[len(mine)-1] != theirs[len(theirs)-1] {
		t.Errorf("HTTP filters %v: the router must be last, after the RBAC", mine)
	}
	for _, n := range mine[:len(mine)-1] {
		if n != envoy.FilterHTTPRBAC {
			t.Errorf("HTTP filter %s before the router, want only RBAC filters", n)
		}
	}
	var cluster *clusterv3.Cluster
	for _, c := range r.XDS.Clusters {
		if c.GetName() == "inbound|9080||" {
			cluster = c
		}
	}
	if cluster == nil {
		t.Fatal("no inbound|9080|| cluster")
	}
	compareFields(t, "cluster", asMap(t, cluster), istioCluster, map[string]string{
		"upstreamBindConfig":            "the listener's original_src binds to the client's address, not 127.0.0.6",
		"cleanupInterval":               "Envoy's default",
		"commonLbConfig":                "Envoy's default (empty in Istio's)",
		"metadata":                      "one cluster serves every pod of the node on the port: no Service metadata",
		"typedExtensionProtocolOptions": "the client's HTTP version upstream (Istio's inbound is per Service protocol)",
	})
}

// TestInboundDeterministic: the inbound listener's encoding is the same
// every time it is built — its RBAC policies are a map packed in an Any,
// whose bytes resource versions digest (a new version each time would push
// unchanged configuration to Envoy) and which `nodemesh translate` and the
// controller must print and serve byte for byte.
func TestInboundDeterministic(t *testing.T) {
	var first []byte
	for i := range 20 {
		l := inboundOf(forNode(t, "node-1", inboundNS, inboundBookinfo, authzHTTPSample))
		if l == nil {
			t.Fatal("no inbound listener")
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = data
		} else if !slices.Equal(first, data) {
			t.Fatalf("build %d encodes differently from the first", i)
		}
	}
}

// BenchmarkInboundNode: one node's inbound listener — 50 captured pods of
// 1,000 (on 20 nodes), 1,000 AuthorizationPolicies of 10 rules each (a
// principal and a method; every pod gets 50 policies) — from the
// generation's policies to the validated listener (policy translation
// and peers by address included, as a new generation pays them).
func BenchmarkInboundNode(b *testing.B) {
	var docs []string
	docs = append(docs, "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: nodemesh}}")
	for i := range 20 {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: shop}\nspec: {selector: {app: app-%d}, ports: [{name: http, port: 80, targetPort: 8080}]}", i, i))
	}
	for i := range 1000 {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: pod-%d, namespace: shop, labels: {app: app-%d}}\nspec: {nodeName: node-%d, serviceAccountName: sa-%d, containers: [{name: app, image: app}]}\nstatus: {phase: Running, podIP: 10.%d.%d.%d}",
			i, i%20, i%20, i%50, 1+i/65536, (i/256)%256, i%256))
	}
	for i := range 1000 {
		var rules strings.Builder
		for r := range 10 {
			fmt.Fprintf(&rules, "  - {from: [{source: {principals: [cluster.local/ns/shop/sa/sa-%d]}}], to: [{operation: {methods: [GET], paths: [/api/%d/*]}}]}\n", (i+r)%50, r)
		}
		docs = append(docs, fmt.Sprintf("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p-%d, namespace: shop}\nspec:\n  selector: {matchLabels: {app: app-%d}}\n  rules:\n%s", i, i%20, rules.String()))
	}
	bag, diags := LoadBytes("bench.yaml", []byte(strings.Join(docs, "\n---\n")), "default")
	if diags.HasErrors() {
		b.Fatal(diags[:1])
	}
	g, _ := New(bag, nil, Options{})
	nc := g.NodeClasses("node-0")
	if r := g.NodePart(nc).BuildInbound(); len(r.Listeners) != 1 || len(r.Listeners[0].GetFilterChains()) != 50 {
		b.Fatalf("want one listener with 50 chains, got %v", r.Listeners)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		g, _ := New(bag, nil, Options{})
		g.NodePart(g.NodeClasses("node-0")).BuildInbound()
	}
}
