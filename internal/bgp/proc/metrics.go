package proc

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/bgp"
)

var _ prometheus.Collector = (*Speaker)(nil)

// Describe sends the speaker's metrics, the in-process speaker's series
// (bgp.DescribeMetrics), from the child's last Status; the flaps counted
// across weft-bgp's restarts.
func (s *Speaker) Describe(ch chan<- *prometheus.Desc) { bgp.DescribeMetrics(ch) }

// Collect sends the metrics of Status.
func (s *Speaker) Collect(ch chan<- prometheus.Metric) { bgp.CollectMetrics(ch, s.Status()) }
