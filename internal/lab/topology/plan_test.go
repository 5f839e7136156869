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
