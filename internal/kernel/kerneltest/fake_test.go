package kerneltest

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
)

// The rules of the model that the paired tests of package kernel (which
// compare it with a real namespace) rely on, one by one.

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestModel(t *testing.T) {
	p := netip.MustParsePrefix
	f := New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:00:00:00:01", Up: true})
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("192.0.2.11/24")}))
	vx, err := f.AddLink(kernel.Link{Name: "flannel.1", Kind: kernel.KindVXLAN, VXLAN: kernel.VXLAN{VNI: 1, Dev: eth0.Index, Port: 8472}})
	must(t, err)
	if vx.MTU != 1450 || vx.Up || vx.MAC == "" {
		t.Errorf("new vxlan device %+v: want MTU 1450 (the underlay's less 50), down, a MAC", vx)
	}
	if err := f.SetLinkMTU("flannel.1", 1451); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("MTU above the underlay's less 50: %v", err)
	}
	// Over IPv6 the headroom is 70 (VXLAN6_HEADROOM): flannel's MTU-50
	// does not fit.
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::11/64")}))
	vx6, err := f.AddLink(kernel.Link{Name: "flannel-v6.1", Kind: kernel.KindVXLAN, VXLAN: kernel.VXLAN{VNI: 1, Local: netip.MustParseAddr("2001:db8:0:1::11"), Dev: eth0.Index, Port: 8472}})
	must(t, err)
	if vx6.MTU != 1430 {
		t.Errorf("new vxlan device over IPv6 %+v: want MTU 1430 (the underlay's less 70)", vx6)
	}
	if err := f.SetLinkMTU("flannel-v6.1", 1450); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("MTU above the underlay's less 70 over IPv6: %v", err)
	}
	must(t, f.DeleteLink("flannel-v6.1"))
	must(t, f.DeleteAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::11/64")}))
	route := kernel.Route{Dst: p("10.244.4.0/24"), Gw: netip.MustParseAddr("10.244.4.0"), Dev: vx.Name, OnLink: true}
	if err := f.ReplaceRoute(route); !errors.Is(err, syscall.ENETDOWN) {
		t.Errorf("route through a link that is down: %v", err)
	}
	must(t, f.SetLinkUp("flannel.1"))
	must(t, f.ReplaceRoute(route))
	neigh := kernel.Neigh{IP: route.Gw, MAC: "0e:00:00:00:00:04", Dev: vx.Name}
	must(t, f.ReplaceNeigh(neigh))
	must(t, f.ReplaceFDB(kernel.FDB{MAC: neigh.MAC, Dst: netip.MustParseAddr("192.0.2.12"), Dev: vx.Name}))

	// Down: routes and neighbours go, the FDB stays.
	must(t, f.SetDown("flannel.1"))
	routes, _ := f.Routes()
	neighs, _ := f.Neighs(vx.Name)
	fdb, _ := f.FDB(vx.Name)
	if len(routes) != 0 || len(neighs) != 0 || len(fdb) != 1 {
		t.Errorf("after down: routes %v neighbours %v fdb %v", routes, neighs, fdb)
	}

	// A primary IPv4 address takes its secondaries with it; another
	// network's address stays.
	for _, s := range []string{"10.244.3.0/16", "10.244.7.0/16", "10.245.0.1/32"} {
		must(t, f.ReplaceAddr(kernel.Addr{Dev: vx.Name, Prefix: p(s)}))
	}
	must(t, f.DeleteAddr(kernel.Addr{Dev: vx.Name, Prefix: p("10.244.3.0/16")}))
	addrs, _ := f.Addrs()
	if got := addrs[len(addrs)-1]; len(addrs) != 3 || got.Prefix != p("10.245.0.1/32") {
		t.Errorf("after deleting the primary: %v", addrs)
	}

	// Deleting the link takes everything on it.
	must(t, f.DeleteLink("flannel.1"))
	if fdb, _ := f.FDB(vx.Name); len(fdb) != 0 {
		t.Errorf("fdb of a deleted link: %v", fdb)
	}
	addrs, _ = f.Addrs()
	if len(addrs) != 2 { // lo's and eth0's
		t.Errorf("addresses after the link was deleted: %v", addrs)
	}
	if _, err := f.LinkByName("flannel.1"); !kernel.IsNotFound(err) {
		t.Errorf("deleted link: %v", err)
	}
}

func TestFailAndWrites(t *testing.T) {
	f := New()
	f.Fail("ip link show", syscall.EIO)
	if _, err := f.LinkByName("lo"); err == nil || err.Error() != "ip link show lo: input/output error" {
		t.Errorf("injected failure: %v", err)
	}
	f.Fail("ip link show", nil)
	if _, err := f.LinkByName("lo"); err != nil {
		t.Errorf("after the failure was cleared: %v", err)
	}
	f.Fail("ip link set lo up", syscall.EPERM)
	if err := f.SetLinkUp("lo"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("injected write failure: %v", err)
	}
	must(t, f.SetLinkMTU("lo", 1500))
	if got := f.Writes(); got != "ip link set lo mtu 1500\n" {
		t.Errorf("writes %q: a failed write is not listed", got)
	}
	if got := f.Writes(); got != "" {
		t.Errorf("writes are forgotten once returned: %q", got)
	}
}
