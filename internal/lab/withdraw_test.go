package lab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestAwaitWithdrawal: node remove (Kubernetes mode) waits while the
// router's namespace routes one of the node's subnets, says so past its
// bound, and says how long it took once the route is gone; a lab without
// BGP waits for nothing.
func TestAwaitWithdrawal(t *testing.T) {
	ns := netnstest.New(t)
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	v4, v6 := netip.MustParsePrefix("10.244.7.0/24"), netip.MustParsePrefix("2001:db8:244:7::/64")
	routes := []*netlink.Route{}
	for _, p := range []netip.Prefix{v4, v6} {
		// ip -n NS route add blackhole P: a route to P, as BIRD's would be.
		r := &netlink.Route{Dst: netconv.IPNet(p), Type: unix.RTN_BLACKHOLE}
		if err := h.RouteAdd(r); err != nil {
			t.Fatalf("add blackhole route %s: %v", p, err)
		}
		routes = append(routes, r)
	}
	n := &Node{}
	n.Name = "n5"
	s := &State{Router: &router.Router{NS: ns}}
	ctx := context.Background()
	var b strings.Builder
	start := time.Now()
	s.awaitWithdrawal(ctx, &b, n, []netip.Prefix{v4, v6}, 300*time.Millisecond)
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second || !strings.Contains(b.String(), "still routes 10.244.7.0/24, 2001:db8:244:7::/64 300ms after n5's Node was deleted") {
		t.Errorf("with the routes there (%s): %q", d, b.String())
	}
	// The IPv4 route goes at once, the IPv6 one 300 ms later.
	if err := h.RouteDel(routes[0]); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := h.RouteDel(routes[1]); err != nil {
			t.Error(err)
		}
	}()
	b.Reset()
	start = time.Now()
	s.awaitWithdrawal(ctx, &b, n, []netip.Prefix{v4, v6}, 5*time.Second)
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second || !strings.Contains(b.String(), "n5 withdrew its routes when its Node was deleted: the router dropped 10.244.7.0/24, 2001:db8:244:7::/64 after 0.") {
		t.Errorf("with the routes going (%s): %q", d, b.String())
	}
	b.Reset()
	(&State{}).awaitWithdrawal(ctx, &b, n, []netip.Prefix{v4}, time.Second)
	if b.Len() != 0 {
		t.Errorf("a lab without BGP: %q", b.String())
	}
}
