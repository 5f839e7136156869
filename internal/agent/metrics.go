package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series, on a registry of its own.
type metrics struct {
	reg          *prometheus.Registry
	leases       prometheus.Gauge
	syncs        *prometheus.CounterVec
	syncDuration prometheus.Histogram
	applied      *prometheus.CounterVec
	renewals     *prometheus.CounterVec
	skipped      prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_leases_known", Help: "Leases in the store at the last sync, this node's included.",
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_syncs_total", Help: "Syncs of the kernel with the leases, by result.",
		}, []string{"result"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_sync_duration_seconds", Help: "Duration of a sync.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_kernel_entries_applied_total", Help: "Routes, neighbour and FDB entries written or removed.",
		}, []string{"op"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_lease_renewals_total", Help: "Renewals of this node's lease, by result.",
		}, []string{"result"}),
		skipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_peers_skipped", Help: "Peers not programmed at the last sync (see /readyz for why).",
		}),
	}
	m.reg.MustRegister(m.leases, m.syncs, m.syncDuration, m.applied, m.renewals, m.skipped,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
