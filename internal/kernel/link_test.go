package kernel_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
)

func TestEnsureLinkCreatesVXLAN(t *testing.T) {
	f, eth0 := node(t)
	ctx := context.Background()
	idx := ensure(t, f, vxlanDevice(eth0))
	golden(t, "create", f.Writes(), `
		ip link add flannel.1 address 0e:77:c0:00:02:0b mtu 1450 type vxlan id 1 local 192.0.2.11 dev eth0 dstport 8472 nolearning
		ip addr replace 10.244.3.0/32 dev flannel.1
		ip link set flannel.1 up
	`)
	l, err := f.LinkByName("flannel.1")
	must(t, err)
	if l.Index != idx || !l.Up || l.MTU != 1450 || l.MAC != "0e:77:c0:00:02:0b" || l.VXLAN != vxlanDevice(eth0).VXLAN {
		t.Errorf("device %+v (index %d)", l, idx)
	}
	if err := kernel.EnsureLink(ctx, f, vxlanDevice(eth0)); err != nil {
		t.Fatal(err)
	}
	golden(t, "a device that is right", f.Writes(), ``)
}

func TestEnsureLinkRepairsADeviceChangedByHand(t *testing.T) {
	f, eth0 := node(t)
	ctx := context.Background()
	d := vxlanDevice(eth0)
	idx := ensure(t, f, d)
	// By hand: down, MTU 1400, its address removed, another added; and an
	// IPv6 link-local address, which is the kernel's and stays.
	must(t, f.SetDown("flannel.1"))
	must(t, f.SetLinkMTU("flannel.1", 1400))
	must(t, f.DeleteAddr(kernel.Addr{Dev: "flannel.1", Prefix: p("10.244.3.0/32")}))
	must(t, f.ReplaceAddr(kernel.Addr{Dev: "flannel.1", Prefix: p("10.244.99.1/24")}))
	must(t, f.ReplaceAddr(kernel.Addr{Dev: "flannel.1", Prefix: p("fe80::c77:c0ff:fe00:20b/64")}))
	// An IPv6 address of the operator's: the device's IPv6 is not weft's
	// (its Addrs are IPv4 only), so it stays too.
	must(t, f.ReplaceAddr(kernel.Addr{Dev: "flannel.1", Prefix: p("2001:db8::11/64")}))
	f.Writes()
	again := ensure(t, f, d)
	golden(t, "repair", f.Writes(), `
		ip link set flannel.1 mtu 1450
		ip addr del 10.244.99.1/24 dev flannel.1
		ip addr replace 10.244.3.0/32 dev flannel.1
		ip link set flannel.1 up
	`)
	if again != idx {
		t.Errorf("index %d, was %d: the device was recreated", again, idx)
	}
	// A new MAC is set in place.
	d.MAC = "0e:77:c0:00:02:0c"
	must(t, kernel.EnsureLink(ctx, f, d))
	golden(t, "new MAC", f.Writes(), `ip link set flannel.1 address 0e:77:c0:00:02:0c`)
}

func TestEnsureLinkRecreatesAMismatchedVXLANWithItsMAC(t *testing.T) {
	f, eth0 := node(t)
	ctx := context.Background()
	d := vxlanDevice(eth0)
	d.VXLAN.Port = 4789
	err := kernel.EnsureLink(ctx, f, d)
	must(t, err)
	f.Writes()
	// Another port, and no MAC asked for: the device's own is kept.
	d.VXLAN.Port, d.MAC = 8472, ""
	err = kernel.EnsureLink(ctx, f, d)
	must(t, err)
	golden(t, "recreate", f.Writes(), `
		ip link del flannel.1
		ip link add flannel.1 address 0e:77:c0:00:02:0b mtu 1450 type vxlan id 1 local 192.0.2.11 dev eth0 dstport 8472 nolearning
		ip addr replace 10.244.3.0/32 dev flannel.1
		ip link set flannel.1 up
	`)
	// A link of the name that is no vxlan device is replaced too.
	must(t, f.DeleteLink("flannel.1"))
	f.AddDevice(kernel.Link{Name: "flannel.1", Kind: "dummy", MTU: 1500, MAC: "02:00:00:00:00:01"})
	f.Writes()
	d.MAC = "0e:77:c0:00:02:0b"
	err = kernel.EnsureLink(ctx, f, d)
	must(t, err)
	golden(t, "replace a dummy", f.Writes(), `
		ip link del flannel.1
		ip link add flannel.1 address 0e:77:c0:00:02:0b mtu 1450 type vxlan id 1 local 192.0.2.11 dev eth0 dstport 8472 nolearning
		ip addr replace 10.244.3.0/32 dev flannel.1
		ip link set flannel.1 up
	`)
}

// tunDevice is flannel0 as the udp backend wants it, for own subnet own.
func tunDevice(own string) kernel.Device {
	return kernel.Device{Name: "flannel0", Kind: kernel.KindTUN, MTU: 1472, Addrs: []netip.Prefix{p(own)}, NoIPv6AddrGen: true}
}

func TestEnsureLinkTUN(t *testing.T) {
	f, _ := node(t)
	ctx := context.Background()
	err := kernel.EnsureLink(ctx, f, tunDevice("10.244.3.0/16"))
	if !kernel.IsNotFound(err) {
		t.Fatalf("missing TUN device: %v, want a not-found error", err)
	}
	golden(t, "missing TUN", f.Writes(), ``)

	f.AddDevice(kernel.Link{Name: "flannel0", Kind: kernel.KindTUN, MTU: 1500}) // as tun.CreateTUN leaves it
	err = kernel.EnsureLink(ctx, f, tunDevice("10.244.3.0/16"))
	must(t, err)
	golden(t, "set up an opened TUN", f.Writes(), `
		ip link set flannel0 mtu 1472
		ip link set flannel0 addrgenmode none
		ip addr replace 10.244.3.0/16 dev flannel0
		ip link set flannel0 up
	`)
	err = kernel.EnsureLink(ctx, f, tunDevice("10.244.3.0/16"))
	must(t, err)
	golden(t, "a TUN that is right", f.Writes(), ``)

	// The address removed by hand, and a link-local address (addrgenmode
	// was set back): both are put right.
	l, _ := f.LinkByName("flannel0")
	must(t, f.DeleteAddr(kernel.Addr{Dev: l.Name, Prefix: p("10.244.3.0/16")}))
	must(t, f.ReplaceAddr(kernel.Addr{Dev: l.Name, Prefix: p("fe80::1/64")}))
	f.Writes()
	err = kernel.EnsureLink(ctx, f, tunDevice("10.244.3.0/16"))
	must(t, err)
	golden(t, "repair a TUN", f.Writes(), `
		ip link set flannel0 addrgenmode none
		ip addr del fe80::1/64 dev flannel0
		ip addr replace 10.244.3.0/16 dev flannel0
	`)

	// A new own subnet, after the lease was acquired again. The old
	// address goes first: deleted after, it would take the new one, a
	// secondary in its network, with it.
	err = kernel.EnsureLink(ctx, f, tunDevice("10.244.7.0/16"))
	must(t, err)
	golden(t, "new own subnet", f.Writes(), `
		ip addr del 10.244.3.0/16 dev flannel0
		ip addr replace 10.244.7.0/16 dev flannel0
	`)
	addrs, _ := f.Addrs()
	if got := addrs[len(addrs)-1]; got != (kernel.Addr{Dev: l.Name, Prefix: p("10.244.7.0/16")}) {
		t.Errorf("flannel0 has %v", addrs)
	}
}

func TestEnsureLinkLeavesAnotherKindUnderTheTUNName(t *testing.T) {
	f, _ := node(t)
	f.AddDevice(kernel.Link{Name: "flannel0", Kind: "veth", MTU: 1500, MAC: "02:00:00:00:00:01"})
	err := kernel.EnsureLink(context.Background(), f, tunDevice("10.244.3.0/16"))
	if err == nil || kernel.IsNotFound(err) || !strings.Contains(err.Error(), "flannel0 is a veth device") {
		t.Errorf("error %v, want one that names the veth", err)
	}
	golden(t, "veth named flannel0", f.Writes(), ``)
}

func TestEnsureLinkFailedWriteDoesNotStopTheOthers(t *testing.T) {
	f, eth0 := node(t)
	ctx := context.Background()
	err := kernel.EnsureLink(ctx, f, vxlanDevice(eth0))
	must(t, err)
	must(t, f.SetDown("flannel.1"))
	must(t, f.SetLinkMTU("flannel.1", 1400))
	f.Writes()
	f.Fail("ip link set flannel.1 mtu", syscall.EBUSY)
	err = kernel.EnsureLink(ctx, f, vxlanDevice(eth0))
	if err == nil || err.Error() != "ip link set flannel.1 mtu 1450: device or resource busy" || !errors.Is(err, syscall.EBUSY) {
		t.Errorf("error %v", err)
	}
	golden(t, "MTU failed", f.Writes(), `ip link set flannel.1 up`)
	// The MTU larger than the underlay allows is the kernel's refusal.
	f.Fail("ip link set flannel.1 mtu", nil)
	d := vxlanDevice(eth0)
	d.MTU = 1460
	if err := kernel.EnsureLink(ctx, f, d); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("MTU 1460 over an underlay of 1500: %v, want EINVAL", err)
	}
}

func TestEnsureLinkStopsWhenTheContextEnds(t *testing.T) {
	f, eth0 := node(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := kernel.EnsureLink(ctx, f, vxlanDevice(eth0)); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	golden(t, "cancelled", f.Writes(), ``)
}
