package agent

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

// planned builds the backend net-conf.json names, as the agent does
// (table.Parse, Kind.New), over a fake kernel with lo, eth0 (index 2) and,
// for vxlan, flannel.1 as an earlier run left it (so its MAC is reused).
// The underlay is fixed: eth0, 192.0.2.11 on 192.0.2.0/24 and
// 2001:db8:0:1::11 on 2001:db8:0:1::/64, MTU 1500. It returns the
// networks of the enabled families.
func planned(t *testing.T, conf string) (backend.Backend, *kerneltest.Fake, netip.Prefix, netip.Prefix) {
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
	f.Writes() // the node's own setup, not the backend's
	f.AddDevice(kernel.Link{Name: "flannel.1", Kind: kernel.KindVXLAN, MTU: 1450, MAC: "0e:00:00:00:00:03", Up: true,
		VXLAN: kernel.VXLAN{VNI: 1, Local: netip.MustParseAddr("192.0.2.11"), Dev: eth0.Index, Port: 8472}})
	u := kernel.Underlay{Name: "eth0", LinkIndex: eth0.Index, Addr: netip.MustParseAddr("192.0.2.11"), Addr6: netip.MustParseAddr("2001:db8:0:1::11"), MTU: 1500,
		OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:0:1::/64")}}
	v4, v6 := networks(cfg)
	be, err := kind.New(t.Context(), backend.Env{Kernel: f, Underlay: u, Network: v4, IPv6Network: v6, Log: quiet()}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	return be, f, v4, v6
}

func mkLease(subnet, ip, typ, data string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip),
		BackendType: typ, BackendData: []byte(data)}}
}

// entries renders kernel entries as the commands that would add them.
func entries(p kernel.Plan) string {
	var lines []string
	for _, e := range p.FDB {
		lines = append(lines, kernel.FDBCmd("replace", e))
	}
	for _, n := range p.Neighs {
		lines = append(lines, kernel.NeighCmd("replace", n))
	}
	for _, r := range p.Routes {
		lines = append(lines, kernel.RouteCmd("replace", r))
	}
	return strings.Join(lines, "\n")
}

// TestDesireKernel: these leases and this net-conf.json give these
// devices, routes, neighbour and FDB entries, skipped peers and firewall
// parts, computed by the real backends' Plan without touching the kernel.
func TestDesireKernel(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	own := netip.MustParsePrefix("10.244.3.0/24")
	masq, fwd := firewall.Masquerade(network, own), firewall.Forward(network)
	for _, tc := range []struct {
		name, conf    string
		ownType       string
		peers         []lease.Lease
		masq, forward bool
		devices       []kernel.Device
		entries       string
		scope         kernel.Scope
		skipped       []string
		firewall      firewall.State
		mtu           int
	}{
		{
			name:    "vxlan with DirectRouting",
			conf:    `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}`,
			ownType: "vxlan",
			peers: []lease.Lease{
				mkLease("10.244.4.0/24", "192.0.2.12", "vxlan", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"}`),    // on-link: direct
				mkLease("10.244.5.0/24", "198.51.100.13", "vxlan", `{"VNI":1,"VtepMAC":"0E:00:00:00:00:05"}`), // over vxlan
				mkLease("10.244.6.0/24", "198.51.100.14", "vxlan", `{"VNI":1,"VtepMAC":"zz"}`),                // bad MAC
				mkLease("10.244.7.0/24", "192.0.2.17", "host-gw", ``),                                         // another backend
			},
			masq: true, forward: true,
			devices: []kernel.Device{{Name: "flannel.1", Kind: kernel.KindVXLAN,
				VXLAN: kernel.VXLAN{VNI: 1, Local: netip.MustParseAddr("192.0.2.11"), Dev: 2, Port: 8472},
				MTU:   1450, MAC: "0e:00:00:00:00:03", Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/32")}}},
			entries: `bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 198.51.100.13 self permanent
ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0
ip route replace 10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink`,
			scope:    kernel.Scope{Networks: []netip.Prefix{network}, Own: []netip.Prefix{own}, RouteDevs: []string{"flannel.1", "eth0"}, NeighDevs: []string{"flannel.1"}},
			skipped:  []string{`10.244.6.0/24 (198.51.100.14): BackendData: bad VtepMAC "zz"`},
			firewall: firewall.NewState(masq, fwd),
			mtu:      1450,
		},
		{
			name:    "host-gw",
			conf:    `{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`,
			ownType: "host-gw",
			peers: []lease.Lease{
				mkLease("10.244.4.0/24", "192.0.2.12", "host-gw", ``),
				mkLease("10.244.5.0/24", "198.51.100.13", "host-gw", ``), // off-link
				mkLease("10.244.6.0/24", "192.0.2.14", "vxlan", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:06"}`),
			},
			forward:  true,
			entries:  `ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0`,
			scope:    kernel.Scope{Networks: []netip.Prefix{network}, Own: []netip.Prefix{own}, RouteDevs: []string{"eth0"}},
			skipped:  []string{"10.244.5.0/24 (198.51.100.13): not on-link from eth0; host-gw needs all nodes on one L2 segment (use vxlan with DirectRouting), or a router that announces the subnet over BGP (BGP.Import)"},
			firewall: firewall.NewState(fwd),
			mtu:      1500,
		},
		{
			name: "udp",
			conf: `{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}`,
			peers: []lease.Lease{
				mkLease("10.244.4.0/24", "192.0.2.12", "", ``),
				mkLease("10.244.5.0/24", "198.51.100.13", "udp", ``),
				mkLease("10.244.6.0/25", "192.0.2.14", "", ``), // another subnet length
			},
			masq: true,
			devices: []kernel.Device{{Name: "flannel0", Kind: kernel.KindTUN, MTU: 1472,
				Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/16")}, NoIPv6AddrGen: true}},
			skipped:  []string{"10.244.6.0/25 (192.0.2.14): subnet length differs from this node's /24"},
			firewall: firewall.NewState(masq),
			mtu:      1472,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, f, net, _ := planned(t, tc.conf)
			ownLease := mkLease(own.String(), "192.0.2.11", tc.ownType, ``)
			d := Desire(Inputs{Network: net, Own: ownLease, Leases: append([]lease.Lease{ownLease}, tc.peers...),
				MTU: be.MTU(), Backend: be, IPMasq: tc.masq, ForwardRules: tc.forward})
			if got := f.Writes(); got != "" {
				t.Errorf("Desire wrote to the kernel:\n%s", got)
			}
			k := d.Kernel
			if !reflect.DeepEqual(k.Devices, tc.devices) {
				t.Errorf("devices\n%+v\nwant\n%+v", k.Devices, tc.devices)
			}
			if got := entries(k.Entries); got != tc.entries {
				t.Errorf("entries\n%s\nwant\n%s", got, tc.entries)
			}
			if !reflect.DeepEqual(k.Scope, tc.scope) {
				t.Errorf("scope %+v, want %+v", k.Scope, tc.scope)
			}
			if !reflect.DeepEqual(k.Skipped, tc.skipped) {
				t.Errorf("skipped %q, want %q", k.Skipped, tc.skipped)
			}
			if !reflect.DeepEqual(k.Node.Peers, tc.peers) || k.Node.Own.Key() != ownLease.Key() || k.Node.Network != network {
				t.Errorf("node state %+v", k.Node)
			}
			if !reflect.DeepEqual(d.Firewall, tc.firewall) {
				t.Errorf("firewall %+v, want %+v", d.Firewall, tc.firewall)
			}
			if d.Env.MTU != tc.mtu || d.Env.IPMasq != tc.masq || d.Env.Network != network {
				t.Errorf("subnet.env %+v, want MTU %d", d.Env, tc.mtu)
			}
			// Pure: the same inputs give the same state.
			again := Desire(Inputs{Network: net, Own: ownLease, Leases: append([]lease.Lease{ownLease}, tc.peers...),
				MTU: be.MTU(), Backend: be, IPMasq: tc.masq, ForwardRules: tc.forward})
			if !reflect.DeepEqual(again, d) {
				t.Errorf("a second Desire differs:\n%+v\n%+v", again, d)
			}
		})
	}
}

func TestDesire(t *testing.T) {
	be, _, network, _ := planned(t, `{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`)
	mk := func(subnet, ip string) lease.Lease { return mkLease(subnet, ip, "host-gw", ``) }
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
			Backend: be, IPMasq: tc.masq, ForwardRules: tc.forward})
		node := d.Kernel.Node
		if len(node.Peers) != 2 || node.Peers[0].Subnet != peers[0].Subnet || node.Own.Key() != own.Key() || node.Network != network {
			t.Errorf("%s: node state %+v", tc.name, node)
		}
		if len(d.Kernel.Entries.Routes) != 2 {
			t.Errorf("%s: kernel entries %+v", tc.name, d.Kernel.Entries)
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
	d := Desire(Inputs{Network: network, Own: own, Backend: be, IPMasq: true, ForwardRules: true})
	want := firewall.NewState(firewall.Masquerade(network, own.Subnet), firewall.Forward(network))
	if !reflect.DeepEqual(d.Firewall, want) || len(d.Kernel.Node.Peers) != 0 || len(d.Kernel.Entries.Routes) != 0 {
		t.Errorf("own lease only: %+v, want firewall %+v", d, want)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDesireFamilies: a dual-stack and an IPv6-only node get the node
// state, subnet.env lines and firewall parts of each enabled family, the
// same for both, and the real backends plan routes of each family.
func TestDesireFamilies(t *testing.T) {
	sub4, sub6 := netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("2001:db8:244:3::/64")
	dual := func(v4, ip4, v6, ip6, typ string) lease.Lease {
		l := lease.Lease{Attrs: lease.Attrs{PublicIP: netip.IPv4Unspecified(), BackendType: typ}}
		if v4 != "" {
			l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(v4), netip.MustParseAddr(ip4)
		}
		if v6 != "" {
			l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.MustParsePrefix(v6), netip.MustParseAddr(ip6)
		}
		return l
	}
	for _, tc := range []struct {
		name, conf string
		own        lease.Lease
		peers      []lease.Lease
		notRandom  bool
		env        string
		firewall   func(n4, n6 netip.Prefix) firewall.State
		routes     string
	}{
		{
			name: "dual stack, host-gw",
			conf: `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw"}}`,
			own:  dual("10.244.3.0/24", "192.0.2.11", "2001:db8:244:3::/64", "2001:db8:0:1::11", "host-gw"),
			peers: []lease.Lease{
				dual("10.244.4.0/24", "192.0.2.12", "2001:db8:244:4::/64", "2001:db8:0:1::12", "host-gw"),
				dual("10.244.5.0/24", "192.0.2.13", "", "", "host-gw"), // not dual yet
			},
			env: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:3::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n",
			firewall: func(n4, n6 netip.Prefix) firewall.State {
				return firewall.NewState(firewall.Masquerade(n4, sub4), firewall.Forward(n4), firewall.Masquerade(n6, sub6), firewall.Forward(n6))
			},
			routes: `ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0
ip route replace 10.244.5.0/24 via 192.0.2.13 dev eth0
ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0`,
		},
		{
			name: "IPv6 only, vxlan, masquerade not fully random",
			conf: `{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`,
			own:  dual("", "", "2001:db8:244:3::/64", "2001:db8:0:1::11", "vxlan"),
			peers: []lease.Lease{
				dual("", "", "2001:db8:244:4::/64", "2001:db8:0:1::12", "vxlan"),
			},
			notRandom: true,
			env:       "FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
			firewall: func(_, n6 netip.Prefix) firewall.State {
				return firewall.NewState(firewall.MasqueradeRandom(n6, sub6, false), firewall.Forward(n6))
			},
			routes: `ip route replace 2001:db8:244:4::/64 via 2001:db8:244:4:: dev flannel-v6.1 onlink`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, f, n4, n6 := planned(t, tc.conf)
			if !n6.IsValid() {
				t.Fatal("IPv6 is not enabled")
			}
			if strings.Contains(tc.name, "IPv6 only") != !n4.IsValid() {
				t.Fatalf("IPv4 network %s", n4)
			}
			if tc.peers[0].Attrs.BackendType == "vxlan" {
				tc.peers[0].Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"}`)
			}
			in := Inputs{Network: n4, IPv6Network: n6, Own: tc.own, Leases: append([]lease.Lease{tc.own}, tc.peers...),
				MTU: be.MTU(), Backend: be, IPMasq: true, IPMasqNotRandom: tc.notRandom, ForwardRules: true}
			d := Desire(in)
			if got := f.Writes(); got != "" {
				t.Errorf("Desire wrote to the kernel:\n%s", got)
			}
			node := d.Kernel.Node
			if node.Network != n4 || node.IPv6Network != n6 || !reflect.DeepEqual(node.Peers, tc.peers) || !node.Own.SameSubnets(tc.own) {
				t.Errorf("node state %+v", node)
			}
			if got := string(d.Env.Marshal()); got != tc.env {
				t.Errorf("subnet.env\n%s\nwant\n%s", got, tc.env)
			}
			if want := tc.firewall(n4, n6); !reflect.DeepEqual(d.Firewall, want) {
				t.Errorf("firewall %+v\nwant %+v", d.Firewall, want)
			}
			var routes []string
			for _, r := range d.Kernel.Entries.Routes {
				routes = append(routes, kernel.RouteCmd("replace", r))
			}
			if got := strings.Join(routes, "\n"); got != tc.routes {
				t.Errorf("routes\n%s\nwant\n%s", got, tc.routes)
			}
			if !reflect.DeepEqual(Desire(in), d) {
				t.Error("a second Desire differs")
			}
		})
	}
}

// TestDesireSkipsOverlappingPeers: a peer whose subnet of either family
// overlaps this node's own (the peer's older lease beside this node's
// rejected one) is left out of the node state and skipped with the
// reason, so that no route to the node's own subnet is ever planned; the
// other peers are routed.
func TestDesireSkipsOverlappingPeers(t *testing.T) {
	be, _, v4, v6 := planned(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"}}`)
	mk := func(sub4, sub6 string, n byte) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(sub4), IPv6Subnet: netip.MustParsePrefix(sub6),
			Attrs: lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, n}), PublicIPv6: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 15: n}), BackendType: "host-gw"}}
	}
	own := mk("10.244.3.0/24", "2001:db8:244:61::/64", 11)
	sameV6 := mk("10.244.1.0/24", "2001:db8:244:61::/64", 12)
	insideV4 := mk("10.244.3.128/25", "2001:db8:244:62::/64", 13)
	peer := mk("10.244.4.0/24", "2001:db8:244:64::/64", 14)
	d := Desire(Inputs{Network: v4, IPv6Network: v6, Own: own, Leases: []lease.Lease{sameV6, insideV4, peer}, MTU: 1500, Backend: be})
	if got := keysOf(d.Kernel.Node.Peers); !reflect.DeepEqual(got, []string{peer.Key()}) {
		t.Errorf("peers %v, want %s only", got, peer.Key())
	}
	want := []string{
		sameV6.Key() + " (2001:db8:0:1::c): its IPv6 subnet 2001:db8:244:61::/64 overlaps this node's own 2001:db8:244:61::/64; not routed",
		insideV4.Key() + " (192.0.2.13): its IPv4 subnet 10.244.3.128/25 overlaps this node's own 10.244.3.0/24; not routed",
	}
	if !reflect.DeepEqual(d.Skipped, want) {
		t.Errorf("skipped\n%q\nwant\n%q", d.Skipped, want)
	}
	for _, r := range d.Kernel.Entries.Routes {
		if r.Dst.Overlaps(own.Subnet) || r.Dst.Overlaps(own.IPv6Subnet) {
			t.Errorf("a route to this node's own subnet: %s", kernel.RouteCmd("replace", r))
		}
	}
	if len(d.Kernel.Entries.Routes) != 2 {
		t.Errorf("routes\n%s\nwant the peer's of each family", entries(d.Kernel.Entries))
	}
	// Without an overlap nothing is skipped, and the peers are taken as
	// they are.
	peers := []lease.Lease{peer}
	d = Desire(Inputs{Network: v4, IPv6Network: v6, Own: own, Leases: peers, MTU: 1500, Backend: be})
	if d.Skipped != nil || len(d.Kernel.Node.Peers) != 1 || &d.Kernel.Node.Peers[0] != &peers[0] {
		t.Errorf("no overlap: skipped %q, peers %v", d.Skipped, keysOf(d.Kernel.Node.Peers))
	}
}
