package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// plainChecksum is the Internet checksum's one's-complement sum, 16 bits
// at a time as RFC 1071 writes it: the reference sum is checked against,
// and what the tests build their packets with.
func plainChecksum(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestSumMatchesPlainChecksum(t *testing.T) {
	// Every length up to a jumbo segment's, each with random bytes and a
	// random initial value; all-ones bytes test the carries.
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 1600 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
			if n%7 == 0 {
				b[i] = 0xff
			}
		}
		init := uint16(r.Uint32())
		if got, want := sum(b, init), plainChecksum(b, uint32(init)); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("%d bytes: sum %#04x, plain checksum %#04x", n, got, want)
		}
	}
}

// tcpSegment builds a TCP/IPv4 packet with valid checksums.
func tcpSegment(src, dst string, sport, dport uint16, seq uint32, flags byte, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	p := make([]byte, 20+hl+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^plainChecksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint32(p[24:], seq)
	binary.BigEndian.PutUint32(p[28:], 777)
	p[32], p[33] = byte(hl/4)<<4, flags
	binary.BigEndian.PutUint16(p[34:], 512)
	copy(p[40:], opts)
	copy(p[20+hl:], payload)
	binary.BigEndian.PutUint16(p[36:], ^plainChecksum(p[20:], uint32(pseudo(p, len(p)-20))))
	return p
}

func payload(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

// runs renders a plan as the batch indices of each run.
func runs(rs []run) string {
	var b bytes.Buffer
	for _, r := range rs {
		fmt.Fprintf(&b, "[%d", r.first)
		for _, k := range r.more {
			fmt.Fprintf(&b, " %d", k)
		}
		b.WriteString("]")
	}
	return b.String()
}

func TestCoalescerPlan(t *testing.T) {
	const a, b = "10.244.2.2", "10.244.1.2"
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
	seg := func(sport uint16, seq uint32, flags byte, n int) []byte {
		return tcpSegment(a, b, sport, 80, seq, flags, ts, payload(n, byte(seq)))
	}
	bad := seg(1, 3000, tcpACK, 1000)
	bad[len(bad)-1] ^= 0xff
	otherOpts := tcpSegment(a, b, 1, 80, 2000, tcpACK, []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 2}, payload(1000, 1))
	udp := ipv4UDPPacket(a, b)
	for _, tc := range []struct {
		name string
		pkts [][]byte
		want string
	}{
		{"one flow, shorter last", [][]byte{seg(1, 0, tcpACK, 1000), seg(1, 1000, tcpACK, 1000), seg(1, 2000, tcpACK, 500)}, "[0 1 2]"},
		{"shorter segment ends the run", [][]byte{seg(1, 0, tcpACK, 1000), seg(1, 1000, tcpACK, 500), seg(1, 1500, tcpACK, 1000)}, "[0 1][2]"},
		{"PSH ends the run", [][]byte{seg(1, 0, tcpACK, 1000), seg(1, 1000, tcpACK|tcpPSH, 1000), seg(1, 2000, tcpACK, 1000)}, "[0 1][2]"},
		{"PSH first stands alone", [][]byte{seg(1, 0, tcpACK|tcpPSH, 1000), seg(1, 1000, tcpACK, 1000)}, "[0][1]"},
		{"two flows interleaved", [][]byte{seg(1, 0, tcpACK, 1000), seg(2, 50, tcpACK, 1000), seg(1, 1000, tcpACK, 1000), seg(2, 1050, tcpACK, 1000)}, "[0 2][1 3]"},
		{"sequence gap", [][]byte{seg(1, 0, tcpACK, 1000), seg(1, 2000, tcpACK, 1000), seg(1, 3000, tcpACK, 1000)}, "[0][1 2]"},
		{"bad checksum never joins", [][]byte{seg(1, 2000, tcpACK, 1000), bad, seg(1, 4000, tcpACK, 1000)}, "[0][1][2]"},
		{"options differ", [][]byte{seg(1, 1000, tcpACK, 1000), otherOpts}, "[0][1]"},
		{"SYN and UDP stand alone", [][]byte{seg(1, 0, 0x02, 0)[:52], udp, seg(1, 0, tcpACK, 1000)}, "[0][1][2]"},
		{"FIN stands alone", [][]byte{seg(1, 0, tcpACK, 1000), seg(1, 1000, tcpACK|0x01, 1000)}, "[0][1]"},
		{"no payload stands alone", [][]byte{seg(1, 0, tcpACK, 0), seg(1, 0, tcpACK, 1000)}, "[0][1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c coalescer
			if got := runs(c.plan(tc.pkts)); got != tc.want {
				t.Errorf("runs %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCoalescerLimits(t *testing.T) {
	var c coalescer
	// 70 segments of 1400 bytes: 46 fit in 65535 bytes with their headers.
	var pkts [][]byte
	for i := range 70 {
		pkts = append(pkts, tcpSegment("10.244.2.2", "10.244.1.2", 1, 80, uint32(i*1400), tcpACK, nil, payload(1400, byte(i))))
	}
	rs := c.plan(pkts)
	if len(rs) != 2 || 1+len(rs[0].more) != 46 || rs[0].total > 0xffff {
		t.Fatalf("runs %s (first %d bytes)", runs(rs), rs[0].total)
	}
	// More flows than are kept open: a new one closes the oldest.
	pkts = pkts[:0]
	flow := func(f int, seq uint32) []byte {
		return tcpSegment("10.244.2.2", "10.244.1.2", uint16(100+f), 80, seq, tcpACK, nil, payload(100, 1))
	}
	for f := range maxOpen + 1 {
		pkts = append(pkts, flow(f, 0))
	}
	for f := 1; f <= maxOpen; f++ {
		pkts = append(pkts, flow(f, 100))
	}
	pkts = append(pkts, flow(0, 100))
	rs = c.plan(pkts)
	want := "[0]"
	for f := 1; f <= maxOpen; f++ {
		want += fmt.Sprintf("[%d %d]", f, maxOpen+f)
	}
	want += fmt.Sprintf("[%d]", 2*maxOpen+1)
	if got := runs(rs); got != want {
		t.Errorf("%d flows: runs %s, want %s", maxOpen+1, got, want)
	}
}

func ipv4UDPPacket(src, dst string) []byte {
	p := make([]byte, 28+10)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

// coalesceOne plans pkts, which must make one run, and returns the
// super-packet as the TUN device would get it, and its virtio-net header.
func coalesceOne(t *testing.T, pkts [][]byte) (sp, vnet []byte) {
	t.Helper()
	var c coalescer
	rs := c.plan(pkts)
	if len(rs) != 1 {
		t.Fatalf("runs %s, want one", runs(rs))
	}
	vnet = make([]byte, vnetHdrLen)
	superPacket(pkts, &rs[0], vnet)
	hl := 20 + int(pkts[0][32]>>4)*4
	sp = bytes.Clone(pkts[0])
	for _, k := range rs[0].more {
		sp = append(sp, pkts[k][hl:]...)
	}
	if len(sp) != rs[0].total {
		t.Fatalf("super-packet of %d bytes, run total %d", len(sp), rs[0].total)
	}
	return sp, vnet
}

// TestSuperPacket builds a super-packet and splits it again as the
// kernel's TSO does: the segments must come back as they were sent.
func TestSuperPacket(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	var orig, pkts [][]byte
	for i := range 5 {
		n, flags := 1000, byte(tcpACK)
		if i == 4 {
			n, flags = 300, tcpACK|tcpPSH
		}
		p := tcpSegment("10.244.2.2", "10.244.1.2", 1, 80, uint32(5000+i*1000), flags, ts, payload(n, byte(i)))
		orig = append(orig, bytes.Clone(p))
		pkts = append(pkts, p)
	}
	sp, vnet := coalesceOne(t, pkts)
	hl := 20 + len(ts) + 20
	if int(binary.BigEndian.Uint16(sp[2:])) != len(sp) {
		t.Fatalf("IP length %d, super-packet %d bytes", binary.BigEndian.Uint16(sp[2:]), len(sp))
	}
	if sum(sp[:20], 0) != 0xffff {
		t.Error("IP header checksum is wrong")
	}
	if vnet[0] != vnetNeedsCsum || vnet[1] != vnetGSOTCPv4 || binary.NativeEndian.Uint16(vnet[2:]) != uint16(hl) ||
		binary.NativeEndian.Uint16(vnet[4:]) != 1000 || binary.NativeEndian.Uint16(vnet[6:]) != 20 || binary.NativeEndian.Uint16(vnet[8:]) != 16 {
		t.Errorf("virtio-net header %v", vnet)
	}
	// Segment as the kernel would: headers of the first, sequence numbers
	// advanced, PSH on the last only, checksums completed.
	for i, want := range orig {
		off := hl + i*1000
		end := min(off+1000, len(sp))
		s := append(bytes.Clone(sp[:hl]), sp[off:end]...)
		binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
		s[10], s[11] = 0, 0
		binary.BigEndian.PutUint16(s[10:], ^sum(s[:20], 0))
		binary.BigEndian.PutUint32(s[24:], binary.BigEndian.Uint32(sp[24:])+uint32(i*1000))
		if i < len(orig)-1 {
			s[33] &^= tcpPSH
		}
		// The partial checksum holds the pseudo-header sum for the whole
		// length: the kernel swaps in the segment's length, then sums the
		// segment over it.
		v := uint32(binary.BigEndian.Uint16(sp[36:])) + uint32(^uint16(len(sp)-20)) + uint32(len(s)-20)
		v = v&0xffff + v>>16
		v = v&0xffff + v>>16
		binary.BigEndian.PutUint16(s[36:], uint16(v))
		binary.BigEndian.PutUint16(s[36:], ^sum(s[20:], 0))
		if !bytes.Equal(s, want) {
			t.Fatalf("segment %d differs after a round trip:\n got %x\nwant %x", i, s[:hl+4], want[:hl+4])
		}
	}
}

// FuzzCoalescer feeds arbitrary batches to the planner and the header
// rewrite: no panic, every packet in exactly one run, in order, and no
// super-packet longer than an IPv4 packet can be.
func FuzzCoalescer(f *testing.F) {
	f.Add(tcpSegment("10.244.2.2", "10.244.1.2", 1, 80, 0, tcpACK, nil, payload(100, 1)), tcpSegment("10.244.2.2", "10.244.1.2", 1, 80, 100, tcpACK, nil, payload(100, 1)), uint8(3))
	f.Fuzz(func(t *testing.T, a, b []byte, n uint8) {
		var pkts [][]byte
		for i := range int(n%16) + 1 {
			if i%2 == 0 {
				pkts = append(pkts, bytes.Clone(a))
			} else {
				pkts = append(pkts, bytes.Clone(b))
			}
		}
		var c coalescer
		seen := map[int]bool{}
		last := -1
		for _, r := range c.plan(pkts) {
			if r.first <= last {
				t.Fatalf("run starts at %d after %d", r.first, last)
			}
			last = r.first
			prev := r.first
			for _, k := range append([]int{r.first}, r.more...) {
				if seen[k] || k < prev {
					t.Fatalf("packet %d twice or out of order", k)
				}
				seen[k], prev = true, k
			}
			if len(r.more) > 0 {
				if r.total > 0xffff {
					t.Fatalf("super-packet of %d bytes", r.total)
				}
				superPacket(pkts, &r, make([]byte, vnetHdrLen))
			}
		}
		if len(seen) != len(pkts) {
			t.Fatalf("%d of %d packets planned", len(seen), len(pkts))
		}
	})
}
