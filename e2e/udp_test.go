package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// in runs f inside one of the lab's namespaces (ns without the lab's
// prefix) and fails t if it cannot enter it or f fails.
func (l *lab) in(t *testing.T, ns string, f func() error) {
	t.Helper()
	if err := netns.Do(l.name+"-"+ns, f); err != nil {
		t.Fatal(err)
	}
}

// metric reads one counter from a node's agent, from inside the node.
func (l *lab) metric(node, series string) float64 {
	l.t.Helper()
	body, err := process.Get(l.name+"-"+node, "/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(string(body))
	if m == nil {
		l.t.Fatalf("no %s in the metrics of %s", series, node)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// podAddrs maps the lab's pods to their addresses.
func (l *lab) podAddrs() map[string]netip.Addr {
	addr := map[string]netip.Addr{}
	for _, p := range l.status().Pods {
		addr[p.Name] = netip.MustParseAddr(p.Addr)
	}
	return addr
}

// bulkTCP sends 64 MiB of random bytes from pod src to pod dst (address
// ip) in one TCP connection and fails t unless every byte arrives as sent.
func (l *lab) bulkTCP(t *testing.T, src, dst string, ip netip.Addr) {
	t.Helper()
	var ln net.Listener
	l.in(t, dst, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":5300")
		return err
	})
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- result{sum: [32]byte(h.Sum(nil)), n: n, err: err}
	}()
	const size = 64 << 20
	data := make([]byte, size)
	_, _ = rand.Read(data)
	var c net.Conn
	l.in(t, src, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(ip, 5300).String(), 3*time.Second)
		return err
	})
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-got
	if r.err != nil || r.n != size || r.sum != sha256.Sum256(data) {
		t.Fatalf("received %d of %d bytes (err %v); contents match: %v", r.n, size, r.err, r.sum == sha256.Sum256(data))
	}
}

func ipv4UDP(src, dst netip.Addr, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:22], 40000)
	binary.BigEndian.PutUint16(p[22:24], dport)
	binary.BigEndian.PutUint16(p[24:26], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// TestUDPOnL2 runs the udp backend's TUN path (the agent's); the kernel
// path is TestUDPKernelPath's.
func TestUDPOnL2(t *testing.T) {
	l, out := newLab(t, "--backend", "udp", "--datapath", "tun")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("udp l2:\n%s", out)
	}
	addr := l.podAddrs()

	t.Run("StrangerGetsNothingThrough", func(t *testing.T) {
		// n1-p1 listens; ext, which holds no lease, sends datagrams to n1's
		// port 8285 carrying packets that claim to come from n2-p1.
		var pc net.PacketConn
		l.in(t, "n1-p1", func() error {
			var err error
			pc, err = net.ListenPacket("udp4", ":9999")
			return err
		})
		defer pc.Close()
		before := l.metric("n1", `weft_udp_dropped_total{reason="stranger"}`)
		l.in(t, "ext", func() error {
			c, err := net.Dial("udp4", "192.0.2.11:8285")
			if err != nil {
				return err
			}
			defer c.Close()
			for i := range 20 {
				if _, err := c.Write(ipv4UDP(addr["n2-p1"], addr["n1-p1"], 9999, []byte(fmt.Sprintf("forged %d", i)))); err != nil {
					return err
				}
			}
			return nil
		})
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		if n, from, err := pc.ReadFrom(buf); err == nil {
			t.Fatalf("a stranger's datagram reached the pod: %q from %s", buf[:n], from)
		}
		after := l.metric("n1", `weft_udp_dropped_total{reason="stranger"}`)
		if after-before != 20 {
			t.Errorf("stranger drops went from %v to %v, want +20", before, after)
		}
		t.Logf("n1 dropped %v datagrams from a stranger; none reached the pod", after-before)
	})

	t.Run("BulkTCPIntact", func(t *testing.T) {
		// 64 MiB from n1-p1 to n2-p1 in one TCP connection: n2's agent
		// writes it to flannel0 as coalesced super-packets, and every
		// byte must arrive as sent.
		pktsBefore := l.metric("n2", `weft_udp_packets_total{direction="rx"}`)
		writesBefore := l.metric("n2", "weft_udp_tun_writes_total")
		l.bulkTCP(t, "n1-p1", "n2-p1", addr["n2-p1"])
		pkts := l.metric("n2", `weft_udp_packets_total{direction="rx"}`) - pktsBefore
		writes := l.metric("n2", "weft_udp_tun_writes_total") - writesBefore
		t.Logf("n2 received %.0f packets in %.0f writes to flannel0 (%.1f per write)", pkts, writes, pkts/writes)
		if writes <= 0 || pkts/writes < 2 {
			t.Errorf("%.0f packets in %.0f writes: TCP segments were not coalesced", pkts, writes)
		}
	})

	t.Run("RestartGap", func(t *testing.T) { l.restartGapUnder(t, time.Second) })
}

// restartGapUnder pings across restarts of n2's and n1's agents
// (pingAcrossRestarts) and fails t unless the longest gap between replies
// is under limit.
func (l *lab) restartGapUnder(t *testing.T, limit time.Duration) {
	t.Helper()
	out, _ := l.pingAcrossRestarts(t)
	m := regexp.MustCompile(`longest gap (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping output: %s", out)
	}
	gap, _ := time.ParseDuration(m[1])
	if gap >= limit {
		t.Errorf("the restarts interrupted traffic for %s, want under %s", gap, limit)
	}
}

// TestUDPOnL3: both data paths across the l3 router (the kernel path's
// bpf_redirect_neigh finds the router as the next hop).
func TestUDPOnL3(t *testing.T) {
	for _, dp := range []string{"bpf", "tun"} {
		t.Run(dp, func(t *testing.T) {
			l, out := newLab(t, "--backend", "udp", "--datapath", dp, "--topology", "l3")
			if !strings.Contains(out, "36 passed, 0 failed") {
				t.Fatalf("udp (%s) l3:\n%s", dp, out)
			}
			if v := l.metric("n1", `weft_udp_datapath{datapath="`+dp+`"}`); v != 1 {
				t.Errorf("n1 does not run the %s path", dp)
			}
		})
	}
}
