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
	resp, err := http.Get(url)
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
	srv := httptest.NewServer((&xds.Debug{Cache: cache, Gatherer: reg, Ready: func() error { return notReady }}).Handler())
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
