package nflog

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary netlink message data: it must not panic,
// and what it accepts must be a consistent packet.
func FuzzParse(f *testing.F) {
	f.Add(message(f, 2, "weft-deny-in ", ipv4("10.244.0.1", "10.244.9.9", protoUDP, 0, nil, ports(40000, 53, 8))))
	f.Add(message(f, 2, "weft-deny-out ", ipv4("10.244.1.2", "10.244.2.3", protoTCP, 0, []byte{1, 1, 1, 0}, ports(51000, 80, 20))))
	f.Add(message(f, 10, "weft-deny-in ", ipv6("fd00::2", "fd00::3", protoHopOpts,
		cat([]byte{protoFragment, 0, 0, 0, 0, 0, 0, 0}, []byte{protoTCP, 0, 0, 1, 0, 0, 0, 9}, ports(33000, 443, 20)))))
	f.Add(message(f, 10, "", ipv6("fd00::2", "fd00::3", protoAH, cat([]byte{protoUDP, 1}, make([]byte, 10), ports(1, 2, 8)))))
	f.Add([]byte{2, 0, 0, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			if p != (Packet{}) {
				t.Errorf("Parse returned %+v with error %v", p, err)
			}
			return
		}
		if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
			t.Errorf("addresses %v, %v: want two of one family", p.Src, p.Dst)
		}
		if p.Src.Is4In6() || p.Src.Zone() != "" {
			t.Errorf("source %v: want a plain address", p.Src)
		}
		if p.Protocol == "" {
			t.Error("no protocol")
		}
		if strings.Contains(p.Prefix, "\x00") {
			t.Errorf("prefix %q holds a NUL", p.Prefix)
		}
		if (p.SrcPort != 0 || p.DstPort != 0) && !portful[p.Protocol] {
			t.Errorf("ports %d, %d for %s", p.SrcPort, p.DstPort, p.Protocol)
		}
	})
}

// FuzzParsePayload wraps an arbitrary prefix and payload in a well-formed
// message: Parse must return the prefix up to its first NUL and the
// addresses at their fixed offsets, and fail only for a payload too short
// for its IP header or of another IP version.
func FuzzParsePayload(f *testing.F) {
	f.Add("weft-deny-in ", ipv4("10.244.0.1", "10.244.9.9", protoUDP, 0, nil, ports(40000, 53, 8)))
	f.Add("weft-deny-out ", ipv4("10.244.0.1", "10.244.9.9", protoTCP, 8, nil, ports(1, 2, 20)))
	f.Add("x\x00y", ipv6("fd00::2", "fd00::3", protoDstOpts, cat([]byte{protoSCTP, 0, 0, 0, 0, 0, 0, 0}, ports(1, 2, 12))))
	f.Fuzz(func(t *testing.T, prefix string, payload []byte) {
		if payload == nil {
			payload = []byte{}
		}
		p, err := Parse(message(t, 2, prefix, payload))
		var src, dst netip.Addr
		ok := false
		switch {
		case len(payload) >= 20 && payload[0]>>4 == 4 && payload[0]&0xf >= 5:
			src, dst, ok = netip.AddrFrom4([4]byte(payload[12:16])), netip.AddrFrom4([4]byte(payload[16:20])), true
		case len(payload) >= 40 && payload[0]>>4 == 6:
			src, dst, ok = netip.AddrFrom16([16]byte(payload[8:24])), netip.AddrFrom16([16]byte(payload[24:40])), true
		}
		if !ok {
			if err == nil {
				t.Fatalf("Parse accepted %x as %+v", payload, p)
			}
			return
		}
		if err != nil {
			t.Fatalf("Parse(%x): %v", payload, err)
		}
		if want, _, _ := strings.Cut(prefix, "\x00"); p.Prefix != want {
			t.Errorf("prefix %q, want %q", p.Prefix, want)
		}
		if p.Src != src || p.Dst != dst {
			t.Errorf("addresses %v -> %v, want %v -> %v", p.Src, p.Dst, src, dst)
		}
	})
}

var portful = map[string]bool{"TCP": true, "UDP": true, "SCTP": true, "UDPLite": true, "DCCP": true}
