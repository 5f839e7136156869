package udp

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// stats are the data path's counters; atomics, so both directions update
// them without a lock.
type stats struct {
	txPackets, rxPackets    atomic.Uint64
	stranger, spoofed       atomic.Uint64
	malformed               atomic.Uint64
	unreachable, expired    atomic.Uint64
	sendErrors, writeErrors atomic.Uint64
	recvErrors              atomic.Uint64
	tunWrites               atomic.Uint64 // system calls writing to the device
}

func (s *stats) count(v verdict) {
	switch v {
	case stranger:
		s.stranger.Add(1)
	case spoofed:
		s.spoofed.Add(1)
	case malformed:
		s.malformed.Add(1)
	case unreachable:
		s.unreachable.Add(1)
	case expired:
		s.expired.Add(1)
	}
}

var (
	packetsDesc   = prometheus.NewDesc("weft_udp_packets_total", "Packets carried by the udp backend, by direction.", []string{"direction"}, nil)
	tunWritesDesc = prometheus.NewDesc("weft_udp_tun_writes_total", "System calls writing received packets to the TUN device; packets received per write is how well TCP segments were coalesced.", nil, nil)
	droppedDesc   = prometheus.NewDesc("weft_udp_dropped_total", "Packets the udp backend dropped, by reason: stranger (sender holds no lease), spoofed (inner source outside the sender's subnet), malformed, unreachable (no lease for the destination), ttl, send-error, write-error, receive-error.", []string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (b *Backend) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- droppedDesc
	ch <- tunWritesDesc
}

// Collect implements prometheus.Collector.
func (b *Backend) Collect(ch chan<- prometheus.Metric) {
	s := &b.stats
	c := func(d *prometheus.Desc, v *atomic.Uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()), label)
	}
	c(packetsDesc, &s.txPackets, "tx")
	c(packetsDesc, &s.rxPackets, "rx")
	c(droppedDesc, &s.stranger, "stranger")
	c(droppedDesc, &s.spoofed, "spoofed")
	c(droppedDesc, &s.malformed, "malformed")
	c(droppedDesc, &s.unreachable, "unreachable")
	c(droppedDesc, &s.expired, "ttl")
	c(droppedDesc, &s.sendErrors, "send-error")
	c(droppedDesc, &s.writeErrors, "write-error")
	c(droppedDesc, &s.recvErrors, "receive-error")
	ch <- prometheus.MustNewConstMetric(tunWritesDesc, prometheus.CounterValue, float64(s.tunWrites.Load()))
}
