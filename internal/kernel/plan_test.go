package kernel

import (
	"net/netip"
	"testing"
)

func TestDiffReplacesInPlaceAndDeletesStale(t *testing.T) {
	r := func(dst, gw string, link int) Route {
		return Route{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(gw), Link: link}
	}
	want := Plan{Routes: []Route{r("10.244.2.0/24", "192.0.2.2", 2), r("10.244.3.0/24", "192.0.2.3", 2)}}
	have := Plan{Routes: []Route{r("10.244.2.0/24", "192.0.2.2", 2), r("10.244.3.0/24", "192.0.2.9", 2), r("10.244.4.0/24", "192.0.2.4", 2)}}
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
	s := Scope{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: netip.MustParsePrefix("10.244.1.0/24"), RouteLinks: []int{5}}
	for _, tc := range []struct {
		r    Route
		owns bool
	}{
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Link: 5}, true},
		{Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Link: 5}, false}, // own subnet
		{Route{Dst: netip.MustParsePrefix("10.244.0.0/16"), Link: 5}, false}, // the network itself
		{Route{Dst: netip.MustParsePrefix("10.245.2.0/24"), Link: 5}, false}, // outside
		{Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Link: 6}, false}, // other link
	} {
		if got := s.Owns(tc.r); got != tc.owns {
			t.Errorf("Owns(%v) = %v", tc.r, got)
		}
	}
}

func TestScopeFilter(t *testing.T) {
	s := Scope{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: netip.MustParsePrefix("10.244.1.0/24"), RouteLinks: []int{5, 2}, NeighLinks: []int{5}}
	n := func(ip string, link int) Neigh {
		return Neigh{IP: netip.MustParseAddr(ip), MAC: "02:00:00:00:00:01", Link: link}
	}
	f := func(dst string, link int) FDB {
		return FDB{MAC: "02:00:00:00:00:01", Dst: netip.MustParseAddr(dst), Link: link}
	}
	have := Plan{
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.244.2.0/24"), Link: 5},
			{Dst: netip.MustParsePrefix("10.244.3.0/24"), Link: 2},
			{Dst: netip.MustParsePrefix("10.244.4.0/24"), Link: 3}, // other link
		},
		Neighs: []Neigh{n("10.244.2.0", 5), n("fe80::1", 5), n("192.0.2.9", 2)},
		FDB:    []FDB{f("192.0.2.2", 5), f("192.0.2.9", 2)},
	}
	got := s.Filter(have)
	if len(got.Routes) != 2 || got.Routes[1].Link != 2 {
		t.Errorf("routes %v", got.Routes)
	}
	if len(got.Neighs) != 1 || got.Neighs[0] != n("10.244.2.0", 5) {
		t.Errorf("neighbours %v: only IPv4 ones on the neighbour links", got.Neighs)
	}
	if len(got.FDB) != 1 || got.FDB[0].Link != 5 {
		t.Errorf("fdb %v", got.FDB)
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
