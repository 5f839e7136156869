package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// packet builds a valid IPv4/UDP packet from src to dst with a payload.
func packet(src, dst string, ttl byte, payload int) []byte {
	p := make([]byte, 28+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = ttl, 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:12], ^plainChecksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[24:26], uint16(8+payload))
	for i := 28; i < len(p); i++ {
		p[i] = byte(i)
	}
	return p
}

var (
	ownSubnet = netip.MustParsePrefix("10.244.1.0/24")
	peerA     = netip.MustParseAddrPort("192.0.2.2:8285")
	peerB     = netip.MustParseAddrPort("192.0.2.3:8285")
)

func state() backend.NodeState {
	l := func(subnet, ip, typ string) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
	}
	own := l("10.244.1.0/24", "192.0.2.1", "")
	return backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{
		own, l("10.244.2.0/24", "192.0.2.2", ""), l("10.244.3.0/24", "192.0.2.3", "udp"), l("10.244.4.0/24", "192.0.2.4", "vxlan"),
	}}
}

// harness runs the real data path over an in-memory TUN and socket.
func harness(t *testing.T, tunBatch, udpBatch int) (*Backend, *fakeTUN, *fakeBind) {
	t.Helper()
	b := New(t.Context(), nil, Options{Common: backend.Common{Port: 8285}}, kernel.Underlay{MTU: 1500}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	dev, bind := newFakeTUN(tunBatch), newFakeBind(udpBatch)
	fns, _, _ := bind.Open(8285)
	if !b.run(dev, 0, bind, fns, ownSubnet, nil) {
		t.Fatal("run refused to start")
	}
	if _, err := b.setPeers(b.Plan(state())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, dev, bind
}

func recvSent(t *testing.T, bind *fakeBind) sent {
	t.Helper()
	select {
	case s := <-bind.sent:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent")
	}
	return sent{}
}

// waitCount waits up to 5 s for a counter to reach want and fails if it
// ends anywhere else.
func waitCount(t *testing.T, what string, c *atomic.Uint64, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := c.Load(); got != want {
		t.Errorf("%s: counter is %d, want %d", what, got, want)
	}
}

func recvTUN(t *testing.T, dev *fakeTUN) []byte {
	t.Helper()
	select {
	case p := <-dev.out:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the TUN device")
	}
	return nil
}

func TestEncapsulation(t *testing.T) {
	_, dev, bind := harness(t, 1, 1)
	p := packet("10.244.1.5", "10.244.2.7", 64, 100)
	dev.in <- [][]byte{p}
	s := recvSent(t, bind)
	if s.to != peerA || len(s.pkts) != 1 {
		t.Fatalf("sent %d packets to %s, want 1 to %s", len(s.pkts), s.to, peerA)
	}
	got := s.pkts[0]
	if len(got) != len(p) || got[8] != 63 {
		t.Fatalf("datagram is not the packet with TTL-1: len %d ttl %d", len(got), got[8])
	}
	if _, ok := ipv4(got); !ok {
		t.Error("header checksum broken by the TTL decrement")
	}
	for i := 20; i < len(p); i++ {
		if got[i] != p[i] {
			t.Fatalf("payload changed at byte %d", i)
		}
	}
}

func TestFullBatchesGroupByPeer(t *testing.T) {
	b, dev, bind := harness(t, 128, 32)
	var batch [][]byte
	for i := range 128 {
		dst := "10.244.2.7"
		if i%2 == 1 {
			dst = "10.244.3.7"
		}
		batch = append(batch, packet("10.244.1.5", dst, 64, i))
	}
	dev.in <- batch
	perPeer := map[netip.AddrPort]int{}
	for perPeer[peerA]+perPeer[peerB] < 128 {
		s := recvSent(t, bind)
		if len(s.pkts) > 32 {
			t.Fatalf("a send of %d packets exceeds the socket batch", len(s.pkts))
		}
		perPeer[s.to] += len(s.pkts)
	}
	if perPeer[peerA] != 64 || perPeer[peerB] != 64 {
		t.Errorf("per peer %v, want 64 each", perPeer)
	}
	// The counter moves after the send returns, so it may trail the
	// last datagram the fake delivered.
	waitCount(t, "tx packets", &b.stats.txPackets, 128)
}

func TestInbound(t *testing.T) {
	b, dev, bind := harness(t, 64, 64)
	good := packet("10.244.2.7", "10.244.1.5", 63, 40)
	bind.in <- []received{
		{peerA, good}, // admitted
		{netip.MustParseAddrPort("198.51.100.9:8285"), good}, // stranger
		{netip.MustParseAddrPort("192.0.2.2:9999"), good},    // right address, wrong port
		{peerA, packet("10.244.3.7", "10.244.1.5", 63, 40)},  // spoofs peer B's subnet
		{peerA, good[:30]}, // truncated
		{peerA, append(packet("10.244.2.7", "10.244.1.5", 63, 40), 0, 0, 0)}, // trailing bytes
		{peerB, packet("10.244.3.7", "10.244.1.6", 63, 1200)},                // admitted
	}
	if p := recvTUN(t, dev); string(p) != string(good) {
		t.Errorf("TUN got %x", p)
	}
	if p := recvTUN(t, dev); len(p) != 1228 {
		t.Errorf("second admitted packet: len %d", len(p))
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case p := <-dev.out:
		t.Errorf("a dropped datagram reached the TUN device: %x", p)
	default:
	}
	waitCount(t, "stranger", &b.stats.stranger, 2)
	waitCount(t, "spoofed", &b.stats.spoofed, 1)
	waitCount(t, "malformed", &b.stats.malformed, 2)
	// Packets, not the bytes the device's Write returns (1268 here).
	waitCount(t, "rx packets", &b.stats.rxPackets, 2)
}

// failingTUN fails the writes of the packets it is told to, and joins the
// errors as wireguard-go's Linux device does.
type failingTUN struct {
	*fakeTUN
	fail map[int]bool // index in the batch
}

func (t failingTUN) Write(bufs [][]byte, offset int) (int, error) {
	n := 0
	var errs error
	for i, b := range bufs {
		if t.fail[i] {
			errs = errors.Join(errs, fmt.Errorf("write packet %d: %w", i, syscall.EIO))
			continue
		}
		n += len(b) - offset
	}
	return n, errs
}

func TestDevWriteCountsPackets(t *testing.T) {
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, offset+100)
	}
	for _, tc := range []struct {
		fail map[int]bool
		want int
	}{
		{nil, 3},
		{map[int]bool{1: true}, 2},
		{map[int]bool{0: true, 2: true}, 1},
		{map[int]bool{0: true, 1: true, 2: true}, 0},
	} {
		n, err := devWrite(failingTUN{newFakeTUN(3), tc.fail}, bufs)
		if n != tc.want || (err != nil) != (len(tc.fail) > 0) {
			t.Errorf("failing %v: %d packets written, err %v; want %d", tc.fail, n, err, tc.want)
		}
	}
	// An error that is not one per write (coalescing refused the batch,
	// or the device is gone) loses the batch.
	n, err := devWrite(closedTUN{newFakeTUN(3)}, bufs)
	if n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Errorf("closed device: %d packets written, err %v", n, err)
	}
}

type closedTUN struct{ *fakeTUN }

func (closedTUN) Write([][]byte, int) (int, error) { return 200, os.ErrClosed }

func TestICMPErrors(t *testing.T) {
	_, dev, _ := harness(t, 8, 8)
	orig := packet("10.244.1.5", "10.244.9.9", 64, 20)
	dev.in <- [][]byte{orig}
	p := recvTUN(t, dev)
	if _, ok := ipv4(p); !ok || p[9] != 1 || p[20] != icmpUnreachable || p[21] != icmpNetUnreachable {
		t.Fatalf("no net-unreachable for a subnet no lease holds: %x", p)
	}
	if src(p) != netip.MustParseAddr("10.244.1.0") || dst(p) != netip.MustParseAddr("10.244.1.5") {
		t.Errorf("ICMP from %s to %s", src(p), dst(p))
	}
	if plainChecksum(p[20:], 0) != 0xffff {
		t.Error("bad ICMP checksum")
	}
	if string(p[28:48]) != string(orig[:20]) {
		t.Error("ICMP does not quote the original header")
	}
	dev.in <- [][]byte{packet("10.244.1.5", "10.244.2.7", 1, 20)}
	p = recvTUN(t, dev)
	if p[20] != icmpTimeExceeded {
		t.Fatalf("no time-exceeded for TTL 1: %x", p)
	}
}

func TestLeaseChangeAppliesWithoutRestart(t *testing.T) {
	b, dev, bind := harness(t, 8, 8)
	st := state()
	st.Peers = st.Peers[:1] // every peer gone
	if _, err := b.setPeers(b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	dev.in <- [][]byte{packet("10.244.1.5", "10.244.2.7", 64, 20)}
	if p := recvTUN(t, dev); p[20] != icmpUnreachable {
		t.Fatalf("a removed peer still gets traffic: %x", p)
	}
	bind.in <- []received{{peerA, packet("10.244.2.7", "10.244.1.5", 63, 40)}}
	waitCount(t, "a removed peer's datagrams dropped as strangers", &b.stats.stranger, 1)
	if _, err := b.setPeers(b.Plan(state())); err != nil {
		t.Fatal(err)
	}
	dev.in <- [][]byte{packet("10.244.1.5", "10.244.2.7", 64, 20)}
	if s := recvSent(t, bind); s.to != peerA {
		t.Errorf("sent to %s", s.to)
	}
}

// FuzzInbound feeds arbitrary datagrams from a peer to the receive path:
// no panic, and only well-formed packets from the peer's subnet pass.
func FuzzInbound(f *testing.F) {
	f.Add(packet("10.244.2.7", "10.244.1.5", 63, 40))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Add(packet("10.244.3.7", "10.244.1.5", 63, 0))
	tb := newTable(ownSubnet, ownSubnet.Addr(), map[netip.Prefix]netip.AddrPort{netip.MustParsePrefix("10.244.2.0/24"): peerA})
	f.Fuzz(func(t *testing.T, p []byte) {
		if tb.inbound(peerA, p) != forward {
			return
		}
		if _, ok := ipv4(p); !ok {
			t.Fatalf("malformed packet admitted: %x", p)
		}
		if !netip.MustParsePrefix("10.244.2.0/24").Contains(src(p)) {
			t.Fatalf("spoofed source %s admitted", src(p))
		}
	})
}

// FuzzOutbound: no panic; a forwarded packet keeps a valid header.
func FuzzOutbound(f *testing.F) {
	f.Add(packet("10.244.1.5", "10.244.2.7", 64, 40))
	f.Add(packet("10.244.1.5", "10.244.9.7", 1, 0))
	tb := newTable(ownSubnet, ownSubnet.Addr(), map[netip.Prefix]netip.AddrPort{netip.MustParsePrefix("10.244.2.0/24"): peerA})
	f.Fuzz(func(t *testing.T, p []byte) {
		orig := append([]byte(nil), p...)
		_, v := tb.outbound(p)
		switch v {
		case forward:
			if _, ok := ipv4(p); !ok {
				t.Fatalf("TTL decrement broke the header: %x", p)
			}
		case unreachable, expired:
			if e := tb.icmpError(orig, icmpUnreachable, 0); e != nil {
				if _, ok := ipv4(e); !ok {
					t.Fatalf("malformed ICMP error %x", e)
				}
			}
		}
	})
}
