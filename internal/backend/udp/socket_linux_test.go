package udp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestPlan checks how a send is laid out as messages: runs of equal-sized
// packets, a shorter packet ending its run, and the kernel's limits on
// datagrams and bytes per message.
func TestPlan(t *testing.T) {
	sizes := func(ns ...int) []datagram {
		var ds []datagram
		for _, n := range ns {
			ds = append(ds, datagram{head: make([]byte, n)})
		}
		return ds
	}
	rep := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	for _, tc := range []struct {
		name string
		in   []int
		gso  bool
		want []int // datagrams per message
		seg  []int // GSO size per message, 0 for none
	}{
		{"one", []int{60}, true, []int{1}, []int{0}},
		{"run ended by a shorter packet", append(rep(3, 1400), 700, 1400), true, []int{4, 1}, []int{1400, 0}},
		{"larger packet starts a new run", []int{700, 1400, 1400}, true, []int{1, 2}, []int{0, 1400}},
		{"bytes per message", rep(70, 1400), true, []int{46, 24}, []int{1400, 1400}},
		{"datagrams per message", rep(130, 100), true, []int{64, 64, 2}, []int{100, 100, 100}},
		{"no gso", rep(3, 1400), false, []int{1, 1, 1}, []int{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSocket(256, nil, nil)
			bufs := sizes(tc.in...)
			m := s.send.plan(bufs, sockaddr(netip.MustParseAddrPort("192.0.2.1:8285")), tc.gso)
			var got, seg []int
			for k := range m {
				h := &s.send.hdrs[k].hdr
				got = append(got, int(h.Iovlen))
				g := 0
				if h.Control != nil {
					g = int(*(*uint16)(unsafe.Pointer(&s.send.oob[k*oobLen+unix.CmsgLen(0)])))
				}
				seg = append(seg, g)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || fmt.Sprint(seg) != fmt.Sprint(tc.seg) {
				t.Errorf("messages %v with GSO sizes %v, want %v and %v", got, seg, tc.want, tc.seg)
			}
		})
	}
}

// openBinds opens tx and rx on 192.0.2.1 (on lo) in namespace ns, closes
// them when the test ends, and returns rx's receive function and the ports.
func openBinds(tb testing.TB, ns string, tx, rx conn.Bind) (recv conn.ReceiveFunc, txPort, rxPort uint16) {
	tb.Helper()
	err := netns.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrReplace(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if _, txPort, err = tx.Open(0); err != nil {
			return err
		}
		fns, p, err := rx.Open(0)
		if err != nil {
			return err
		}
		recv, rxPort = fns[0], p
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tx.Close(); rx.Close() })
	return recv, txPort, rxPort
}

func newTestSocket() *socket {
	return newSocket(conn.IdealBatchSize, new(atomic.Uint64), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// openPair opens two sockets on 192.0.2.1 in a fresh namespace.
func openPair(t *testing.T, gso, gro bool) (a, b *socket, recvB conn.ReceiveFunc, portA, portB uint16) {
	t.Helper()
	a, b = newTestSocket(), newTestSocket()
	recvB, portA, portB = openBinds(t, netnstest.New(t), a, b)
	a.gso.Store(gso && a.gso.Load())
	if !gro {
		var serr error
		if err := b.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 0) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		b.gro = false
	}
	if gso && !a.gso.Load() {
		t.Log("this kernel has no UDP GSO")
	}
	return a, b, recvB, portA, portB
}

// TestSocketRoundTrip sends batches through real sockets, with and without
// GSO and GRO, and checks that every datagram arrives whole, in order and
// from the sender's address.
func TestSocketRoundTrip(t *testing.T) {
	for _, mode := range []struct{ gso, gro bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		t.Run(fmt.Sprintf("gso=%v,gro=%v", mode.gso, mode.gro), func(t *testing.T) {
			a, b, recv, portA, portB := openPair(t, mode.gso, mode.gro)
			to, err := a.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), portB).String())
			if err != nil {
				t.Fatal(err)
			}
			for _, sizes := range [][]int{
				{0}, // an empty datagram: passed on for the backend to count
				{1}, // a batch of 1
				append(append(repeat(100, 1400), 700), repeat(27, 1400)...), // a full batch, one run broken
				repeat(128, 60), // a full batch of small datagrams
			} {
				var sent [][]byte
				for i, n := range sizes {
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(i + j)
					}
					sent = append(sent, p)
				}
				if err := a.Send(sent, to); err != nil {
					t.Fatal(err)
				}
				got, coalesced := receiveN(t, b, recv, len(sent))
				if len(sent) > 1 && mode.gso && mode.gro && a.gso.Load() && !coalesced {
					t.Error("no message came coalesced: GSO or GRO did not happen")
				}
				for i := range sent {
					if i >= len(got) {
						t.Fatalf("received %d of %d datagrams", len(got), len(sent))
					}
					if !bytes.Equal(got[i].data, sent[i]) {
						t.Fatalf("datagram %d: %d bytes, want %d (or contents differ)", i, len(got[i].data), len(sent[i]))
					}
					if want := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), portA); got[i].from != want {
						t.Fatalf("datagram %d from %s, want %s", i, got[i].from, want)
					}
				}
			}
		})
	}
}

// TestSocketCloseEndsReceive: a receive blocked on an idle socket returns
// net.ErrClosed when the socket closes, as the backend's Close relies on.
func TestSocketCloseEndsReceive(t *testing.T) {
	_, b, recv, _, _ := openPair(t, true, true)
	done := make(chan error, 1)
	go func() {
		bufs, sizes, free := buffers(b.BatchSize())
		defer free()
		_, err := recv(bufs, sizes, make([]conn.Endpoint, len(bufs)))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("receive returned %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("receive still blocked 2 s after Close")
	}
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// receiveN receives until n datagrams have arrived (5 s at most), and
// reports whether any message held more than one.
func receiveN(t *testing.T, b *socket, recv conn.ReceiveFunc, n int) (got []received, coalesced bool) {
	t.Helper()
	bufs, sizes, free := buffers(b.BatchSize())
	defer free()
	pkts := make([][]byte, len(bufs))
	for i := range bufs {
		pkts[i] = bufs[i][offset:]
	}
	eps := make([]conn.Endpoint, len(bufs))
	timer := time.AfterFunc(5*time.Second, func() { b.Close() })
	defer timer.Stop()
	for len(got) < n {
		k, err := recv(pkts, sizes, eps)
		if err != nil {
			t.Fatalf("receive after %d of %d datagrams: %v", len(got), n, err)
		}
		for i := range k {
			got = append(got, received{from: endpointAddr(eps[i]), data: append([]byte(nil), pkts[i][:sizes[i]]...)})
		}
		for i := range 2 {
			h := &b.recv.hdrs[i]
			if g := groSize(b.recv.oob[i*oobLen:], int(h.hdr.Controllen)); g > 0 && int(h.n) > g {
				coalesced = true
			}
		}
	}
	return got, coalesced
}

func TestGROSize(t *testing.T) {
	oob := make([]byte, 2*oobLen)
	if g := groSize(oob, 0); g != 0 {
		t.Errorf("no control data: %d", g)
	}
	// An unrelated option first, then UDP_GRO.
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	cm.Level, cm.Type = unix.SOL_IP, unix.IP_TOS
	cm.SetLen(unix.CmsgLen(1))
	next := unix.CmsgSpace(1)
	cm = (*unix.Cmsghdr)(unsafe.Pointer(&oob[next]))
	cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_GRO
	cm.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&oob[next+unix.CmsgLen(0)])) = 1400
	if g := groSize(oob, next+unix.CmsgSpace(4)); g != 1400 {
		t.Errorf("GRO size %d, want 1400", g)
	}
	// A length that runs past the data is not trusted.
	cm.SetLen(1000)
	if g := groSize(oob, next+unix.CmsgSpace(4)); g != 0 {
		t.Errorf("overlong option: GRO size %d, want 0", g)
	}
}

// BenchmarkSocket sends and receives a batch of 128 datagrams of 1422
// bytes (a split TSO super-packet: bulk traffic) and a single datagram of
// 60 bytes (request/response) through weft's socket and through
// wireguard-go's StdNetBind, side by side: compare with
// `go test -run - -bench Socket -benchmem ./internal/backend/udp/` (root).
func BenchmarkSocket(b *testing.B) {
	ns := netnstest.New(b)
	for _, bc := range []struct{ n, size int }{{conn.IdealBatchSize, 1422}, {1, 60}} {
		for _, impl := range []string{"weft", "wireguard-go"} {
			b.Run(fmt.Sprintf("%dx%d/%s", bc.n, bc.size, impl), func(b *testing.B) { benchSocket(b, ns, impl, bc.n, bc.size) })
		}
	}
}

func benchSocket(b *testing.B, ns, impl string, count, size int) {
	var tx, rx conn.Bind = newTestSocket(), newTestSocket()
	if impl != "weft" {
		tx, rx = conn.NewStdNetBind(), conn.NewStdNetBind()
	}
	recv, _, port := openBinds(b, ns, tx, rx)
	to, err := tx.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port).String())
	if err != nil {
		b.Fatal(err)
	}
	// As the data path sends them: packets in 64 KiB buffers
	// (wireguard-go coalesces into the first packet's spare room).
	obufs, _, ofree := buffers(conn.IdealBatchSize)
	defer ofree()
	out := make([][]byte, count)
	for i := range out {
		out[i] = obufs[i][offset : offset+size]
	}
	bufs, sizes, free := buffers(conn.IdealBatchSize)
	defer free()
	pkts := make([][]byte, len(bufs))
	for i := range bufs {
		pkts[i] = bufs[i][offset:]
	}
	eps := make([]conn.Endpoint, len(bufs))
	b.SetBytes(int64(count * size))
	b.ResetTimer()
	for range b.N {
		if err := tx.Send(out, to); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(out); {
			n, err := recv(pkts, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}
