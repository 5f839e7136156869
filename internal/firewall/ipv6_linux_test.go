package firewall

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestApplyIPv6InNamespace writes the dual-stack masquerade and forward
// parts into a fresh namespace, fully random and not, and reads table ip6
// weft back with the nft binary; nft checks the rendered text too. The
// forward accepts also go into ip6tables' FORWARD, as into iptables'.
func TestApplyIPv6InNamespace(t *testing.T) {
	fw, name, _ := newFirewall(t, true)
	ctx := context.Background()
	for _, random := range []bool{true, false} {
		s := NewState(MasqueradeRandom(network, subnet, random), Forward(network), MasqueradeRandom(network6, subnet6, random), Forward(network6))
		for range 2 {
			if err := fw.Apply(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		checkTable(t, name, s)
		nftCheck(t, name, s, Observed{})
	}
	if onPath("iptables-save") && onPath("ip6tables") && onPath("ip6tables-save") && onPath("ip6tables-restore") {
		got := inNS(t, name, "ip6tables", "-S", "WEFT-FWD")
		want := "-N WEFT-FWD\n" +
			`-A WEFT-FWD -s 2001:db8:244::/48 -m comment --comment "weft forward" -j ACCEPT` + "\n" +
			`-A WEFT-FWD -d 2001:db8:244::/48 -m comment --comment "weft forward" -j ACCEPT` + "\n"
		if got != want {
			t.Errorf("ip6tables -S WEFT-FWD:\n%s\nwant\n%s", got, want)
		}
		if got := inNS(t, name, "ip6tables", "-S", "FORWARD"); !strings.Contains(got, wantJump) {
			t.Errorf("ip6tables -S FORWARD:\n%s", got)
		}
	}
	// IPv6 alone: table ip weft and iptables' chain go.
	v6 := NewState(Masquerade(network6, subnet6), Forward(network6))
	if err := fw.Apply(ctx, v6); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, v6)
	if out, err := netns.Command(name, "iptables", "-S", "WEFT-FWD").CombinedOutput(); err == nil {
		t.Errorf("iptables' WEFT-FWD still there with IPv4 off:\n%s", out)
	}
	if err := fw.Apply(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, State{})
}

// TestMasqueradeIPv6Traffic: a pod (2001:db8:244:3::2) behind a node
// reaches an outside host (2001:db8:0:1::2) that has no route back to the
// pods only with the IPv6 masquerade part, and the outside host sees the
// node's address (2001:db8:0:1::1) as the source.
func TestMasqueradeIPv6Traffic(t *testing.T) {
	fw, node, _ := newFirewall(t, false)
	pod, ext := netnstest.New(t), netnstest.New(t)
	h, err := netns.Handle(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ph := vethTo(t, h, "vpod", "2001:db8:244:3::1/64", pod, "2001:db8:244:3::2/64")
	vethTo(t, h, "vext", "2001:db8:0:1::1/64", ext, "2001:db8:0:1::2/64")
	// ip -6 route add default via 2001:db8:244:3::1, in the pod; the
	// outside host has no route to the pods.
	if err := ph.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: net.ParseIP("2001:db8:244:3::1")}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(node, func() error { // sysctl -w net.ipv6.conf.all.forwarding=1, in the node only
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	addr, seen := serveIn(t, ext, "[2001:db8:0:1::2]:0")
	dial := func() error { return dialFrom(pod, addr) }
	if dial() == nil {
		t.Fatal("the pod reaches the outside host without masquerade: the test proves nothing")
	}
	if err := fw.Apply(context.Background(), NewState(Masquerade(network6, subnet6))); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("pod to the outside with the IPv6 masquerade: %v", err)
	}
	select {
	case src := <-seen:
		if src != netip.MustParseAddr("2001:db8:0:1::1") {
			t.Errorf("the outside host saw %s, want the node's 2001:db8:0:1::1", src)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no connection seen")
	}
}
