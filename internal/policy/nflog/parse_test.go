package nflog

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
)

// ipv4 builds an IPv4 header (with opts, a multiple of 4 bytes) and l4.
func ipv4(src, dst string, proto uint8, fragOff uint16, opts, l4 []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, ihl, ihl+len(l4))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(b[6:8], fragOff)
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	copy(b[20:], opts)
	return append(b, l4...)
}

// ipv6 builds an IPv6 header whose next header is next, then rest (any
// extension headers and the upper layer).
func ipv6(src, dst string, next uint8, rest []byte) []byte {
	b := make([]byte, 40, 40+len(rest))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(rest)))
	b[6] = next
	b[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	return append(b, rest...)
}

// ports builds the first bytes of a TCP, UDP or SCTP header, padded to n.
func ports(src, dst uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:2], src)
	binary.BigEndian.PutUint16(b[2:4], dst)
	return b
}

// message builds the data of an NFULNL_MSG_PACKET message as the kernel
// sends it (__build_packet_message): nfgenmsg, NFULA_PACKET_HDR, the
// prefix when there is one, an interface index, the payload.
func message(t testing.TB, family uint8, prefix string, payload []byte) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(1, []byte{0x08, 0x00, 3, 0}) // NFULA_PACKET_HDR: hw_protocol, hook
	if prefix != "" {
		ae.String(attrPrefix, prefix) // NUL-terminated
	}
	ae.Uint32(5, 2) // NFULA_IFINDEX_OUTDEV
	if payload != nil {
		ae.Bytes(attrPayload, payload)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{family, 0, 0, 7}, b...)
}

func TestParse(t *testing.T) {
	hbh := append([]byte{protoFragment, 0}, make([]byte, 6)...) // hop-by-hop, 8 bytes, then a fragment header
	firstFrag := []byte{protoUDP, 0, 0x00, 0x01, 0, 0, 0, 1}    // offset 0, more fragments
	laterFrag := []byte{protoUDP, 0, 0x00, 0xa8, 0, 0, 0, 1}    // offset 21 (168 bytes)
	ah := append([]byte{protoTCP, 1}, make([]byte, 10)...)      // AH of (1+2)*4 = 12 bytes
	tests := []struct {
		name    string
		prefix  string
		payload []byte
		want    Packet
	}{{
		name:    "IPv4 UDP",
		prefix:  "weft-deny-in ",
		payload: ipv4("10.244.0.1", "10.244.9.9", protoUDP, 0, nil, ports(40000, 53, 8)),
		want:    Packet{"weft-deny-in ", ip("10.244.0.1"), ip("10.244.9.9"), "UDP", 40000, 53},
	}, {
		name:    "IPv4 TCP with options",
		prefix:  "weft-deny-out ",
		payload: ipv4("10.244.1.2", "10.244.2.3", protoTCP, 0, []byte{1, 1, 1, 0}, ports(51000, 8080, 20)),
		want:    Packet{"weft-deny-out ", ip("10.244.1.2"), ip("10.244.2.3"), "TCP", 51000, 8080},
	}, {
		name:    "IPv4 SCTP",
		prefix:  "weft-deny-in ",
		payload: ipv4("10.244.1.2", "10.244.2.3", protoSCTP, 0, nil, ports(5000, 5001, 12)),
		want:    Packet{"weft-deny-in ", ip("10.244.1.2"), ip("10.244.2.3"), "SCTP", 5000, 5001},
	}, {
		name:    "IPv4 ICMP has no ports",
		prefix:  "weft-deny-in ",
		payload: ipv4("10.244.1.2", "10.244.2.3", protoICMP, 0, nil, []byte{8, 0, 0xf7, 0xff, 0, 1, 0, 1}),
		want:    Packet{"weft-deny-in ", ip("10.244.1.2"), ip("10.244.2.3"), "ICMP", 0, 0},
	}, {
		name:    "IPv4 non-first fragment carries no ports",
		prefix:  "weft-deny-in ",
		payload: ipv4("10.244.1.2", "10.244.2.3", protoUDP, 185, nil, ports(1, 2, 8)),
		want:    Packet{"weft-deny-in ", ip("10.244.1.2"), ip("10.244.2.3"), "UDP", 0, 0},
	}, {
		name:    "IPv4 transport header cut by the copy range",
		prefix:  "weft-deny-in ",
		payload: ipv4("10.244.1.2", "10.244.2.3", protoTCP, 0, nil, []byte{0xc3, 0x50, 0x00}),
		want:    Packet{"weft-deny-in ", ip("10.244.1.2"), ip("10.244.2.3"), "TCP", 0, 0},
	}, {
		name:    "IPv4 GRE by number",
		payload: ipv4("10.244.1.2", "10.244.2.3", 47, 0, nil, ports(1, 2, 4)),
		want:    Packet{"", ip("10.244.1.2"), ip("10.244.2.3"), "47", 0, 0},
	}, {
		name:    "IPv6 UDP",
		prefix:  "weft-deny-in ",
		payload: ipv6("fd00:10:244::2", "fd00:10:244:1::3", protoUDP, ports(40000, 53, 8)),
		want:    Packet{"weft-deny-in ", ip("fd00:10:244::2"), ip("fd00:10:244:1::3"), "UDP", 40000, 53},
	}, {
		name:    "IPv6 TCP behind hop-by-hop and a first fragment",
		prefix:  "weft-deny-out ",
		payload: ipv6("fd00::2", "fd00::3", protoHopOpts, cat(hbh, []byte{protoTCP, 0, 0, 1, 0, 0, 0, 9}, ports(33000, 443, 20))),
		want:    Packet{"weft-deny-out ", ip("fd00::2"), ip("fd00::3"), "TCP", 33000, 443},
	}, {
		name:    "IPv6 UDP in a first fragment",
		payload: ipv6("fd00::2", "fd00::3", protoFragment, cat(firstFrag, ports(1000, 2000, 8))),
		want:    Packet{"", ip("fd00::2"), ip("fd00::3"), "UDP", 1000, 2000},
	}, {
		name:    "IPv6 non-first fragment carries no ports",
		payload: ipv6("fd00::2", "fd00::3", protoFragment, cat(laterFrag, ports(1000, 2000, 8))),
		want:    Packet{"", ip("fd00::2"), ip("fd00::3"), "UDP", 0, 0},
	}, {
		name:    "IPv6 TCP behind AH",
		payload: ipv6("fd00::2", "fd00::3", protoAH, cat(ah, ports(1000, 80, 20))),
		want:    Packet{"", ip("fd00::2"), ip("fd00::3"), "TCP", 1000, 80},
	}, {
		name:    "IPv6 ICMPv6",
		prefix:  "weft-deny-in ",
		payload: ipv6("fd00::2", "fd00::3", protoICMPv6, []byte{128, 0, 0, 0, 0, 1, 0, 1}),
		want:    Packet{"weft-deny-in ", ip("fd00::2"), ip("fd00::3"), "ICMPv6", 0, 0},
	}, {
		name:    "IPv6 extension header cut by the copy range",
		payload: ipv6("fd00::2", "fd00::3", protoDstOpts, []byte{protoUDP, 3, 0, 0}),
		want:    Packet{"", ip("fd00::2"), ip("fd00::3"), "UDP", 0, 0},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(message(t, 2, tt.prefix, tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	v4 := ipv4("10.244.0.1", "10.244.9.9", protoUDP, 0, nil, ports(1, 2, 8))
	badIHL := append([]byte(nil), v4...)
	badIHL[0] = 0x44
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"short nfgenmsg", "shorter than its nfgenmsg", []byte{2, 0}},
		{"no payload", "no payload", message(t, 2, "weft-deny-in ", nil)},
		{"empty payload", "empty packet", message(t, 2, "weft-deny-in ", []byte{})},
		{"IPv4 header cut", "IPv4 header of 19 bytes", message(t, 2, "", v4[:19])},
		{"IPv4 header length below 20", "IPv4 header length 16", message(t, 2, "", badIHL)},
		{"IPv6 header cut", "IPv6 header of 39 bytes", message(t, 10, "", ipv6("fd00::1", "fd00::2", protoUDP, nil)[:39])},
		{"IP version 5", "IP version 5", message(t, 2, "", append([]byte{0x50}, v4[1:]...))},
		{"attribute overruns the message", "attributes", append(message(t, 2, "", v4), 8, 0, 9, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.data)
			if err == nil {
				t.Fatalf("Parse = %+v, want an error saying %q", p, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %q, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestPacketString(t *testing.T) {
	p := Packet{"weft-deny-in ", ip("10.244.0.1"), ip("10.244.9.9"), "UDP", 40000, 53}
	if got, want := p.String(), "weft-deny-in UDP 10.244.0.1:40000 -> 10.244.9.9:53"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	p = Packet{"weft-deny-out ", ip("fd00::2"), ip("fd00::3"), "ICMPv6", 0, 0}
	if got, want := p.String(), "weft-deny-out ICMPv6 fd00::2 -> fd00::3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	p = Packet{"weft-deny-out ", ip("fd00::2"), ip("fd00::3"), "UDP", 1, 53}
	if got, want := p.String(), "weft-deny-out UDP [fd00::2]:1 -> [fd00::3]:53"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func cat(bs ...[]byte) []byte {
	var b []byte
	for _, x := range bs {
		b = append(b, x...)
	}
	return b
}
