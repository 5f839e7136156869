package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// superTCP builds what a TUN device with TSO hands over: one IPv4/TCP
// packet carrying n bytes, with the pseudo-header sum in the TCP checksum
// (the kernel's CHECKSUM_PARTIAL), and its virtio-net header.
func superTCP(n int, size uint16, flags byte) ([]byte, vnetHdr) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := tcpSegment("10.244.1.2", "10.244.2.2", 40000, 80, 1e6, flags, ts, data)
	binary.BigEndian.PutUint16(p[4:], 100) // IP ID
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], ^plainChecksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[36:], pseudo(p, len(p)-20))
	return p, vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: size, csumStart: 20, csumOffst: 16}
}

func join(d datagram) []byte { return append(bytes.Clone(d.head), d.body...) }

func TestSplitTCP(t *testing.T) {
	p, h := superTCP(4300, 1000, tcpACK|tcpPSH|0x01 /* FIN */)
	var s splitter
	ds, err := s.split(nil, p, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 5 {
		t.Fatalf("%d datagrams, want 5", len(ds))
	}
	hl := 20 + 32
	for i, d := range ds {
		q := join(d)
		if _, ok := ipv4(q); !ok {
			t.Fatalf("segment %d: not a well-formed IPv4 packet", i)
		}
		if !validTCP(q) {
			t.Errorf("segment %d: TCP checksum wrong", i)
		}
		want := 1000
		if i == 4 {
			want = 300
		}
		if len(q)-hl != want || !bytes.Equal(q[hl:], p[hl+i*1000:hl+i*1000+want]) {
			t.Errorf("segment %d: payload of %d bytes, or not the super-packet's", i, len(q)-hl)
		}
		if seq := binary.BigEndian.Uint32(q[24:]); seq != uint32(1e6+i*1000) {
			t.Errorf("segment %d: seq %d", i, seq)
		}
		if id := binary.BigEndian.Uint16(q[4:]); id != uint16(100+i) {
			t.Errorf("segment %d: IP ID %d", i, id)
		}
		last := i == 4
		if got := q[33]&(tcpPSH|0x01) != 0; got != last {
			t.Errorf("segment %d: FIN/PSH %v, want only on the last", i, got)
		}
	}
}

// TestSplitThenCoalesce: splitting on one node and coalescing on the
// other gives back the super-packet the sender's kernel made.
func TestSplitThenCoalesce(t *testing.T) {
	p, h := superTCP(4300, 1000, tcpACK|tcpPSH)
	orig := bytes.Clone(p)
	var s splitter
	ds, err := s.split(nil, p, h)
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for _, d := range ds {
		pkts = append(pkts, join(d))
	}
	got, vnet := coalesceOne(t, pkts)
	// The receiving side leaves the TCP checksum partial, as the sender's
	// kernel did, and the IP ID is the first segment's.
	if !bytes.Equal(got, orig) {
		t.Errorf("round trip differs:\n got %x\nwant %x", got[:60], orig[:60])
	}
	if binary.NativeEndian.Uint16(vnet[4:]) != h.gsoSize {
		t.Errorf("segment size %d, want %d", binary.NativeEndian.Uint16(vnet[4:]), h.gsoSize)
	}
}

func TestSplitUDP(t *testing.T) {
	data := make([]byte, 2500)
	for i := range data {
		data[i] = byte(i)
	}
	p := ipv4UDPPacket("10.244.1.2", "10.244.2.2")[:28]
	p = append(p, data...)
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[10:], ^plainChecksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
	var s splitter
	ds, err := s.split(nil, p, vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, gsoSize: 1000, csumStart: 20, csumOffst: 6})
	if err != nil || len(ds) != 3 {
		t.Fatalf("%d datagrams, %v", len(ds), err)
	}
	for i, d := range ds {
		q := join(d)
		if _, ok := ipv4(q); !ok {
			t.Fatalf("datagram %d: not a well-formed IPv4 packet", i)
		}
		if int(binary.BigEndian.Uint16(q[24:])) != len(q)-20 || sum(q[20:], pseudo(q, len(q)-20)) != 0xffff {
			t.Errorf("datagram %d: UDP length or checksum wrong", i)
		}
	}
}

func TestSplitCompletesChecksum(t *testing.T) {
	p := tcpSegment("10.244.1.2", "10.244.2.2", 1, 80, 0, tcpACK, nil, payload(333, 9))
	binary.BigEndian.PutUint16(p[36:], pseudo(p, len(p)-20)) // partial
	var s splitter
	ds, err := s.split(nil, p, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffst: 16})
	if err != nil || len(ds) != 1 || len(ds[0].body) != 0 || !validTCP(ds[0].head) {
		t.Fatalf("%d datagrams, %v, checksum valid %v", len(ds), err, len(ds) == 1 && validTCP(ds[0].head))
	}
}

func TestSplitRefuses(t *testing.T) {
	p, h := superTCP(3000, 1000, tcpACK)
	udp := ipv4UDPPacket("10.244.1.2", "10.244.2.2")
	for name, tc := range map[string]struct {
		p []byte
		h vnetHdr
	}{
		"TSO on a UDP packet":   {udp, h},
		"segment size 0":        {p, vnetHdr{gsoType: gsoTCPv4}},
		"IPv6 TSO":              {p, vnetHdr{gsoType: 4, gsoSize: 1000}},
		"checksum past the end": {udp, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffst: 100}},
		"TCP header under 20":   {append(bytes.Clone(p[:32]), 0x40, 0x10), h},
	} {
		var s splitter
		if _, err := s.split(nil, tc.p, tc.h); !errors.Is(err, errGSO) {
			t.Errorf("%s: %v, want errGSO", name, err)
		}
	}
}

// FuzzSplit feeds arbitrary packets and virtio-net headers to the
// splitter, as tunToUDP does after its IPv4 check: no panic, and every
// datagram a well-formed IPv4 packet.
func FuzzSplit(f *testing.F) {
	p, h := superTCP(3000, 1000, tcpACK)
	hdr := make([]byte, vnetHdrLen)
	hdr[0], hdr[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(hdr[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(hdr[6:], h.csumStart)
	binary.NativeEndian.PutUint16(hdr[8:], h.csumOffst)
	f.Add(hdr, p)
	f.Fuzz(func(t *testing.T, hdr, p []byte) {
		if len(hdr) < vnetHdrLen {
			return
		}
		if _, ok := ipv4(p); !ok {
			return
		}
		var s splitter
		ds, err := s.split(nil, p, parseVnetHdr(hdr))
		if err != nil {
			return
		}
		for i, d := range ds {
			if _, ok := ipv4(join(d)); !ok {
				t.Fatalf("datagram %d of %d is not a well-formed IPv4 packet", i, len(ds))
			}
		}
	})
}
