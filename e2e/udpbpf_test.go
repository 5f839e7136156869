package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// rawUDP sends datagrams from src:port to dst:port with payloads, each as
// one IPv4 packet written whole (IP_HDRINCL), from the calling thread's
// namespace: how a test forges a peer's datagrams from another host.
func rawUDP(src, dst netip.Addr, port uint16, payloads [][]byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	for _, p := range payloads {
		pkt := ipv4UDP(src, dst, port, p)
		binary.BigEndian.PutUint16(pkt[20:22], port) // from the backend's port too
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			return err
		}
	}
	return nil
}

// TestUDPKernelPath runs the udp backend's kernel data path (Datapath bpf:
// tcx on flannel0, XDP on eth0) in a 3-node lab on l2 and checks what the
// agent's path guarantees: only peers get in, each drop counted by reason,
// bulk TCP intact, ICMP errors for no lease and an expiring TTL, traffic
// across agent restarts, and the fallback to the TUN path when the node
// cannot run it.
func TestUDPKernelPath(t *testing.T) {
	l, out := newLab(t, "--backend", "udp", "--datapath", "bpf")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("udp (bpf) l2:\n%s", out)
	}
	st := l.status()
	addr := l.podAddrs()
	for _, n := range st.Nodes {
		if v := l.metric(n.Name, `weft_udp_datapath{datapath="bpf"}`); v != 1 {
			t.Fatalf("%s: weft_udp_datapath{datapath=\"bpf\"} = %v", n.Name, v)
		}
	}
	xdpID := func(node string) uint32 {
		t.Helper()
		eth, err := l.handle(node).LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if x := eth.Attrs().Xdp; x != nil && x.Attached {
			return x.ProgId
		}
		return 0
	}
	if xdpID("n1") == 0 {
		t.Fatal("no XDP program on n1's eth0")
	}

	// listen opens a UDP socket on port 9999 in a pod; nothing may arrive
	// within wait unless want.
	listen := func(t *testing.T, pod string) net.PacketConn {
		var pc net.PacketConn
		l.in(t, pod, func() error {
			var err error
			pc, err = net.ListenPacket("udp4", ":9999")
			return err
		})
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	received := func(pc net.PacketConn, wait time.Duration) []string {
		var got []string
		buf := make([]byte, 1500)
		deadline := time.Now().Add(wait)
		for {
			_ = pc.SetReadDeadline(deadline)
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return got
			}
			got = append(got, string(buf[:n]))
		}
	}
	n2 := netip.MustParseAddr("192.0.2.12")
	n1 := netip.MustParseAddr("192.0.2.11")
	inner := func(src, dst string, i int) []byte {
		return ipv4UDP(addr[src], addr[dst], 9999, []byte(fmt.Sprintf("forged %d", i)))
	}

	// udpIn is how many datagrams n1's stack delivered to its sockets
	// (Udp InDatagrams): the agent's socket sees none of what XDP takes.
	udpIn := func(t *testing.T) int {
		var n int
		l.in(t, "n1", func() error {
			b, err := os.ReadFile("/proc/thread-self/net/snmp")
			if err != nil {
				return err
			}
			lines := strings.Split(string(b), "\n")
			for i := 0; i+1 < len(lines); i++ {
				if strings.HasPrefix(lines[i], "Udp: InDatagrams") {
					f := strings.Fields(lines[i+1])
					n, err = strconv.Atoi(f[1])
					return err
				}
			}
			return errors.New("no Udp line in /proc/net/snmp")
		})
		return n
	}

	t.Run("OnlyPeersGetIn", func(t *testing.T) {
		p1, p3 := listen(t, "n1-p1"), listen(t, "n3-p1")
		const count = 20
		in0 := udpIn(t)
		for _, tc := range []struct {
			name, reason string
			payload      func(i int) []byte
		}{
			// n2's address and port, an inner source outside n2's subnet.
			{"spoofed", "spoofed", func(i int) []byte { return inner("n3-p1", "n1-p1", i) }},
			// n2's, to a pod that is not n1's.
			{"bad destination", "destination", func(i int) []byte { return inner("n2-p1", "n3-p1", i) }},
			// n2's, not an IPv4 packet inside.
			{"malformed", "malformed", func(i int) []byte { return []byte(fmt.Sprintf("not an IP packet %d", i)) }},
			// n2's, an IPv4 header whose checksum is wrong.
			{"bad checksum", "malformed", func(i int) []byte { p := inner("n2-p1", "n1-p1", i); p[10] ^= 0xff; return p }},
		} {
			before := l.metric("n1", `weft_udp_dropped_total{reason="`+tc.reason+`"}`)
			var ps [][]byte
			for i := range count {
				ps = append(ps, tc.payload(i))
			}
			// Forged on the underlay by ext, as if n2 sent them.
			l.in(t, "ext", func() error { return rawUDP(n2, n1, 8285, ps) })
			if got := append(received(p1, 300*time.Millisecond), received(p3, 10*time.Millisecond)...); len(got) > 0 {
				t.Errorf("%s: %d datagrams reached a pod: %q", tc.name, len(got), got)
			}
			after := l.metric("n1", `weft_udp_dropped_total{reason="`+tc.reason+`"}`)
			if after-before != count {
				t.Errorf("%s: %s drops went from %v to %v, want +%d", tc.name, tc.reason, before, after, count)
			}
			t.Logf("%s: n1 dropped %v (reason %s); none reached a pod", tc.name, after-before, tc.reason)
		}

		// A stranger: ext's own address.
		before := l.metric("n1", `weft_udp_dropped_total{reason="stranger"}`)
		l.in(t, "ext", func() error {
			c, err := net.Dial("udp4", "192.0.2.11:8285")
			if err != nil {
				return err
			}
			defer c.Close()
			for i := range count {
				if _, err := c.Write(inner("n2-p1", "n1-p1", i)); err != nil {
					return err
				}
			}
			return nil
		})
		if got := received(p1, 300*time.Millisecond); len(got) > 0 {
			t.Errorf("stranger: %d datagrams reached the pod", len(got))
		}
		if after := l.metric("n1", `weft_udp_dropped_total{reason="stranger"}`); after-before != count {
			t.Errorf("stranger drops went from %v to %v, want +%d", before, after, count)
		}

		// The control: the same forgery, well-formed, from n2's subnet to
		// n1's, gets in (the harness would see a leak).
		var ps [][]byte
		for i := range count {
			ps = append(ps, inner("n2-p1", "n1-p1", i))
		}
		l.in(t, "ext", func() error { return rawUDP(n2, n1, 8285, ps) })
		if got := received(p1, time.Second); len(got) != count {
			t.Errorf("control: %d of %d well-formed datagrams from n2's address reached n1-p1", len(got), count)
		}
		// XDP took every datagram to port 8285: n1's agent received none.
		if d := udpIn(t) - in0; d != 0 {
			t.Errorf("n1's sockets received %d datagrams: the agent's path saw the forgeries, not XDP", d)
		}
	})

	t.Run("BulkTCPIntact", func(t *testing.T) {
		// 64 MiB from n1-p1 to n2-p1 in one TCP connection, through both
		// programs and GSO/GRO: every byte must arrive as sent.
		rx0 := l.metric("n2", `weft_udp_packets_total{direction="rx"}`)
		writes0 := l.metric("n2", "weft_udp_tun_writes_total")
		const size = 64 << 20
		l.bulkTCP(t, "n1-p1", "n2-p1", addr["n2-p1"])
		rx := l.metric("n2", `weft_udp_packets_total{direction="rx"}`) - rx0
		writes := l.metric("n2", "weft_udp_tun_writes_total") - writes0
		t.Logf("n2's kernel path decapsulated %.0f datagrams; the agent wrote %.0f times to flannel0", rx, writes)
		if rx < size/1500 || writes > 10 {
			t.Errorf("%.0f datagrams decapsulated, %.0f agent writes: not the kernel path", rx, writes)
		}
	})

	t.Run("ICMPErrors", func(t *testing.T) {
		// No lease holds 10.244.250.0/24: the agent answers (the program
		// passes the packet to flannel0's reader). A TTL of 2 expires at
		// flannel0 after the node's forward path took one.
		u0 := l.metric("n1", `weft_udp_dropped_total{reason="unreachable"}`)
		t0 := l.metric("n1", `weft_udp_dropped_total{reason="ttl"}`)
		l.in(t, "n1-p1", func() error {
			c, err := net.Dial("udp4", "10.244.250.9:9999")
			if err != nil {
				return err
			}
			defer c.Close()
			for range 5 {
				_, _ = c.Write([]byte("nobody"))
			}
			d, err := net.Dial("udp4", netip.AddrPortFrom(addr["n2-p1"], 9999).String())
			if err != nil {
				return err
			}
			defer d.Close()
			raw, err := d.(*net.UDPConn).SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 2) }); err != nil || serr != nil {
				return fmt.Errorf("IP_TTL: %v %v", err, serr)
			}
			for range 5 {
				_, _ = d.Write([]byte("short-lived"))
			}
			return nil
		})
		time.Sleep(200 * time.Millisecond)
		if d := l.metric("n1", `weft_udp_dropped_total{reason="unreachable"}`) - u0; d != 5 {
			t.Errorf("unreachable rose by %v, want 5", d)
		}
		if d := l.metric("n1", `weft_udp_dropped_total{reason="ttl"}`) - t0; d != 5 {
			t.Errorf("ttl rose by %v, want 5", d)
		}
	})

	t.Run("RestartGap", func(t *testing.T) {
		before := xdpID("n2")
		l.restartGapUnder(t, time.Second)
		if after := xdpID("n2"); after == 0 || after == before {
			t.Errorf("n2's XDP program %d before the restart, %d after: want the new agent's", before, after)
		}
	})

	t.Run("FallbackWhenTheNodeCannot", func(t *testing.T) {
		// Strict reverse-path filtering on n2 would drop what its XDP
		// program decapsulates. With Datapath bpf (forced) the agent does
		// not fall back: it says why in one line (TestUDPFallback runs
		// Datapath auto).
		setRP := func(v string) {
			l.in(t, "n2", func() error {
				for _, k := range []string{"all", "eth0"} {
					if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+k+"/rp_filter", []byte(v), 0o644); err != nil {
						return err
					}
				}
				return nil
			})
		}
		log := l.markLog(t, "n2")
		setRP("1")
		t.Cleanup(func() { setRP("0") })
		// The restart reports the agent not ready: that is the point.
		_, _ = l.run("agent", "restart", "n2")
		lines := log.wait("Datapath bpf", "rp_filter=1")
		if len(lines) == 0 {
			t.Fatalf("n2's agent did not say why the kernel path cannot run:\n%s", log.since())
		}
		t.Logf("n2: %s", lines[0])
	})
}

// TestUDPFallback: with Datapath auto and a node that cannot run the
// kernel path (strict rp_filter), that node's agent runs the TUN path,
// logs why once, removes the programs an earlier agent attached, and the
// lab's check passes between kernel-path and TUN-path nodes both ways.
func TestUDPFallback(t *testing.T) {
	l, out := newLab(t, "--backend", "udp", "--datapath", "auto")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("udp (auto) l2:\n%s", out)
	}
	log2 := l.markLog(t, "n2")
	l.in(t, "n2", func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("1"), 0o644)
	})
	l.must("agent", "restart", "n2")
	lines := log2.wait("data path tun", "rp_filter=1")
	if len(lines) != 1 {
		t.Fatalf("want one line saying why n2 runs the TUN path, got %d:\n%s", len(lines), log2.since())
	}
	t.Logf("n2: %s", lines[0])
	if v := l.metric("n2", `weft_udp_datapath{datapath="tun"}`); v != 1 {
		t.Errorf("n2: weft_udp_datapath{datapath=\"tun\"} = %v", v)
	}
	if len(log2.lines("removed the kernel data path an earlier agent left")) != 1 {
		t.Error("n2 did not say it removed the kernel path its last agent left")
	}
	eth, err := l.handle("n2").LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if x := eth.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("n2's eth0 still has XDP program %d", x.ProgId)
	}
	rep := l.check()
	if rep.Failed != 0 || rep.Passed != 36 {
		t.Errorf("check with n2 on the TUN path and n1, n3 in the kernel: %d passed, %d failed", rep.Passed, rep.Failed)
	}

	// Another XDP program on n3's eth0 (someone else's tool): weft does
	// not replace it; n3 runs the TUN path and says why.
	log3 := l.markLog(t, "n3")
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "someone_else", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// The agent's own program is there now; a user replaces it by hand
	// (ip link set eth0 xdp obj ...), then the agent restarts.
	h3 := l.handle("n3")
	eth3, err := h3.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	l.in(t, "n3", func() error { return netlink.LinkSetXdpFdWithFlags(eth3, other.FD(), nl.XDP_FLAGS_DRV_MODE) })
	l.must("agent", "restart", "n3")
	if lines = log3.wait("data path tun", "another XDP program"); len(lines) != 1 {
		t.Fatalf("want one line saying why n3 runs the TUN path, got %d:\n%s", len(lines), log3.since())
	}
	t.Logf("n3: %s", lines[0])
	if eth3, _ = h3.LinkByName("eth0"); eth3.Attrs().Xdp == nil || !eth3.Attrs().Xdp.Attached || progIDOf(t, other) != eth3.Attrs().Xdp.ProgId {
		t.Errorf("n3's eth0 XDP %+v: not the other program any more", eth3.Attrs().Xdp)
	}
	if rep := l.check(); rep.Failed != 0 || rep.Passed != 36 {
		t.Errorf("check with n2 and n3 on the TUN path: %d passed, %d failed", rep.Passed, rep.Failed)
	}
}

func progIDOf(t *testing.T, p *ebpf.Program) uint32 {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

// logMark is a node's agent log from where it ended when marked.
type logMark struct {
	path string
	off  int64
}

// markLog remembers where node's agent log ends now.
func (l *lab) markLog(t *testing.T, node string) logMark {
	t.Helper()
	for _, n := range l.status().Nodes {
		if n.Name == node {
			fi, err := os.Stat(n.Log)
			if err != nil {
				t.Fatal(err)
			}
			return logMark{path: n.Log, off: fi.Size()}
		}
	}
	t.Fatalf("no node %s", node)
	return logMark{}
}

// lines are the lines logged since the mark that hold every one of words.
func (m logMark) lines(words ...string) []string { return logLines(m.path, m.off, words...) }

// wait polls for up to 10 s until a line logged since the mark holds
// every one of words, and returns those lines (none when it timed out).
func (m logMark) wait(words ...string) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ls := m.lines(words...); len(ls) > 0 || time.Now().After(deadline) {
			return ls
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// since is everything logged since the mark.
func (m logMark) since() string {
	b, _ := os.ReadFile(m.path)
	return string(b[min(m.off, int64(len(b))):])
}
