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

// The address plan. All addresses are in the TEST-NET ranges.
var (
	SideA   = netip.MustParsePrefix("192.0.2.0/24")
	SideB   = netip.MustParsePrefix("198.51.100.0/24")
	Outside = netip.MustParsePrefix("203.0.113.0/24")
	// Network is the cluster network the pods' subnets come from.
	Network = netip.MustParsePrefix("10.244.0.0/16")
	// StoreIP is the control namespace's address: the store and the
	// kube-apiserver listen on it.
	StoreIP = netip.MustParseAddr("192.0.2.2")
)

// Host is a namespace with an underlay address.
type Host struct {
	Name string     `json:"name"` // short name: ctl, ext, n1, ...
	NS   string     `json:"netns"`
	Addr netip.Addr `json:"addr"`
	Side string     `json:"side,omitempty"` // "a", "b" (l3) or "x" (outside)
	PID  int        `json:"pid,omitempty"`  // the process the lab runs there, if any
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
