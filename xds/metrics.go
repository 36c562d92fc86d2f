package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's xDS metrics (served on :15014/metrics).
type Metrics struct {
	Pushes          *prometheus.CounterVec
	PushLatency     prometheus.Histogram
	Convergence     prometheus.Histogram
	ConnectedNodes  prometheus.Gauge
	NACKs           *prometheus.CounterVec
	Refused         *prometheus.CounterVec
	Translations    *prometheus.CounterVec
	TranslationTime *prometheus.HistogramVec
	Diagnostics     *prometheus.GaugeVec
	SnapshotBytes   *prometheus.GaugeVec
	SnapshotItems   *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemesh_xds_pushes_total", Help: "xDS responses sent, by type.",
		}, []string{"type"}),
		PushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nodemesh_xds_push_latency_seconds",
			Help:    "From the first change folded into a generation to its snapshots being set for every node.",
			Buckets: buckets,
		}),
		Convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nodemesh_xds_convergence_seconds",
			Help:    "From the first change folded into a generation to a node acknowledging it (per node and type).",
			Buckets: buckets,
		}),
		ConnectedNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodemesh_xds_connected_streams", Help: "Open ADS streams (node Envoys and gRPC clients).",
		}),
		NACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemesh_xds_nacks_total", Help: "Configurations rejected by a node, by type.",
		}, []string{"type"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemesh_xds_refused_streams_total", Help: "xDS streams refused before anything was served, by reason.",
		}, []string{"reason"}),
		Translations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemesh_translations_total", Help: "Generations computed, by kind: full, or endpoints (only changed endpoints recomputed).",
		}, []string{"kind"}),
		TranslationTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nodemesh_translation_seconds", Help: "Time to translate and validate a generation, by kind.", Buckets: buckets,
		}, []string{"kind"}),
		Diagnostics: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodemesh_translation_diagnostics", Help: "Diagnostics of the current generation, by severity.",
		}, []string{"severity"}),
		SnapshotBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodemesh_snapshot_bytes", Help: "Wire size of the shared (default class) configuration, by type.",
		}, []string{"type"}),
		SnapshotItems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodemesh_snapshot_resources", Help: "Resources in the shared (default class) configuration, by type.",
		}, []string{"type"}),
	}
	if reg != nil {
		reg.MustRegister(m.Pushes, m.PushLatency, m.Convergence, m.ConnectedNodes, m.NACKs, m.Refused, m.Translations,
			m.TranslationTime, m.Diagnostics, m.SnapshotBytes, m.SnapshotItems)
	}
	return m
}

// shortType is the last part of a type URL (Cluster, Listener, …).
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}
