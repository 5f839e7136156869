// Package netconv converts between net/netip values, which weft uses
// everywhere, and the net.IP and *net.IPNet that netlink and the CNI
// libraries take and return.
package netconv

import (
	"net"
	"net/netip"
)

// IPNet returns p as a *net.IPNet, keeping its host bits (an interface
// address such as 10.244.3.1/24 stays as it is).
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Prefix returns n as a netip.Prefix, with IPv4-mapped addresses unmapped;
// ok is false for nil or malformed input.
func Prefix(n *net.IPNet) (p netip.Prefix, ok bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if ones > a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// Addr returns ip as a netip.Addr, IPv4-mapped addresses unmapped; the zero
// Addr for nil or malformed input.
func Addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
