package kernel_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
)

var (
	p = netip.MustParsePrefix
	a = netip.MustParseAddr
)

// node returns a fake kernel as a node has it before weft starts: lo, and
// eth0 (index 2, MTU 1500, up) with 192.0.2.11/24 and a default route via
// 192.0.2.1 (proto boot, as the node's own setup writes it).
func node(t testing.TB) (*kerneltest.Fake, kernel.Link) {
	t.Helper()
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:c0:00:02:0b", Up: true})
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("192.0.2.11/24")}))
	f.AddRoute(kernel.Route{Dst: p("0.0.0.0/0"), Gw: a("192.0.2.1"), Dev: eth0.Name})
	f.Writes() // what was there before is not the test's
	return f, eth0
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// golden compares a transcript with the expected one, written as an
// indented raw string (leading newline and tabs are dropped).
func golden(t *testing.T, what, got, want string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(want), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	w := strings.Join(lines, "\n")
	if w != "" {
		w += "\n"
	}
	if got != w {
		t.Errorf("%s: transcript\n%s\nwant\n%s", what, got, w)
	}
}

// vxlanDevice is flannel.1 over eth0 as the vxlan backend wants it for the
// node of node() with subnet 10.244.3.0/24.
func vxlanDevice(eth0 kernel.Link) kernel.Device {
	return kernel.Device{
		Name:  "flannel.1",
		Kind:  kernel.KindVXLAN,
		VXLAN: kernel.VXLAN{VNI: 1, Local: a("192.0.2.11"), Dev: eth0.Index, Port: 8472},
		MTU:   1450,
		MAC:   "0e:77:c0:00:02:0b",
		Addrs: []netip.Prefix{p("10.244.3.0/32")},
	}
}

// ensure runs EnsureLink and returns the device's index as the kernel then
// reports it (to tell a device kept from one made anew).
func ensure(t *testing.T, k kernel.Kernel, d kernel.Device) int {
	t.Helper()
	must(t, kernel.EnsureLink(context.Background(), k, d))
	l, err := k.LinkByName(d.Name)
	must(t, err)
	return l.Index
}
