package vxlan

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// underlay makes eth0 (a veth; this kernel may lack dummy links) with 192.0.2.1/24 in a fresh namespace.
func underlay(t *testing.T) (*netlink.Handle, kernel.Underlay) {
	t.Helper()
	name := netnstest.New(t)
	h, err := netns.Handle(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0-peer"}); err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName("eth0")
	addr, _ := netlink.ParseAddr("192.0.2.1/24")
	if err := h.AddrAdd(l, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	u, err := kernel.FindUnderlay(kernel.NewNetlink(h), kernel.UnderlayQuery{Ifaces: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	return h, u
}

func TestApplyInNamespace(t *testing.T) {
	h, u := underlay(t)
	if u.Addr != netip.MustParseAddr("192.0.2.1") || u.MTU != 1500 {
		t.Fatalf("underlay %+v", u)
	}
	cfg := Options{Common: backend.Common{Port: 8472}, VNI: 1, DirectRouting: true}
	b, err := New(backend.Env{Kernel: kernel.NewNetlink(h), Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"), Log: slog.Default()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("flannel.1"); err == nil {
		t.Fatal("New created the device before the lease was held")
	}
	own := peer("10.244.1.0/24", "192.0.2.1", "vxlan", "")
	p2 := peer("10.244.2.0/24", "192.0.2.2", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`)
	p3 := peer("10.244.3.0/24", "198.51.100.3", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}`)
	st := backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{own, p2, p3}}
	ctx := context.Background()
	rep, err := b.Apply(ctx, b.Plan(st))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 4 { // direct route for p2; neigh, fdb, route for p3
		t.Errorf("added %d entries, want 4", rep.Added)
	}
	dev, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.Attrs().MTU != 1450 || dev.Attrs().HardwareAddr.String() != b.fams[0].mac {
		t.Errorf("device MTU %d MAC %s", dev.Attrs().MTU, dev.Attrs().HardwareAddr)
	}
	addrs, _ := h.AddrList(dev, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
		t.Errorf("device addresses %v", addrs)
	}
	scope := b.Plan(st).Scope
	have, err := kernel.Read(kernel.NewNetlink(h), scope)
	if err != nil {
		t.Fatal(err)
	}
	if len(have.Routes) != 2 || len(have.Neighs) != 1 || len(have.FDB) != 1 {
		t.Fatalf("kernel has %+v", have)
	}
	// Idempotent.
	if rep, err := b.Apply(ctx, b.Plan(st)); err != nil || rep.Added+rep.Removed != 0 {
		t.Errorf("second apply changed %+v, %v", rep, err)
	}
	// Plant a route for a subnet no lease holds, and one outside the network.
	stray := &netlink.Route{LinkIndex: dev.Attrs().Index, Dst: mustNet("10.244.9.0/24"), Gw: net.ParseIP("10.244.9.0"), Flags: int(netlink.FLAG_ONLINK)}
	foreign := &netlink.Route{LinkIndex: u.LinkIndex, Dst: mustNet("203.0.113.0/24"), Gw: net.ParseIP("192.0.2.254")}
	for _, r := range []*netlink.Route{stray, foreign} {
		if err := h.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	// Remove p3 and delete p2's route by hand: the next apply restores and cleans.
	if err := h.RouteDel(&netlink.Route{LinkIndex: u.LinkIndex, Dst: mustNet("10.244.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	st.Peers = []lease.Lease{own, p2}
	rep, err = b.Apply(ctx, b.Plan(st))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 1 || rep.Removed != 4 {
		t.Errorf("report %+v, want 1 added, 4 removed", rep)
	}
	have, _ = kernel.Read(kernel.NewNetlink(h), scope)
	if len(have.Routes) != 1 || len(have.Neighs) != 0 || len(have.FDB) != 0 {
		t.Errorf("after removal kernel has %+v", have)
	}
	rs, _ := h.RouteList(nil, netlink.FAMILY_V4)
	found := false
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == "203.0.113.0/24" {
			found = true
		}
	}
	if !found {
		t.Error("a route outside the cluster network was removed")
	}
	// A restart reuses the device and its MAC; a new MTU is applied.
	cfg.MTU = 1400
	b2, err := New(backend.Env{Kernel: kernel.NewNetlink(h), Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"), Log: slog.Default()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b2.fams[0].mac != b.fams[0].mac {
		t.Errorf("restart changed the VTEP MAC: %s -> %s", b.fams[0].mac, b2.fams[0].mac)
	}
	if _, err := b2.Apply(ctx, b2.Plan(st)); err != nil {
		t.Fatal(err)
	}
	dev, _ = h.LinkByName("flannel.1")
	if dev.Attrs().MTU != 1350 || dev.Attrs().HardwareAddr.String() != b.fams[0].mac {
		t.Errorf("after restart: MTU %d MAC %s", dev.Attrs().MTU, dev.Attrs().HardwareAddr)
	}
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// TestDeviceChangedByHandInNamespace: flannel.1 set down with MTU 1400 by
// hand is up with the right MTU after the next Apply, its peers' entries
// (which the kernel dropped with the link) back.
func TestDeviceChangedByHandInNamespace(t *testing.T) {
	h, u := underlay(t)
	b, err := New(backend.Env{Kernel: kernel.NewNetlink(h), Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"), Log: slog.Default()}, Options{Common: backend.Common{Port: 8472}, VNI: 1})
	if err != nil {
		t.Fatal(err)
	}
	own := peer("10.244.1.0/24", "192.0.2.1", "vxlan", "")
	p3 := peer("10.244.3.0/24", "198.51.100.3", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}`)
	st := backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{own, p3}}
	ctx := context.Background()
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	dev, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	// By hand: ip link set flannel.1 down; ip link set flannel.1 mtu 1400.
	if err := h.LinkSetDown(dev); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(dev, 1400); err != nil {
		t.Fatal(err)
	}
	rep, err := b.Apply(ctx, b.Plan(st))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 2 { // the route and neighbour went with the link; the FDB entry stayed
		t.Errorf("added %d entries after the device came back, want 2", rep.Added)
	}
	dev, _ = h.LinkByName("flannel.1")
	if dev.Attrs().Flags&net.FlagUp == 0 || dev.Attrs().MTU != 1450 {
		t.Errorf("after the next Apply: flags %v, MTU %d; want up, 1450", dev.Attrs().Flags, dev.Attrs().MTU)
	}
	have, err := kernel.Read(kernel.NewNetlink(h), b.Plan(st).Scope)
	if err != nil {
		t.Fatal(err)
	}
	if len(have.Routes) != 1 || len(have.Neighs) != 1 || len(have.FDB) != 1 {
		t.Errorf("after the next Apply the kernel has %+v", have)
	}
}
