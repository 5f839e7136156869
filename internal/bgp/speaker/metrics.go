package speaker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/bgp"
)

var _ prometheus.Collector = (*Speaker)(nil)

// Describe sends the speaker's metrics: weft_bgp_peer_up{peer},
// weft_bgp_peer_state{peer,state} (1 for the current FSM state, 0 for the
// five others), weft_bgp_prefixes_sent{peer},
// weft_bgp_prefixes_received{peer} and weft_bgp_session_flaps_total{peer}.
func (s *Speaker) Describe(ch chan<- *prometheus.Desc) { bgp.DescribeMetrics(ch) }

// Collect sends the metrics of Status.
func (s *Speaker) Collect(ch chan<- prometheus.Metric) { bgp.CollectMetrics(ch, s.Status()) }
