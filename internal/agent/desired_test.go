package agent

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/lease"
)

func TestDesire(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	mk := func(subnet, ip string) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "host-gw"}}
	}
	own := mk("10.244.3.0/24", "192.0.2.11")
	peers := []lease.Lease{mk("10.244.4.0/24", "192.0.2.12"), mk("10.244.5.0/24", "192.0.2.13")}
	for _, tc := range []struct {
		name            string
		masq, forward   bool
		wantMasq, wantF bool
	}{
		{"masquerade and forward", true, true, true, true},
		{"forward only", false, true, false, true},
		{"masquerade only", true, false, true, false},
		{"nothing", false, false, false, false},
	} {
		d := Desire(Inputs{Network: network, Own: own, Leases: append([]lease.Lease{own}, peers...), MTU: 1450,
			IPMasq: tc.masq, ForwardRules: tc.forward})
		if len(d.Node.Peers) != 2 || d.Node.Peers[0].Subnet != peers[0].Subnet || d.Node.Own.Key() != own.Key() || d.Node.Network != network {
			t.Errorf("%s: node state %+v", tc.name, d.Node)
		}
		if d.Env.Network != network || d.Env.Subnet != netip.MustParsePrefix("10.244.3.1/24") || d.Env.MTU != 1450 || d.Env.IPMasq != tc.masq {
			t.Errorf("%s: subnet.env %+v", tc.name, d.Env)
		}
		if got := d.Firewall.Has(firewall.PartMasquerade, firewall.IPv4); got != tc.wantMasq {
			t.Errorf("%s: masquerade part %v, want %v", tc.name, got, tc.wantMasq)
		}
		if got := d.Firewall.Has(firewall.PartForward, firewall.IPv4); got != tc.wantF {
			t.Errorf("%s: forward part %v, want %v", tc.name, got, tc.wantF)
		}
		if len(d.Firewall.Parts) != btoi(tc.wantMasq)+btoi(tc.wantF) {
			t.Errorf("%s: %d firewall parts", tc.name, len(d.Firewall.Parts))
		}
	}
	// The parts are those of this network and this node's subnet.
	d := Desire(Inputs{Network: network, Own: own, IPMasq: true, ForwardRules: true})
	want := firewall.NewState(firewall.Masquerade(network, own.Subnet), firewall.Forward(network))
	if !reflect.DeepEqual(d.Firewall, want) || len(d.Node.Peers) != 0 {
		t.Errorf("own lease only: %+v, want firewall %+v", d, want)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
