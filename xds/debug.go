package xds

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nodemesh/nodemesh/api"
)

// DefaultMonitoringPort serves health, readiness, metrics and debug
// endpoints, as istiod's monitoring port.
const DefaultMonitoringPort = api.MonitoringPort

// ConfigDump is what /debug/config_dump serves for a node: the
// configuration it is being served (after any NACK restore), with versions.
type ConfigDump struct {
	Node       string `json:"node"`
	Kind       string `json:"kind"`
	Generation int64  `json:"generation"`
	// Versions, Acked and Rejected are by short type name (Cluster, …).
	Versions map[string]string `json:"versions"`
	Acked    map[string]string `json:"acked,omitempty"`
	Rejected map[string]string `json:"rejected,omitempty"`
	// Resources are in protobuf JSON, sorted by name.
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
	Endpoints []json.RawMessage `json:"endpoints"`
}

// Debug serves the monitoring port: /healthz, /readyz, /metrics,
// /debug/{nodes,config_dump,diagnostics} and, when enabled, /debug/pprof/.
//
// /healthz, /readyz and /metrics are open (kubelet probes and Prometheus;
// the metrics carry counts by type, kind, severity and reason, never a
// node, resource or client name). Everything under /debug/ is authorized
// by Auth first: without Auth it is refused (403), never served open.
type Debug struct {
	Cache    *Cache
	Gatherer prometheus.Gatherer
	// Ready reports why the controller is not ready (nil: ready).
	Ready func() error
	// Diagnostics returns the current translation diagnostics as JSON-able
	// values (nil: not served).
	Diagnostics func() any
	// Profiling serves Go's profiles on /debug/pprof/.
	Profiling bool
	// Auth authorizes every /debug/ request.
	Auth DebugAuthorizer
	// AuthMetrics counts refused requests (nil: unregistered metrics);
	// Logger receives them, throttled (nil: discarded).
	AuthMetrics *AuthMetrics
	Logger      *slog.Logger
}

// DebugAuthorizer decides who may read the debug endpoints.
type DebugAuthorizer interface {
	// AuthorizeDebug returns who made the request when it may read the
	// debug endpoints, or a *Refusal: Unauthenticated (answered 401),
	// PermissionDenied (403) or Unavailable (503).
	AuthorizeDebug(r *http.Request) (principal string, err error)
}

// Handler returns the HTTP handler.
func (d *Debug) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if d.Ready != nil {
			if err := d.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	if d.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{}))
	}
	dbg := http.NewServeMux()
	dbg.HandleFunc("GET /debug/nodes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, d.Cache.Status())
	})
	dbg.HandleFunc("GET /debug/config_dump", d.configDump)
	if d.Diagnostics != nil {
		dbg.HandleFunc("GET /debug/diagnostics", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, d.Diagnostics())
		})
	}
	if d.Profiling {
		dbg.HandleFunc("GET /debug/pprof/", pprof.Index)
		dbg.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		dbg.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		dbg.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		dbg.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	// Every path under /debug/, served or not, is authorized first: an
	// unauthenticated client learns nothing, not even which exist.
	mux.Handle("/debug/", d.authorize(dbg))
	return mux
}

// authorize lets a request through to next only when Auth allows it.
func (d *Debug) authorize(next http.Handler) http.Handler {
	metrics := d.AuthMetrics
	if metrics == nil {
		metrics = NewAuthMetrics(nil)
	}
	log := newRefusalLog(d.Logger)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var principal string
		err := error(Refuse(codes.PermissionDenied, ReasonForbidden, "the debug endpoints are disabled: this server has no authorizer"))
		if d.Auth != nil {
			principal, err = d.Auth.AuthorizeDebug(r)
		}
		if err != nil {
			ref := asRefusal(err)
			metrics.Refusals.WithLabelValues("debug", ref.Reason).Inc()
			client, _, _ := net.SplitHostPort(r.RemoteAddr)
			log.refused("debug", client, principal, ref)
			code := http.StatusServiceUnavailable
			switch ref.Code {
			case codes.Unauthenticated:
				// RFC 9110: a 401 names the scheme to use.
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+api.ControllerName+`"`)
				code = http.StatusUnauthorized
			case codes.PermissionDenied:
				code = http.StatusForbidden
			}
			http.Error(w, ref.Message, code)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (d *Debug) configDump(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if node == "" {
		http.Error(w, "the node query parameter is required (/debug/config_dump?node=NAME)", http.StatusBadRequest)
		return
	}
	dump, err := d.Cache.Dump(node)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, dump)
}

// ErrUnknownNode is returned for a node the controller has no configuration for.
type ErrUnknownNode string

func (e ErrUnknownNode) Error() string {
	return fmt.Sprintf("no configuration for node %q: it has not connected and is not a node of the cluster", string(e))
}

// Dump returns what a node is being served.
func (c *Cache) Dump(node string) (*ConfigDump, error) {
	snap, kind, generation, acked, rejected, ok := c.view(node)
	if !ok {
		return nil, ErrUnknownNode(node)
	}
	dump := &ConfigDump{Node: node, Kind: kind.String(), Generation: generation, Versions: map[string]string{}, Acked: map[string]string{}, Rejected: map[string]string{}}
	for t, v := range acked {
		dump.Acked[shortType(t)] = v
	}
	for t, v := range rejected {
		dump.Rejected[shortType(t)] = v
	}
	out := map[string]*[]json.RawMessage{
		resourcev3.ListenerType: &dump.Listeners, resourcev3.RouteType: &dump.Routes,
		resourcev3.ClusterType: &dump.Clusters, resourcev3.EndpointType: &dump.Endpoints,
	}
	for typeURL, dst := range out {
		dump.Versions[shortType(typeURL)] = snap.GetVersion(typeURL)
		items := snap.GetResourcesAndTTL(typeURL)
		names := make([]string, 0, len(items))
		for n := range items {
			names = append(names, n)
		}
		slices.Sort(names)
		*dst = make([]json.RawMessage, 0, len(names))
		for _, n := range names {
			m, err := decode(items[n].Resource)
			if err != nil {
				return nil, err
			}
			data, err := marshalJSON(m)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", shortType(typeURL), n, err)
			}
			*dst = append(*dst, data)
		}
	}
	return dump, nil
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

func marshalJSON(r types.Resource) (json.RawMessage, error) {
	return jsonOpts.Marshal(r)
}
