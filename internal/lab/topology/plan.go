// Package topology lays out a lab's underlay: the address plan (all in the
// TEST-NET ranges), the switch or router namespace that joins the nodes,
// the veth that plugs each host into it, and the kernel settings of a
// node's namespace (forwarding, a FORWARD DROP policy). It configures only
// namespaces the caller created, never the root namespace.
package topology

import "net/netip"

// Topologies of the underlay.
const (
	L2 = "l2" // every host on one bridge
	L3 = "l3" // two node subnets and an outside one, joined by a router
)

// IP families of a lab (`weft lab up --ip-family`): which families the
// pod network has. The underlay keeps its IPv4 addresses in every lab
// (the store and the API server are reached over IPv4) and gets IPv6
// ones too in an ipv6 or dual lab.
const (
	IPv4 = "ipv4"
	IPv6 = "ipv6"
	Dual = "dual"
)

// Families are the choices of --ip-family.
func Families() []string { return []string{IPv4, IPv6, Dual} }

// HasIPv4 and HasIPv6 say whether a lab of family fam ("" is IPv4, as a
// lab state written before families existed) has pods of that family.
func HasIPv4(fam string) bool { return fam != IPv6 }
func HasIPv6(fam string) bool { return fam == IPv6 || fam == Dual }

// The address plan. All addresses are in the TEST-NET ranges and, for
// IPv6, in the documentation prefix 2001:db8::/32.
var (
	SideA   = netip.MustParsePrefix("192.0.2.0/24")
	SideB   = netip.MustParsePrefix("198.51.100.0/24")
	Outside = netip.MustParsePrefix("203.0.113.0/24")
	// Network is the cluster network the pods' subnets come from.
	Network = netip.MustParsePrefix("10.244.0.0/16")
	// StoreIP is the control namespace's address: the store and the
	// kube-apiserver listen on it.
	StoreIP = netip.MustParseAddr("192.0.2.2")

	// The IPv6 segments of sides a, b and x: host n of an IPv4 side is
	// host n of its IPv6 side (192.0.2.11 and 2001:db8:0:a::b).
	SideA6   = netip.MustParsePrefix("2001:db8:0:a::/64")
	SideB6   = netip.MustParsePrefix("2001:db8:0:b::/64")
	Outside6 = netip.MustParsePrefix("2001:db8:0:f::/64")
	// Network6 is the IPv6 cluster network: a /64 per node.
	Network6   = netip.MustParsePrefix("2001:db8:244::/56")
	SubnetLen6 = 64
)

// Host is a namespace with an underlay address.
type Host struct {
	Name string     `json:"name"` // short name: ctl, ext, n1, ...
	NS   string     `json:"netns"`
	Addr netip.Addr `json:"addr"`
	// Addr6 is its IPv6 address in an ipv6 or dual lab, host Addr's
	// number on its side's IPv6 segment.
	Addr6 netip.Addr `json:"addr6,omitzero"`
	Side  string     `json:"side,omitempty"` // "a", "b" (l3) or "x" (outside)
	PID   int        `json:"pid,omitempty"`  // the process the lab runs there, if any
}

// Addrs are h's underlay addresses: IPv4, then IPv6 if it has one.
func (h Host) Addrs() []netip.Addr {
	out := []netip.Addr{h.Addr}
	if h.Addr6.IsValid() {
		out = append(out, h.Addr6)
	}
	return out
}

// AddrOf is h's address of the family of a (IPv4 or IPv6), or the zero
// Addr when it has none.
func (h Host) AddrOf(is6 bool) netip.Addr {
	if is6 {
		return h.Addr6
	}
	return h.Addr
}

// WithIPv6 gives h its IPv6 address: the same host number as Addr's, on
// its side's IPv6 segment.
func (h Host) WithIPv6() Host {
	h.Addr6 = Mirror6(h.Side, h.Addr)
	return h
}

// Mirror6 is IPv4 address a (on side) moved to side's IPv6 segment,
// keeping its host number.
func Mirror6(side string, a netip.Addr) netip.Addr {
	return Nth(Prefix6(side), int(a.As4()[3]))
}

// Nth is the n-th address after p's first.
func Nth(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// NodeAddr places node i (1-based) of total: on l2 all on side a; on l3
// the first half on side a, the rest on side b.
func NodeAddr(topo string, i, total int) (netip.Addr, string) {
	if topo == L3 && i > (total+1)/2 {
		return Nth(SideB, 10+i), "b"
	}
	return Nth(SideA, 10+i), "a"
}

// ExtAddr places the external host: beside the nodes on l2, on the
// outside subnet behind the router on l3.
func ExtAddr(topo string) (netip.Addr, string) {
	if topo == L3 {
		return Nth(Outside, 10), "x"
	}
	return Nth(SideA, 254), "a"
}

// Gateway is the router's address on side, or the zero Addr on l2 (no
// router).
func Gateway(topo, side string) netip.Addr {
	if topo != L3 {
		return netip.Addr{}
	}
	return Nth(Prefix(side), 1)
}

// Gateways are the router's addresses on side, one per family of the
// lab (fam), none on l2.
func Gateways(topo, side, fam string) []netip.Addr {
	gw := Gateway(topo, side)
	if !gw.IsValid() {
		return nil
	}
	out := []netip.Addr{gw}
	if HasIPv6(fam) {
		out = append(out, Mirror6(side, gw))
	}
	return out
}

// SegmentOf is the segment of side that holds a: the IPv4 or the IPv6
// one.
func SegmentOf(side string, a netip.Addr) netip.Prefix {
	if a.Is6() {
		return Prefix6(side)
	}
	return Prefix(side)
}

// Prefix is side's subnet.
func Prefix(side string) netip.Prefix {
	switch side {
	case "b":
		return SideB
	case "x":
		return Outside
	}
	return SideA
}

// Prefix6 is side's IPv6 segment.
func Prefix6(side string) netip.Prefix {
	switch side {
	case "b":
		return SideB6
	case "x":
		return Outside6
	}
	return SideA6
}

// Bridge is the underlay bridge of side.
func Bridge(side string) string { return "br-" + side }

// NodeSides are the sides nodes sit on.
func NodeSides(topo string) []string {
	if topo == L3 {
		return []string{"a", "b"}
	}
	return []string{"a"}
}

// bridgeSides are the sides the underlay has a bridge for.
func bridgeSides(topo string) []string {
	if topo == L3 {
		return []string{"a", "b", "x"}
	}
	return []string{"a"}
}
