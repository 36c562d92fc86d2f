package translate

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/internal/rbaceval"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Inbound Istio mTLS termination (docs/design/policy.md §10): bookinfo
// migrated to nodemesh (inboundNS, inboundBookinfo: productpage
// 10.244.1.11 on node-1), a sidecar client sending Istio mTLS because of a
// mesh-wide DestinationRule.

const (
	meshWideMutual = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-mtls, namespace: istio-system}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}`
	// a TCP Service on productpage's pod (port 5000, captured for mTLS only)
	tcpService = `apiVersion: v1
kind: Service
metadata: {name: pp-tcp, namespace: default}
spec: {selector: {app: productpage}, ports: [{name: tcp-admin, port: 5000}]}`
	productpageIP   = "10.244.1.11"
	productpagePod  = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
	sidecarClientID = "spiffe://cluster.local/ns/legacy/sa/sleep"
)

func peerAuthn(mode string) string {
	return `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: ` + mode + `}}`
}

// mtlsNode translates bookinfo and extra documents for node-1, with Istio
// mTLS on or off; the result must have no error.
func mtlsNode(t *testing.T, on bool, extra ...string) *Result {
	t.Helper()
	r := translateMTLS(t, []string{inboundNS, inboundBookinfo}, strings.Join(extra, "\n---\n"), "node-1", on)
	for _, d := range r.Diagnostics {
		if d.Severity == ir.SeverityError {
			t.Fatalf("error diagnostic: %v", d)
		}
	}
	return r
}

// inboundConn is a connection to the inbound listener as Envoy's chain
// selection sees it: destination, transport protocol (tls_inspector:
// "tls" or "raw_buffer") and the ALPN values the client offers.
type inboundConn struct {
	dst       netip.AddrPort
	transport string
	alpn      []string
}

// selectInbound is Envoy's filter chain selection for the inbound
// listener's criteria (destination port, destination address, transport
// protocol, application protocols — any offered value in the chain's list),
// each step keeping the most specific matches. nil: no chain (the
// connection is closed: the listener has no default chain).
func selectInbound(t *testing.T, l *listenerv3.Listener, c inboundConn) *listenerv3.FilterChain {
	t.Helper()
	chains := l.GetFilterChains()
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		if len(m.GetServerNames()) > 0 || len(m.GetSourcePrefixRanges()) > 0 || len(m.GetDirectSourcePrefixRanges()) > 0 || len(m.GetSourcePorts()) > 0 {
			t.Fatalf("chain %s: a criterion the evaluator does not read", fc.GetName())
		}
	}
	step := func(score func(m *listenerv3.FilterChainMatch) int) {
		best := -1
		scores := make([]int, len(chains))
		for i, fc := range chains {
			scores[i] = score(fc.GetFilterChainMatch())
			best = max(best, scores[i])
		}
		var kept []*listenerv3.FilterChain
		for i, fc := range chains {
			if scores[i] >= 0 && scores[i] == best {
				kept = append(kept, fc)
			}
		}
		chains = kept
	}
	step(func(m *listenerv3.FilterChainMatch) int {
		switch {
		case m.GetDestinationPort() == nil:
			return 0
		case m.GetDestinationPort().GetValue() == uint32(c.dst.Port()):
			return 1
		}
		return -1
	})
	step(func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetPrefixRanges()) == 0 {
			return 0
		}
		best := -1
		for _, r := range m.GetPrefixRanges() {
			p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
			if err == nil && p.Contains(c.dst.Addr()) {
				best = max(best, 1+p.Bits())
			}
		}
		return best
	})
	step(func(m *listenerv3.FilterChainMatch) int {
		switch m.GetTransportProtocol() {
		case "":
			return 0
		case c.transport:
			return 1
		}
		return -1
	})
	step(func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetApplicationProtocols()) == 0 {
			return 0
		}
		for _, a := range c.alpn {
			if slices.Contains(m.GetApplicationProtocols(), a) {
				return 1
			}
		}
		return -1
	})
	switch len(chains) {
	case 0:
		return nil
	case 1:
		return chains[0]
	}
	t.Fatalf("several chains match %+v", c)
	return nil
}

func downstreamTLS(t *testing.T, fc *listenerv3.FilterChain) *tlsv3.DownstreamTlsContext {
	t.Helper()
	if fc.GetTransportSocket() == nil {
		return nil
	}
	if fc.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("chain %s: transport socket %s", fc.GetName(), fc.GetTransportSocket().GetName())
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// Istio's clients' ALPN (the cluster's ALPNInMeshWithMxc, and the istio
// ALPN override of an HTTP/1.1 upstream).
var (
	istioTCPClientALPN  = []string{"istio-peer-exchange", "istio"}
	istioHTTPClientALPN = []string{"istio-http/1.1", "istio", "http/1.1"}
	istioH2ClientALPN   = []string{"istio-h2", "istio", "h2"}
)

// TestInboundMTLSModes: which chains a captured {pod, port} gets, by the
// pod's PeerAuthentication mode, for the HTTP port of an authorization
// policy (the connection manager with its RBAC) and a TCP port captured
// only for mTLS (tcp_proxy): STRICT only the mTLS chain (plaintext and
// foreign TLS closed), PERMISSIVE mTLS and plaintext (and, on a TCP port,
// TLS that is not Istio's to the pod), DISABLE nothing terminated. An
// Istio client's ALPN selects the mTLS chain. Without a DestinationRule
// ISTIO_MUTUAL, with mTLS off or DISABLE the listener is exactly the one
// without mTLS (byte for byte).
func TestInboundMTLSModes(t *testing.T) {
	http := netip.MustParseAddrPort(productpageIP + ":9080")
	tcp := netip.MustParseAddrPort(productpageIP + ":5000")
	type want struct {
		conn  inboundConn
		chain string // "mtls", "plain", "passthrough" or "" (closed)
	}
	mtlsHTTP := inboundConn{http, "tls", istioHTTPClientALPN}
	mtlsH2 := inboundConn{http, "tls", istioH2ClientALPN}
	mtlsTCP := inboundConn{tcp, "tls", istioTCPClientALPN}
	plainHTTP := inboundConn{http, "raw_buffer", nil}
	plainTCP := inboundConn{tcp, "raw_buffer", nil}
	foreignTLS := inboundConn{http, "tls", []string{"h2", "http/1.1"}}
	foreignTLSTCP := inboundConn{tcp, "tls", nil}
	tests := map[string]struct {
		pa    string
		wants []want
	}{
		"PERMISSIVE (no PeerAuthentication)": {"", []want{{mtlsHTTP, "mtls"}, {mtlsH2, "mtls"}, {mtlsTCP, "mtls"}, {plainHTTP, "plain"}, {plainTCP, "plain"},
			{foreignTLS, ""}, {foreignTLSTCP, "passthrough"}}},
		"PERMISSIVE": {peerAuthn("PERMISSIVE"), []want{{mtlsHTTP, "mtls"}, {plainHTTP, "plain"}, {mtlsTCP, "mtls"}, {plainTCP, "plain"}}},
		"STRICT": {peerAuthn("STRICT"), []want{{mtlsHTTP, "mtls"}, {mtlsH2, "mtls"}, {mtlsTCP, "mtls"}, {plainHTTP, ""}, {plainTCP, ""},
			{foreignTLS, ""}, {foreignTLSTCP, ""}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := mtlsNode(t, true, authzSampleDoc(t), meshWideMutual, tcpService, tc.pa)
			l := inboundOf(r)
			if l == nil {
				t.Fatal("no inbound listener")
			}
			if !slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
				return f.GetName() == "envoy.filters.listener.tls_inspector"
			}) {
				t.Fatal("no tls_inspector: chains cannot match the transport protocol")
			}
			for _, w := range tc.wants {
				fc := selectInbound(t, l, w.conn)
				got := ""
				switch {
				case fc == nil:
				case fc.GetTransportSocket() != nil:
					got = "mtls"
				case fc.GetFilterChainMatch().GetTransportProtocol() == "tls":
					got = "passthrough"
				default:
					got = "plain"
				}
				if got != w.chain {
					t.Errorf("%+v: chain %q, want %q", w.conn, got, w.chain)
				}
				if fc == nil {
					continue
				}
				// HTTP: the connection manager with the pod's RBAC on every
				// chain; TCP: tcp_proxy to the port's inbound cluster.
				if w.conn.dst.Port() == 9080 {
					if len(chainRBAC(t, fc)) == 0 {
						t.Errorf("%s chain of 9080 without the pod's RBAC", got)
					}
					h := chainHCM(t, fc)
					wantXFCC := "SANITIZE"
					if got == "mtls" {
						wantXFCC = "APPEND_FORWARD" // a verified client certificate
					}
					if h.GetForwardClientCertDetails().String() != wantXFCC {
						t.Errorf("%s chain: x-forwarded-client-cert %v, want %s", got, h.GetForwardClientCertDetails(), wantXFCC)
					}
				} else {
					tp := &tcpproxyv3.TcpProxy{}
					if len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(tp) != nil || tp.GetCluster() != "inbound|5000||" {
						t.Errorf("%s chain of 5000: filters %v, want tcp_proxy to inbound|5000||", got, fc.GetFilters())
					}
				}
			}
		})
	}

	// What the listener is without mTLS termination.
	plain := inboundOf(mtlsNode(t, true, authzSampleDoc(t), tcpService))
	if plain == nil {
		t.Fatal("no inbound listener for the authorization policy")
	}
	for name, r := range map[string]*Result{
		"mTLS off":                     mtlsNode(t, false, authzSampleDoc(t), meshWideMutual, tcpService),
		"DISABLE":                      mtlsNode(t, true, authzSampleDoc(t), meshWideMutual, tcpService, peerAuthn("DISABLE")),
		"no DestinationRule":           mtlsNode(t, true, authzSampleDoc(t), tcpService, peerAuthn("STRICT")),
		"a DestinationRule SIMPLE/TLS": mtlsNode(t, true, authzSampleDoc(t), tcpService, strings.ReplaceAll(meshWideMutual, "ISTIO_MUTUAL", "SIMPLE")),
	} {
		got := inboundOf(r)
		a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(got)
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(plain)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: the inbound listener differs from the one without mTLS termination", name)
		}
	}
	// Without any authorization policy, the DestinationRule alone makes
	// the inbound listener (TCP proxying only, no RBAC on the Envoy).
	r := mtlsNode(t, true, meshWideMutual, peerAuthn("STRICT"))
	l := inboundOf(r)
	if l == nil {
		t.Fatal("a DestinationRule ISTIO_MUTUAL alone makes no inbound listener")
	}
	fc := selectInbound(t, l, mtlsHTTP)
	if fc == nil || downstreamTLS(t, fc) == nil {
		t.Fatal("no mTLS chain for productpage:9080")
	}
	if len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetName() != "envoy.filters.network.tcp_proxy" {
		t.Errorf("mTLS-only port: filters %v, want tcp_proxy only", fc.GetFilters())
	}
	if r := mtlsNode(t, false, meshWideMutual, peerAuthn("STRICT")); inboundOf(r) != nil {
		t.Error("mTLS off: an inbound listener for a DestinationRule")
	}
}

// authzSampleDoc is Istio's authz-http task policies (productpage-viewer
// applies to productpage: its 9080 is captured for HTTP facts).
func authzSampleDoc(t *testing.T) string {
	t.Helper()
	data, err := readFixture(authzHTTPSample)
	if err != nil {
		t.Skipf("fixture %s: %v", authzHTTPSample, err)
	}
	return data
}

// TestInboundMTLSVsIstioOracle: the mTLS chain of productpage:9080 against
// the mTLS chain istiod emits for productpage's sidecar (0.0.0.0_9080,
// transport protocol tls), field by field: the match (but for the pod's
// address), the DownstreamTlsContext (but for the certificate's SDS name,
// the pod's SPIFFE ID instead of the sidecar's "default"), the connection
// manager's client certificate handling; and the listener's tls_inspector
// and listener filter timeout settings. Its plaintext chain matches
// raw_buffer as istiod's does.
func TestInboundMTLSVsIstioOracle(t *testing.T) {
	istio := oracleInboundChains(t)
	r := mtlsNode(t, true, authzSampleDoc(t), meshWideMutual)
	l := inboundOf(r)
	if l == nil {
		t.Fatal("no inbound listener")
	}
	fc := selectInbound(t, l, inboundConn{netip.MustParseAddrPort(productpageIP + ":9080"), "tls", istioHTTPClientALPN})
	if fc == nil || fc.GetTransportSocket() == nil {
		t.Fatal("no mTLS chain")
	}
	ours := asMap(t, fc)
	match := ours["filterChainMatch"].(map[string]any)
	compareFields(t, "filterChainMatch", match, istio.tlsChain["filterChainMatch"].(map[string]any), map[string]string{
		"prefixRanges": "one chain per pod: the pod's addresses",
	})
	ts := ours["transportSocket"].(map[string]any)
	its := istio.tlsChain["transportSocket"].(map[string]any)
	compareFields(t, "transportSocket", ts, its, map[string]string{"typedConfig": "compared below"})
	ctx, ictx := ts["typedConfig"].(map[string]any), its["typedConfig"].(map[string]any)
	compareFields(t, "DownstreamTlsContext", ctx, ictx, map[string]string{"commonTlsContext": "compared below"})
	common, icommon := ctx["commonTlsContext"].(map[string]any), ictx["commonTlsContext"].(map[string]any)
	compareFields(t, "commonTlsContext", common, icommon, map[string]string{"tlsCertificateSdsSecretConfigs": "compared below",
		"combinedValidationContext": "compared below"})
	cvc, icvc := common["combinedValidationContext"].(map[string]any), icommon["combinedValidationContext"].(map[string]any)
	compareFields(t, "combinedValidationContext", cvc, icvc, map[string]string{"validationContextSdsSecretConfig": "compared below"})
	compareSDS(t, "ROOTCA", cvc["validationContextSdsSecretConfig"].(map[string]any), icvc["validationContextSdsSecretConfig"].(map[string]any), nil)
	certs, icerts := common["tlsCertificateSdsSecretConfigs"].([]any), icommon["tlsCertificateSdsSecretConfigs"].([]any)
	if len(certs) != 1 || len(icerts) != 1 {
		t.Fatalf("certificates %v, Istio's %v", certs, icerts)
	}
	compareSDS(t, "certificate", certs[0].(map[string]any), icerts[0].(map[string]any), map[string]string{
		"name": "the pod's SPIFFE ID (one Envoy, many identities); Istio's sidecar has one, \"default\"",
	})
	if name := certs[0].(map[string]any)["name"]; name != productpagePod {
		t.Errorf("certificate %v, want the pod's identity %s", name, productpagePod)
	}
	h := asMap(t, chainHCM(t, fc))
	for _, k := range []string{"forwardClientCertDetails", "setCurrentClientCertDetails"} {
		if fmt.Sprint(h[k]) != fmt.Sprint(istio.tlsHCM[k]) {
			t.Errorf("hcm.%s %v, Istio's %v", k, h[k], istio.tlsHCM[k])
		}
	}
	// Istio's filters there: metadata exchange (left out: no peer metadata
	// exchange, docs/parity.md), then the connection manager.
	if n := len(fc.GetFilters()); n != 1 || len(istio.tlsChain["filters"].([]any)) != 2 {
		t.Errorf("filters: ours %d, Istio's %d (metadata exchange + HCM)", n, len(istio.tlsChain["filters"].([]any)))
	}
	plain := selectInbound(t, l, inboundConn{netip.MustParseAddrPort(productpageIP + ":9080"), "raw_buffer", nil})
	if plain == nil {
		t.Fatal("no plaintext chain under PERMISSIVE")
	}
	compareFields(t, "plaintext filterChainMatch", asMap(t, plain)["filterChainMatch"].(map[string]any), istio.plainMatch, map[string]string{
		"prefixRanges": "one chain per pod: the pod's addresses",
	})
	var ti *listenerv3.ListenerFilter
	for _, f := range l.GetListenerFilters() {
		if f.GetName() == "envoy.filters.listener.tls_inspector" {
			ti = f
		}
	}
	if ti == nil {
		t.Fatal("no tls_inspector")
	}
	compareFields(t, "tls_inspector", asMap(t, ti), istio.tlsInspector, map[string]string{
		"filterDisabled": "Istio's skips connections to 15006 itself; captured connections keep the pod's port",
	})
	lm := asMap(t, l)
	for _, k := range []string{"listenerFiltersTimeout", "continueOnListenerFiltersTimeout"} {
		if fmt.Sprint(lm[k]) != fmt.Sprint(istio.listener[k]) {
			t.Errorf("listener.%s %v, Istio's %v", k, lm[k], istio.listener[k])
		}
	}
	// The TCP port's mTLS chain against istiod's TCP mTLS chain: the same
	// context, but for the certificate and the server's ALPN (no
	// istio-peer-exchange: no metadata exchange filter to consume it).
	r = mtlsNode(t, true, meshWideMutual, tcpService)
	tfc := selectInbound(t, inboundOf(r), inboundConn{netip.MustParseAddrPort(productpageIP + ":5000"), "tls", istioTCPClientALPN})
	if tfc == nil {
		t.Fatal("no mTLS chain for the TCP port")
	}
	tcommon := asMap(t, downstreamTLS(t, tfc))["commonTlsContext"].(map[string]any)
	itcommon := istio.tcpTLSChain["transportSocket"].(map[string]any)["typedConfig"].(map[string]any)["commonTlsContext"].(map[string]any)
	compareFields(t, "TCP commonTlsContext", tcommon, itcommon, map[string]string{
		"tlsCertificateSdsSecretConfigs": "the pod's SPIFFE ID, not \"default\"",
		"combinedValidationContext":      "the initial fetch timeout, as above",
		"alpnProtocols":                  "no istio-peer-exchange: nodemesh runs no metadata exchange, negotiating it would hand its bytes to the pod",
	})
}

// compareSDS compares an SDS secret config with istiod's: the same but for
// diffs and the initial fetch timeout (15s, not istiod's 0: a node's
// inbound listener must not keep warming, with its previous RBAC, for
// every pod because one pod's certificate is late).
func compareSDS(t *testing.T, what string, ours, istio map[string]any, diffs map[string]string) {
	t.Helper()
	if diffs == nil {
		diffs = map[string]string{}
	}
	diffs["sdsConfig"] = "compared below"
	compareFields(t, what, ours, istio, diffs)
	compareFields(t, what+".sdsConfig", ours["sdsConfig"].(map[string]any), istio["sdsConfig"].(map[string]any), map[string]string{
		"initialFetchTimeout": "15s: the listener is not held warming for ever by one pod's secret",
	})
}

type oracleChains struct {
	listener, tlsChain, tlsHCM, plainMatch, tcpTLSChain, tlsInspector map[string]any
}

// oracleInboundChains are the parts of istiod's virtualInbound the mTLS
// chains are compared with.
func oracleInboundChains(t *testing.T) oracleChains {
	t.Helper()
	listener, _, _ := oracleInbound(t)
	var out oracleChains
	out.listener = listener
	lds := readOracleJSON(t, oracleLDS)
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["name"] == "virtualInbound" && x["filterChains"] != nil {
				for _, f := range x["listenerFilters"].([]any) {
					if f.(map[string]any)["name"] == "envoy.filters.listener.tls_inspector" {
						out.tlsInspector = f.(map[string]any)
					}
				}
				for _, c := range x["filterChains"].([]any) {
					fc := c.(map[string]any)
					m, _ := fc["filterChainMatch"].(map[string]any)
					switch {
					case m["destinationPort"] == float64(9080) && m["transportProtocol"] == "tls":
						out.tlsChain = fc
						for _, f := range fc["filters"].([]any) {
							if f.(map[string]any)["name"] == "envoy.filters.network.http_connection_manager" {
								out.tlsHCM = f.(map[string]any)["typedConfig"].(map[string]any)
							}
						}
					case m["destinationPort"] == float64(9080) && m["transportProtocol"] == "raw_buffer":
						out.plainMatch = m
					case fc["name"] == "virtualInbound" && m["transportProtocol"] == "tls" && fc["transportSocket"] != nil:
						out.tcpTLSChain = fc
					}
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(lds)
	if out.tlsChain == nil || out.tlsHCM == nil || out.plainMatch == nil || out.tcpTLSChain == nil || out.tlsInspector == nil {
		t.Fatal("the oracle lacks an inbound mTLS chain, its plaintext chain or tls_inspector")
	}
	return out
}

// tlsCipherSuites are Go's IDs of the OpenSSL names a context may list.
var tlsCipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
}

// serverConfig configures crypto/tls as Envoy reads a DownstreamTlsContext:
// versions, cipher suites, ALPN (the server's preference), the certificate
// its SDS secret names (from sds), a client certificate required when it
// says so, verified against the trust bundle of its validation SDS secret
// for client authentication, and the prefix SAN match of
// match_subject_alt_names against the certificate's URI SANs.
func serverConfig(t *testing.T, ctx *tlsv3.DownstreamTlsContext, sds map[string]tls.Certificate, roots map[string]*x509.CertPool) *tls.Config {
	t.Helper()
	common := ctx.GetCommonTlsContext()
	minV, okMin := tlsVersions[common.GetTlsParams().GetTlsMinimumProtocolVersion()]
	maxV, okMax := tlsVersions[common.GetTlsParams().GetTlsMaximumProtocolVersion()]
	if !okMin || !okMax {
		t.Fatalf("TLS versions %v", common.GetTlsParams())
	}
	cfg := &tls.Config{MinVersion: minV, MaxVersion: maxV, NextProtos: common.GetAlpnProtocols()}
	for _, name := range common.GetTlsParams().GetCipherSuites() {
		id, ok := tlsCipherSuites[name]
		if !ok {
			t.Fatalf("cipher suite %q unknown", name)
		}
		cfg.CipherSuites = append(cfg.CipherSuites, id)
	}
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		cert, ok := sds[s.GetName()]
		if !ok {
			t.Fatalf("no SDS certificate %q", s.GetName())
		}
		if s.GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != envoy.SDSClusterName {
			t.Fatalf("SDS secret %q not from %s", s.GetName(), envoy.SDSClusterName)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	combined := common.GetCombinedValidationContext()
	pool := roots[combined.GetValidationContextSdsSecretConfig().GetName()]
	if pool == nil {
		t.Fatalf("no trust bundle %q", combined.GetValidationContextSdsSecretConfig().GetName())
	}
	var prefixes []string
	for _, m := range combined.GetDefaultValidationContext().GetMatchSubjectAltNames() {
		if m.GetPrefix() == "" {
			t.Fatalf("SAN matcher %v: the evaluator reads prefixes", m)
		}
		prefixes = append(prefixes, m.GetPrefix())
	}
	// BoringSSL (Envoy) goes on without ALPN when the client offers
	// nothing the server has; Go refuses the handshake unless the server
	// offers none.
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, p := range cfg.NextProtos {
			if slices.Contains(hello.SupportedProtos, p) {
				return nil, nil
			}
		}
		c := cfg.Clone()
		c.NextProtos, c.GetConfigForClient = nil, nil
		return c, nil
	}
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if ctx.GetRequireClientCertificate().GetValue() {
		cfg.ClientAuth = tls.RequireAnyClientCert // verified below, as Envoy does
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil // (ClientAuth decided)
		}
		leaf, err := verifyChain(raw, pool, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return err
		}
		if len(prefixes) == 0 {
			return nil
		}
		for _, u := range leaf.URIs {
			for _, p := range prefixes {
				if strings.HasPrefix(u.String(), p) {
					return nil
				}
			}
		}
		return fmt.Errorf("client certificate %v matches none of %v", leaf.URIs, prefixes)
	}
	return cfg
}

// TestInboundMTLSHandshake runs a Go TLS server configured from the
// emitted mTLS chain (its DownstreamTlsContext, the pod's certificate and
// the mesh's roots served by SDS) against a Go client acting as an Istio
// sidecar: a client certificate of the mesh's trust domain from the mesh CA
// completes the handshake, the server presenting the pod's own identity
// (what the sidecar client verifies), with Istio's ALPN selecting the chain
// and never negotiating istio-peer-exchange; another trust domain, an
// expired certificate, no certificate or another CA's certificate fail.
func TestInboundMTLSHandshake(t *testing.T) {
	r := mtlsNode(t, true, authzSampleDoc(t), meshWideMutual, tcpService, peerAuthn("STRICT"))
	l := inboundOf(r)
	if l == nil {
		t.Fatal("no inbound listener")
	}
	ca, other := newTestCA(t), newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	sds := map[string]tls.Certificate{productpagePod: ca.issue(t, productpagePod, time.Now().Add(time.Hour))}
	bundles := map[string]*x509.CertPool{envoy.SDSRootCA: roots}
	valid := ca.issue(t, sidecarClientID, time.Now().Add(time.Hour))
	for name, tc := range map[string]struct {
		port       uint16
		alpn       []string
		cert       *tls.Certificate
		wantClient string // "" → the handshake fails
		wantALPN   string
	}{
		"HTTP/1.1 sidecar client":  {9080, istioHTTPClientALPN, &valid, sidecarClientID, "http/1.1"},
		"HTTP/2 sidecar client":    {9080, istioH2ClientALPN, &valid, sidecarClientID, "h2"},
		"TCP sidecar client":       {5000, istioTCPClientALPN, &valid, sidecarClientID, ""},
		"another trust domain":     {9080, istioHTTPClientALPN, ptr(ca.issue(t, "spiffe://evil.example/ns/legacy/sa/sleep", time.Now().Add(time.Hour))), "", ""},
		"a trust domain extension": {9080, istioHTTPClientALPN, ptr(ca.issue(t, "spiffe://cluster.local.evil/ns/legacy/sa/sleep", time.Now().Add(time.Hour))), "", ""},
		"expired":                  {9080, istioHTTPClientALPN, ptr(ca.issue(t, sidecarClientID, time.Now().Add(-time.Minute))), "", ""},
		"no client certificate":    {9080, istioHTTPClientALPN, nil, "", ""},
		"another CA":               {5000, istioTCPClientALPN, ptr(other.issue(t, sidecarClientID, time.Now().Add(time.Hour))), "", ""},
	} {
		t.Run(name, func(t *testing.T) {
			fc := selectInbound(t, l, inboundConn{netip.AddrPortFrom(netip.MustParseAddr(productpageIP), tc.port), "tls", tc.alpn})
			if fc == nil {
				t.Fatal("no chain for Istio's ALPN")
			}
			ctx := downstreamTLS(t, fc)
			if ctx == nil {
				t.Fatal("the chain terminates no TLS")
			}
			type seen struct {
				alpn, client string
				err          error
			}
			got := make(chan seen, 1)
			ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConfig(t, ctx, sds, bundles))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					got <- seen{err: err}
					return
				}
				defer conn.Close()
				c := conn.(*tls.Conn)
				if err := c.Handshake(); err != nil {
					got <- seen{err: err}
					return
				}
				st := c.ConnectionState()
				s := seen{alpn: st.NegotiatedProtocol}
				if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
					s.client = st.PeerCertificates[0].URIs[0].String()
				}
				got <- s
			}()
			// The sidecar client verifies the server's identity: the pod's.
			ccfg := &tls.Config{NextProtos: tc.alpn, MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					leaf, err := x509.ParseCertificate(raw[0])
					if err != nil {
						return err
					}
					if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
						return err
					}
					if len(leaf.URIs) != 1 || leaf.URIs[0].String() != productpagePod {
						return fmt.Errorf("server identity %v, want %s", leaf.URIs, productpagePod)
					}
					return nil
				}}
			if tc.cert != nil {
				ccfg.Certificates = []tls.Certificate{*tc.cert}
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), ccfg)
			if err == nil {
				// TLS 1.3: the server's verdict on the client certificate
				// arrives after the client's handshake completes.
				_, err = conn.Read(make([]byte, 1))
				if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
					err = nil
				}
				conn.Close()
			}
			s := <-got
			if tc.wantClient == "" {
				if err == nil && s.err == nil {
					t.Fatalf("handshake succeeded (server saw client %q)", s.client)
				}
				return
			}
			if err != nil || s.err != nil {
				t.Fatalf("handshake failed: client %v, server %v", err, s.err)
			}
			if s.client != tc.wantClient || s.alpn != tc.wantALPN {
				t.Fatalf("server saw client %q ALPN %q; want %q %q", s.client, s.alpn, tc.wantClient, tc.wantALPN)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func readFixture(path string) (string, error) {
	data, err := os.ReadFile(path)
	return string(data), err
}

func readOracleJSON(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("oracle %s: %v", path, err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInboundMTLSKeepsRBAC: on the mTLS chain the pod's RBAC decides as on
// the plaintext chain — principals by the client's (attested, preserved)
// address — so terminating mTLS allows nothing more.
func TestInboundMTLSKeepsRBAC(t *testing.T) {
	r := mtlsNode(t, true, authzSampleDoc(t), meshWideMutual)
	l := inboundOf(r)
	tlsChain := selectInbound(t, l, inboundConn{netip.MustParseAddrPort(productpageIP + ":9080"), "tls", istioHTTPClientALPN})
	plain := selectInbound(t, l, inboundConn{netip.MustParseAddrPort(productpageIP + ":9080"), "raw_buffer", nil})
	if tlsChain == nil || plain == nil {
		t.Fatal("no mTLS or plaintext chain")
	}
	for _, rq := range []rbaceval.Request{req("GET", "/productpage", "10.244.2.13"), req("POST", "/productpage", "10.244.2.13")} {
		if allowed(t, tlsChain, rq) != allowed(t, plain, rq) {
			t.Errorf("%s %s: the mTLS chain decides otherwise than the plaintext chain", rq.Method, rq.Path)
		}
	}
	if !allowed(t, tlsChain, req("GET", "/productpage", "10.244.2.13")) || allowed(t, tlsChain, req("POST", "/productpage", "10.244.2.13")) {
		t.Error("productpage-viewer: want GET allowed, POST denied on the mTLS chain")
	}
}
