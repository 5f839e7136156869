package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Route is a route in the main table.
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr // invalid for a route straight out of the link
	Dev    string     // the link's name
	OnLink bool       // the gateway is on the link even though no address covers it
}

func (r Route) String() string { return routeArgs(r) }

// Neigh is a permanent neighbour (ARP/NDP) entry.
type Neigh struct {
	IP  netip.Addr
	MAC string // canonical lower-case form
	Dev string // the link's name
}

// FDB is a permanent bridge forwarding entry on a vxlan device:
// "MAC dst IP self permanent".
type FDB struct {
	MAC string
	Dst netip.Addr
	Dev string // the vxlan link's name
}

// Plan is a set of kernel entries.
type Plan struct {
	Routes []Route
	Neighs []Neigh
	FDB    []FDB
}

// Diff compares a desired plan with what the kernel has and returns what
// to write (add or replace) and what to delete. Routes are keyed by
// destination, neighbours by (dev, IP), FDB entries by (dev, MAC): an entry
// whose key is desired is replaced in place, never deleted.
func Diff(want, have Plan) (add, del Plan) {
	add.Routes, del.Routes = diffBy(want.Routes, have.Routes, func(r Route) netip.Prefix { return r.Dst })
	type nk struct {
		dev string
		ip  netip.Addr
	}
	add.Neighs, del.Neighs = diffBy(want.Neighs, have.Neighs, func(n Neigh) nk { return nk{n.Dev, n.IP} })
	type fk struct {
		dev string
		mac string
	}
	add.FDB, del.FDB = diffBy(want.FDB, have.FDB, func(f FDB) fk { return fk{f.Dev, f.MAC} })
	return add, del
}

// diffBy returns the wanted entries missing from have or different there,
// and the entries of have whose key is not wanted at all.
func diffBy[E comparable, K comparable](want, have []E, key func(E) K) (add, del []E) {
	w := make(map[K]bool, len(want))
	for _, e := range want {
		w[key(e)] = true
	}
	h := make(map[K]E, len(have))
	for _, e := range have {
		h[key(e)] = e
	}
	for _, e := range want {
		if cur, ok := h[key(e)]; !ok || cur != e {
			add = append(add, e)
		}
	}
	for _, e := range have {
		if !w[key(e)] {
			del = append(del, e)
		}
	}
	return add, del
}

// Scope says which kernel entries a backend owns, so that it can remove
// entries it did not create (left by a previous run or planted by hand) and
// leave everything else alone.
type Scope struct {
	Network netip.Prefix // only routes to subnets of the cluster network
	Own     netip.Prefix // never the node's own subnet (the CNI bridge has it)
	// RouteDevs name the links whose routes into Network the backend owns.
	RouteDevs []string
	// NeighDevs name the links whose permanent neighbour entries (of
	// Network's family) and FDB entries the backend owns (the vxlan device;
	// never the underlay).
	NeighDevs []string
}

// Owns reports whether a route is in scope.
func (s Scope) Owns(r Route) bool {
	return slices.Contains(s.RouteDevs, r.Dev) && r.Dst.Bits() > s.Network.Bits() &&
		s.Network.Contains(r.Dst.Addr()) && r.Dst != s.Own
}

// Filter drops kernel entries outside the scope.
func (s Scope) Filter(have Plan) Plan {
	var out Plan
	for _, r := range have.Routes {
		if s.Owns(r) {
			out.Routes = append(out.Routes, r)
		}
	}
	for _, n := range have.Neighs {
		if slices.Contains(s.NeighDevs, n.Dev) && n.IP.Is4() == s.Network.Addr().Is4() {
			out.Neighs = append(out.Neighs, n)
		}
	}
	for _, f := range have.FDB {
		if slices.Contains(s.NeighDevs, f.Dev) {
			out.FDB = append(out.FDB, f)
		}
	}
	return out
}

// CanonicalMAC normalises a MAC address string, or returns "" if invalid.
func CanonicalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return ""
	}
	return strings.ToLower(hw.String())
}

// linkIndexName is how a link known only by its index is written:
// iproute2 prints "if7" for an index it cannot name.
func linkIndexName(index int) string { return fmt.Sprintf("if%d", index) }
