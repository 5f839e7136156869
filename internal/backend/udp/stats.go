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
	misdirected             atomic.Uint64
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
	case misdirected:
		s.misdirected.Add(1)
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
	datapathDesc  = prometheus.NewDesc("weft_udp_datapath", "The udp backend's data path: 1 for the one running (bpf: in the kernel; tun: through the agent).", []string{"datapath"}, nil)
	tunWritesDesc = prometheus.NewDesc("weft_udp_tun_writes_total", "System calls writing received packets to the TUN device; packets received per write is how well TCP segments were coalesced.", nil, nil)
	droppedDesc   = prometheus.NewDesc("weft_udp_dropped_total", "Packets the udp backend dropped, by reason: stranger (sender holds no lease), spoofed (inner source outside the sender's subnet), destination (inner destination outside this node's subnet), malformed, unreachable (no lease for the destination), ttl, send-error, write-error, receive-error. The kernel data path's drops are included.", []string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (b *Backend) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- droppedDesc
	ch <- tunWritesDesc
	ch <- datapathDesc
}

// Collect implements prometheus.Collector: the agent's counters plus the
// kernel data path's.
func (b *Backend) Collect(ch chan<- prometheus.Metric) {
	s := &b.stats
	var k [countMax]uint64
	b.mu.Lock()
	if b.kp != nil {
		var err error
		if k, err = b.kp.counters(); err != nil {
			b.log.Debug("udp: read the kernel path's counters", "err", err)
		}
	}
	chosen := b.chosen
	b.mu.Unlock()
	c := func(d *prometheus.Desc, v *atomic.Uint64, kv uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()+kv), label)
	}
	c(packetsDesc, &s.txPackets, k[countTX], "tx")
	c(packetsDesc, &s.rxPackets, k[countRX], "rx")
	c(droppedDesc, &s.stranger, k[countStranger], "stranger")
	c(droppedDesc, &s.spoofed, k[countSpoofed], "spoofed")
	c(droppedDesc, &s.misdirected, k[countDestination], "destination")
	c(droppedDesc, &s.malformed, k[countMalformed], "malformed")
	c(droppedDesc, &s.unreachable, 0, "unreachable")
	c(droppedDesc, &s.expired, 0, "ttl")
	c(droppedDesc, &s.sendErrors, k[countSendError], "send-error")
	c(droppedDesc, &s.writeErrors, 0, "write-error")
	c(droppedDesc, &s.recvErrors, 0, "receive-error")
	ch <- prometheus.MustNewConstMetric(tunWritesDesc, prometheus.CounterValue, float64(s.tunWrites.Load()))
	for _, d := range []string{DatapathBPF, DatapathTUN} {
		v := 0.0
		if d == chosen {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(datapathDesc, prometheus.GaugeValue, v, d)
	}
}
