package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/lease"
)

// metrics are the agent's Prometheus series, on a registry of its own.
type metrics struct {
	reg          *prometheus.Registry
	leases       prometheus.Gauge
	syncs        *prometheus.CounterVec
	syncDuration *prometheus.HistogramVec
	diffSize     *prometheus.HistogramVec
	relists      *prometheus.CounterVec
	events       *prometheus.CounterVec
	rejected     prometheus.Gauge
	conflicts    prometheus.Gauge
	applied      *prometheus.CounterVec
	renewals     *prometheus.CounterVec
	skipped      prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_leases_known", Help: "Leases accepted at the last sync, this node's included.",
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_syncs_total", Help: "Syncs of the kernel with the leases, by kind (incremental: on a change, against the kernel as remembered; full: every resync interval, the kernel and firewall read afresh) and result.",
		}, []string{"kind", "result"}),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_sync_duration_seconds", Help: "Duration of a sync, by kind.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"kind"}),
		diffSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_sync_diff_entries", Help: "Kernel entries written or removed by a sync, by kind.", Buckets: []float64{0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000},
		}, []string{"kind"}),
		relists: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_lease_relists_total", Help: "Full lists of the leases, by cause (start, watch-error, compacted).",
		}, []string{"cause"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_lease_events_total", Help: "Lease changes received from the store's watch, by operation.",
		}, []string{"op"}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_route_conflicts", Help: "Routes not written at the last sync because the kernel routes their destination through something not weft's (see /readyz routeConflicts).",
		}),
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_leases_rejected", Help: "Records in the store that are not used (see /readyz rejectedLeases for why).",
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
	for _, cause := range []string{lease.CauseStart, lease.CauseWatchError, lease.CauseCompacted} {
		m.relists.WithLabelValues(cause) // every cause from the first scrape, at 0
	}
	m.reg.MustRegister(m.leases, m.syncs, m.syncDuration, m.diffSize, m.relists, m.events, m.rejected, m.conflicts, m.applied, m.renewals, m.skipped,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
