//go:build linux

package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nodemesh/nodemesh/bpf"
)

// metrics are the agent's own metrics plus a collector that reads the eBPF
// counters and map fill levels at scrape time.
type metrics struct {
	a        *Agent
	gatherer prometheus.Gatherer

	syncs, syncErrors   prometheus.Counter
	cniRequests         *prometheus.CounterVec
	cniAddSeconds       prometheus.Histogram
	endpoints           prometheus.Gauge
	policyEntries       prometheus.Gauge
	inboundCaptures     prometheus.Gauge
	services            prometheus.Gauge
	optedIn             prometheus.Gauge
	lbFrontends         prometheus.Gauge
	lbDiagnostics       prometheus.Gauge
	diagnostics         prometheus.Gauge
	remoteEndpoints     *prometheus.GaugeVec
	identitiesCollected prometheus.Counter
	uninstallPending    prometheus.Gauge
	cleanups            *prometheus.CounterVec
	peerNodes           *prometheus.GaugeVec
	routeErrors         prometheus.Counter

	packetsDesc, bytesDesc, redirectDesc, mapEntriesDesc, mapCapacityDesc *prometheus.Desc
}

func newMetrics(a *Agent, reg prometheus.Registerer) *metrics {
	r := prometheus.NewRegistry()
	m := &metrics{a: a, gatherer: r}
	if reg != nil {
		// Also expose through the caller's registry (process and Go metrics
		// live there).
		if g, ok := reg.(prometheus.Gatherer); ok {
			m.gatherer = prometheus.Gatherers{r, g}
		}
	}
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m.syncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "nodemesh_agent_syncs_total", Help: "Reconciles of the eBPF maps with the cluster."})
	m.syncErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "nodemesh_agent_sync_errors_total", Help: "Reconciles that failed (retried)."})
	m.cniRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodemesh_agent_cni_requests_total", Help: "CNI calls served, by command and result."}, []string{"command", "result"})
	m.cniAddSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nodemesh_agent_cni_add_seconds", Help: "Time to serve a CNI ADD.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5}})
	m.endpoints = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_endpoints", Help: "Pod interfaces the agent manages."})
	m.policyEntries = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_policy_entries", Help: "Policy map entries written from NetworkPolicies."})
	m.inboundCaptures = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_inbound_captures", Help: "Pod ports captured into the node Envoy's inbound listener (AuthorizationPolicies with HTTP facts)."})
	m.services = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_redirect_services", Help: "Service addresses redirected for opted-in pods."})
	m.optedIn = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_redirect_pods", Help: "Pods whose connections to Services go to the node proxy."})
	m.lbFrontends = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_lb_frontends", Help: "Service frontends (ClusterIP and NodePort addresses, per port and protocol) load balanced at the socket."})
	m.lbDiagnostics = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_lb_diagnostics", Help: "Services the socket load balancing cannot serve as asked (logged)."})
	m.diagnostics = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_policy_diagnostics", Help: "Parts of NetworkPolicies the agent cannot express (enforced as deny)."})
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nodemesh_agent_tcx_pending", Help: "Pods whose policy programs are still cls_bpf filters, waiting to move to tcx links (see --tcx-quiet-period)."},
		func() float64 { return float64(a.upgrades.len()) }))
	m.remoteEndpoints = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nodemesh_agent_remote_endpoints",
		Help: "Addresses of other nodes' pods: resolved (in the identity map) or unresolved (no identity object for the pod's key yet: WORLD)."}, []string{"state"})
	f(m.remoteEndpoints)
	m.identitiesCollected = prometheus.NewCounter(prometheus.CounterOpts{Name: "nodemesh_agent_identities_collected_total",
		Help: "Identity objects deleted because no pod of the cluster used them for the grace period (by the agent holding the collection Lease)."})
	f(m.identitiesCollected)
	m.uninstallPending = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodemesh_agent_uninstall_pending",
		Help: "1 once the agent has seen the DaemonSet owning its pod being deleted (an uninstall): it removes nodemesh from the node when it stops."})
	f(m.uninstallPending)
	m.cleanups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodemesh_agent_node_cleanups_total",
		Help: "Removals of nodemesh from the node (at the agent's stop during an uninstall), by result (cleaned, failed); also recorded as an Event on the DaemonSet."}, []string{"result"})
	f(m.cleanups)
	m.peerNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nodemesh_agent_peer_nodes",
		Help: "Other nodes whose pod CIDR is routed, or skipped (no address or pod CIDR, or a pod CIDR that overlaps another's or contains a node's address; logged)."}, []string{"state"})
	f(m.peerNodes)
	m.routeErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "nodemesh_agent_route_errors_total",
		Help: "Syncs of the routes to other nodes' pods that failed in part (logged; retried at the next sync)."})
	f(m.routeErrors)
	for _, c := range []prometheus.Collector{m.syncs, m.syncErrors, m.cniRequests, m.cniAddSeconds, m.endpoints, m.policyEntries, m.inboundCaptures, m.services, m.optedIn, m.lbFrontends, m.lbDiagnostics, m.diagnostics} {
		f(c)
	}
	m.packetsDesc = prometheus.NewDesc("nodemesh_datapath_packets_total", "Packets seen by the policy programs, by direction (relative to the pod), reason and action.", []string{"direction", "reason", "action"}, nil)
	m.bytesDesc = prometheus.NewDesc("nodemesh_datapath_bytes_total", "Bytes seen by the policy programs, by direction, reason and action.", []string{"direction", "reason", "action"}, nil)
	m.redirectDesc = prometheus.NewDesc("nodemesh_datapath_redirect_events_total", "Events of the redirection programs, by reason (redirected, skips, SO_ORIGINAL_DST answers).", []string{"reason"}, nil)
	m.mapEntriesDesc = prometheus.NewDesc("nodemesh_datapath_map_entries", "Entries in an eBPF map.", []string{"map"}, nil)
	m.mapCapacityDesc = prometheus.NewDesc("nodemesh_datapath_map_capacity", "Maximum entries of an eBPF map.", []string{"map"}, nil)
	f(m)
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.packetsDesc, m.bytesDesc, m.redirectDesc, m.mapEntriesDesc, m.mapCapacityDesc} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	if m.a.cleaned.Load() {
		return // the maps are gone
	}
	if pc, err := m.a.pol.Counters(); err == nil {
		for dir := range 2 {
			for r := range bpf.NumReasons {
				action := "pass"
				if r.Dropped() {
					action = "drop"
				}
				c := pc[dir][r]
				labels := []string{bpf.Direction(dir).String(), r.String(), action}
				ch <- prometheus.MustNewConstMetric(m.packetsDesc, prometheus.CounterValue, float64(c.Packets), labels...)
				ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.CounterValue, float64(c.Bytes), labels...)
			}
		}
	}
	if rc, err := m.a.red.Counters(); err == nil {
		for r := range bpf.NumRedirectReasons {
			ch <- prometheus.MustNewConstMetric(m.redirectDesc, prometheus.CounterValue, float64(rc[r]), r.String())
		}
	}
	var usage []bpf.MapUsage
	if u, err := m.a.pol.Usage(); err == nil {
		usage = append(usage, u...)
	}
	if u, err := m.a.red.Usage(); err == nil {
		usage = append(usage, u...)
	}
	for _, u := range usage {
		ch <- prometheus.MustNewConstMetric(m.mapEntriesDesc, prometheus.GaugeValue, float64(u.Entries), u.Name)
		ch <- prometheus.MustNewConstMetric(m.mapCapacityDesc, prometheus.GaugeValue, float64(u.MaxEntries), u.Name)
	}
}

// handler serves /metrics, /healthz (the process is up) and /readyz (synced
// with the API server and reconciled at least once).
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if m.a.cleaned.Load() {
			http.Error(w, "not ready: nodemesh was removed from this node (uninstall)", http.StatusServiceUnavailable)
			return
		}
		if !m.a.isReady() || !m.a.informers.hasSynced() {
			http.Error(w, "not ready: not synced with the API server", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
