package cli

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/client-go/kubernetes/fake"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/internal/golden"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func execController(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = ExecuteController(args, IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

func TestBootstrapGolden(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	code, out, errOut := execController(t, "bootstrap", "--node", "node-1")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden.Check(t, "testdata/bootstrap.node-1.yaml", []byte(out))

	code, out, errOut = execController(t, "bootstrap", "--node", "node-1", "--controller", "10.96.0.15:15010", "--server-name", "nodemesh-controller.nodemesh-system.svc",
		"--delta=false", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden.Check(t, "testdata/bootstrap.node-1.json", []byte(out))
	// The JSON reads back as an Envoy bootstrap that validates.
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal([]byte(out), b); err != nil {
		t.Fatal(err)
	}
	if err := xds.ValidateBootstrap(b); err != nil {
		t.Fatal(err)
	}
	if b.GetNode().GetId() != "node-1" || b.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" ||
		b.GetDynamicResources().GetAdsConfig().GetApiType().String() != "GRPC" {
		t.Errorf("bootstrap: node %q, admin on %q, ADS %v", b.GetNode().GetId(), b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(), b.GetDynamicResources().GetAdsConfig().GetApiType())
	}
	// TLS verified for the Service's name, the token from its file.
	g := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetGoogleGrpc()
	if g.GetTargetUri() != "10.96.0.15:15010" || g.GetChannelArgs().GetArgs()["grpc.ssl_target_name_override"].GetStringValue() != "nodemesh-controller.nodemesh-system.svc" ||
		g.GetChannelCredentials().GetSslCredentials().GetRootCerts().GetFilename() != xds.DefaultCAFile {
		t.Errorf("ADS service: %v", g)
	}

	// The plaintext bootstrap, for a controller run with
	// --xds-insecure-plaintext.
	code, out, errOut = execController(t, "bootstrap", "--node", "node-1", "--controller", "127.0.0.1:15010", "--insecure-plaintext", "--token-file", "testdata/xds-token")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden.Check(t, "testdata/bootstrap.node-1.insecure.yaml", []byte(out))
	// A static controller address is a STATIC cluster.
	b = &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(yamlToJSON(t, out), b); err != nil {
		t.Fatal(err)
	}
	if err := xds.ValidateBootstrap(b); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == xds.XDSClusterName {
			found = true
			if c.GetType().String() != "STATIC" {
				t.Errorf("xds-grpc to an IP address: type %v, want STATIC", c.GetType())
			}
		}
	}
	if !found {
		t.Error("the insecure bootstrap has no xds-grpc cluster")
	}
}

// TestBootstrapSDS: with --sds-socket (the chart's mtls.enabled) the
// bootstrap has Istio's sds-grpc cluster on that unix socket, speaking
// HTTP/2, and validates; without it there is no such cluster.
func TestBootstrapSDS(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	code, out, errOut := execController(t, "bootstrap", "--node", "node-1", "--sds-socket", xds.DefaultSDSSocket)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden.Check(t, "testdata/bootstrap.node-1.sds.yaml", []byte(out))
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(yamlToJSON(t, out), b); err != nil {
		t.Fatal(err)
	}
	if err := xds.ValidateBootstrap(b); err != nil {
		t.Fatal(err)
	}
	var sds *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == xds.SDSClusterName {
			sds = c
		}
	}
	if sds == nil {
		t.Fatal("no sds-grpc cluster")
	}
	ep := sds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe()
	opts := &httpv3.HttpProtocolOptions{}
	if ep.GetPath() != xds.DefaultSDSSocket || sds.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(opts) != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("sds-grpc cluster: %v", sds)
	}
	// ValidateBootstrap refuses an sds-grpc cluster that could reach
	// anything but the local socket, or that does not speak gRPC.
	for name, mutate := range map[string]func(*clusterv3.Cluster){
		"a network address": func(c *clusterv3.Cluster) {
			c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15012}}}}
		},
		"not HTTP/2": func(c *clusterv3.Cluster) { c.TypedExtensionProtocolOptions = nil },
		"DNS": func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := xds.Bootstrap(xds.BootstrapOptions{Node: "n", Controller: "nodemesh-controller.nodemesh-system.svc:15010", TokenFile: "/t", CAFile: "/ca", SDSSocket: xds.DefaultSDSSocket})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range b.GetStaticResources().GetClusters() {
				if c.GetName() == xds.SDSClusterName {
					mutate(c)
				}
			}
			if err := xds.ValidateBootstrap(b); err == nil {
				t.Error("validated")
			}
		})
	}
	_, out, _ = execController(t, "bootstrap", "--node", "node-1")
	if strings.Contains(out, xds.SDSClusterName) {
		t.Error("a bootstrap without --sds-socket has the sds-grpc cluster")
	}
	if code, _, errOut := execController(t, "bootstrap", "--node", "node-1", "--sds-socket", "sds/socket"); code != ExitUsage || !strings.Contains(errOut, "absolute") {
		t.Errorf("relative --sds-socket: exit %d, %s", code, errOut)
	}
}

// TestBootstrapValidationCatchesInsecureADS: ValidateBootstrap refuses an
// ADS service that does not verify the controller or sends no token.
func TestBootstrapValidationCatchesInsecureADS(t *testing.T) {
	for name, mutate := range map[string]func(*corev3.GrpcService_GoogleGrpc){
		"no root certificates": func(g *corev3.GrpcService_GoogleGrpc) { g.ChannelCredentials = nil },
		"no token":             func(g *corev3.GrpcService_GoogleGrpc) { g.CallCredentials = nil },
		"other factory":        func(g *corev3.GrpcService_GoogleGrpc) { g.CredentialsFactoryName = "" },
	} {
		t.Run(name, func(t *testing.T) {
			b, err := xds.Bootstrap(xds.BootstrapOptions{Node: "n", Controller: "nodemesh-controller.nodemesh-system.svc:15010", TokenFile: "/t", CAFile: "/ca"})
			if err != nil {
				t.Fatal(err)
			}
			mutate(b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetGoogleGrpc())
			if err := xds.ValidateBootstrap(b); err == nil {
				t.Error("validated")
			}
		})
	}
}

func TestBootstrapErrors(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	for name, tc := range map[string]struct {
		args []string
		err  string
	}{
		"no node":            {[]string{"bootstrap"}, "--node is required"},
		"bad address":        {[]string{"bootstrap", "--node", "n", "--controller", "nowhere"}, "controller address"},
		"bad port":           {[]string{"bootstrap", "--node", "n", "--controller", "host:99999"}, "invalid port"},
		"bad output":         {[]string{"bootstrap", "--node", "n", "-o", "toml"}, "want yaml or json"},
		"IP without name":    {[]string{"bootstrap", "--node", "n", "--controller", "10.96.0.15:15010"}, "is an IP address"},
		"no token file":      {[]string{"bootstrap", "--node", "n", "--token-file", ""}, "token file and the CA file are required"},
		"relative CA":        {[]string{"bootstrap", "--node", "n", "--ca-file", "ca.pem"}, "absolute path"},
		"insecure, no token": {[]string{"bootstrap", "--node", "n", "--insecure-plaintext", "--token-file", "/nonexistent"}, "still authenticates"},
		"unknown command":    {[]string{"frobnicate"}, "unknown command"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := execController(t, tc.args...)
			if code != ExitUsage || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, ExitUsage, tc.err)
			}
		})
	}
	t.Setenv("NODE_NAME", "from-env")
	if code, out, _ := execController(t, "bootstrap"); code != ExitOK || !strings.Contains(out, "id: from-env") {
		t.Errorf("NODE_NAME: exit %d:\n%s", code, out)
	}
}

// TestProxyConfig reads a node's configuration from a controller's debug
// endpoint (here, a cache with the bookinfo sample pushed).
func TestProxyConfig(t *testing.T) {
	bag, diags, err := translate.Load([]string{sample}, nil, "default")
	if err != nil {
		t.Fatal(err)
	}
	gen := xds.NewGeneration(3, time.Now(), bag, diags, translate.Options{})
	cache := xds.NewCache(nil, nil)
	if err := cache.Push(gen.ForNode("node-1", xds.EnvoyNode), time.Now()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&xds.Debug{Cache: cache, Auth: xdstest.DebugAuth}).Handler())
	defer srv.Close()

	for name, tc := range map[string]struct {
		args     []string
		code     int
		out, err string
	}{
		"routes":        {[]string{"proxy-config", "routes", "--node", "node-1"}, ExitOK, "reviews.bookinfo.svc.cluster.local:9080", ""},
		"clusters":      {[]string{"proxy-config", "clusters", "--node", "node-1"}, ExitOK, "outbound|9080|v2|reviews.bookinfo.svc.cluster.local", ""},
		"endpoints":     {[]string{"proxy-config", "endpoints", "--node", "node-1"}, ExitOK, "ENDPOINT", ""},
		"listeners":     {[]string{"proxy-config", "listeners", "--node", "node-1"}, ExitOK, "virtualOutbound", ""},
		"all":           {[]string{"proxy-config", "--node", "node-1"}, ExitOK, "generation 3", ""},
		"json":          {[]string{"proxy-config", "clusters", "--node", "node-1", "-o", "json"}, ExitOK, `"clusters": [`, ""},
		"yaml":          {[]string{"proxy-config", "routes", "--node", "node-1", "-o", "yaml"}, ExitOK, "virtual_hosts:", ""},
		"unknown node":  {[]string{"proxy-config", "--node", "nope"}, ExitFindings, "", `no configuration for node "nope"`},
		"no node":       {[]string{"proxy-config", "routes"}, ExitUsage, "", "--node is required"},
		"bad kind":      {[]string{"proxy-config", "secrets", "--node", "node-1"}, ExitUsage, "", `unknown kind "secrets"`},
		"bad output":    {[]string{"proxy-config", "--node", "node-1", "-o", "xml"}, ExitUsage, "", "want summary, json or yaml"},
		"no controller": {[]string{"proxy-config", "--node", "node-1", "--controller", "http://127.0.0.1:1", "--token", xdstest.DebugToken()}, ExitFindings, "", "controller:"},
		// The debug endpoints are not open.
		"wrong token":          {[]string{"proxy-config", "--node", "node-1", "--token", xdstest.Token("node-1")}, ExitFindings, "", "403 Forbidden"},
		"expired token":        {[]string{"proxy-config", "--node", "node-1", "--token", xdstest.ExpiredToken("xdstest-debug")}, ExitFindings, "", "401 Unauthorized"},
		"no token, no cluster": {[]string{"proxy-config", "--node", "node-1", "--kubeconfig", "/nonexistent/kubeconfig"}, ExitFindings, "", "kubeconfig"},
	} {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--controller") {
				args = append(args, "--controller", srv.URL)
			}
			if !strings.Contains(strings.Join(args, " "), "--token") && !strings.Contains(strings.Join(args, " "), "--kubeconfig") {
				args = append(args, "--token", xdstest.DebugToken())
			}
			code, out, errOut := run(t, "", args...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d (want %d)\nstdout (want %q):\n%s\nstderr (want %q): %s", code, tc.code, tc.out, out, tc.err, errOut)
			}
		})
	}
	// json limited to one kind carries only that kind.
	_, out, _ := run(t, "", "proxy-config", "clusters", "--node", "node-1", "-o", "json", "--controller", srv.URL, "--token", xdstest.DebugToken())
	if !strings.Contains(out, `"listeners": null`) {
		t.Errorf("clusters-only JSON still has listeners:\n%.400s", out)
	}
}

func yamlToJSON(t *testing.T, y string) []byte {
	t.Helper()
	j, err := sigsyaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestInsecurePlaintextIsLoud: the plaintext xDS listener exists only
// behind its flag, says so in the log, and excludes TLS files.
func TestInsecurePlaintextIsLoud(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	o := &controllerOptions{namespace: "nodemesh-system", service: "nodemesh-controller", clusterDomain: "cluster.local", insecurePlaintext: true}
	sec, err := o.security(context.Background(), fake.NewClientset(), log)
	if err != nil {
		t.Fatal(err)
	}
	if sec.tls != nil || sec.xdsAuth == nil || sec.debugAuth == nil || !strings.Contains(logs.String(), "INSECURE: xDS is served WITHOUT TLS") {
		t.Errorf("insecure: TLS %v, authenticators %v %v, log %q", sec.tls, sec.xdsAuth, sec.debugAuth, logs.String())
	}
	o.tlsCertFile = "/tls.crt"
	if _, err := o.security(context.Background(), fake.NewClientset(), log); err == nil {
		t.Error("--xds-insecure-plaintext with a certificate file accepted")
	}
	code, out, _ := execController(t, "run", "--help")
	if code != ExitOK || !strings.Contains(out, "--xds-insecure-plaintext") || !strings.Contains(out, "INSECURE") {
		t.Errorf("run --help does not warn about --xds-insecure-plaintext:\n%s", out)
	}
}
