package kernel_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
)

func TestFindUnderlay(t *testing.T) {
	f, eth0 := node(t)
	for _, s := range []string{"198.51.100.11/24", "169.254.1.1/16", "2001:db8::11/64"} {
		must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p(s)}))
	}
	eth1 := f.AddDevice(kernel.Link{Name: "eth1", Kind: "device", MTU: 9000, MAC: "02:00:cb:00:71:0b", Up: true})
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth1.Name, Prefix: p("203.0.113.11/24")}))

	eth0Underlay := func(addr string) kernel.Underlay {
		return kernel.Underlay{Name: "eth0", LinkIndex: eth0.Index, Addr: a(addr), MTU: 1500,
			OnLink: []netip.Prefix{p("192.0.2.0/24"), p("198.51.100.0/24")}}
	}
	for _, tc := range []struct {
		name     string
		iface    string
		publicIP netip.Addr
		want     kernel.Underlay
	}{
		{"default route", "", netip.Addr{}, eth0Underlay("192.0.2.11")},
		{"by name", "eth0", netip.Addr{}, eth0Underlay("192.0.2.11")},
		{"by name, with public IP", "eth0", a("198.51.100.11"), eth0Underlay("198.51.100.11")},
		{"by public IP", "", a("198.51.100.11"), eth0Underlay("198.51.100.11")},
		{"other interface", "", a("203.0.113.11"), kernel.Underlay{Name: "eth1", LinkIndex: eth1.Index, Addr: a("203.0.113.11"), MTU: 9000, OnLink: []netip.Prefix{p("203.0.113.0/24")}}},
	} {
		u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces(tc.iface), PublicIP: tc.publicIP})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(u, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, u, tc.want)
		}
		if u.IsOnLink(a("198.51.100.7")) != (u.Name == "eth0") {
			t.Errorf("%s: IsOnLink(198.51.100.7) is wrong", tc.name)
		}
	}
	// A public IP on no interface is refused, naming the node's usable
	// addresses; the Underlay is complete beside the error, for a caller
	// that knows it is a NAT address (Kubernetes' public-ip-overwrite):
	// the interface's networks, the given address.
	const local = "eth0 192.0.2.11/24, eth0 198.51.100.11/24, eth1 203.0.113.11/24"
	for _, tc := range []struct {
		name  string
		iface string
		want  kernel.Underlay
	}{
		{"NAT by name", "eth1", kernel.Underlay{Name: "eth1", LinkIndex: eth1.Index, Addr: a("192.0.2.200"), MTU: 9000, OnLink: []netip.Prefix{p("203.0.113.0/24")}}},
		{"NAT by default route", "", eth0Underlay("192.0.2.200")},
	} {
		u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces(tc.iface), PublicIP: a("192.0.2.200")})
		var nl *kernel.NotLocalError
		if !errors.As(err, &nl) || nl.Addr != a("192.0.2.200") {
			t.Errorf("%s: %v, want a NotLocalError for 192.0.2.200", tc.name, err)
			continue
		}
		want := "no interface has address 192.0.2.200 (--public-ip): this node's addresses are " + local + "; use one of them, or, behind NAT, publish the NAT address with the node annotation public-ip-overwrite (Kubernetes mode)"
		if err.Error() != want {
			t.Errorf("%s: %q\nwant %q", tc.name, err, want)
		}
		if !reflect.DeepEqual(u, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, u, tc.want)
		}
	}
	golden(t, "FindUnderlay only reads", f.Writes(), `
		ip addr replace 198.51.100.11/24 dev eth0
		ip addr replace 169.254.1.1/16 dev eth0
		ip addr replace 2001:db8::11/64 dev eth0
		ip addr replace 203.0.113.11/24 dev eth1
	`)
}

func TestFindUnderlayErrors(t *testing.T) {
	f, eth0 := node(t)
	_, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces("eth9"), PublicIP: netip.Addr{}})
	if !kernel.IsNotFound(err) || !strings.Contains(err.Error(), "find interface eth9 (--iface)") {
		t.Errorf("missing interface: %v", err)
	}
	if _, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces(""), PublicIP: a("198.51.100.99")}); err == nil || !strings.Contains(err.Error(), "no interface has address 198.51.100.99 (--public-ip): this node's addresses are eth0 192.0.2.11/24;") {
		t.Errorf("address nobody holds: %v", err)
	}
	f.AddDevice(kernel.Link{Name: "eth1", Kind: "device", MTU: 1500, Up: true})
	if _, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces("eth1"), PublicIP: netip.Addr{}}); err == nil || !strings.Contains(err.Error(), "interface eth1 has no IPv4 address") {
		t.Errorf("interface without address: %v", err)
	}
	must(t, f.DeleteRoute(kernel.Route{Dst: p("0.0.0.0/0"), Dev: eth0.Name}))
	if _, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces(""), PublicIP: netip.Addr{}}); err == nil || !strings.Contains(err.Error(), "no default route") {
		t.Errorf("no default route: %v", err)
	}
	// Without a default route there is no interface for a NAT address
	// either: the error names the address, and is no NotLocalError.
	_, err = kernel.FindUnderlay(f, kernel.UnderlayQuery{Ifaces: ifaces(""), PublicIP: a("198.51.100.99")})
	var nl *kernel.NotLocalError
	if err == nil || errors.As(err, &nl) || !strings.Contains(err.Error(), "no interface has address 198.51.100.99") || !strings.Contains(err.Error(), "no default route") {
		t.Errorf("address nobody holds, no default route: %v", err)
	}
}

// ifaces is the --iface list of one value, or none for "".
func ifaces(name string) []string {
	if name == "" {
		return nil
	}
	return []string{name}
}
