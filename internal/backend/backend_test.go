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

func TestInnerMTU(t *testing.T) {
	u := kernel.Underlay{MTU: 9000}
	if got := InnerMTU(u, 0, 50); got != 8950 {
		t.Errorf("from the underlay: %d", got)
	}
	if got := InnerMTU(u, 1500, 28); got != 1472 {
		t.Errorf("configured: %d", got)
	}
}
