package firewall

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestRoutableTraffic: a pod (10.244.3.2) behind a node reaches two
// outside hosts that both route the pods back through the node (as routers
// that learned the pod subnets over BGP would); with the masquerade part
// that exempts 203.0.113.0/24, the host there sees the pod's own address,
// and the other (198.51.100.2) still the node's. The table read back with
// nft holds the exemption before the masquerade.
func TestRoutableTraffic(t *testing.T) {
	fw, node, _ := newFirewall(t, false)
	pod, ext, other := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	h, err := netns.Handle(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ph := vethTo(t, h, "vpod", "10.244.3.1/24", pod, "10.244.3.2/24")
	eh := vethTo(t, h, "vext", "203.0.113.1/24", ext, "203.0.113.2/24")
	oh := vethTo(t, h, "voth", "198.51.100.1/24", other, "198.51.100.2/24")
	// ip route add default via 10.244.3.1, in the pod; ip route add
	// 10.244.0.0/16 via the node, in each outside host.
	if err := ph.RouteAdd(&netlink.Route{Gw: netip.MustParseAddr("10.244.3.1").AsSlice()}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h  *netlink.Handle
		gw string
	}{{eh, "203.0.113.1"}, {oh, "198.51.100.1"}} {
		dst := netip.MustParsePrefix("10.244.0.0/16")
		if err := x.h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(16, 32)}, Gw: netip.MustParseAddr(x.gw).AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := netns.Do(node, func() error { // sysctl -w net.ipv4.ip_forward=1, in the node only
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	s := NewState(MasqueradeExcept(network, subnet, true, []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:0:f::/64")}))
	if err := fw.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	checkTable(t, node, s)
	got := tableOf(t, node, IPv4)[ChainPostrouting]
	if len(got) != 8 || got[5] != "ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return" {
		t.Errorf("postrouting: the exemption is not the rule before the masquerade: %q", got)
	}
	for _, x := range []struct {
		ns, addr string
		want     netip.Addr
	}{
		{ext, "203.0.113.2:0", netip.MustParseAddr("10.244.3.2")},      // routable: the pod's own address
		{other, "198.51.100.2:0", netip.MustParseAddr("198.51.100.1")}, // not: the node's
	} {
		addr, seen := serveIn(t, x.ns, x.addr)
		if err := dialFrom(pod, addr); err != nil {
			t.Fatalf("pod to %s: %v", addr, err)
		}
		select {
		case src := <-seen:
			if src != x.want {
				t.Errorf("%s saw %s, want %s", addr, src, x.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: no connection seen", addr)
		}
	}
}
