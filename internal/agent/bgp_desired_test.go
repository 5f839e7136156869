package agent

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/lease"
)

// TestDesireBGP: with BGP on, the node announces each subnet its lease
// holds with its underlay address of that family as the next hop; the
// routes learned with import on reach the backend's plan (host-gw routes
// a peer behind the router through the learned next hop, and nothing for
// a prefix no lease holds); the masquerade parts leave pods' traffic to the
// routable networks alone, each family its own.
func TestDesireBGP(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	const dualHostGW = `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw"}}`
	const v6HostGW = `{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw"}}`
	hop4, hop6 := a("192.0.2.11"), a("2001:db8:0:1::11")
	dualOwn := hostGW("10.244.3.0/24", "192.0.2.11", "2001:db8:244:3::/64", "2001:db8:0:1::11")
	v4Own := hostGW("10.244.3.0/24", "192.0.2.11", "", "")
	v6Own := hostGW("", "", "2001:db8:244:3::/64", "2001:db8:0:1::11")
	peers := []lease.Lease{
		hostGW("10.244.4.0/24", "192.0.2.12", "2001:db8:244:4::/64", "2001:db8:0:1::12"),  // on the link
		hostGW("10.244.6.0/24", "198.51.100.6", "2001:db8:244:6::/64", "2001:db8:0:2::6"), // behind the router
	}
	routable := []netip.Prefix{p("203.0.113.0/24"), p("2001:db8:0:f::/64")}
	for _, tc := range []struct {
		name     string
		conf     string
		own      lease.Lease
		bgp      *BGPInputs
		announce []bgp.Route
		routes   string
		skipped  int
		exempt   []string // the routable returns in the masquerade chains
	}{
		{
			name: "off", conf: dualHostGW, own: dualOwn,
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped: 2,
		},
		{
			name: "dual stack: a route of each family, import off", conf: dualHostGW, own: dualOwn,
			bgp:      &BGPInputs{NextHop4: hop4, NextHop6: hop6},
			announce: []bgp.Route{{Prefix: p("10.244.3.0/24"), NextHop: hop4}, {Prefix: p("2001:db8:244:3::/64"), NextHop: hop6}},
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped: 2,
		},
		{
			name: "dual cluster, a lease of IPv4 only: IPv4 only", conf: dualHostGW, own: v4Own,
			bgp:      &BGPInputs{NextHop4: hop4, NextHop6: hop6},
			announce: []bgp.Route{{Prefix: p("10.244.3.0/24"), NextHop: hop4}},
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped: 2,
		},
		{
			name: "IPv6 only: no IPv4 route whatever the IPv4 next hop", conf: v6HostGW, own: v6Own,
			bgp:      &BGPInputs{NextHop4: hop4, NextHop6: hop6},
			announce: []bgp.Route{{Prefix: p("2001:db8:244:3::/64"), NextHop: hop6}},
			routes:   "ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped:  1,
		},
		{
			name: "no IPv6 next hop (nor a bad one): IPv4 only", conf: dualHostGW, own: dualOwn,
			bgp:      &BGPInputs{NextHop4: hop4, NextHop6: a("192.0.2.11")},
			announce: []bgp.Route{{Prefix: p("10.244.3.0/24"), NextHop: hop4}},
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped: 2,
		},
		{
			name: "import: the peer behind the router through the learned next hop", conf: dualHostGW, own: dualOwn,
			bgp: &BGPInputs{NextHop4: hop4, NextHop6: hop6, Learned: []bgp.Route{
				{Prefix: p("10.244.6.0/24"), NextHop: a("192.0.2.1"), Peer: a("192.0.2.1")},
				{Prefix: p("10.244.6.0/24"), NextHop: a("192.0.2.99"), Peer: a("192.0.2.99")}, // not the first: ignored
				{Prefix: p("10.244.99.0/24"), NextHop: a("192.0.2.1"), Peer: a("192.0.2.1")},  // no lease holds it
				{Prefix: p("2001:db8:244:6::/64"), NextHop: a("2001:db8:0:1::1"), Peer: a("2001:db8:0:1::1")},
			}},
			announce: []bgp.Route{{Prefix: p("10.244.3.0/24"), NextHop: hop4}, {Prefix: p("2001:db8:244:3::/64"), NextHop: hop6}},
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 10.244.6.0/24 via 192.0.2.1 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0\n" +
				"ip route replace 2001:db8:244:6::/64 via 2001:db8:0:1::1 dev eth0",
		},
		{
			name: "routable networks: a return of each family before the masquerade", conf: dualHostGW, own: dualOwn,
			bgp:      &BGPInputs{NextHop4: hop4, NextHop6: hop6, Routable: routable},
			announce: []bgp.Route{{Prefix: p("10.244.3.0/24"), NextHop: hop4}, {Prefix: p("2001:db8:244:3::/64"), NextHop: hop6}},
			routes: "ip route replace 10.244.4.0/24 via 192.0.2.12 dev eth0\n" +
				"ip route replace 2001:db8:244:4::/64 via 2001:db8:0:1::12 dev eth0",
			skipped: 2,
			exempt:  []string{"ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return", "ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:0:f::/64 return"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, _, n4, n6 := planned(t, tc.conf)
			in := Inputs{Network: n4, IPv6Network: n6, Own: tc.own, Leases: append([]lease.Lease{tc.own}, peers...),
				MTU: be.MTU(), Backend: be, IPMasq: true, ForwardRules: true, BGP: tc.bgp}
			d := Desire(in)
			if !reflect.DeepEqual(d.Announce, tc.announce) {
				t.Errorf("announce %v, want %v", d.Announce, tc.announce)
			}
			if got := entries(d.Kernel.Entries); got != tc.routes {
				t.Errorf("routes\n%s\nwant\n%s", got, tc.routes)
			}
			if len(d.Kernel.Skipped) != tc.skipped {
				t.Errorf("skipped %q, want %d", d.Kernel.Skipped, tc.skipped)
			}
			if (tc.bgp == nil || tc.bgp.Learned == nil) != (d.Kernel.Node.Learned == nil) {
				t.Errorf("node state's Learned %v with import %v", d.Kernel.Node.Learned, tc.bgp != nil && tc.bgp.Learned != nil)
			}
			// The masquerade parts: those without BGP, plus the returns.
			var exempt []string
			for _, part := range d.Firewall.Parts {
				if part.Name != firewall.PartMasquerade {
					continue
				}
				for _, r := range part.Chains[0].Rules {
					if r.Verdict == firewall.VerdictReturn && r.Dst.Prefix.IsValid() && !r.Dst.Not && !strings.HasPrefix(r.Dst.Prefix.Addr().String(), "10.244.") && !strings.HasPrefix(r.Dst.Prefix.Addr().String(), "2001:db8:244:") {
						exempt = append(exempt, r.String())
					}
				}
			}
			if !reflect.DeepEqual(exempt, tc.exempt) {
				t.Errorf("routable returns %q, want %q", exempt, tc.exempt)
			}
			if tc.exempt == nil {
				if off := Desire(Inputs{Network: n4, IPv6Network: n6, Own: tc.own, Backend: be, IPMasq: true, ForwardRules: true}); !reflect.DeepEqual(d.Firewall, off.Firewall) {
					t.Errorf("firewall differs from BGP off:\n%+v\n%+v", d.Firewall, off.Firewall)
				}
			}
			if !reflect.DeepEqual(Desire(in), d) {
				t.Error("a second Desire differs")
			}
		})
	}
}
