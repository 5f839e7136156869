// Package udp is the userspace backend: pod packets leave through the TUN
// device flannel0 and travel to the peer as the payload of one UDP datagram
// each (flannel's udp wire format, port 8285), moved in batches with
// offloads: wireguard-go's tun package creates the device (with the
// virtio-net header, TSO and USO); weft reads it, splits each super-packet
// into datagrams without copying the payload, sends and receives them with
// sendmmsg/recvmmsg and UDP GSO/GRO, and coalesces received TCP segments
// into super-packets again for the device.
//
// Only peers get in: a datagram whose source is not a current lease's
// PublicIP and port is dropped, and so is an inner packet whose source is
// outside the sending peer's subnet or whose destination is outside this
// node's.
//
// Where the node supports it (Datapath auto or bpf), the same format is
// made and taken apart in the kernel instead (bpf/udp.c): a tcx program on
// flannel0 encapsulates, an XDP program on the underlay decapsulates, and
// the agent's path above handles only what they pass on (ICMP errors,
// fragments, IP options).
package udp

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Overhead is what the outer IPv4 and UDP headers add.
const Overhead = 28

// table is an immutable snapshot of the peers; the data path reads it
// through an atomic pointer, so lease changes never pause traffic. Lookups
// are map accesses: the same cost with 5 or 5000 leases.
type table struct {
	own       netip.Prefix // this node's subnet
	gw        netip.Addr   // the address ICMP errors come from (flannel0's)
	subnetLen int
	bySubnet  map[netip.Prefix]netip.AddrPort // peer subnet -> its endpoint
	byPeer    map[netip.AddrPort]netip.Prefix // endpoint -> its subnet
}

func newTable(own netip.Prefix, gw netip.Addr, peers map[netip.Prefix]netip.AddrPort) *table {
	t := &table{own: own, gw: gw, subnetLen: own.Bits(), bySubnet: peers, byPeer: make(map[netip.AddrPort]netip.Prefix, len(peers))}
	for s, ep := range peers {
		t.byPeer[ep] = s
	}
	return t
}

// verdict is what the data path does with a packet.
type verdict int

const (
	forward     verdict = iota
	malformed           // not a well-formed IPv4 packet
	stranger            // datagram from an address:port that holds no lease
	spoofed             // inner source outside the sender's subnet
	misdirected         // inner destination outside this node's subnet
	unreachable         // no lease holds the destination: ICMP back
	expired             // TTL ran out: ICMP back
)

// ipv4 checks that p is one well-formed IPv4 packet (version, header
// length, total length, header checksum) and returns its header length.
func ipv4(p []byte) (hlen int, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, false
	}
	hlen = int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if hlen < 20 || total < hlen || total != len(p) {
		return 0, false
	}
	return hlen, sum(p[:hlen], 0) == 0xffff
}

func src(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(p[12:16])) }
func dst(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(p[16:20])) }

// outbound decides where a packet read from the TUN device goes. On
// forward it has decremented the TTL (patching the checksum) and returns the
// peer's endpoint.
func (t *table) outbound(p []byte) (netip.AddrPort, verdict) {
	if _, ok := ipv4(p); !ok {
		return netip.AddrPort{}, malformed
	}
	ep, ok := t.bySubnet[netip.PrefixFrom(dst(p), t.subnetLen).Masked()]
	if !ok {
		return netip.AddrPort{}, unreachable
	}
	if p[8] <= 1 {
		return netip.AddrPort{}, expired
	}
	// TTL is the high byte of the 16-bit word at offset 8: decrementing it
	// adds 0x0100 to the one's-complement checksum (RFC 1624).
	p[8]--
	sum := uint32(binary.BigEndian.Uint16(p[10:12])) + 0x0100
	sum = (sum & 0xffff) + (sum >> 16)
	binary.BigEndian.PutUint16(p[10:12], uint16(sum))
	return ep, forward
}

// inbound decides whether a datagram's payload from from may enter the TUN
// device.
func (t *table) inbound(from netip.AddrPort, p []byte) verdict {
	subnet, ok := t.byPeer[netip.AddrPortFrom(from.Addr().Unmap(), from.Port())]
	if !ok {
		return stranger
	}
	if _, ok := ipv4(p); !ok {
		return malformed
	}
	if !subnet.Contains(src(p)) {
		return spoofed
	}
	if !t.own.Contains(dst(p)) {
		return misdirected
	}
	return forward
}

// icmpError builds the ICMP error (type, code) answering packet p, from
// t.gw to p's source: the original header and 8 bytes of payload, as
// RFC 792 asks. It returns nil for packets that must not be answered.
func (t *table) icmpError(p []byte, typ, code byte) []byte {
	hlen, ok := ipv4(p)
	if !ok || p[9] == 1 && len(p) > hlen && p[hlen] != 8 && p[hlen] != 0 {
		return nil // never answer an ICMP error with another
	}
	quote := min(len(p), hlen+8)
	n := 20 + 8 + quote
	out := make([]byte, n)
	out[0] = 0x45
	binary.BigEndian.PutUint16(out[2:4], uint16(n))
	out[8] = 64 // TTL
	out[9] = 1  // ICMP
	gw := t.gw.As4()
	copy(out[12:16], gw[:])
	copy(out[16:20], p[12:16])
	binary.BigEndian.PutUint16(out[10:12], ^sum(out[:20], 0))
	icmp := out[20:]
	icmp[0], icmp[1] = typ, code
	copy(icmp[8:], p[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], ^sum(icmp, 0))
	return out
}

// ICMP types and codes used.
const (
	icmpUnreachable    = 3
	icmpNetUnreachable = 0
	icmpTimeExceeded   = 11
	icmpTTLExceeded    = 0
)

// sum is the Internet checksum's one's-complement sum of b (not inverted),
// added to initial, eight bytes at a time. One's-complement addition does
// not care about byte order, so it adds little-endian words and swaps the
// folded result; b must start at an even offset of its packet.
func sum(b []byte, initial uint16) uint16 {
	var s, c, t, d uint64
	for len(b) >= 64 { // two carry chains: about a fifth faster than one
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		t, d = bits.Add64(t, binary.LittleEndian.Uint64(b[32:]), d)
		t, d = bits.Add64(t, binary.LittleEndian.Uint64(b[40:]), d)
		t, d = bits.Add64(t, binary.LittleEndian.Uint64(b[48:]), d)
		t, d = bits.Add64(t, binary.LittleEndian.Uint64(b[56:]), d)
		b = b[64:]
	}
	s, c = bits.Add64(s, t, c)
	s, c = bits.Add64(s, d, c)
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) > 0 {
		var t [8]byte
		copy(t[:], b)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(t[:]), c)
	}
	s, c = bits.Add64(s, c, 0)
	s += c
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	v := uint32(bits.ReverseBytes16(uint16(s))) + uint32(initial)
	v = v&0xffff + v>>16
	return uint16(v)
}

// pseudo is the one's-complement sum of an IPv4 packet's TCP or UDP
// pseudo-header for a transport length of n bytes.
func pseudo(p []byte, n int) uint16 {
	v := uint32(binary.BigEndian.Uint16(p[12:])) + uint32(binary.BigEndian.Uint16(p[14:])) +
		uint32(binary.BigEndian.Uint16(p[16:])) + uint32(binary.BigEndian.Uint16(p[18:])) +
		uint32(p[9]) + uint32(n)
	v = v&0xffff + v>>16
	v = v&0xffff + v>>16
	return uint16(v)
}
