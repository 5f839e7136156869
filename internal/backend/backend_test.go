package backend

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
