package kernel

import (
	"net/netip"
	"testing"
)

func TestDiffReplacesInPlaceAndDeletesStale(t *testing.T) {
	r := func(dst, gw, dev string) Route {
		return Route{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(gw), Dev: dev}
	}
	want := Plan{Routes: []Route{r("10.244.2.0/24", "192.0.2.2", "eth0"), r("10.244.3.0/24", "192.0.2.3", "eth0")}}
	have := Plan{Routes: []Route{r("10.244.2.0/24", "192.0.2.2", "eth0"), r("10.244.3.0/24", "192.0.2.9", "eth0"), r("10.244.4.0/24", "192.0.2.4", "eth0")}}
	add, del := Diff(want, have)
	if len(add.Routes) != 1 || add.Routes[0] != want.Routes[1] {
		t.Errorf("add = %v", add.Routes)
	}
	if len(del.Routes) != 1 || del.Routes[0].Dst != netip.MustParsePrefix("10.244.4.0/24") {
		t.Errorf("del = %v (a changed route must be replaced, not deleted)", del.Routes)
	}
	add, del = Diff(want, want)
	if len(add.Routes)+len(del.Routes) != 0 {
		t.Errorf("diff of equal plans: %v %v", add, del)
	}
}

func TestScope(t *testing.T) {
	s := Scope{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Own: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, RouteDevs: []string{"flannel.1"}}
	for _, tc := range []struct {
		r    Route
		owns bool
	}{
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "flannel.1"}, true},
		{Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "flannel.1"}, false}, // own subnet
		{Route{Dst: netip.MustParsePrefix("10.244.0.0/16"), Dev: "flannel.1"}, false}, // the network itself
		{Route{Dst: netip.MustParsePrefix("10.245.2.0/24"), Dev: "flannel.1"}, false}, // outside
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "flannel.2"}, false}, // other link
		// flanneld's route (proto boot) on weft's link: weft's since it replaced flanneld
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "flannel.1", Protocol: ProtoBoot}, true},
		// weft's own protocol: whatever the destination and link, but never the own subnet
		{Route{Dst: netip.MustParsePrefix("192.0.2.0/30"), Dev: "eth0", Protocol: ProtoWeft}, true},
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "flannel.2", Protocol: ProtoWeft}, true},
		{Route{Dst: netip.MustParsePrefix("10.244.0.0/16"), Dev: "flannel.1", Protocol: ProtoWeft}, true},
		{Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "flannel.1", Protocol: ProtoWeft}, false},
		{Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "cni0", Protocol: ProtoKernel}, false},
		{Route{Dst: netip.MustParsePrefix("10.245.2.0/24"), Dev: "flannel.1", Protocol: ProtoStatic}, false},
	} {
		if got := s.Owns(tc.r); got != tc.owns {
			t.Errorf("Owns(%v) = %v", tc.r, got)
		}
	}
}

func TestScopeFilter(t *testing.T) {
	s := Scope{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Own: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, RouteDevs: []string{"flannel.1", "eth0"}, NeighDevs: []string{"flannel.1"}}
	n := func(ip, dev string) Neigh {
		return Neigh{IP: netip.MustParseAddr(ip), MAC: "02:00:00:00:00:01", Dev: dev}
	}
	f := func(dst, dev string) FDB {
		return FDB{MAC: "02:00:00:00:00:01", Dst: netip.MustParseAddr(dst), Dev: dev}
	}
	have := Plan{
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "flannel.1"},
			{Dst: netip.MustParsePrefix("10.244.3.0/24"), Dev: "eth0"},
			{Dst: netip.MustParsePrefix("10.244.4.0/24"), Dev: "cni0"}, // other link
		},
		Neighs: []Neigh{n("10.244.2.0", "flannel.1"), n("fe80::1", "flannel.1"), n("192.0.2.9", "eth0")},
		FDB:    []FDB{f("192.0.2.2", "flannel.1"), f("192.0.2.9", "eth0")},
	}
	got := s.Filter(have)
	if len(got.Routes) != 2 || got.Routes[1].Dev != "eth0" {
		t.Errorf("routes %v", got.Routes)
	}
	if len(got.Neighs) != 1 || got.Neighs[0] != n("10.244.2.0", "flannel.1") {
		t.Errorf("neighbours %v: only IPv4 ones on the neighbour links", got.Neighs)
	}
	if len(got.FDB) != 1 || got.FDB[0].Dev != "flannel.1" {
		t.Errorf("fdb %v", got.FDB)
	}
}

// TestScopeDual: one scope over both families' networks and own subnets
// owns the routes into either network, never either own subnet, and the
// neighbours of both families on its neighbour links; a scope of one
// family leaves the other family's neighbours alone.
func TestScopeDual(t *testing.T) {
	p := netip.MustParsePrefix
	s := Scope{Networks: []netip.Prefix{p("10.244.0.0/16"), p("2001:db8:244::/48")},
		Own:       []netip.Prefix{p("10.244.1.0/24"), p("2001:db8:244:1::/64")},
		RouteDevs: []string{"flannel.1", "flannel-v6.1", "eth0"}, NeighDevs: []string{"flannel.1", "flannel-v6.1"}}
	for _, tc := range []struct {
		r    Route
		owns bool
	}{
		{Route{Dst: p("10.244.2.0/24"), Dev: "flannel.1"}, true},
		{Route{Dst: p("2001:db8:244:2::/64"), Dev: "flannel-v6.1"}, true},
		{Route{Dst: p("2001:db8:244:2::/64"), Dev: "eth0", Protocol: ProtoBoot}, true},
		{Route{Dst: p("2001:db8:244:1::/64"), Dev: "flannel-v6.1", Protocol: ProtoWeft}, false}, // own IPv6 subnet
		{Route{Dst: p("10.244.1.0/24"), Dev: "flannel.1", Protocol: ProtoWeft}, false},          // own IPv4 subnet
		{Route{Dst: p("2001:db8:244::/48"), Dev: "flannel-v6.1"}, false},                        // the network itself
		{Route{Dst: p("2001:db8:245::/64"), Dev: "flannel-v6.1"}, false},                        // outside
		{Route{Dst: p("2001:db8:244:2::/64"), Dev: "cni0"}, false},                              // other link
	} {
		if got := s.Owns(tc.r); got != tc.owns {
			t.Errorf("Owns(%v) = %v", tc.r, got)
		}
	}
	n := func(ip, dev string) Neigh {
		return Neigh{IP: netip.MustParseAddr(ip), MAC: "02:00:00:00:00:01", Dev: dev}
	}
	have := Plan{Neighs: []Neigh{n("10.244.2.0", "flannel.1"), n("2001:db8:244:2::", "flannel-v6.1"), n("2001:db8:0:1::9", "eth0")}}
	if got := s.Filter(have).Neighs; len(got) != 2 || got[0] != have.Neighs[0] || got[1] != have.Neighs[1] {
		t.Errorf("dual neighbours %v, want both families on the vxlan devices", got)
	}
	v6 := Scope{Networks: []netip.Prefix{p("2001:db8:244::/48")}, NeighDevs: []string{"flannel.1", "flannel-v6.1"}}
	if got := v6.Filter(have).Neighs; len(got) != 1 || got[0] != have.Neighs[1] {
		t.Errorf("IPv6-only neighbours %v, want the IPv6 one", got)
	}
}

func TestCanonicalMAC(t *testing.T) {
	for in, want := range map[string]string{
		"0E:77:C0:00:02:0C":       "0e:77:c0:00:02:0c",
		"0e-77-c0-00-02-0c":       "0e:77:c0:00:02:0c",
		"zz":                      "",
		"00:00:00:00:fe:80:00:00": "", // EUI-64 is not a MAC here
	} {
		if got := CanonicalMAC(in); got != want {
			t.Errorf("CanonicalMAC(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDiffTakesOverAnotherProtocolsRoute(t *testing.T) {
	r := Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), Dev: "flannel.1", OnLink: true}
	boot, weft := r, r
	boot.Protocol, weft.Protocol = ProtoBoot, ProtoWeft
	want := Plan{Routes: []Route{r}}
	if add, _ := Diff(want, Plan{Routes: []Route{weft}}); len(add.Routes) != 0 {
		t.Errorf("weft's route as planned (protocol 0) differs from itself as read (proto 87): %v", add.Routes)
	}
	add, del := Diff(want, Plan{Routes: []Route{boot}})
	if len(add.Routes) != 1 || add.Routes[0] != r || len(del.Routes) != 0 {
		t.Errorf("flanneld's route is not replaced in place by weft's: add %v, del %v", add.Routes, del.Routes)
	}
}

func TestRouteCmdNamesOthersProtocols(t *testing.T) {
	r := Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "cni0"}
	for proto, want := range map[Protocol]string{
		0:           "ip route del 10.244.1.0/24 dev cni0",
		ProtoWeft:   "ip route del 10.244.1.0/24 dev cni0",
		ProtoKernel: "ip route del 10.244.1.0/24 dev cni0 proto kernel",
		ProtoBoot:   "ip route del 10.244.1.0/24 dev cni0 proto boot",
		80:          "ip route del 10.244.1.0/24 dev cni0 proto 80",
	} {
		r.Protocol = proto
		if got := RouteCmd("del", r); got != want {
			t.Errorf("protocol %d: %q, want %q", proto, got, want)
		}
	}
	if ProtoWeft.String() != "87" {
		t.Errorf("weft's protocol prints as %q; `ip route` prints 87", ProtoWeft)
	}
}

// TestScopeHold: a held destination's route is not owned whoever wrote
// it, so Filter leaves it out and a plan that does not want it deletes
// nothing; the other routes are owned as before, and a destination no
// longer held is owned again.
func TestScopeHold(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	s := Scope{Networks: []netip.Prefix{p("10.244.0.0/16"), p("2001:db8:244::/48")}, Own: []netip.Prefix{p("10.244.1.0/24")},
		RouteDevs: []string{"eth0"}, Hold: []netip.Prefix{p("10.244.3.0/24"), p("2001:db8:244:3::/64")}}
	held := Route{Dst: p("10.244.3.0/24"), Gw: a("192.0.2.254"), Dev: "eth0", Protocol: ProtoWeft}
	held6 := Route{Dst: p("2001:db8:244:3::/64"), Gw: a("2001:db8:0:1::fe"), Dev: "eth0", Protocol: ProtoWeft}
	direct := Route{Dst: p("10.244.2.0/24"), Gw: a("192.0.2.2"), Dev: "eth0", Protocol: ProtoWeft}
	gone := Route{Dst: p("10.244.4.0/24"), Gw: a("192.0.2.254"), Dev: "eth0", Protocol: ProtoWeft}
	for _, tc := range []struct {
		r    Route
		owns bool
	}{
		{held, false},
		{held6, false},
		{Route{Dst: p("10.244.3.0/24"), Gw: a("192.0.2.254"), Dev: "eth0", Protocol: ProtoBoot}, false}, // held whoever wrote it
		{Route{Dst: p("10.244.3.0/25"), Gw: a("192.0.2.254"), Dev: "eth0", Protocol: ProtoWeft}, true},  // not the held prefix
		{direct, true},
		{gone, true},
		{Route{Dst: p("10.244.1.0/24"), Dev: "eth0", Protocol: ProtoWeft}, false}, // own
	} {
		if got := s.Owns(tc.r); got != tc.owns {
			t.Errorf("Owns(%v) = %v, want %v", tc.r, got, tc.owns)
		}
	}
	have := Plan{Routes: []Route{held, held6, direct, gone}}
	add, del := Diff(Plan{Routes: []Route{direct}}, s.Filter(have))
	if len(add.Routes) != 0 || len(del.Routes) != 1 || del.Routes[0] != gone {
		t.Errorf("with %v held: add %v, del %v; want only %v deleted", s.Hold, add.Routes, del.Routes, gone.Dst)
	}
	s.Hold = nil
	if _, del := Diff(Plan{Routes: []Route{direct}}, s.Filter(have)); len(del.Routes) != 3 {
		t.Errorf("nothing held: del %v, want the three routes not wanted", del.Routes)
	}
}
