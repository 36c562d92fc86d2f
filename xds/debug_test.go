package xds_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/xdstest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	return getWith(t, url, xdstest.DebugToken())
}

// getWith sends token as the bearer token ("" sends none).
func getWith(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestDebugEndpoints(t *testing.T) {
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(80))
	gen := generation(t, 7, b.Bag())
	reg := prometheus.NewRegistry()
	metrics := xds.NewMetrics(reg)
	cache := xds.NewCache(nil, metrics)
	cfg := gen.ForNode("node-1", xds.EnvoyNode)
	res := resourcesOf(t, cfg)
	if err := cache.Push(cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	notReady := errors.New("API server unreachable")
	srv := httptest.NewServer((&xds.Debug{Cache: cache, Gatherer: reg, Ready: func() error { return notReady }, Auth: xdstest.DebugAuth}).Handler())
	defer srv.Close()

	if code, body := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "API server unreachable") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	notReady = nil
	if code, body := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, body := get(t, srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "nodemesh_xds_connected_streams") {
		t.Errorf("/metrics: %d, missing nodemesh_xds_connected_streams", code)
	}
	if code, _ := get(t, srv.URL+"/debug/config_dump?node=nope"); code != 404 {
		t.Errorf("config_dump of an unknown node: %d, want 404", code)
	}
	if code, _ := get(t, srv.URL+"/debug/config_dump"); code != 400 {
		t.Errorf("config_dump without a node: %d, want 400", code)
	}
	code, body := get(t, srv.URL+"/debug/config_dump?node=node-1")
	if code != 200 {
		t.Fatalf("config_dump: %d %s", code, body)
	}
	var dump xds.ConfigDump
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	if dump.Node != "node-1" || dump.Kind != "envoy" || dump.Generation != 7 {
		t.Errorf("dump header: %+v", dump)
	}
	if dump.Versions["Listener"] != cfg.Version(resourcev3.ListenerType) {
		t.Errorf("listener version %q, want %q", dump.Versions["Listener"], cfg.Version(resourcev3.ListenerType))
	}
	if len(dump.Listeners) != 1 || len(dump.Clusters) != len(res.Clusters) || len(dump.Endpoints) != len(res.Endpoints) || len(dump.Routes) != len(res.Routes) {
		t.Errorf("dump has %d listeners, %d routes, %d clusters, %d endpoints; want 1, %d, %d, %d", len(dump.Listeners), len(dump.Routes), len(dump.Clusters), len(dump.Endpoints),
			len(res.Routes), len(res.Clusters), len(res.Endpoints))
	}
	l := &listenerv3.Listener{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(dump.Listeners[0], l); err != nil {
		t.Fatalf("listener JSON does not read back: %v", err)
	}
	if len(l.GetFilterChains()) == 0 {
		t.Error("dumped listener has no filter chains")
	}
	code, body = get(t, srv.URL+"/debug/nodes")
	if code != 200 || !strings.Contains(body, `"node": "node-1"`) {
		t.Errorf("/debug/nodes: %d %s", code, body)
	}
}

// TestDebugEndpointsAuthorized: everything under /debug/ — served or not —
// needs credentials the authorizer accepts (401 without, 403 when they do
// not allow it), and a Debug without an authorizer serves none of it;
// /healthz, /readyz and /metrics stay open (probes, Prometheus), and
// refusals are counted by reason without client data in the metrics.
func TestDebugEndpointsAuthorized(t *testing.T) {
	b := xdstest.NewBookinfo(t, "bookinfo", xdstest.Loopback(80))
	cache := xds.NewCache(nil, nil)
	if err := cache.Push(generation(t, 1, b.Bag()).ForNode("secret-node-1", xds.EnvoyNode), time.Now()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	am := xds.NewAuthMetrics(reg)
	open := httptest.NewServer((&xds.Debug{Cache: cache, Gatherer: reg, Auth: xdstest.DebugAuth, AuthMetrics: am, Profiling: true}).Handler())
	defer open.Close()
	none := httptest.NewServer((&xds.Debug{Cache: cache, Gatherer: reg}).Handler())
	defer none.Close()

	for name, tc := range map[string]struct {
		url, token string
		code       int
	}{
		"config_dump, no token":           {open.URL + "/debug/config_dump?node=secret-node-1", "", 401},
		"config_dump, garbage token":      {open.URL + "/debug/config_dump?node=secret-node-1", "garbage", 401},
		"config_dump, expired token":      {open.URL + "/debug/config_dump?node=secret-node-1", xdstest.ExpiredToken("xdstest-debug"), 401},
		"config_dump, a node's token":     {open.URL + "/debug/config_dump?node=secret-node-1", xdstest.Token("secret-node-1"), 403},
		"config_dump, debug token":        {open.URL + "/debug/config_dump?node=secret-node-1", xdstest.DebugToken(), 200},
		"nodes, no token":                 {open.URL + "/debug/nodes", "", 401},
		"pprof, no token":                 {open.URL + "/debug/pprof/", "", 401},
		"unknown debug path, no token":    {open.URL + "/debug/nothing-here", "", 401},
		"unknown debug path, debug token": {open.URL + "/debug/nothing-here", xdstest.DebugToken(), 404},
		"no authorizer, debug token":      {none.URL + "/debug/config_dump?node=secret-node-1", xdstest.DebugToken(), 403},
		"no authorizer, nodes":            {none.URL + "/debug/nodes", xdstest.DebugToken(), 403},
		"healthz, no token":               {open.URL + "/healthz", "", 200},
		"readyz, no token":                {open.URL + "/readyz", "", 200},
		"metrics, no token":               {open.URL + "/metrics", "", 200},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := getWith(t, tc.url, tc.token)
			if code != tc.code {
				t.Errorf("%d, want %d: %.200s", code, tc.code, body)
			}
			if code >= 400 && (strings.Contains(body, "virtualOutbound") || strings.Contains(body, "outbound|")) {
				t.Errorf("a refusal tells the node's configuration: %.200s", body)
			}
		})
	}
	_, metrics := getWith(t, open.URL+"/metrics", "")
	for _, want := range []string{
		`nodemesh_auth_refusals_total{endpoint="debug",reason="no-token"} 4`,
		`nodemesh_auth_refusals_total{endpoint="debug",reason="bad-token"} 2`,
		`nodemesh_auth_refusals_total{endpoint="debug",reason="forbidden"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, "secret-node-1") || strings.Contains(metrics, "xdstest") {
		t.Error("/metrics names a node or a client")
	}
}
