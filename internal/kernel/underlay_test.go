package kernel_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
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
			OnLink: []netip.Prefix{p("192.0.2.0/24"), p("198.51.100.0/24"), p("2001:db8::/64")}}
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

// dualNode is node() with IPv6 and a second interface: eth0 (index 2) has
// 192.0.2.11/24, 2001:db8:0:1::11/64 and the link-local fe80::11/64, the
// IPv4 and IPv6 default routes; eth1 (index 3, MTU 9000) has
// 203.0.113.11/24 and 2001:db8:0:2::11/64; eth2 (index 4) has only
// 198.51.100.11/24; lo has 127.0.0.1/8 and ::1/128.
func dualNode(t *testing.T) (*kerneltest.Fake, map[string]kernel.Link) {
	t.Helper()
	f, eth0 := node(t)
	lo := f.AddDevice(kernel.Link{Name: "lo", Kind: "device", MTU: 65536, Up: true})
	eth1 := f.AddDevice(kernel.Link{Name: "eth1", Kind: "device", MTU: 9000, MAC: "02:00:cb:00:71:0b", Up: true})
	eth2 := f.AddDevice(kernel.Link{Name: "eth2", Kind: "device", MTU: 1500, MAC: "02:00:c6:33:64:0b", Up: true})
	for dev, addrs := range map[string][]string{
		"lo":   {"127.0.0.1/8", "::1/128"},
		"eth0": {"2001:db8:0:1::11/64", "fe80::11/64"},
		"eth1": {"203.0.113.11/24", "2001:db8:0:2::11/64"},
		"eth2": {"198.51.100.11/24"},
	} {
		for _, s := range addrs {
			must(t, f.ReplaceAddr(kernel.Addr{Dev: dev, Prefix: p(s)}))
		}
	}
	f.AddRoute(kernel.Route{Dst: p("::/0"), Gw: a("2001:db8:0:1::1"), Dev: eth0.Name})
	f.AddRoute(kernel.Route{Dst: p("192.0.2.0/24"), Dev: eth0.Name, Protocol: kernel.ProtoKernel})
	f.AddRoute(kernel.Route{Dst: p("203.0.113.0/24"), Dev: eth1.Name, Protocol: kernel.ProtoKernel})
	f.AddRoute(kernel.Route{Dst: p("198.51.100.0/24"), Dev: eth2.Name, Protocol: kernel.ProtoKernel})
	f.AddRoute(kernel.Route{Dst: p("10.99.0.0/16"), Gw: a("203.0.113.1"), Dev: eth1.Name})
	f.AddRoute(kernel.Route{Dst: p("10.99.7.0/24"), Gw: a("198.51.100.1"), Dev: eth2.Name})
	f.AddRoute(kernel.Route{Dst: p("2001:db8:0:2::/64"), Dev: eth1.Name, Protocol: kernel.ProtoKernel})
	f.AddRoute(kernel.Route{Dst: p("2001:db8:99::/48"), Gw: a("2001:db8:0:2::1"), Dev: eth1.Name})
	f.Writes()
	return f, map[string]kernel.Link{"lo": lo, "eth0": eth0, "eth1": eth1, "eth2": eth2}
}

// underlayOf is the Underlay FindUnderlay gives for an interface of
// dualNode with the addresses v4 and v6 ("" for none).
func underlayOf(links map[string]kernel.Link, name, v4, v6 string) kernel.Underlay {
	onLink := map[string][]netip.Prefix{
		"eth0": {p("192.0.2.0/24"), p("2001:db8:0:1::/64")},
		"eth1": {p("203.0.113.0/24"), p("2001:db8:0:2::/64")},
		"eth2": {p("198.51.100.0/24")},
	}
	u := kernel.Underlay{Name: name, LinkIndex: links[name].Index, MTU: links[name].MTU, OnLink: onLink[name]}
	if v4 != "" {
		u.Addr = a(v4)
	}
	if v6 != "" {
		u.Addr6 = a(v6)
	}
	return u
}

// TestFindUnderlayFlannelOrder: --iface (names and addresses, in order),
// then --iface-regex (addresses, then names), then --iface-can-reach,
// else the public addresses' interface, else the default route's; for
// IPv4, IPv6 and dual stack.
func TestFindUnderlayFlannelOrder(t *testing.T) {
	f, links := dualNode(t)
	u := func(name, v4, v6 string) kernel.Underlay { return underlayOf(links, name, v4, v6) }
	v4, v6, dual := kernel.UnderlayQuery{IPv4: true}, kernel.UnderlayQuery{IPv6: true}, kernel.UnderlayQuery{IPv4: true, IPv6: true}
	with := func(q kernel.UnderlayQuery, change func(*kernel.UnderlayQuery)) kernel.UnderlayQuery {
		change(&q)
		return q
	}
	for _, tc := range []struct {
		name string
		q    kernel.UnderlayQuery
		want kernel.Underlay
	}{
		// Step 5: the default route.
		{"default route, IPv4", v4, u("eth0", "192.0.2.11", "")},
		{"default route, IPv6", v6, u("eth0", "", "2001:db8:0:1::11")},
		{"default route, dual", dual, u("eth0", "192.0.2.11", "2001:db8:0:1::11")},
		{"no family is IPv4", kernel.UnderlayQuery{}, u("eth0", "192.0.2.11", "")},
		// Step 1: --iface, in order; the first that qualifies wins.
		{"iface name", with(dual, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"eth1"} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"iface missing, then a name", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"eth9", "eth2"} }), u("eth2", "198.51.100.11", "")},
		{"iface without IPv6 skipped in dual stack", with(dual, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"eth2", "eth1"} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"iface IPv4 address", with(dual, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"203.0.113.11"} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"iface IPv6 address", with(dual, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"2001:db8:0:2::11"} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"iface IPv6 address, IPv4 only", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"2001:db8:0:2::11"} }), u("eth1", "203.0.113.11", "")},
		{"iface address nobody has, then a name", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces = []string{"192.0.2.99", "eth2"} }), u("eth2", "198.51.100.11", "")},
		{"iface before regex", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces, q.Regexes = []string{"eth2"}, []string{"eth1"} }), u("eth2", "198.51.100.11", "")},
		{"iface before can-reach", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces, q.CanReach = []string{"eth2"}, a("10.99.1.1") }), u("eth2", "198.51.100.11", "")},
		// Step 2: --iface-regex, addresses first, then names.
		{"regex on an address", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^203\.0\.113\.`} }), u("eth1", "203.0.113.11", "")},
		{"regex on an address before a name", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^(eth0|198\..*)$`} }), u("eth2", "198.51.100.11", "")},
		{"regex on a name", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^eth2$`} }), u("eth2", "198.51.100.11", "")},
		{"regex: first by index", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^eth[12]$`} }), u("eth1", "203.0.113.11", "")},
		{"regex: the next that qualifies", with(dual, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^eth[12]$`}; q.Ifaces = []string{"eth2"} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"regex: lo is no underlay", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`.*`} }), u("eth0", "192.0.2.11", "")},
		{"regex in order", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^nothing$`, `^eth2$`} }), u("eth2", "198.51.100.11", "")},
		{"regex on both families' addresses", with(dual, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^(203\.|2001:db8:0:2:)`} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"regex on one family's address only, dual: then names", with(dual, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`^(198\.51\.|eth1)`} }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"regex on IPv6 addresses", with(v6, func(q *kernel.UnderlayQuery) { q.Regexes = []string{`:2::`} }), u("eth1", "", "2001:db8:0:2::11")},
		{"regex before can-reach", with(v4, func(q *kernel.UnderlayQuery) { q.Regexes, q.CanReach = []string{`^eth2$`}, a("10.99.1.1") }), u("eth2", "198.51.100.11", "")},
		// Step 3: --iface-can-reach, the most specific route.
		{"can-reach via a gateway", with(v4, func(q *kernel.UnderlayQuery) { q.CanReach = a("10.99.1.1") }), u("eth1", "203.0.113.11", "")},
		{"can-reach, the longer prefix", with(v4, func(q *kernel.UnderlayQuery) { q.CanReach = a("10.99.7.7") }), u("eth2", "198.51.100.11", "")},
		{"can-reach on link", with(v4, func(q *kernel.UnderlayQuery) { q.CanReach = a("203.0.113.50") }), u("eth1", "203.0.113.11", "")},
		{"can-reach by the default route", with(v4, func(q *kernel.UnderlayQuery) { q.CanReach = a("8.8.8.8") }), u("eth0", "192.0.2.11", "")},
		{"can-reach IPv6", with(dual, func(q *kernel.UnderlayQuery) { q.CanReach = a("2001:db8:99::1") }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"can-reach after a failed iface", with(v4, func(q *kernel.UnderlayQuery) { q.Ifaces, q.CanReach = []string{"eth9"}, a("10.99.1.1") }), u("eth1", "203.0.113.11", "")},
		// Step 4: the public addresses' interface.
		{"public IP", with(dual, func(q *kernel.UnderlayQuery) { q.PublicIP = a("203.0.113.11") }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"public IPv6", with(dual, func(q *kernel.UnderlayQuery) { q.PublicIPv6 = a("2001:db8:0:2::11") }), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"both public addresses", with(dual, func(q *kernel.UnderlayQuery) {
			q.PublicIP, q.PublicIPv6 = a("203.0.113.11"), a("2001:db8:0:2::11")
		}), u("eth1", "203.0.113.11", "2001:db8:0:2::11")},
		{"public IPv6 of a family that is off", with(v4, func(q *kernel.UnderlayQuery) { q.PublicIPv6 = a("2001:db8:0:2::11") }), u("eth0", "192.0.2.11", "")},
		{"public IPv6 fills the family eth2 lacks", with(dual, func(q *kernel.UnderlayQuery) {
			q.Ifaces, q.PublicIPv6 = []string{"eth2"}, a("2001:db8:0:2::11")
		}), u("eth2", "198.51.100.11", "2001:db8:0:2::11")},
		{"public IP overrides the iface address", with(v4, func(q *kernel.UnderlayQuery) {
			q.Ifaces, q.PublicIP = []string{"203.0.113.11"}, a("198.51.100.11")
		}), u("eth1", "198.51.100.11", "")},
	} {
		got, err := kernel.FindUnderlay(f, tc.q)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	golden(t, "FindUnderlay only reads", f.Writes(), "")
}

// TestFindUnderlayRefusals: what cannot be an underlay is refused in one
// line naming what was tried and what to set; with --iface, --iface-regex
// or --iface-can-reach given, the default route is never the fallback.
func TestFindUnderlayRefusals(t *testing.T) {
	f, _ := dualNode(t)
	dual := kernel.UnderlayQuery{IPv4: true, IPv6: true}
	for _, tc := range []struct {
		name string
		q    kernel.UnderlayQuery
		want string
	}{
		{"dual stack, iface without IPv6", kernel.UnderlayQuery{IPv4: true, IPv6: true, Ifaces: []string{"eth2"}},
			"--iface eth2: interface eth2 has no IPv6 address (dual stack: the underlay needs an address of each family); set --public-ipv6 or choose another --iface"},
		{"IPv6 only, iface without IPv6", kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth2"}},
			"--iface eth2: interface eth2 has no IPv6 address; set --public-ipv6 or choose another --iface"},
		{"each iface failed, no fallback", kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth9", "192.0.2.99"}, Regexes: []string{"^wlan"}, CanReach: a("198.51.100.50")},
			`no interface matches --iface, --iface-regex or --iface-can-reach: find interface eth9 (--iface): ip link show eth9: `},
		{"address nobody has", kernel.UnderlayQuery{IPv4: true, Ifaces: []string{"192.0.2.99"}}, "no interface has address 192.0.2.99 (--iface)"},
		{"bad regex", kernel.UnderlayQuery{IPv4: true, Regexes: []string{"eth("}}, "--iface-regex \"eth(\": error parsing regexp"},
		{"regex matches nothing", kernel.UnderlayQuery{IPv4: true, Regexes: []string{"^wlan"}},
			`--iface-regex "^wlan" matches no interface's address or name (the node has eth0 [192.0.2.11], eth1 [203.0.113.11], eth2 [198.51.100.11])`},
		{"regex matches what does not qualify", kernel.UnderlayQuery{IPv4: true, IPv6: true, Regexes: []string{"^eth2$"}},
			`--iface-regex "^eth2$": interface eth2 has no IPv6 address (dual stack`},
		{"no route to can-reach", kernel.UnderlayQuery{IPv6: true, CanReach: a("2001:db8:77::1"), Ifaces: nil},
			""}, // the IPv6 default route reaches it: see below
		{"public addresses on two interfaces", kernel.UnderlayQuery{IPv4: true, IPv6: true, PublicIP: a("192.0.2.11"), PublicIPv6: a("2001:db8:0:2::11")},
			"--public-ip 192.0.2.11 is on eth0 and --public-ipv6 2001:db8:0:2::11 on eth1: the underlay is one interface; set --iface"},
	} {
		_, err := kernel.FindUnderlay(f, tc.q)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: more than one line: %q", tc.name, err)
		}
	}
	// Every failed try is named, in order; a missing link stays a
	// not-found error.
	_, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth9", "192.0.2.99"}, Regexes: []string{"^wlan"}, CanReach: a("198.51.100.50")})
	if !kernel.IsNotFound(err) {
		t.Errorf("a missing --iface is not a not-found error: %v", err)
	}
	last := 0
	for i, want := range []string{
		"(--iface): ",
		"; no interface has address 192.0.2.99 (--iface); ",
		`--iface-regex "^wlan" matches no interface's address or name (the node has eth0 [2001:db8:0:1::11 fe80::11], eth1 [2001:db8:0:2::11], eth2 []); `,
		"--iface-can-reach 198.51.100.50 (route 198.51.100.0/24 dev eth2): interface eth2 has no IPv6 address; set --public-ipv6 or choose another --iface",
	} {
		j := strings.Index(err.Error(), want)
		if j < last {
			t.Errorf("try %d (%s) is not named in order: %v", i, want, err)
		}
		last = j
	}
	f.RemoveRoute(p("::/0"))
	if _, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true, CanReach: a("2001:db8:77::1")}); err == nil || err.Error() != "no route to 2001:db8:77::1 (--iface-can-reach)" {
		t.Errorf("no route: %v", err)
	}
	if _, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true}); err == nil || err.Error() != "no IPv6 default route to pick the underlay interface from; set --iface or --public-ipv6" {
		t.Errorf("IPv6 only, no default route: %v", err)
	}
	// Dual stack: the IPv4 default route alone picks the interface; when
	// there is only an IPv6 one, that does.
	if u, err := kernel.FindUnderlay(f, dual); err != nil || u.Name != "eth0" || u.Addr6 != a("2001:db8:0:1::11") {
		t.Errorf("dual stack, IPv4 default route only: %+v, %v", u, err)
	}
	f.RemoveRoute(p("0.0.0.0/0"))
	f.AddRoute(kernel.Route{Dst: p("::/0"), Gw: a("2001:db8:0:2::1"), Dev: "eth1"})
	if u, err := kernel.FindUnderlay(f, dual); err != nil || u.Name != "eth1" {
		t.Errorf("dual stack, IPv6 default route only: %+v, %v", u, err)
	}
	// Both, by different interfaces: refused as flannel does.
	f.AddRoute(kernel.Route{Dst: p("0.0.0.0/0"), Gw: a("192.0.2.1"), Dev: "eth0"})
	if _, err := kernel.FindUnderlay(f, dual); err == nil || err.Error() != "the IPv4 default route leaves by eth0 and the IPv6 one by eth1: the underlay is one interface; set --iface" {
		t.Errorf("default routes by two interfaces: %v", err)
	}
	if u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv4: true}); err != nil || u.Name != "eth0" {
		t.Errorf("IPv4 only ignores the IPv6 default route: %+v, %v", u, err)
	}
	f.RemoveRoute(p("0.0.0.0/0"))
	f.RemoveRoute(p("::/0"))
	if _, err := kernel.FindUnderlay(f, dual); err == nil || err.Error() != "no default route (IPv4 or IPv6) to pick the underlay interface from; set --iface or --public-ip" {
		t.Errorf("dual stack, no default route: %v", err)
	}
}

// TestFindUnderlayAddressPreference: a global address before a link-local
// one, whatever their order; a link-local one only when there is no other
// (as flannel), with its network on link.
func TestFindUnderlayAddressPreference(t *testing.T) {
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "device", MTU: 1500, Up: true})
	for _, s := range []string{"169.254.7.7/16", "fe80::7/64", "192.0.2.11/24", "2001:db8:0:1::11/64"} {
		must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p(s)}))
	}
	q := kernel.UnderlayQuery{IPv4: true, IPv6: true, Ifaces: []string{"eth0"}}
	u, err := kernel.FindUnderlay(f, q)
	want := kernel.Underlay{Name: "eth0", LinkIndex: eth0.Index, MTU: 1500, Addr: a("192.0.2.11"), Addr6: a("2001:db8:0:1::11"),
		OnLink: []netip.Prefix{p("192.0.2.0/24"), p("2001:db8:0:1::/64")}}
	if err != nil || !reflect.DeepEqual(u, want) {
		t.Errorf("global first: %+v, %v\nwant %+v", u, err, want)
	}
	must(t, f.DeleteAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::11/64")}))
	u, err = kernel.FindUnderlay(f, q)
	want = kernel.Underlay{Name: "eth0", LinkIndex: eth0.Index, MTU: 1500, Addr: a("192.0.2.11"), Addr6: a("fe80::7"),
		OnLink: []netip.Prefix{p("192.0.2.0/24"), p("fe80::/64")}}
	if err != nil || !reflect.DeepEqual(u, want) {
		t.Errorf("link-local as the last resort: %+v, %v\nwant %+v", u, err, want)
	}
	// Permanent before dynamic (SLAAC, DHCP), deprecated never, whatever
	// the kernel's order.
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::aa/64"), Deprecated: true}))
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::bb/64"), Dynamic: true}))
	must(t, f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::cc/64")}))
	if u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth0"}}); err != nil || u.Addr6 != a("2001:db8:0:1::cc") {
		t.Errorf("permanent first: %+v, %v", u, err)
	}
	must(t, f.DeleteAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::cc/64")}))
	if u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth0"}}); err != nil || u.Addr6 != a("2001:db8:0:1::bb") {
		t.Errorf("dynamic before deprecated: %+v, %v", u, err)
	}
	must(t, f.DeleteAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::bb/64")}))
	if u, err := kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv6: true, Ifaces: []string{"eth0"}}); err != nil || u.Addr6 != a("fe80::7") {
		t.Errorf("a deprecated address is skipped (link-local before it): %+v, %v", u, err)
	}
	must(t, f.DeleteAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("2001:db8:0:1::aa/64")}))
	// A regex matches the preferred address first.
	q = kernel.UnderlayQuery{IPv4: true, Regexes: []string{`\.`}}
	if u, err := kernel.FindUnderlay(f, q); err != nil || u.Addr != a("192.0.2.11") {
		t.Errorf("regex: %+v, %v", u, err)
	}
	q.Regexes = []string{`^169\.254\.`}
	if u, err := kernel.FindUnderlay(f, q); err != nil || u.Addr != a("169.254.7.7") || !u.IsOnLink(a("169.254.1.1")) {
		t.Errorf("regex on the link-local address: %+v, %v", u, err)
	}
}

// TestFindUnderlayPublicIPv6: --public-ipv6 on no interface is refused as
// --public-ip is, naming the flag, the node's IPv6 addresses and the
// annotation for NAT; with both not local, both errors are given, each
// found by NotLocalErrors, beside a complete Underlay.
func TestFindUnderlayPublicIPv6(t *testing.T) {
	f, links := dualNode(t)
	q := kernel.UnderlayQuery{IPv4: true, IPv6: true, PublicIPv6: a("2001:db8:aa::1")}
	u, err := kernel.FindUnderlay(f, q)
	want := "no interface has address 2001:db8:aa::1 (--public-ipv6): this node's addresses are eth0 2001:db8:0:1::11/64, eth1 2001:db8:0:2::11/64; use one of them, or, behind NAT, publish the NAT address with the node annotation public-ipv6-overwrite (Kubernetes mode)"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	nls, only := kernel.NotLocalErrors(err)
	if !only || len(nls) != 1 || nls[0].Addr != a("2001:db8:aa::1") {
		t.Errorf("NotLocalErrors: %v %t", nls, only)
	}
	if w := underlayOf(links, "eth0", "192.0.2.11", "2001:db8:aa::1"); !reflect.DeepEqual(u, w) {
		t.Errorf("beside the error: %+v\nwant %+v", u, w)
	}
	q.PublicIP = a("192.0.2.200")
	q.Ifaces = []string{"eth1"}
	u, err = kernel.FindUnderlay(f, q)
	nls, only = kernel.NotLocalErrors(err)
	if !only || len(nls) != 2 || nls[0].Addr != a("192.0.2.200") || nls[1].Addr != a("2001:db8:aa::1") {
		t.Errorf("both not local: %v (%v %t)", err, nls, only)
	}
	if !strings.Contains(err.Error(), "(--public-ip): ") || !strings.Contains(err.Error(), "(--public-ipv6): ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("both not local, one line naming both flags: %q", err)
	}
	if w := underlayOf(links, "eth1", "192.0.2.200", "2001:db8:aa::1"); !reflect.DeepEqual(u, w) {
		t.Errorf("beside the errors: %+v\nwant %+v", u, w)
	}
	// Another error is not only NotLocalErrors.
	_, err = kernel.FindUnderlay(f, kernel.UnderlayQuery{IPv4: true, IPv6: true, PublicIPv6: a("2001:db8:aa::1"), Ifaces: []string{"eth9"}})
	if nls, only := kernel.NotLocalErrors(err); only || err == nil {
		t.Errorf("there is no eth9, yet %v is only %v", err, nls)
	}
	if _, only := kernel.NotLocalErrors(nil); !only {
		t.Error("NotLocalErrors(nil) is not empty")
	}
}
