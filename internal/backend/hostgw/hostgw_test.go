package hostgw

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/lease"
)

func TestPlanSkipsPeersThatAreNotOnLink(t *testing.T) {
	u := backend.Underlay{Name: "eth0", LinkIndex: 2, OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
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
	p, skipped := Plan(st, u)
	want := backend.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.0.2.2"), Link: 2}
	if len(p.Routes) != 1 || p.Routes[0] != want {
		t.Errorf("routes %v, want [%v]", p.Routes, want)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "198.51.100.3") || !strings.Contains(skipped[0], "not on-link") {
		t.Errorf("skipped %v", skipped)
	}
}
