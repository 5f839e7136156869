package agent

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/firewall/firewalltest"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

// plannedAny builds the backend of conf as planned does, for any backend
// type: the wireguard backend gets a key file in a temporary directory
// (its New writes one), never the host's /run/flannel/wgkey.
func plannedAny(t *testing.T, conf string) (backend.Backend, netip.Prefix, netip.Prefix) {
	t.Helper()
	cfg, kind, opts, err := table.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:c0:00:02:0b", Up: true})
	for _, a := range []string{"192.0.2.11/24", "2001:db8:0:1::11/64"} {
		if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix(a)}); err != nil {
			t.Fatal(err)
		}
	}
	u := kernel.Underlay{Name: "eth0", LinkIndex: eth0.Index, Addr: netip.MustParseAddr("192.0.2.11"), Addr6: netip.MustParseAddr("2001:db8:0:1::11"), MTU: 1500,
		OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:0:1::/64")}}
	v4, v6 := networks(cfg)
	dir := t.TempDir()
	be, err := kind.New(t.Context(), backend.Env{Kernel: f, Underlay: u, Network: v4, IPv6Network: v6, Log: quiet(),
		WireGuardKeyFile: filepath.Join(dir, "wgkey"), WireGuardSocketDir: dir}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	return be, v4, v6
}

// TestDesireTunnelGuard: the wireguard backend, and only it, gets the
// tunnel guard for each enabled family, with the device of the family in
// its Mode (flannel-wg-v6 for IPv6 in Mode separate, flannel-wg
// otherwise), this node's subnet of the family, and whatever the
// masquerade and forward options.
func TestDesireTunnelGuard(t *testing.T) {
	sub4, sub6 := netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("2001:db8:244:3::/64")
	const dual = `"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48"`
	const v6only = `"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48"`
	for _, tc := range []struct {
		name, conf   string
		dev4, dev6   string // "": no guard for the family
		masq, fwdOff bool
	}{
		{"wireguard IPv4", `{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}`, "flannel-wg", "", true, false},
		{"wireguard IPv4, no masquerade or forward rules", `{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}`, "flannel-wg", "", false, true},
		{"wireguard dual, Mode separate", `{` + dual + `, "Backend": {"Type": "wireguard"}}`, "flannel-wg", "flannel-wg-v6", true, false},
		{"wireguard dual, Mode auto", `{` + dual + `, "Backend": {"Type": "wireguard", "Mode": "auto"}}`, "flannel-wg", "flannel-wg", true, false},
		{"wireguard dual, Mode ipv4", `{` + dual + `, "Backend": {"Type": "wireguard", "Mode": "ipv4"}}`, "flannel-wg", "flannel-wg", true, false},
		{"wireguard dual, Mode ipv6", `{` + dual + `, "Backend": {"Type": "wireguard", "Mode": "ipv6"}}`, "flannel-wg", "flannel-wg", true, false},
		{"wireguard IPv6 only", `{` + v6only + `, "Backend": {"Type": "wireguard"}}`, "", "flannel-wg-v6", true, false},
		{"vxlan dual", `{` + dual + `, "Backend": {"Type": "vxlan"}}`, "", "", true, false},
		{"host-gw", `{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`, "", "", true, false},
		{"udp", `{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}`, "", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, n4, n6 := plannedAny(t, tc.conf)
			typ := be.LeaseAttrs().BackendType
			own := lease.Lease{Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: typ}}
			if n4.IsValid() {
				own.Subnet = sub4
			}
			if n6.IsValid() {
				own.IPv6Subnet, own.Attrs.PublicIPv6 = sub6, netip.MustParseAddr("2001:db8:0:1::11")
			}
			d := Desire(Inputs{Network: n4, IPv6Network: n6, Own: own, Leases: []lease.Lease{own}, MTU: be.MTU(), Backend: be,
				IPMasq: tc.masq, ForwardRules: !tc.fwdOff})
			var want []firewall.Part
			for _, f := range []struct {
				n, s netip.Prefix
				dev  string
			}{{n4, sub4, tc.dev4}, {n6, sub6, tc.dev6}} {
				if !f.n.IsValid() {
					continue
				}
				if tc.masq {
					want = append(want, firewall.Masquerade(f.n, f.s))
				}
				if !tc.fwdOff {
					want = append(want, firewall.Forward(f.n))
				}
				if f.dev != "" {
					want = append(want, firewall.TunnelGuard(f.n, f.s, []string{f.dev}))
				}
			}
			if !reflect.DeepEqual(d.Firewall, firewall.NewState(want...)) {
				t.Errorf("firewall:\n got %+v\nwant %+v", d.Firewall, want)
			}
			// The guard's devices are those the backend routes the networks to.
			for _, r := range d.Kernel.Entries.Routes {
				f := firewall.FamilyOf(r.Dst)
				if tc.dev4 != "" && f == firewall.IPv4 && r.Dev != tc.dev4 || tc.dev6 != "" && f == firewall.IPv6 && r.Dev != tc.dev6 {
					t.Errorf("the backend routes %s to %s, not to the guard's device", r.Dst, r.Dev)
				}
			}
		})
	}
}

// TestTunnelGuardLevelTriggered: the guard is part of the desired
// firewall, so applying the state of a non-wireguard backend after a
// wireguard one removes its chains and counters, and the reverse puts
// them back; the other parts stay.
func TestTunnelGuardLevelTriggered(t *testing.T) {
	wg, n4, _ := plannedAny(t, `{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}`)
	vx, _, _ := plannedAny(t, `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`)
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.11")}}
	var fw firewalltest.Fake
	for i, step := range []struct {
		be    backend.Backend
		guard bool
	}{{wg, true}, {vx, false}, {wg, true}} {
		d := Desire(Inputs{Network: n4, Own: own, Backend: step.be, IPMasq: true, ForwardRules: true})
		if err := fw.Apply(t.Context(), d.Firewall); err != nil {
			t.Fatal(err)
		}
		chains, _ := fw.Chains(firewall.IPv4)
		want := []string{"forward", "postrouting"}
		if step.guard {
			want = []string{"forward", "postrouting", "tunnel-in", "tunnel-out"}
		}
		if !reflect.DeepEqual(chains, want) {
			t.Errorf("step %d: chains %v, want %v", i, chains, want)
		}
		txs := fw.Transactions()
		tx := txs[len(txs)-1]
		if !step.guard && (!strings.Contains(tx, "delete chain ip weft tunnel-in\n") || !strings.Contains(tx, "delete counter ip weft tunnel-in-dropped\n")) {
			t.Errorf("step %d: the guard is not removed:\n%s", i, tx)
		}
		if step.guard && !strings.Contains(tx, `add rule ip weft tunnel-in ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter name "tunnel-in-dropped" drop`) {
			t.Errorf("step %d: no guard:\n%s", i, tx)
		}
	}
}
