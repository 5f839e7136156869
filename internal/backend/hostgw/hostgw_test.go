package hostgw

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

func TestPlanSkipsPeersThatAreNotOnLink(t *testing.T) {
	u := kernel.Underlay{Name: "eth0", LinkIndex: 2, OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	mk := func(subnet, ip, typ string) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
	}
	own := mk("10.244.1.0/24", "192.0.2.1", "host-gw")
	st := backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{
		own,
		mk("10.244.2.0/24", "192.0.2.2", "host-gw"),
		mk("10.244.3.0/24", "198.51.100.3", "host-gw"),
		mk("10.244.4.0/24", "192.0.2.4", "vxlan"), // another backend: ignored
	}}
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, Up: true})
	if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix("192.0.2.1/24")}); err != nil {
		t.Fatal(err)
	}
	u.Addr = netip.MustParseAddr("192.0.2.1")
	f.Writes()
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: st.Network})
	if err != nil {
		t.Fatal(err)
	}
	d := b.Plan(st)
	if got := f.Writes(); got != "" {
		t.Errorf("Plan wrote to the kernel:\n%s", got)
	}
	p, skipped := d.Entries, d.Skipped
	want := kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.0.2.2"), Dev: "eth0"}
	wantScope := kernel.Scope{Networks: []netip.Prefix{st.Network}, Own: []netip.Prefix{own.Subnet}, RouteDevs: []string{"eth0"}}
	if len(d.Devices) != 0 || len(p.Neighs)+len(p.FDB) != 0 || !reflect.DeepEqual(d.Scope, wantScope) {
		t.Errorf("devices %+v, entries %+v, scope %+v; want none, routes only, %+v", d.Devices, p, d.Scope, wantScope)
	}
	if len(p.Routes) != 1 || p.Routes[0] != want {
		t.Errorf("routes %v, want [%v]", p.Routes, want)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "198.51.100.3") || !strings.Contains(skipped[0], "not on-link") {
		t.Errorf("skipped %v", skipped)
	}
}

func TestApplyOnFake(t *testing.T) {
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:c0:00:02:01", Up: true})
	if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix("192.0.2.1/24")}); err != nil {
		t.Fatal(err)
	}
	// A route left by an earlier run, for a subnet no lease holds.
	if err := f.ReplaceRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Gw: netip.MustParseAddr("192.0.2.9"), Dev: eth0.Name}); err != nil {
		t.Fatal(err)
	}
	f.Writes()
	u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(subnet, ip string) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: Type}}
	}
	own := mk("10.244.1.0/24", "192.0.2.1")
	st := backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{own, mk("10.244.2.0/24", "192.0.2.2")}}
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: st.Network})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := b.Apply(ctx, b.Plan(st))
	if err != nil {
		t.Fatal(err)
	}
	want := "ip route replace 10.244.2.0/24 via 192.0.2.2 dev eth0\nip route del 10.244.9.0/24 via 192.0.2.9 dev eth0\n"
	if got := f.Writes(); got != want || rep.Added != 1 || rep.Removed != 1 {
		t.Errorf("apply: %+v\n%s\nwant\n%s", rep, got, want)
	}
	// The route deleted by hand comes back; nothing else is written.
	if err := f.DeleteRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	f.Writes()
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	if got := f.Writes(); got != "ip route replace 10.244.2.0/24 via 192.0.2.2 dev eth0\n" {
		t.Errorf("after the route was deleted by hand:\n%s", got)
	}
	// A context that has ended: no write.
	if err := f.DeleteRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	f.Writes()
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Apply(done, b.Plan(st)); !errors.Is(err, context.Canceled) {
		t.Errorf("apply with an ended context: %v", err)
	}
	if got := f.Writes(); got != "" {
		t.Errorf("apply with an ended context wrote:\n%s", got)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
}

// dualNode is a fake kernel with eth0 holding 192.0.2.1/24,
// 2001:db8:0:1::1/64 and a link-local address, and the underlay over it of
// both families.
func dualNode(t *testing.T) (*kerneltest.Fake, kernel.Underlay) {
	t.Helper()
	f := kerneltest.New()
	u, err := f.AddUnderlay("192.0.2.1/24", "2001:db8:0:1::1/64", "fe80::1/64")
	if err != nil {
		t.Fatal(err)
	}
	return f, u
}

func dualLease(v4, v6, ip, ip6 string) lease.Lease {
	var l lease.Lease
	if v4 != "" {
		l.Subnet = netip.MustParsePrefix(v4)
	}
	if v6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(v6)
	}
	l.Attrs = lease.Attrs{PublicIP: netip.MustParseAddr(ip), PublicIPv6: netip.MustParseAddr(ip6), BackendType: Type}
	return l
}

// TestApplyDualAndIPv6OnlyOnFake: routes of each enabled family via the
// peers' public address of that family; an IPv6 peer off the link is
// skipped; in an IPv6-only cluster (PublicIP 0.0.0.0 everywhere) only
// IPv6 routes.
func TestApplyDualAndIPv6OnlyOnFake(t *testing.T) {
	network, network6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8:244::/48")
	for _, tc := range []struct {
		name     string
		v4       bool
		peers    []lease.Lease
		own      lease.Lease
		want     string
		skipped  int
		wantNets []netip.Prefix
	}{
		{
			name: "dual", v4: true,
			own: dualLease("10.244.1.0/24", "2001:db8:244:1::/64", "192.0.2.1", "2001:db8:0:1::1"),
			peers: []lease.Lease{
				dualLease("10.244.2.0/24", "2001:db8:244:2::/64", "192.0.2.2", "2001:db8:0:1::2"),
				dualLease("10.244.3.0/24", "2001:db8:244:3::/64", "192.0.2.3", "2001:db8:0:2::3"), // IPv6 off-link
			},
			want: `ip route replace 10.244.2.0/24 via 192.0.2.2 dev eth0
ip route replace 10.244.3.0/24 via 192.0.2.3 dev eth0
ip route replace 2001:db8:244:2::/64 via 2001:db8:0:1::2 dev eth0
`,
			skipped: 1, wantNets: []netip.Prefix{network, network6},
		},
		{
			name: "IPv6-only",
			own:  dualLease("", "2001:db8:244:1::/64", "0.0.0.0", "2001:db8:0:1::1"),
			peers: []lease.Lease{
				dualLease("", "2001:db8:244:2::/64", "0.0.0.0", "2001:db8:0:1::2"),
				dualLease("", "2001:db8:244:4::/64", "0.0.0.0", "2001:db8:0:1::4"),
			},
			want: `ip route replace 2001:db8:244:2::/64 via 2001:db8:0:1::2 dev eth0
ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::4 dev eth0
`,
			wantNets: []netip.Prefix{network6},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, u := dualNode(t)
			env := backend.Env{Kernel: f, Underlay: u, IPv6Network: network6}
			st := backend.NodeState{IPv6Network: network6, Own: tc.own, Peers: append([]lease.Lease{tc.own}, tc.peers...)}
			if tc.v4 {
				env.Network, st.Network = network, network
			} else {
				env.Underlay.Addr = netip.Addr{}
			}
			b, err := New(env)
			if err != nil {
				t.Fatal(err)
			}
			d := b.Plan(st)
			if !reflect.DeepEqual(d.Scope.Networks, tc.wantNets) || len(d.Skipped) != tc.skipped {
				t.Errorf("scope networks %v, skipped %q", d.Scope.Networks, d.Skipped)
			}
			if _, err := b.Apply(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			if got := f.Writes(); got != tc.want {
				t.Errorf("apply:\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestNewRefusesAPublicIPNotOnTheInterface: as flannel ("probably you're
// on a NAT"), in either family, with a message naming the interface's
// addresses and what to do.
func TestNewRefusesAPublicIPNotOnTheInterface(t *testing.T) {
	f, u := dualNode(t)
	network, network6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8:244::/48")
	if _, err := New(backend.Env{Kernel: f, Underlay: u, Network: network, IPv6Network: network6}); err != nil {
		t.Fatalf("the interface's own addresses: %v", err)
	}
	nat := u
	nat.Addr = netip.MustParseAddr("203.0.113.9")
	_, err := New(backend.Env{Kernel: f, Underlay: nat, Network: network})
	want := "host-gw: public IP 203.0.113.9 is not an address of eth0 (it has 192.0.2.1/24): probably a NAT address, which host-gw cannot route to (flannel refuses it too); set --public-ip to eth0's address, or drop it and the public-ip-overwrite annotation, or use the vxlan backend"
	if err == nil || err.Error() != want {
		t.Errorf("NAT IPv4 address: %v\nwant %s", err, want)
	}
	nat = u
	nat.Addr6 = netip.MustParseAddr("2001:db8:ffff::9")
	if _, err := New(backend.Env{Kernel: f, Underlay: nat, Network: network, IPv6Network: network6}); err == nil ||
		!strings.Contains(err.Error(), "public IP 2001:db8:ffff::9 is not an address of eth0 (it has 2001:db8:0:1::1/64, fe80::1/64)") ||
		!strings.Contains(err.Error(), "--public-ipv6") || !strings.Contains(err.Error(), "public-ipv6-overwrite") {
		t.Errorf("NAT IPv6 address: %v", err)
	}
	// IPv6 on, but the underlay has no IPv6 address.
	nat = u
	nat.Addr6 = netip.Addr{}
	if _, err := New(backend.Env{Kernel: f, Underlay: nat, Network: network, IPv6Network: network6}); err == nil ||
		err.Error() != "host-gw: the underlay eth0 has no IPv6 address; set --public-ipv6 or choose another --iface" {
		t.Errorf("no IPv6 address: %v", err)
	}
	if _, err := New(backend.Env{Kernel: f, Underlay: u}); err == nil {
		t.Error("no family enabled: no error")
	}
	f.Fail("ip addr show", errors.New("netlink is broken"))
	if _, err := New(backend.Env{Kernel: f, Underlay: u, Network: network}); err == nil {
		t.Error("a failed read of the addresses: no error")
	}
}

// TestPlanLearnedRoutes: a peer off the link is routed through the next
// hop learned over BGP for exactly its subnet, when that next hop is on
// the link; a learned prefix that no peer's lease holds (or holds only as
// part of a larger prefix) makes no route; an on-link peer keeps its
// direct route whatever was learned.
func TestPlanLearnedRoutes(t *testing.T) {
	network, network6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8:244::/48")
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	own := dualLease("10.244.1.0/24", "2001:db8:244:1::/64", "192.0.2.1", "2001:db8:0:1::1")
	peers := []lease.Lease{
		own,
		dualLease("10.244.2.0/24", "2001:db8:244:2::/64", "192.0.2.2", "2001:db8:0:1::2"),    // on-link
		dualLease("10.244.3.0/24", "2001:db8:244:3::/64", "198.51.100.3", "2001:db8:0:2::3"), // behind the router
		dualLease("10.244.4.0/24", "2001:db8:244:4::/64", "198.51.100.4", "2001:db8:0:2::4"), // learned via a hop off the link
		dualLease("10.244.5.0/24", "", "198.51.100.5", "::"),                                 // only a covering prefix learned
		dualLease("10.244.6.0/24", "2001:db8:244:6::/64", "198.51.100.6", "2001:db8:0:2::6"), // nothing learned
	}
	for _, tc := range []struct {
		name    string
		learned map[netip.Prefix]netip.Addr
		pending bool
		want    []kernel.Route
		skipped []string // substrings, one per skipped peer, in order
		hold    []netip.Prefix
	}{
		{
			name: "import off",
			want: []kernel.Route{
				{Dst: p("10.244.2.0/24"), Gw: a("192.0.2.2"), Dev: "eth0"},
				{Dst: p("2001:db8:244:2::/64"), Gw: a("2001:db8:0:1::2"), Dev: "eth0"},
			},
			skipped: []string{"10.244.3.0/24 (198.51.100.3): not on-link", "10.244.4.0/24", "10.244.5.0/24", "10.244.6.0/24",
				"2001:db8:244:3::/64", "2001:db8:244:4::/64", "2001:db8:244:6::/64"},
		},
		{
			name: "learned",
			learned: map[netip.Prefix]netip.Addr{
				p("10.244.2.0/24"):       a("192.0.2.254"), // on-link peer: its direct route stays
				p("10.244.3.0/24"):       a("192.0.2.254"),
				p("10.244.4.0/24"):       a("203.0.113.1"), // not on-link: skipped
				p("10.244.0.0/16"):       a("192.0.2.254"), // covers 10.244.5.0/24 but is not its subnet
				p("10.244.9.0/24"):       a("192.0.2.254"), // no lease holds it
				p("0.0.0.0/0"):           a("192.0.2.254"),
				p("2001:db8:244:3::/64"): a("2001:db8:0:1::fe"),
				p("2001:db8:244:4::/64"): a("192.0.2.254"), // an IPv4 next hop for an IPv6 subnet
			},
			want: []kernel.Route{
				{Dst: p("10.244.2.0/24"), Gw: a("192.0.2.2"), Dev: "eth0"},
				{Dst: p("10.244.3.0/24"), Gw: a("192.0.2.254"), Dev: "eth0"},
				{Dst: p("2001:db8:244:2::/64"), Gw: a("2001:db8:0:1::2"), Dev: "eth0"},
				{Dst: p("2001:db8:244:3::/64"), Gw: a("2001:db8:0:1::fe"), Dev: "eth0"},
			},
			skipped: []string{"10.244.4.0/24 (198.51.100.4): not on-link from eth0, and the next hop 203.0.113.1 learned over BGP is not on-link either",
				"10.244.5.0/24 (198.51.100.5): not on-link", "10.244.6.0/24",
				"2001:db8:244:4::/64 (2001:db8:0:2::4): not on-link from eth0, and the next hop 192.0.2.254 learned over BGP", "2001:db8:244:6::/64"},
		},
		{
			// The speaker has just started: what is learned is routed, a
			// bad next hop is skipped as ever, and the peers behind the
			// router with nothing learned yet are held, not skipped.
			name:    "learned, pending",
			pending: true,
			learned: map[netip.Prefix]netip.Addr{
				p("10.244.3.0/24"): a("192.0.2.254"),
				p("10.244.4.0/24"): a("203.0.113.1"),
				p("10.244.0.0/16"): a("192.0.2.254"),
			},
			want: []kernel.Route{
				{Dst: p("10.244.2.0/24"), Gw: a("192.0.2.2"), Dev: "eth0"},
				{Dst: p("10.244.3.0/24"), Gw: a("192.0.2.254"), Dev: "eth0"},
				{Dst: p("2001:db8:244:2::/64"), Gw: a("2001:db8:0:1::2"), Dev: "eth0"},
			},
			skipped: []string{"10.244.4.0/24 (198.51.100.4): not on-link from eth0, and the next hop 203.0.113.1"},
			hold:    []netip.Prefix{p("10.244.5.0/24"), p("10.244.6.0/24"), p("2001:db8:244:3::/64"), p("2001:db8:244:4::/64"), p("2001:db8:244:6::/64")},
		},
		{
			// Pending means nothing with import off: skipped as ever.
			name:    "import off, pending",
			pending: true,
			want: []kernel.Route{
				{Dst: p("10.244.2.0/24"), Gw: a("192.0.2.2"), Dev: "eth0"},
				{Dst: p("2001:db8:244:2::/64"), Gw: a("2001:db8:0:1::2"), Dev: "eth0"},
			},
			skipped: []string{"10.244.3.0/24", "10.244.4.0/24", "10.244.5.0/24", "10.244.6.0/24",
				"2001:db8:244:3::/64", "2001:db8:244:4::/64", "2001:db8:244:6::/64"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, u := dualNode(t)
			b, err := New(backend.Env{Kernel: f, Underlay: u, Network: network, IPv6Network: network6})
			if err != nil {
				t.Fatal(err)
			}
			d := b.Plan(backend.NodeState{Network: network, IPv6Network: network6, Own: own, Peers: peers, Learned: tc.learned, LearnedPending: tc.pending})
			if !reflect.DeepEqual(d.Entries.Routes, tc.want) {
				t.Errorf("routes:\n got %v\nwant %v", d.Entries.Routes, tc.want)
			}
			if !reflect.DeepEqual(d.Scope.Hold, tc.hold) {
				t.Errorf("held %v, want %v", d.Scope.Hold, tc.hold)
			}
			if len(d.Skipped) != len(tc.skipped) {
				t.Fatalf("skipped %q, want %d", d.Skipped, len(tc.skipped))
			}
			for i, s := range tc.skipped {
				if !strings.HasPrefix(d.Skipped[i], s) && !strings.Contains(d.Skipped[i], s) {
					t.Errorf("skipped[%d] = %q, want %q in it", i, d.Skipped[i], s)
				}
			}
		})
	}
}

// TestApplyLearnedRouteGoes: the route through a learned next hop is
// written with weft's protocol like every other, and removed when the
// route is no longer learned (the router withdrew it): level-triggered.
func TestApplyLearnedRouteGoes(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	f, u := dualNode(t)
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: network})
	if err != nil {
		t.Fatal(err)
	}
	own := dualLease("10.244.1.0/24", "", "192.0.2.1", "::")
	st := backend.NodeState{Network: network, Own: own, Peers: []lease.Lease{own, dualLease("10.244.3.0/24", "", "198.51.100.3", "::")},
		Learned: map[netip.Prefix]netip.Addr{netip.MustParsePrefix("10.244.3.0/24"): netip.MustParseAddr("192.0.2.254")}}
	ctx := context.Background()
	f.Writes()
	if rep, err := b.Apply(ctx, b.Plan(st)); err != nil || rep.Added != 1 || len(rep.Skipped) != 0 {
		t.Fatalf("apply with the learned route: %+v, %v", rep, err)
	}
	if got := f.Writes(); got != "ip route replace 10.244.3.0/24 via 192.0.2.254 dev eth0\n" {
		t.Errorf("with the learned route:\n%s", got)
	}
	routes, err := f.Routes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == netip.MustParsePrefix("10.244.3.0/24") && r.Protocol != kernel.ProtoWeft {
			t.Errorf("learned route written with protocol %s, want weft's", r.Protocol)
		}
	}
	st.Learned = map[netip.Prefix]netip.Addr{}
	rep, err := b.Apply(ctx, b.Plan(st))
	if err != nil || rep.Removed != 1 || len(rep.Skipped) != 1 {
		t.Fatalf("apply after the withdrawal: %+v, %v", rep, err)
	}
	if got := f.Writes(); got != "ip route del 10.244.3.0/24 via 192.0.2.254 dev eth0\n" {
		t.Errorf("after the withdrawal:\n%s", got)
	}
}

// TestApplyRestartHoldsRoutesThroughTheRouter: after an agent restart the
// kernel still has the route through the router to a peer behind it;
// while the learned set is pending and empty, it stays (no gap) and a
// route whose lease is gone still goes; a route learned meanwhile is
// written; once the learned set is complete, a route no longer learned
// goes.
func TestApplyRestartHoldsRoutesThroughTheRouter(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	f, u := dualNode(t)
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: network})
	if err != nil {
		t.Fatal(err)
	}
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	// Written by the agent before it restarted.
	for _, dst := range []string{"10.244.3.0/24", "10.244.4.0/24", "10.244.9.0/24"} {
		if err := f.ReplaceRoute(kernel.Route{Dst: p(dst), Gw: a("192.0.2.254"), Dev: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	own := dualLease("10.244.1.0/24", "", "192.0.2.1", "::")
	st := backend.NodeState{Network: network, Own: own, Peers: []lease.Lease{own,
		dualLease("10.244.3.0/24", "", "198.51.100.3", "::"),
		dualLease("10.244.4.0/24", "", "198.51.100.4", "::"),
		dualLease("10.244.5.0/24", "", "198.51.100.5", "::"),
	}, Learned: map[netip.Prefix]netip.Addr{}, LearnedPending: true}
	ctx := context.Background()
	f.Writes()
	rep, err := b.Apply(ctx, b.Plan(st))
	if err != nil || rep.Added != 0 || rep.Removed != 1 || len(rep.Skipped) != 0 {
		t.Fatalf("first apply, nothing learned yet: %+v, %v", rep, err)
	}
	if got := f.Writes(); got != "ip route del 10.244.9.0/24 via 192.0.2.254 dev eth0\n" {
		t.Errorf("first apply, nothing learned yet: want only the route of the lease that is gone deleted:\n%s", got)
	}
	// One route learned, still pending: written; the other stays.
	st.Learned[p("10.244.5.0/24")] = a("192.0.2.254")
	if rep, err := b.Apply(ctx, b.Plan(st)); err != nil || rep.Added != 1 || rep.Removed != 0 {
		t.Fatalf("apply with one route learned: %+v, %v", rep, err)
	}
	if got := f.Writes(); got != "ip route replace 10.244.5.0/24 via 192.0.2.254 dev eth0\n" {
		t.Errorf("apply with one route learned:\n%s", got)
	}
	// Synced: 10.244.3.0/24 learned, 10.244.4.0/24 not (withdrawn while
	// the agent was down): it goes now.
	st.Learned[p("10.244.3.0/24")] = a("192.0.2.254")
	st.LearnedPending = false
	rep, err = b.Apply(ctx, b.Plan(st))
	if err != nil || rep.Added != 0 || rep.Removed != 1 || len(rep.Skipped) != 1 {
		t.Fatalf("apply once synced: %+v, %v", rep, err)
	}
	if got := f.Writes(); got != "ip route del 10.244.4.0/24 via 192.0.2.254 dev eth0\n" {
		t.Errorf("apply once synced:\n%s", got)
	}
}
