package wireguard

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// TestTunnelDevices: the devices each family's traffic to other nodes'
// pods may use are the one Plan routes the family's network to: flannel-wg
// for IPv4, flannel-wg-v6 for IPv6 in Mode separate and flannel-wg in the
// others; none for a family that is off or that this node has no subnet of.
func TestTunnelDevices(t *testing.T) {
	v4, v6 := backend.Family{}, backend.Family{Is6: true}
	net4, net6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8:244::/48")
	own4, own6 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("2001:db8:244:1::/64")
	for _, tc := range []struct {
		name         string
		mode         Mode
		fams         []backend.Family
		own4, own6   netip.Prefix
		want4, want6 []string
	}{
		{"separate, dual", Separate, []backend.Family{v4, v6}, own4, own6, []string{DeviceName}, []string{DeviceName6}},
		{"auto, dual", Auto, []backend.Family{v4, v6}, own4, own6, []string{DeviceName}, []string{DeviceName}},
		{"ipv4, dual", IPv4, []backend.Family{v4, v6}, own4, own6, []string{DeviceName}, []string{DeviceName}},
		{"ipv6, dual", IPv6, []backend.Family{v4, v6}, own4, own6, []string{DeviceName}, []string{DeviceName}},
		{"separate, IPv4 only", Separate, []backend.Family{v4}, own4, netip.Prefix{}, []string{DeviceName}, nil},
		{"separate, IPv6 only", Separate, []backend.Family{v6}, netip.Prefix{}, own6, nil, []string{DeviceName6}},
		{"auto, IPv6 only", Auto, []backend.Family{v6}, netip.Prefix{}, own6, nil, []string{DeviceName}},
		{"separate, dual, no IPv6 subnet in the lease", Separate, []backend.Family{v4, v6}, own4, netip.Prefix{}, []string{DeviceName}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := Parse(json.RawMessage(`{"Mode":"` + string(tc.mode) + `"}`))
			if err != nil {
				t.Fatal(err)
			}
			b := &Backend{cfg: opts.(Options), fams: tc.fams, links: map[string]link{},
				u: kernel.Underlay{Name: "eth0", Addr: netip.MustParseAddr("192.0.2.1"), Addr6: netip.MustParseAddr("2001:db8:0:1::1"), MTU: 1500}}
			st := backend.NodeState{Own: lease.Lease{Subnet: tc.own4, IPv6Subnet: tc.own6}}
			for _, f := range tc.fams {
				if f.Is6 {
					st.IPv6Network = net6
				} else {
					st.Network = net4
				}
			}
			var tun backend.Tunnel = b
			if got := tun.TunnelDevices(st, v4); !slices.Equal(got, tc.want4) {
				t.Errorf("IPv4: %q, want %q", got, tc.want4)
			}
			if got := tun.TunnelDevices(st, v6); !slices.Equal(got, tc.want6) {
				t.Errorf("IPv6: %q, want %q", got, tc.want6)
			}
			// The same devices as Plan's route of each network, and
			// devices Plan sets up.
			d := b.Plan(st)
			checked := 0
			for _, r := range d.Entries.Routes {
				f := backend.Family{Is6: r.Dst.Addr().Is6()}
				if r.Dst != f.Network(st) {
					continue
				}
				if got := tun.TunnelDevices(st, f); !slices.Equal(got, []string{r.Dev}) {
					t.Errorf("%s: TunnelDevices %q, but Plan routes %s to %s", f, got, r.Dst, r.Dev)
				}
				if !slices.ContainsFunc(d.Devices, func(dev kernel.Device) bool { return dev.Name == r.Dev }) {
					t.Errorf("%s: Plan routes to %s but sets up no such device: %+v", f, r.Dev, d.Devices)
				}
				checked++
			}
			if want := len(slices.DeleteFunc([][]string{tc.want4, tc.want6}, func(d []string) bool { return d == nil })); checked != want {
				t.Errorf("Plan routes %d networks to a device, want %d: %v", checked, want, d.Entries.Routes)
			}
		})
	}
}
