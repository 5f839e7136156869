package backend

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

func TestPeersOf(t *testing.T) {
	l := func(subnet, ip, typ string) lease.Lease {
		var p netip.Prefix
		if subnet != "" {
			p = netip.MustParsePrefix(subnet)
		}
		return lease.Lease{Subnet: p, Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
	}
	own := l("10.244.1.0/24", "192.0.2.1", "vxlan")
	st := NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Peers: []lease.Lease{
		own,
		l("10.244.2.0/24", "192.0.2.2", "vxlan"),
		l("10.244.3.0/24", "192.0.2.3", "host-gw"),
		l("10.244.4.0/24", "192.0.2.4", ""), // flannel's udp leases carry no type
		l("", "192.0.2.5", "vxlan"),         // no subnet
		l("10.244.6.0/24", "192.0.2.6", "udp"),
	}}
	subnets := func(ls []lease.Lease) []string {
		var out []string
		for _, x := range ls {
			out = append(out, x.Subnet.String())
		}
		return out
	}
	for _, tc := range []struct {
		types []string
		want  []string
	}{
		{[]string{"vxlan"}, []string{"10.244.2.0/24"}},
		{[]string{"host-gw"}, []string{"10.244.3.0/24"}},
		{[]string{"", "udp"}, []string{"10.244.4.0/24", "10.244.6.0/24"}},
		{nil, nil},
	} {
		if got := subnets(slices.Collect(st.PeersOf(tc.types...))); !slices.Equal(got, tc.want) {
			t.Errorf("PeersOf(%q) = %v, want %v", tc.types, got, tc.want)
		}
	}
}

// TestIsPeerDualAndIPv6Only: a lease is a peer with a subnet of either
// family; it is this node's own by key, by PublicIP, or by PublicIPv6, and
// an unspecified PublicIP (flannel's IPv6-only leases carry 0.0.0.0)
// makes no lease this node's.
func TestIsPeerDualAndIPv6Only(t *testing.T) {
	l := func(v4, v6, ip, ip6 string) lease.Lease {
		var x lease.Lease
		if v4 != "" {
			x.Subnet = netip.MustParsePrefix(v4)
		}
		if v6 != "" {
			x.IPv6Subnet = netip.MustParsePrefix(v6)
		}
		if ip != "" {
			x.Attrs.PublicIP = netip.MustParseAddr(ip)
		}
		if ip6 != "" {
			x.Attrs.PublicIPv6 = netip.MustParseAddr(ip6)
		}
		x.Attrs.BackendType = "vxlan"
		return x
	}
	dual := NodeState{Own: l("10.244.1.0/24", "2001:db8:244:1::/64", "192.0.2.1", "2001:db8:0:1::1")}
	v6only := NodeState{Own: l("", "2001:db8:244:1::/64", "0.0.0.0", "2001:db8:0:1::1")}
	v6noIP := NodeState{Own: l("", "2001:db8:244:1::/64", "", "2001:db8:0:1::1")}
	v4only := NodeState{Own: l("10.244.1.0/24", "", "192.0.2.1", "")}
	for _, tc := range []struct {
		name string
		st   NodeState
		l    lease.Lease
		want bool
	}{
		{"dual: another node", dual, l("10.244.2.0/24", "2001:db8:244:2::/64", "192.0.2.2", "2001:db8:0:1::2"), true},
		{"dual: own key", dual, dual.Own, false},
		{"dual: old lease with own PublicIP", dual, l("10.244.9.0/24", "2001:db8:244:9::/64", "192.0.2.1", "2001:db8:0:1::9"), false},
		{"dual: old lease with own PublicIPv6", dual, l("10.244.9.0/24", "2001:db8:244:9::/64", "192.0.2.9", "2001:db8:0:1::1"), false},
		{"dual: a peer with an IPv6 subnet only", dual, l("", "2001:db8:244:3::/64", "0.0.0.0", "2001:db8:0:1::3"), true},
		{"dual: a peer with an IPv4 subnet only", dual, l("10.244.3.0/24", "", "192.0.2.3", ""), true},
		{"dual: no subnet at all", dual, l("", "", "192.0.2.4", "2001:db8:0:1::4"), false},
		{"v6-only: another node, PublicIP 0.0.0.0 as ours", v6only, l("", "2001:db8:244:2::/64", "0.0.0.0", "2001:db8:0:1::2"), true},
		{"v6-only: another node without PublicIP", v6only, l("", "2001:db8:244:2::/64", "", "2001:db8:0:1::2"), true},
		{"v6-only: own key", v6only, v6only.Own, false},
		{"v6-only: old lease with own PublicIPv6", v6only, l("", "2001:db8:244:9::/64", "0.0.0.0", "2001:db8:0:1::1"), false},
		{"v6-only, own PublicIP invalid: another with 0.0.0.0", v6noIP, l("", "2001:db8:244:2::/64", "0.0.0.0", "2001:db8:0:1::2"), true},
		{"v4-only: another node", v4only, l("10.244.2.0/24", "", "192.0.2.2", ""), true},
		{"v4-only: old lease with own PublicIP", v4only, l("10.244.9.0/24", "", "192.0.2.1", ""), false},
	} {
		if got := tc.st.IsPeer(tc.l); got != tc.want {
			t.Errorf("%s: IsPeer = %v, want %v", tc.name, got, tc.want)
		}
	}
	// PeersOf in an IPv6-only cluster: every lease carries PublicIP
	// 0.0.0.0, and every other node's is a peer.
	v6only.Peers = []lease.Lease{v6only.Own,
		l("", "2001:db8:244:2::/64", "0.0.0.0", "2001:db8:0:1::2"),
		l("", "2001:db8:244:3::/64", "0.0.0.0", "2001:db8:0:1::3"),
		l("", "2001:db8:244:9::/64", "0.0.0.0", "2001:db8:0:1::1"),
	}
	var got []string
	for p := range v6only.PeersOf("vxlan") {
		got = append(got, p.IPv6Subnet.String())
	}
	if want := []string{"2001:db8:244:2::/64", "2001:db8:244:3::/64"}; !slices.Equal(got, want) {
		t.Errorf("IPv6-only PeersOf = %v, want %v", got, want)
	}
}

func TestInnerMTU(t *testing.T) {
	u := kernel.Underlay{MTU: 9000}
	if got := InnerMTU(u, 0, 50); got != 8950 {
		t.Errorf("from the underlay: %d", got)
	}
	if got := InnerMTU(u, 1500, 28); got != 1472 {
		t.Errorf("configured: %d", got)
	}
}

// TestFamilyPeers: of a dual cluster's peers, the IPv6 family yields those
// with an IPv6 subnet and PublicIPv6; one with the subnet but no address
// is skipped with the reason; an IPv4-only peer is not its business.
func TestFamilyPeers(t *testing.T) {
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("2001:db8:244:1::/64"),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1"), BackendType: "vxlan"}}
	full := lease.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), IPv6Subnet: netip.MustParsePrefix("2001:db8:244:2::/64"),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.2"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::2"), BackendType: "vxlan"}}
	noAddr6 := lease.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24"), IPv6Subnet: netip.MustParsePrefix("2001:db8:244:3::/64"),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.3"), BackendType: "vxlan"}}
	v4only := lease.Lease{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.4"), BackendType: "vxlan"}}
	st := NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), IPv6Network: netip.MustParsePrefix("2001:db8:244::/48"),
		Own: own, Peers: []lease.Lease{own, full, noAddr6, v4only}}
	keys := func(f Family) ([]string, []string) {
		var got, skipped []string
		for p := range st.FamilyPeers(f, &skipped, "vxlan") {
			got = append(got, p.Key())
		}
		return got, skipped
	}
	if got, skipped := keys(Family{Is6: true}); !slices.Equal(got, []string{full.Key()}) ||
		!slices.Equal(skipped, []string{"2001:db8:244:3::/64: no IPv6 public address in its lease"}) {
		t.Errorf("IPv6: %v, skipped %v", got, skipped)
	}
	if got, skipped := keys(Family{Is6: false}); !slices.Equal(got, []string{full.Key(), noAddr6.Key(), v4only.Key()}) || len(skipped) != 0 {
		t.Errorf("IPv4: %v, skipped %v", got, skipped)
	}
}
