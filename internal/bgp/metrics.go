package bgp

import (
	"github.com/prometheus/client_golang/prometheus"
)

// SessionStates are the FSM states' names in PeerStatus.State and the
// metrics, in the FSM's order.
var SessionStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

// A speaker's metrics, one series per configured peer (label "peer",
// its address): the in-process speaker's and weft-agent's, which reads
// them from weft-bgp's Status.
var (
	peerUpDesc = prometheus.NewDesc("weft_bgp_peer_up",
		"1 when the BGP session with the peer is established, else 0.", []string{"peer"}, nil)
	peerStateDesc = prometheus.NewDesc("weft_bgp_peer_state",
		"The BGP session's FSM state: 1 for the current state, 0 for the others (idle, connect, active, opensent, openconfirm, established).",
		[]string{"peer", "state"}, nil)
	prefixesSentDesc = prometheus.NewDesc("weft_bgp_prefixes_sent",
		"Prefixes announced to the peer on the established session.", []string{"peer"}, nil)
	prefixesReceivedDesc = prometheus.NewDesc("weft_bgp_prefixes_received",
		"Prefixes accepted from the peer on the established session.", []string{"peer"}, nil)
	flapsDesc = prometheus.NewDesc("weft_bgp_session_flaps_total",
		"Times the established session with the peer went down.", []string{"peer"}, nil)
)

// DescribeMetrics sends a speaker's metrics, for a prometheus.Collector's
// Describe: weft_bgp_peer_up{peer}, weft_bgp_peer_state{peer,state} (1
// for the current FSM state, 0 for the five others),
// weft_bgp_prefixes_sent{peer}, weft_bgp_prefixes_received{peer} and
// weft_bgp_session_flaps_total{peer}.
func DescribeMetrics(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{peerUpDesc, peerStateDesc, prefixesSentDesc, prefixesReceivedDesc, flapsDesc} {
		ch <- d
	}
}

// CollectMetrics sends the metrics of the sessions st, for a
// prometheus.Collector's Collect.
func CollectMetrics(ch chan<- prometheus.Metric, st []PeerStatus) {
	for _, p := range st {
		peer := p.Address.String()
		up := 0.0
		if p.State == "established" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, up, peer)
		for _, s := range SessionStates {
			v := 0.0
			if s == p.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(peerStateDesc, prometheus.GaugeValue, v, peer, s)
		}
		ch <- prometheus.MustNewConstMetric(prefixesSentDesc, prometheus.GaugeValue, float64(p.Sent), peer)
		ch <- prometheus.MustNewConstMetric(prefixesReceivedDesc, prometheus.GaugeValue, float64(p.Received), peer)
		ch <- prometheus.MustNewConstMetric(flapsDesc, prometheus.CounterValue, float64(p.Flaps), peer)
	}
}
