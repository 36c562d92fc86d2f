package translate

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tsinputv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/transport_socket/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// selectSocket evaluates a cluster's transport_socket_matcher as Envoy's
// generic matcher does for one upstream connection: endpointMeta is the
// endpoint's metadata (nil: none), identity the client's SPIFFE ID the
// listener's chain shared in filter state ("" when it shared none). It supports
// what nodemesh emits — matcher trees with exact match maps on the
// endpoint_metadata and transport_socket_filter_state inputs, on_no_match —
// and fails on anything else, so that emitting something it cannot read
// fails the tests. It returns the selected transport socket match.
func selectSocket(c *clusterv3.Cluster, endpointMeta *corev3.Metadata, identity string) (*clusterv3.Cluster_TransportSocketMatch, error) {
	name, err := evalMatcher(c.GetTransportSocketMatcher(), endpointMeta, identity)
	if err != nil {
		return nil, err
	}
	for _, m := range c.GetTransportSocketMatches() {
		if m.GetName() == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("matcher selected %q, which is no transport socket match", name)
}

func evalMatcher(m *xdsmatcherv3.Matcher, meta *corev3.Metadata, identity string) (string, error) {
	if m == nil {
		return "", fmt.Errorf("no matcher")
	}
	if tree := m.GetMatcherTree(); tree != nil {
		value, ok, err := matcherInput(tree.GetInput().GetTypedConfig(), meta, identity)
		if err != nil {
			return "", err
		}
		if tree.GetExactMatchMap() == nil {
			return "", fmt.Errorf("only exact match maps are evaluated")
		}
		if om, hit := tree.GetExactMatchMap().GetMap()[value]; ok && hit {
			return onMatch(om, meta, identity)
		}
	} else if m.GetMatcherList() != nil {
		return "", fmt.Errorf("matcher lists are not evaluated")
	}
	if m.GetOnNoMatch() == nil {
		return "", fmt.Errorf("no match and no on_no_match")
	}
	return onMatch(m.GetOnNoMatch(), meta, identity)
}

func onMatch(om *xdsmatcherv3.Matcher_OnMatch, meta *corev3.Metadata, identity string) (string, error) {
	if sub := om.GetMatcher(); sub != nil {
		return evalMatcher(sub, meta, identity)
	}
	var a tsinputv3.TransportSocketNameAction
	if err := om.GetAction().GetTypedConfig().UnmarshalTo(&a); err != nil {
		return "", fmt.Errorf("action: %w", err)
	}
	return a.GetName(), nil
}

// matcherInput reads an input; ok is false when the data is absent (Envoy:
// no match).
func matcherInput(tc interface {
	GetTypeUrl() string
}, meta *corev3.Metadata, identity string) (string, bool, error) {
	switch any := tc.(type) {
	case interface{ UnmarshalTo(proto.Message) error }:
		switch {
		case strings.HasSuffix(tc.GetTypeUrl(), "EndpointMetadataInput"):
			var in tsinputv3.EndpointMetadataInput
			if err := any.UnmarshalTo(&in); err != nil {
				return "", false, err
			}
			st := meta.GetFilterMetadata()[in.GetFilter()]
			if st == nil {
				return "", false, nil
			}
			v := structpb.NewStructValue(st)
			for _, seg := range in.GetPath() {
				v = v.GetStructValue().GetFields()[seg.GetKey()]
				if v == nil {
					return "", false, nil
				}
			}
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return "", false, nil
			}
			return s.StringValue, true, nil
		case strings.HasSuffix(tc.GetTypeUrl(), "FilterStateInput"):
			var in tsinputv3.FilterStateInput
			if err := any.UnmarshalTo(&in); err != nil {
				return "", false, err
			}
			if in.GetKey() != envoy.ClientIdentityKey {
				return "", false, fmt.Errorf("filter state key %q is not the listener's", in.GetKey())
			}
			return identity, identity != "", nil
		}
	}
	return "", false, fmt.Errorf("input %s is not evaluated", tc.GetTypeUrl())
}

func tlsContextOf(t *testing.T, m *clusterv3.Cluster_TransportSocketMatch) *tlsv3.UpstreamTlsContext {
	t.Helper()
	var ctx tlsv3.UpstreamTlsContext
	if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatalf("socket %s: %v", m.GetName(), err)
	}
	return &ctx
}

var istioEndpoint = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
}}

// bookinfoPods are the oracle's pods (one running pod per Deployment, with
// the Deployment's service account, injected with a sidecar), and the
// productpage client on node-a without one (a migrated pod).
const bookinfoPods = `
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: nodemesh}}
` + `{{range .}}---
apiVersion: v1
kind: Pod
metadata: {name: {{.name}}, namespace: default, labels: {app: {{.app}}, version: {{.version}}{{if .sidecar}}, security.istio.io/tlsMode: istio{{end}}}}
spec:
  nodeName: {{.node}}
  serviceAccountName: bookinfo-{{.app}}
  containers: [{name: app, image: app}{{if .sidecar}}, {name: istio-proxy, image: proxy}{{end}}]
status: {phase: Running, podIP: {{.ip}}, conditions: [{type: Ready, status: "True"}]}
{{end}}`

func bookinfoPodsYAML(t *testing.T) string {
	t.Helper()
	pods := []map[string]any{
		{"name": "details-v1", "app": "details", "version": "v1", "ip": "10.1.0.2", "node": "node-b", "sidecar": true},
		{"name": "ratings-v1", "app": "ratings", "version": "v1", "ip": "10.1.0.3", "node": "node-b", "sidecar": true},
		{"name": "reviews-v1", "app": "reviews", "version": "v1", "ip": "10.1.0.4", "node": "node-b", "sidecar": true},
		{"name": "reviews-v2", "app": "reviews", "version": "v2", "ip": "10.1.0.6", "node": "node-b", "sidecar": true},
		{"name": "reviews-v3", "app": "reviews", "version": "v3", "ip": "10.1.0.7", "node": "node-b", "sidecar": true},
		{"name": "productpage-v1", "app": "productpage", "version": "v1", "ip": "10.1.0.5", "node": "node-a", "sidecar": false},
	}
	var b strings.Builder
	if err := templateMust(bookinfoPods).Execute(&b, pods); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// productpage is the oracle's client: a migrated pod on node-a.
const (
	productpageID   = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
	productpageAddr = "10.1.0.5"
)

// translateMTLS is `nodemesh translate --node` with Istio mTLS on.
func translateMTLS(t *testing.T, inputs []string, extra string, node string, on bool) *Result {
	t.Helper()
	if extra != "" {
		p := filepath.Join(t.TempDir(), "extra.yaml")
		if err := os.WriteFile(p, []byte(extra), 0o600); err != nil {
			t.Fatal(err)
		}
		inputs = append(append([]string(nil), inputs...), p)
	}
	bag, diags, err := Load(inputs, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	return Translate(bag, diags, Options{Node: node, Istio: IstioOptions{IstioMTLS: on}})
}

// TestIstioOracleTransportSockets compares the node Envoy's transport
// sockets with Istio's auto-mTLS transportSocketMatches for the oracle's
// client (productpage, a migrated pod): for an endpoint with tlsMode istio
// the socket selected for productpage's connection (its address → the
// listener's chain → the SPIFFE ID it stores → the cluster's matcher) is Istio's
// tlsMode-istio socket, except the certificate's SDS name (Istio's sidecar
// has one identity, "default"; the node Envoy names it by SPIFFE ID —
// docs/parity.md); for any other endpoint, Istio's tlsMode-disabled.
func TestIstioOracleTransportSockets(t *testing.T) {
	for _, c := range oracleCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translateMTLS(t, c.inputs, bookinfoPodsYAML(t), "node-a", true)
			if res.HasErrors() {
				t.Fatalf("error diagnostics: %v", res.Diagnostics)
			}
			if p := envoy.Validate(res.XDS); len(p) > 0 {
				t.Fatalf("invalid: %v", p)
			}
			ours := map[string]*clusterv3.Cluster{}
			for _, cl := range res.XDS.Clusters {
				ours[cl.GetName()] = cl
			}
			compared := 0
			for _, want := range readProtoList(t, filepath.Join(c.dir, "cds.json"), func() *clusterv3.Cluster { return &clusterv3.Cluster{} }) {
				if len(want.GetTransportSocketMatches()) == 0 || strings.HasPrefix(want.GetName(), "inbound") {
					continue
				}
				got := ours[want.GetName()]
				if got == nil {
					t.Errorf("cluster %q missing", want.GetName())
					continue
				}
				wantSockets := map[string]*clusterv3.Cluster_TransportSocketMatch{}
				for _, m := range want.GetTransportSocketMatches() {
					wantSockets[m.GetName()] = m
				}
				for _, tc := range []struct {
					name     string
					meta     *corev3.Metadata
					client   string
					istio    string // Istio's socket for this endpoint
					ourCerts []string
				}{
					{"sidecar endpoint", istioEndpoint, productpageAddr, "tlsMode-istio", []string{productpageID}},
					{"plain endpoint", nil, productpageAddr, "tlsMode-disabled", nil},
					{"sidecar endpoint, unknown client", istioEndpoint, "10.1.0.99", "tlsMode-disabled", nil},
				} {
					// The client's connection to the cluster's port: the
					// listener's chain decides the identity, the cluster's
					// matcher the socket.
					identity, err := clientIdentity(listenerOf(t, res.XDS), conn{dst: netip.AddrPortFrom(netip.MustParseAddr("10.255.0.1"), clusterPort(t, want.GetName())), alpn: "http/1.1", src: netip.MustParseAddr(tc.client)})
					if err != nil {
						t.Errorf("%s %s: %v", want.GetName(), tc.name, err)
						continue
					}
					sel, err := selectSocket(got, tc.meta, identity)
					if err != nil {
						t.Errorf("%s %s: %v", want.GetName(), tc.name, err)
						continue
					}
					w := proto.Clone(wantSockets[tc.istio].GetTransportSocket()).(*corev3.TransportSocket)
					g := proto.Clone(sel.GetTransportSocket()).(*corev3.TransportSocket)
					if tc.istio == "tlsMode-istio" {
						var wctx, gctx tlsv3.UpstreamTlsContext
						if err := w.GetTypedConfig().UnmarshalTo(&wctx); err != nil {
							t.Fatal(err)
						}
						if err := g.GetTypedConfig().UnmarshalTo(&gctx); err != nil {
							t.Fatal(err)
						}
						var certs []string
						for _, s := range gctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
							certs = append(certs, s.GetName())
						}
						if d := cmp.Diff(tc.ourCerts, certs); d != "" {
							t.Errorf("%s %s: certificate (-want +got):\n%s", want.GetName(), tc.name, d)
						}
						// The intended difference: the certificate's name.
						for _, s := range wctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
							s.Name = productpageID
						}
						if d := cmp.Diff(&wctx, &gctx, protocmp.Transform()); d != "" {
							t.Errorf("%s %s: tls context differs from Istio's (-istio +nodemesh):\n%s", want.GetName(), tc.name, d)
						}
						continue
					}
					if d := cmp.Diff(w, g, protocmp.Transform()); d != "" {
						t.Errorf("%s %s: socket differs from Istio's %s (-istio +nodemesh):\n%s", want.GetName(), tc.name, tc.istio, d)
					}
				}
				compared++
			}
			if compared == 0 {
				t.Fatal("the oracle has no cluster with transport socket matches")
			}
		})
	}
}

// TestMTLSMatcher evaluates the emitted matcher for each kind of endpoint
// and client identity (as the listener's chain stored it): a client gets
// its own identity's certificate and never another's; no identity, or one
// the node's clusters do not know, gets plaintext (auto-mTLS) or no
// certificate (ISTIO_MUTUAL), never a certificate.
func TestMTLSMatcher(t *testing.T) {
	const (
		a        = "spiffe://cluster.local/ns/shop/sa/a"
		b        = "spiffe://cluster.local/ns/shop/sa/b"
		stranger = "spiffe://cluster.local/ns/shop/sa/c"
	)
	ids, err := envoy.NewMTLSIdentities([]string{b, a})
	if err != nil {
		t.Fatal(err)
	}
	spec := func(auto bool) *ir.IstioMTLS {
		return &ir.IstioMTLS{Auto: auto, SNI: "outbound_.80_._.s.shop.svc.cluster.local", SubjectAltNames: []string{"spiffe://cluster.local/ns/shop/sa/s"}, ALPN: []string{"istio-peer-exchange", "istio"}}
	}
	shared := &clusterv3.Cluster{Name: "outbound|80||s.shop.svc.cluster.local"}
	for _, tc := range []struct {
		name     string
		auto     bool
		meta     *corev3.Metadata
		identity string
		socket   string
		cert     string
	}{
		{"auto, sidecar endpoint, client a", true, istioEndpoint, a, envoy.SocketIstioPrefix + a, a},
		{"auto, sidecar endpoint, client b", true, istioEndpoint, b, envoy.SocketIstioPrefix + b, b},
		{"auto, sidecar endpoint, identity not of the node", true, istioEndpoint, stranger, envoy.SocketDisabled, ""},
		{"auto, sidecar endpoint, no identity", true, istioEndpoint, "", envoy.SocketDisabled, ""},
		{"auto, plain endpoint, client a", true, nil, a, envoy.SocketDisabled, ""},
		{"auto, other tlsMode, client a", true, &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("disabled")}}}}, a, envoy.SocketDisabled, ""},
		{"ISTIO_MUTUAL, plain endpoint, client a", false, nil, a, envoy.SocketIstioPrefix + a, a},
		{"ISTIO_MUTUAL, sidecar endpoint, client b", false, istioEndpoint, b, envoy.SocketIstioPrefix + b, b},
		{"ISTIO_MUTUAL, identity not of the node", false, istioEndpoint, stranger, envoy.SocketNoIdentity, ""},
		{"ISTIO_MUTUAL, no identity", false, istioEndpoint, "", envoy.SocketNoIdentity, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := envoy.WithIstioMTLS(shared, spec(tc.auto), ids)
			if err != nil {
				t.Fatal(err)
			}
			if p := envoy.ValidateWith(&envoy.Resources{Clusters: []*clusterv3.Cluster{c}}, &envoy.Refs{Endpoints: map[string]bool{c.GetName(): true}}); len(p) > 0 {
				t.Fatalf("invalid: %v", p)
			}
			sel, err := selectSocket(c, tc.meta, tc.identity)
			if err != nil {
				t.Fatal(err)
			}
			if sel.GetName() != tc.socket {
				t.Fatalf("selected %q, want %q", sel.GetName(), tc.socket)
			}
			if sel.GetTransportSocket().GetName() == "envoy.transport_sockets.raw_buffer" {
				if tc.cert != "" {
					t.Fatalf("plaintext, want %s's certificate", tc.cert)
				}
				return
			}
			ctx := tlsContextOf(t, sel)
			var certs []string
			for _, s := range ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
				certs = append(certs, s.GetName())
			}
			want := []string(nil)
			if tc.cert != "" {
				want = []string{tc.cert}
			}
			if d := cmp.Diff(want, certs); d != "" {
				t.Fatalf("certificates (-want +got):\n%s", d)
			}
			if ctx.GetSni() != spec(tc.auto).SNI || ctx.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != envoy.SDSRootCA {
				t.Fatalf("SNI or root CA: %v", ctx)
			}
		})
	}
}

// TestMTLSLegacyEnvoyDeniesMore: an Envoy that ignores
// transport_socket_matcher selects by the matches' metadata criteria alone
// (the first whose criteria the endpoint's metadata contains). It must never
// pick an identity's socket — that would give every client the first
// identity's certificate.
func TestMTLSLegacyEnvoyDeniesMore(t *testing.T) {
	ids, err := envoy.NewMTLSIdentities([]string{"spiffe://cluster.local/ns/x/sa/a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, auto := range []bool{true, false} {
		c, err := envoy.WithIstioMTLS(&clusterv3.Cluster{Name: "c"}, &ir.IstioMTLS{Auto: auto, SNI: "s", ALPN: []string{"istio"}}, ids)
		if err != nil {
			t.Fatal(err)
		}
		endpoint := istioEndpoint.GetFilterMetadata()["envoy.transport_socket_match"].GetFields()
		var picked string
		for _, m := range c.GetTransportSocketMatches() {
			contained := true
			for k, v := range m.GetMatch().GetFields() {
				if ev, ok := endpoint[k]; !ok || !proto.Equal(ev, v) {
					contained = false
				}
			}
			if contained {
				picked = m.GetName()
				break
			}
		}
		want := envoy.SocketDisabled
		if !auto {
			want = envoy.SocketNoIdentity
		}
		if picked != want {
			t.Errorf("auto=%v: legacy selection picks %q, want %q", auto, picked, want)
		}
	}
}

// TestDestinationRuleTLSModes: Istio's decisions
// (pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings and
// applyUpstreamTLSSettings): no TLS settings → auto-mTLS (not for
// ORIGINAL_DST clusters); ISTIO_MUTUAL → mTLS to every endpoint with the
// rule's SNI/SANs or Istio's; DISABLE, SIMPLE, MUTUAL → the user's settings
// and no auto-mTLS; credentialName → SDS kubernetes://NS/NAME (+ -cacert).
func TestDestinationRuleTLSModes(t *testing.T) {
	const svc = `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop}
spec: {ports: [{name: http, port: 80}], selector: {app: s}}
---
apiVersion: v1
kind: Pod
metadata: {name: s-1, namespace: shop, labels: {app: s, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: s-sa, containers: [{name: app, image: a}, {name: istio-proxy, image: p}]}
status: {phase: Running, podIP: 10.2.0.1}
`
	dr := func(tls string) string {
		if tls == "" {
			return ""
		}
		return "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: s, namespace: shop}\nspec: {host: s.shop.svc.cluster.local, trafficPolicy: {tls: " + tls + "}}\n"
	}
	const cluster = "outbound|80||s.shop.svc.cluster.local"
	type want struct {
		mtls       *ir.IstioMTLS
		tlsMode    ir.TLSMode
		credential string
		sds        []string // SDS secrets the cluster refers to
	}
	sans := []string{"spiffe://cluster.local/ns/shop/sa/s-sa"}
	alpn := []string{"istio-peer-exchange", "istio"}
	for _, tc := range []struct {
		name string
		tls  string
		want want
	}{
		// (the shared cluster knows no client: plaintext only, no secret)
		{"no rule: auto-mTLS", "", want{mtls: &ir.IstioMTLS{Auto: true, SNI: "outbound_.80_._.s.shop.svc.cluster.local", SubjectAltNames: sans, ALPN: alpn}}},
		{"ISTIO_MUTUAL: Istio's SNI and SANs", "{mode: ISTIO_MUTUAL}", want{mtls: &ir.IstioMTLS{SNI: "outbound_.80_._.s.shop.svc.cluster.local", SubjectAltNames: sans, ALPN: alpn}, sds: []string{"ROOTCA"}}},
		{"ISTIO_MUTUAL: the rule's SNI and SANs", "{mode: ISTIO_MUTUAL, sni: s.example, subjectAltNames: [spiffe://other/ns/x/sa/y]}", want{mtls: &ir.IstioMTLS{SNI: "s.example", SubjectAltNames: []string{"spiffe://other/ns/x/sa/y"}, ALPN: alpn}, sds: []string{"ROOTCA"}}},
		{"DISABLE: no auto-mTLS", "{mode: DISABLE}", want{}},
		{"SIMPLE: the user's TLS, no auto-mTLS", "{mode: SIMPLE, sni: s.example}", want{tlsMode: ir.TLSSimple}},
		{"SIMPLE credentialName: CA over SDS", "{mode: SIMPLE, credentialName: s-ca}", want{tlsMode: ir.TLSSimple, credential: "kubernetes://shop/s-ca", sds: []string{"kubernetes://shop/s-ca-cacert"}}},
		{"MUTUAL credentialName: certificate and CA over SDS", "{mode: MUTUAL, credentialName: s-cert}", want{tlsMode: ir.TLSMutual, credential: "kubernetes://shop/s-cert", sds: []string{"kubernetes://shop/s-cert", "kubernetes://shop/s-cert-cacert"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := translateMTLS(t, nil, svc+dr(tc.tls), "", true)
			if res.HasErrors() {
				t.Fatalf("error diagnostics: %v", res.Diagnostics)
			}
			var c *ir.Cluster
			for i := range res.IR.Clusters {
				if res.IR.Clusters[i].Name == cluster {
					c = &res.IR.Clusters[i]
				}
			}
			if c == nil {
				t.Fatal("no cluster")
			}
			if d := cmp.Diff(tc.want.mtls, c.IstioMTLS); d != "" {
				t.Errorf("Istio mTLS (-want +got):\n%s", d)
			}
			var mode ir.TLSMode
			var cred string
			if c.TLS != nil {
				mode, cred = c.TLS.Mode, c.TLS.CredentialName
			}
			if mode != tc.want.tlsMode || cred != tc.want.credential {
				t.Errorf("TLS %q %q, want %q %q", mode, cred, tc.want.tlsMode, tc.want.credential)
			}
			for _, xc := range res.XDS.Clusters {
				if xc.GetName() != cluster {
					continue
				}
				if d := cmp.Diff(tc.want.sds, sdsNames(t, xc)); d != "" {
					t.Errorf("SDS secrets (-want +got):\n%s", d)
				}
			}
		})
	}
}

// sdsNames are the distinct SDS secret names a message refers to, in order.
func sdsNames(t *testing.T, m proto.Message) []string {
	t.Helper()
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	s := string(js)
	for {
		i := strings.Index(s, `"name":"`)
		if i < 0 {
			break
		}
		s = s[i+8:]
		name := s[:strings.Index(s, `"`)]
		if j := strings.Index(s, `"sdsConfig"`); j >= 0 && j < 3+len(name)+2 {
			if !contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestIstioMTLSOffIsToday: with the option off nothing refers to an SDS
// secret, no cluster has transport socket matches, no endpoint carries
// tlsMode and no listener chain stores a client identity, even with sidecar
// pods and ISTIO_MUTUAL and credentialName rules in the input (the golden
// files, all translated with the option off, hold the rest of today's
// output byte for byte).
func TestIstioMTLSOffIsToday(t *testing.T) {
	conf := needShared(t)
	inputs := []string{filepath.Join(conf, "istio-bookinfo/platform/kube/bookinfo.yaml"), filepath.Join(conf, "istio-bookinfo/networking/destination-rule-all-mtls.yaml")}
	extra := bookinfoPodsYAML(t) + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cred, namespace: default}
spec: {host: details.default.svc.cluster.local, trafficPolicy: {tls: {mode: MUTUAL, credentialName: c}}}
`
	for name, on := range map[string]bool{"off": false, "on": true} {
		res := translateMTLS(t, inputs, extra, "node-a", on)
		var b strings.Builder
		for _, ms := range [][]proto.Message{msgs(res.XDS.Clusters), msgs(res.XDS.Endpoints), msgs(res.XDS.Listeners)} {
			for _, m := range ms {
				js, _ := protojson.Marshal(m)
				b.Write(js)
			}
		}
		out := b.String()
		for _, s := range []string{"sdsConfig", "transportSocketMatch", "envoy.transport_socket_match", "set_filter_state", envoy.ClientIdentityKey} {
			if strings.Contains(out, s) != on {
				t.Errorf("option %s: output contains %q: %v", name, s, !on)
			}
		}
	}
}

func msgs[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func templateMust(s string) *template.Template { return template.Must(template.New("").Parse(s)) }

// TestEndpointTLSModeOnlyForSidecars: only a pod with Istio's tlsMode label
// and an istio-proxy container carries tlsMode istio in EDS; a label alone
// (a pod whose injection was undone) or a proxy alone does not, and neither
// does a migrated pod.
func TestEndpointTLSModeOnlyForSidecars(t *testing.T) {
	pod := func(name, ip string, label, proxy bool) string {
		l, c := "", ""
		if label {
			l = ", security.istio.io/tlsMode: istio"
		}
		if proxy {
			c = ", {name: istio-proxy, image: p}"
		}
		return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: shop, labels: {app: s" + l + "}}\nspec: {containers: [{name: app, image: a}" + c + "]}\nstatus: {phase: Running, podIP: " + ip + "}\n"
	}
	manifests := "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\nspec: {ports: [{name: http, port: 80}], selector: {app: s}}\n" +
		pod("both", "10.3.0.1", true, true) + pod("label-only", "10.3.0.2", true, false) + pod("proxy-only", "10.3.0.3", false, true) + pod("migrated", "10.3.0.4", false, false)
	res := translateMTLS(t, nil, manifests, "", true)
	got := map[string]bool{}
	for _, cla := range res.XDS.Endpoints {
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				md := e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue()
				got[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = md == "istio"
			}
		}
	}
	want := map[string]bool{"10.3.0.1": true, "10.3.0.2": false, "10.3.0.3": false, "10.3.0.4": false}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("tlsMode istio by address (-want +got):\n%s", d)
	}
}
