package vxlan

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

// fakeNode is a fake kernel with eth0 (192.0.2.1/24, MTU 1500, up), and
// the vxlan backend over it with a fixed VTEP MAC.
func fakeNode(t *testing.T, cfg Options) (*kerneltest.Fake, *Backend) {
	t.Helper()
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:c0:00:02:01", Up: true})
	if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix("192.0.2.1/24")}); err != nil {
		t.Fatal(err)
	}
	u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"), ReadOnly: true, Log: quiet}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Writes()
	return f, b
}

var quiet = slog.New(slog.DiscardHandler)

func fakeState() backend.NodeState {
	own := peer("10.244.1.0/24", "192.0.2.1", "vxlan", "")
	return backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{
		own,
		peer("10.244.2.0/24", "192.0.2.2", "vxlan", ""),
		peer("10.244.3.0/24", "198.51.100.3", "vxlan", ""),
	}}
}

func transcript(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n%s\nwant\n%s", what, got, want)
	}
}

func TestApplyOnFake(t *testing.T) {
	f, b := fakeNode(t, Options{Common: backend.Common{Port: 8472}, VNI: 1, DirectRouting: true})
	ctx := context.Background()
	rep, err := b.Apply(ctx, b.Plan(fakeState()))
	if err != nil {
		t.Fatal(err)
	}
	transcript(t, "first apply", f.Writes(), `ip link add flannel.1 address 0e:77:c0:00:02:01 mtu 1450 type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning
ip addr replace 10.244.1.0/32 dev flannel.1
ip link set flannel.1 up
bridge fdb replace 0e:77:c6:33:64:03 dev flannel.1 dst 198.51.100.3 self permanent
ip neigh replace 10.244.3.0 lladdr 0e:77:c6:33:64:03 dev flannel.1 nud permanent
ip route replace 10.244.2.0/24 via 192.0.2.2 dev eth0
ip route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
`)
	if rep.Added != 4 || rep.Removed != 0 {
		t.Errorf("report %+v", rep)
	}
	if _, err := b.Apply(ctx, b.Plan(fakeState())); err != nil {
		t.Fatal(err)
	}
	transcript(t, "second apply", f.Writes(), "")
}

// TestDeviceChangedByHandOnFake: flannel.1 set down with MTU 1400 by hand
// is up with the right MTU after the next Apply, and its entries are back.
func TestDeviceChangedByHandOnFake(t *testing.T) {
	f, b := fakeNode(t, Options{Common: backend.Common{Port: 8472}, VNI: 1})
	ctx := context.Background()
	if _, err := b.Apply(ctx, b.Plan(fakeState())); err != nil {
		t.Fatal(err)
	}
	if err := f.SetDown("flannel.1"); err != nil {
		t.Fatal(err)
	}
	if err := f.SetLinkMTU("flannel.1", 1400); err != nil {
		t.Fatal(err)
	}
	f.Writes()
	rep, err := b.Apply(ctx, b.Plan(fakeState()))
	if err != nil {
		t.Fatal(err)
	}
	transcript(t, "apply after the device was changed by hand", f.Writes(), `ip link set flannel.1 mtu 1450
ip link set flannel.1 up
ip neigh replace 10.244.2.0 lladdr 0e:77:c0:00:02:02 dev flannel.1 nud permanent
ip neigh replace 10.244.3.0 lladdr 0e:77:c6:33:64:03 dev flannel.1 nud permanent
ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
ip route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
`)
	if rep.Added != 4 {
		t.Errorf("report %+v", rep)
	}
	l, _ := f.LinkByName("flannel.1")
	if !l.Up || l.MTU != 1450 {
		t.Errorf("device %+v", l)
	}
}

func TestApplyFailsWhenTheDeviceCannotBeMade(t *testing.T) {
	f, b := fakeNode(t, Options{Common: backend.Common{Port: 8472}, VNI: 1})
	f.Fail("ip link add flannel.1", errors.New("operation not permitted"))
	_, err := b.Apply(context.Background(), b.Plan(fakeState()))
	if err == nil || err.Error() != "vxlan: ip link add flannel.1 address 0e:77:c0:00:02:01 mtu 1450 type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning: operation not permitted" {
		t.Errorf("error %v", err)
	}
	transcript(t, "nothing written without the device", f.Writes(), "")
}

func TestNewReusesTheDeviceMAC(t *testing.T) {
	f, b := fakeNode(t, Options{Common: backend.Common{Port: 8472}, VNI: 1})
	if _, err := b.Apply(context.Background(), b.Plan(fakeState())); err != nil {
		t.Fatal(err)
	}
	u, _ := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: []string{"eth0"}})
	env := backend.Env{Kernel: f, Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"), Log: quiet}
	b2, err := New(env, Options{Common: backend.Common{Port: 8472}, VNI: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b2.fams[0].mac != b.fams[0].mac {
		t.Errorf("a restart picked MAC %s, the device has %s", b2.fams[0].mac, b.fams[0].mac)
	}
	b3, err := New(env, Options{Common: backend.Common{Port: 8472}, VNI: 2})
	if err != nil {
		t.Fatal(err)
	}
	if b3.fams[0].mac == b.fams[0].mac || kernel.CanonicalMAC(b3.fams[0].mac) != b3.fams[0].mac || b3.fams[0].mac[1] != '2' && b3.fams[0].mac[1] != '6' && b3.fams[0].mac[1] != 'a' && b3.fams[0].mac[1] != 'e' {
		t.Errorf("a new device's MAC %s: want a fresh locally administered unicast one", b3.fams[0].mac)
	}
	f.Fail("ip link show flannel.1", errors.New("netlink is broken"))
	if _, err := New(env, Options{Common: backend.Common{Port: 8472}, VNI: 1}); err == nil {
		t.Error("New ignored a failed look-up of the device")
	}
}
