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
	d := New(f, u).Plan(st)
	if got := f.Writes(); got != "" {
		t.Errorf("Plan wrote to the kernel:\n%s", got)
	}
	p, skipped := d.Entries, d.Skipped
	want := kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.0.2.2"), Dev: "eth0"}
	wantScope := kernel.Scope{Network: st.Network, Own: own.Subnet, RouteDevs: []string{"eth0"}}
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
	b := New(f, u)
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
