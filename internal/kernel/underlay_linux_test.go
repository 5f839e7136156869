package kernel_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
)

// TestFindUnderlayNetlink: FindUnderlay over the real kernel in a fresh
// namespace, dual stack: eth0 of newTestNode with 2001:db8:0:1::11/64 and
// an IPv6 default route beside the kernel's own fe80:: address, which is
// neither chosen nor on link; --iface-regex on the IPv6 address and
// --iface-can-reach by the IPv6 default route find the same.
func TestFindUnderlayNetlink(t *testing.T) {
	n := newTestNode(t, true)
	must(t, n.k.ReplaceAddr(kernel.Addr{Dev: "eth0", Prefix: p("2001:db8:0:1::11/64")}))
	must(t, n.k.ReplaceRoute(kernel.Route{Dst: p("::/0"), Gw: a("2001:db8:0:1::1"), Dev: "eth0", Protocol: kernel.ProtoBoot}))
	want := kernel.Underlay{Name: "eth0", LinkIndex: n.eth0.Index, MTU: 1500, Addr: a("192.0.2.11"), Addr6: a("2001:db8:0:1::11"),
		OnLink: []netip.Prefix{p("192.0.2.0/24"), p("2001:db8:0:1::/64")}}
	for name, q := range map[string]kernel.UnderlayQuery{
		"default routes": {IPv4: true, IPv6: true},
		"regex":          {IPv4: true, IPv6: true, Regexes: []string{`^(192\.0\.2\.|2001:db8:0:1:)`}},
		"can-reach":      {IPv4: true, IPv6: true, CanReach: a("2001:db8:99::1")},
		"iface address":  {IPv4: true, IPv6: true, Ifaces: []string{"2001:db8:0:1::11"}},
	} {
		u, err := kernel.FindUnderlay(n.k, q)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(u, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, u, want)
		}
	}
	// IPv6 only, an interface with only the kernel's link-local address:
	// eth0-peer is chosen by name, its fe80:: address as the last resort.
	u, err := kernel.FindUnderlay(n.k, kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth0-peer"}})
	if err != nil || !u.Addr6.IsLinkLocalUnicast() || u.Addr.IsValid() {
		t.Errorf("link-local only: %+v, %v", u, err)
	}
}
