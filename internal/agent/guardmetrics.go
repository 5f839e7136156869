package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/firewall"
)

// counterReader is a firewall that can read its named counters
// (firewall.Firewall).
type counterReader interface {
	Counters() (map[firewall.Family]map[string]firewall.Count, error)
}

// guardDesc is the tunnel guard's series: what it dropped, read from its
// nftables counters at each scrape.
var guardDesc = prometheus.NewDesc("weft_tunnel_guard_dropped_packets_total", guardHelp, []string{"family", "direction"}, nil)

const guardHelp = "Packets the tunnel guard dropped (backends that encrypt: wireguard), by family and direction: in, from another node's pod address arriving other than through the tunnel; out, to another node's pod address leaving other than through it. From nftables counters that survive agent restarts."

// guardCollector exports the tunnel guard's counters.
type guardCollector struct{ fw counterReader }

func (g guardCollector) Describe(ch chan<- *prometheus.Desc) { ch <- guardDesc }

// Collect reads the counters; a family whose guard is not there yet (or
// a read that fails) has no series.
func (g guardCollector) Collect(ch chan<- prometheus.Metric) {
	c, err := g.fw.Counters()
	if err != nil {
		return
	}
	for _, fam := range []firewall.Family{firewall.IPv4, firewall.IPv6} {
		name := map[firewall.Family]string{firewall.IPv4: "IPv4", firewall.IPv6: "IPv6"}[fam]
		for dir, counter := range map[string]string{"in": firewall.CounterTunnelIn, "out": firewall.CounterTunnelOut} {
			if v, ok := c[fam][counter]; ok {
				ch <- prometheus.MustNewConstMetric(guardDesc, prometheus.CounterValue, float64(v.Packets), name, dir)
			}
		}
	}
}
