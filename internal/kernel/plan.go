package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Route is a route in the main table.
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr // invalid for a route straight out of the link
	Dev    string     // the link's name
	OnLink bool       // the gateway is on the link even though no address covers it
	// Protocol is who wrote the route (`proto N`), as the kernel reports
	// it. A route written with 0 is written with ProtoWeft: a plan leaves
	// it 0, and every route weft writes carries weft's protocol.
	Protocol Protocol
}

// Protocol is a route's routing protocol number (rtm_protocol, `ip route
// ... proto N`): the kernel does not interpret it beyond the first few; it
// tells who wrote a route.
type Protocol uint8

// The protocols weft meets. ProtoWeft is weft's own.
const (
	ProtoKernel Protocol = 2 // RTPROT_KERNEL: made from an address (a connected route)
	ProtoBoot   Protocol = 3 // RTPROT_BOOT: `ip route add` without proto, flanneld
	ProtoStatic Protocol = 4 // RTPROT_STATIC: the administrator

	// ProtoWeft marks the routes weft writes, so that it finds every route
	// it ever wrote (for a lease outside the cluster network, or before a
	// Network change) and removes it once no lease wants it. In
	// /etc/iproute2 style (a file in /etc/iproute2/rt_protos.d/) it is
	//
	//	87	weft
	//
	// 87 is ASCII 'W'. No known daemon uses it (checked in 2025): iproute2's
	// rt_protos and linux/rtnetlink.h name 0-4, 8-18, 42, 99, 186-189 and
	// 192; FRR adds 190-198 (ripng, ldp, sharp, pbr, static, openfabric,
	// srte); OVN uses 84; Calico uses boot (3) and 80 for its vxlan
	// routes; Cilium uses kernel (2); kube-router uses 17 (mrouted's number,
	// for the routes it learns over BGP); flanneld uses boot.
	ProtoWeft Protocol = 87
)

// String is the protocol as `ip route` prints it on a node without extra
// names: the kernel's names for the numbers it defines, the number for
// others (weft's is "87").
func (p Protocol) String() string {
	if s, ok := protocolNames[p]; ok {
		return s
	}
	return strconv.Itoa(int(p))
}

// protocolNames are iproute2's names (its rt_protos file).
var protocolNames = map[Protocol]string{0: "unspec", 1: "redirect", ProtoKernel: "kernel", ProtoBoot: "boot", ProtoStatic: "static",
	8: "gated", 9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp",
	18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}

// written is r as the kernel reports it once written: with ProtoWeft when
// r leaves the protocol 0.
func (r Route) written() Route {
	if r.Protocol == 0 {
		r.Protocol = ProtoWeft
	}
	return r
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
// whose key is desired is replaced in place, never deleted. A route of
// protocol 0 is weft's (ProtoWeft), so a route of another protocol
// (flanneld's, proto boot) is replaced by weft's.
func Diff(want, have Plan) (add, del Plan) {
	add.Routes, del.Routes = diffBy(want.Routes, have.Routes, func(r Route) netip.Prefix { return r.Dst }, Route.written)
	type nk struct {
		dev string
		ip  netip.Addr
	}
	add.Neighs, del.Neighs = diffBy(want.Neighs, have.Neighs, func(n Neigh) nk { return nk{n.Dev, n.IP} }, nil)
	type fk struct {
		dev string
		mac string
	}
	add.FDB, del.FDB = diffBy(want.FDB, have.FDB, func(f FDB) fk { return fk{f.Dev, f.MAC} }, nil)
	return add, del
}

// diffBy returns the wanted entries missing from have or different there
// (compared as norm, if not nil, makes them), and the entries of have whose
// key is not wanted at all.
func diffBy[E comparable, K comparable](want, have []E, key func(E) K, norm func(E) E) (add, del []E) {
	// h holds the index in have of each key (the last, for a key listed
	// twice); wanted marks the indexes whose key is wanted.
	h := make(map[K]int, len(have))
	for i, e := range have {
		h[key(e)] = i
	}
	wanted := make([]bool, len(have))
	for _, e := range want {
		i, ok := h[key(e)]
		if !ok {
			add = append(add, e)
			continue
		}
		wanted[i] = true
		cur, n := have[i], e
		if norm != nil {
			cur, n = norm(cur), norm(e)
		}
		if cur != n {
			add = append(add, e)
		}
	}
	for i, e := range have {
		if j := h[key(e)]; !wanted[j] {
			del = append(del, have[i])
		}
	}
	return add, del
}

// Scope says which kernel entries a backend owns, so that it can remove
// entries it did not create (left by a previous run or planted by hand) and
// leave everything else alone. It owns every route weft wrote (ProtoWeft),
// wherever it leads, and the routes into the cluster's networks through its
// links that others wrote there (flanneld, before weft replaced it).
type Scope struct {
	// Networks are the cluster's networks, one per enabled family: only
	// routes to their subnets, or weft's own, are owned.
	Networks []netip.Prefix
	// Own are the node's own subnets (the CNI bridge has them): never owned.
	Own []netip.Prefix
	// RouteDevs name the links whose routes into Networks the backend owns
	// whatever their protocol.
	RouteDevs []string
	// NeighDevs name the links whose permanent neighbour entries (of the
	// families of Networks) and FDB entries the backend owns (the vxlan
	// devices; never the underlay).
	NeighDevs []string
	// Hold are destinations whose routes stay as the kernel has them
	// while they are listed: not owned, so never deleted or replaced. A
	// plan must not want a route to one (the kernel's route would be a
	// conflict). host-gw holds the subnets of peers behind a router while
	// the routes learned over BGP are not complete yet (an agent
	// restart), so that they are not deleted before the speaker has them
	// again.
	Hold []netip.Prefix
}

// Owns reports whether a route is in scope: never one to one of the node's
// own subnets or to a held destination (Hold); any route weft wrote (ProtoWeft: for a lease outside
// Networks, or written before a network changed); and a route into one of
// Networks (a subnet of it, not the network itself) through one of
// RouteDevs.
func (s Scope) Owns(r Route) bool {
	if slices.Contains(s.Own, r.Dst) || slices.Contains(s.Hold, r.Dst) {
		return false
	}
	return r.Protocol == ProtoWeft || slices.Contains(s.RouteDevs, r.Dev) && slices.ContainsFunc(s.Networks, func(n netip.Prefix) bool {
		return r.Dst.Bits() > n.Bits() && n.Contains(r.Dst.Addr())
	})
}

// ownsNeigh reports whether a permanent neighbour entry is in scope: on
// one of NeighDevs, of the family of one of Networks.
func (s Scope) ownsNeigh(n Neigh) bool {
	return slices.Contains(s.NeighDevs, n.Dev) && slices.ContainsFunc(s.Networks, func(p netip.Prefix) bool { return p.Addr().Is4() == n.IP.Is4() })
}

// Filter drops kernel entries outside the scope.
func (s Scope) Filter(have Plan) Plan {
	out := Plan{Routes: make([]Route, 0, len(have.Routes)), Neighs: make([]Neigh, 0, len(have.Neighs)), FDB: make([]FDB, 0, len(have.FDB))}
	for _, r := range have.Routes {
		if s.Owns(r) {
			out.Routes = append(out.Routes, r)
		}
	}
	for _, n := range have.Neighs {
		if s.ownsNeigh(n) {
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
