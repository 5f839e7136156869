package kernel

import (
	"errors"
	"fmt"
	"net/netip"
)

// Underlay describes the interface node-to-node traffic uses.
type Underlay struct {
	Name      string         // the link's name: Dev of routes through it
	LinkIndex int            // its index: the lower device of a vxlan link (VXLAN.Dev)
	Addr      netip.Addr     // the node's PublicIP
	MTU       int            // the interface MTU
	OnLink    []netip.Prefix // networks directly attached to the interface
}

// IsOnLink reports whether ip is directly reachable on the underlay.
func (u Underlay) IsOnLink(ip netip.Addr) bool {
	for _, p := range u.OnLink {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// FindUnderlay finds the underlay interface: by name when iface is set,
// else the interface that holds publicIP, else the one of the IPv4 default
// route. Its IPv4 addresses give the networks on the link, and the first
// one (or publicIP, when set) the node's address. Loopback and link-local
// addresses do not count.
func FindUnderlay(k Kernel, iface string, publicIP netip.Addr) (Underlay, error) {
	var link Link
	switch {
	case iface != "":
		l, err := k.LinkByName(iface)
		if err != nil {
			return Underlay{}, fmt.Errorf("find interface %s (--iface): %w", iface, err)
		}
		link = l
	case publicIP.IsValid():
		l, err := linkWithAddr(k, publicIP)
		if err != nil {
			return Underlay{}, err
		}
		link = l
	default:
		routes, err := k.Routes()
		if err != nil {
			return Underlay{}, err
		}
		found := false
		for _, r := range routes {
			if r.Dst.Bits() != 0 || !r.Dst.Addr().Is4() {
				continue
			}
			if l, err := k.LinkByName(r.Dev); err == nil {
				link, found = l, true
				break
			}
		}
		if !found {
			return Underlay{}, errors.New("no default route to pick the underlay interface from; set --iface or --public-ip")
		}
	}
	u := Underlay{Name: link.Name, LinkIndex: link.Index, MTU: link.MTU}
	addrs, err := k.Addrs()
	if err != nil {
		return u, err
	}
	for _, a := range addrs {
		ip := a.Prefix.Addr()
		if a.Dev != link.Name || !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		u.OnLink = append(u.OnLink, a.Prefix.Masked())
		if !u.Addr.IsValid() && (!publicIP.IsValid() || publicIP == ip) {
			u.Addr = ip
		}
	}
	if publicIP.IsValid() {
		u.Addr = publicIP
	}
	if !u.Addr.IsValid() {
		return u, fmt.Errorf("interface %s has no IPv4 address; set --public-ip or choose another --iface", u.Name)
	}
	return u, nil
}

func linkWithAddr(k Kernel, ip netip.Addr) (Link, error) {
	addrs, err := k.Addrs()
	if err != nil {
		return Link{}, err
	}
	for _, a := range addrs {
		if a.Prefix.Addr() == ip {
			return k.LinkByName(a.Dev)
		}
	}
	return Link{}, fmt.Errorf("no interface has address %s; set --iface", ip)
}
