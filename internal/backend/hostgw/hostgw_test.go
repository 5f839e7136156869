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
