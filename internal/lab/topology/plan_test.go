package topology

import (
	"net/netip"
	"testing"
)

func TestNodeAddr(t *testing.T) {
	for _, tc := range []struct {
		topo     string
		i, total int
		addr     string
		side     string
	}{
		{L2, 1, 3, "192.0.2.11", "a"},
		{L2, 3, 3, "192.0.2.13", "a"},
		{L3, 2, 4, "192.0.2.12", "a"},
		{L3, 3, 4, "198.51.100.13", "b"},
		{L3, 2, 3, "192.0.2.12", "a"},
		{L3, 3, 3, "198.51.100.13", "b"},
	} {
		a, side := NodeAddr(tc.topo, tc.i, tc.total)
		if a != netip.MustParseAddr(tc.addr) || side != tc.side {
			t.Errorf("NodeAddr(%s, %d, %d) = %s %s, want %s %s", tc.topo, tc.i, tc.total, a, side, tc.addr, tc.side)
		}
	}
}

func TestGatewayAndExt(t *testing.T) {
	if gw := Gateway(L2, "a"); gw.IsValid() {
		t.Errorf("l2 has no router, got gateway %s", gw)
	}
	for side, want := range map[string]string{"a": "192.0.2.1", "b": "198.51.100.1", "x": "203.0.113.1"} {
		if gw := Gateway(L3, side); gw != netip.MustParseAddr(want) {
			t.Errorf("l3 gateway of %s: %s, want %s", side, gw, want)
		}
	}
	if a, side := ExtAddr(L2); a != netip.MustParseAddr("192.0.2.254") || side != "a" {
		t.Errorf("l2 ext: %s %s", a, side)
	}
	if a, side := ExtAddr(L3); a != netip.MustParseAddr("203.0.113.10") || side != "x" {
		t.Errorf("l3 ext: %s %s", a, side)
	}
}

// TestPlan6: the IPv6 plan mirrors the IPv4 one host for host, inside
// 2001:db8::/32; the router has an IPv6 address per side only in a lab
// with IPv6.
func TestPlan6(t *testing.T) {
	doc := netip.MustParsePrefix("2001:db8::/32")
	for _, side := range []string{"a", "b", "x"} {
		if p := Prefix6(side); !doc.Contains(p.Addr()) || p.Bits() != 64 {
			t.Errorf("side %s: %s is not a /64 of 2001:db8::/32", side, p)
		}
	}
	h := Host{Name: "n1", Addr: netip.MustParseAddr("192.0.2.11"), Side: "a"}.WithIPv6()
	if h.Addr6 != netip.MustParseAddr("2001:db8:0:a::b") || len(h.Addrs()) != 2 || h.AddrOf(true) != h.Addr6 || h.AddrOf(false) != h.Addr {
		t.Errorf("n1: %v", h.Addrs())
	}
	if a, side := ExtAddr(L3); Mirror6(side, a) != netip.MustParseAddr("2001:db8:0:f::a") {
		t.Errorf("l3 ext's IPv6: %s", Mirror6(side, a))
	}
	if gws := Gateways(L3, "b", Dual); len(gws) != 2 || gws[1] != netip.MustParseAddr("2001:db8:0:b::1") {
		t.Errorf("l3 dual gateways of b: %v", gws)
	}
	if gws := Gateways(L3, "b", IPv4); len(gws) != 1 {
		t.Errorf("l3 ipv4 gateways of b: %v", gws)
	}
	if gws := Gateways(L2, "a", Dual); len(gws) != 0 {
		t.Errorf("l2 has no router: %v", gws)
	}
	if !doc.Contains(Network6.Addr()) || HasIPv4(IPv6) || !HasIPv4("") || !HasIPv6(Dual) || HasIPv6(IPv4) {
		t.Error("families")
	}
}
