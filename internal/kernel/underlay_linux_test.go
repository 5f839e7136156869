package kernel_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netns"
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
	h, err := netns.Handle(n.ns)
	must(t, err)
	defer h.Close()
	// --iface-can-reach asks the kernel (`ip route get`): a route with its
	// own source address gives that address, not the first of the
	// gateway's network.
	must(t, n.k.ReplaceAddr(kernel.Addr{Dev: "eth0", Prefix: p("198.51.100.11/24")}))
	dst, err := netlink.ParseIPNet("203.0.113.0/24")
	must(t, err)
	eth0link, err := h.LinkByName("eth0")
	must(t, err)
	// `ip route add 203.0.113.0/24 via 192.0.2.1 dev eth0 src 198.51.100.11`
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: eth0link.Attrs().Index, Dst: dst, Gw: a("192.0.2.1").AsSlice(), Src: a("198.51.100.11").AsSlice()}))
	if u, err := kernel.FindUnderlay(n.k, kernel.UnderlayQuery{IPv4: true, CanReach: a("203.0.113.9")}); err != nil || u.Addr != a("198.51.100.11") {
		t.Errorf("can-reach by a route with its own source: %+v, %v; want 198.51.100.11", u, err)
	}
	// An address with a lifetime (as SLAAC or DHCP make it) reads as
	// dynamic, one past its preferred lifetime as deprecated; neither is
	// chosen over the permanent one, added after them.
	must(t, n.k.DeleteAddr(kernel.Addr{Dev: "eth0", Prefix: p("2001:db8:0:1::11/64")}))
	eth0, err := h.LinkByName("eth0")
	must(t, err)
	for addr, preferred := range map[string]int{"2001:db8:0:1::aa/64": 0, "2001:db8:0:1::bb/64": 300} {
		// `ip addr add ADDR dev eth0 nodad valid_lft 300 preferred_lft N`
		ipn, err := netlink.ParseIPNet(addr)
		must(t, err)
		must(t, h.AddrAdd(eth0, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD, ValidLft: 300, PreferedLft: preferred}))
	}
	must(t, n.k.ReplaceAddr(kernel.Addr{Dev: "eth0", Prefix: p("2001:db8:0:1::11/64")}))
	addrs, err := n.k.Addrs()
	must(t, err)
	flags := map[string]string{}
	for _, ad := range addrs {
		flags[ad.Prefix.String()] = fmt.Sprintf("dynamic=%t deprecated=%t", ad.Dynamic, ad.Deprecated)
	}
	for addr, want := range map[string]string{"2001:db8:0:1::aa/64": "dynamic=true deprecated=true",
		"2001:db8:0:1::bb/64": "dynamic=true deprecated=false", "2001:db8:0:1::11/64": "dynamic=false deprecated=false", "192.0.2.11/24": "dynamic=false deprecated=false"} {
		if flags[addr] != want {
			t.Errorf("%s reads %q, want %q", addr, flags[addr], want)
		}
	}
	if u, err := kernel.FindUnderlay(n.k, kernel.UnderlayQuery{IPv4: true, IPv6: true}); err != nil || u.Addr6 != a("2001:db8:0:1::11") {
		t.Errorf("with dynamic and deprecated addresses: %+v, %v; want 2001:db8:0:1::11", u, err)
	}
	// IPv6 only, an interface with only the kernel's link-local address:
	// eth0-peer is chosen by name, its fe80:: address as the last resort.
	// The kernel adds that address on its own after the link comes up:
	// on a busy machine it may not be there yet.
	q := kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth0-peer"}}
	u, err := kernel.FindUnderlay(n.k, q)
	for deadline := time.Now().Add(5 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		u, err = kernel.FindUnderlay(n.k, q)
	}
	if err != nil || !u.Addr6.IsLinkLocalUnicast() || u.Addr.IsValid() {
		t.Errorf("link-local only: %+v, %v", u, err)
	}
}
