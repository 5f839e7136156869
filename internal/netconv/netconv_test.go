package netconv

import (
	"net"
	"net/netip"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"10.244.3.1/24", "10.244.0.0/16", "0.0.0.0/0", "2001:db8::1/64", "10.244.3.0/32"} {
		p := netip.MustParsePrefix(s)
		n := IPNet(p)
		if n.String() != s {
			t.Errorf("IPNet(%s) = %s", s, n)
		}
		back, ok := Prefix(n)
		if !ok || back != p {
			t.Errorf("Prefix(IPNet(%s)) = %s, %v", s, back, ok)
		}
	}
}

func TestPrefixUnmapsAndRejects(t *testing.T) {
	_, n, _ := net.ParseCIDR("192.0.2.0/24") // net keeps a 4-byte IP here
	n.IP = n.IP.To16()                       // the 16-byte form netlink may return
	n.Mask = net.CIDRMask(24, 32)
	if p, ok := Prefix(n); !ok || p != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("mapped form: %v %v", p, ok)
	}
	if _, ok := Prefix(nil); ok {
		t.Error("nil accepted")
	}
	if _, ok := Prefix(&net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(8, 32)}); ok {
		t.Error("3-byte IP accepted")
	}
	if a := Addr(net.ParseIP("192.0.2.1")); a != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("Addr = %v", a)
	}
	if a := Addr(nil); a.IsValid() {
		t.Errorf("Addr(nil) = %v", a)
	}
}
