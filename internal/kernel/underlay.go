package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Underlay describes the interface node-to-node traffic uses.
type Underlay struct {
	Name      string     // the link's name: Dev of routes through it
	LinkIndex int        // its index: the lower device of a vxlan link (VXLAN.Dev)
	Addr      netip.Addr // the node's PublicIP (IPv4); invalid when IPv4 is off
	Addr6     netip.Addr // the node's PublicIPv6; invalid when IPv6 is off
	MTU       int        // the interface MTU
	// OnLink are the networks directly attached to the interface, of both
	// families.
	OnLink []netip.Prefix
}

// UnderlayQuery says how to find the underlay interface, as flannel's
// flags do.
type UnderlayQuery struct {
	// Ifaces are --iface values in order: interface names or addresses;
	// the first that matches wins.
	Ifaces []string
	// Regexes are --iface-regex values, tried after Ifaces: matched against
	// the interfaces' addresses first, then their names.
	Regexes []string
	// CanReach is --iface-can-reach: the interface and source address the
	// node would use to reach it.
	CanReach netip.Addr
	// PublicIP and PublicIPv6 are --public-ip and --public-ipv6.
	PublicIP, PublicIPv6 netip.Addr
	// IPv4 and IPv6 are the families the network enables: the underlay
	// needs an address of each.
	IPv4, IPv6 bool
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
//
// A publicIP that no interface of the node holds is refused with a
// *NotLocalError naming the node's addresses. The Underlay returned with
// it is otherwise complete (the interface named by iface, else that of the
// default route, with Addr publicIP), for the caller that knows publicIP is
// a NAT address in front of the node and only warns.
func FindUnderlay(k Kernel, q UnderlayQuery) (Underlay, error) {
	var iface string
	if len(q.Ifaces) > 0 {
		iface = q.Ifaces[0]
	}
	publicIP := q.PublicIP
	addrs, err := k.Addrs()
	if err != nil {
		return Underlay{}, err
	}
	local := !publicIP.IsValid() || slices.ContainsFunc(addrs, func(a Addr) bool { return a.Prefix.Addr() == publicIP })
	var link Link
	switch {
	case iface != "":
		l, err := k.LinkByName(iface)
		if err != nil {
			return Underlay{}, fmt.Errorf("find interface %s (--iface): %w", iface, err)
		}
		link = l
	case publicIP.IsValid() && local:
		i := slices.IndexFunc(addrs, func(a Addr) bool { return a.Prefix.Addr() == publicIP })
		l, err := k.LinkByName(addrs[i].Dev)
		if err != nil {
			return Underlay{}, fmt.Errorf("find interface %s, which has %s (--public-ip): %w", addrs[i].Dev, publicIP, err)
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
		if !found && !local {
			// Not wrapped: with no interface, a NAT address cannot be
			// used either, so this is no NotLocalError.
			return Underlay{}, fmt.Errorf("%v; and no default route to pick the underlay interface from: set --iface", &NotLocalError{Addr: publicIP, Local: localAddrs(addrs)})
		}
		if !found {
			return Underlay{}, errors.New("no default route to pick the underlay interface from; set --iface or --public-ip")
		}
	}
	u := Underlay{Name: link.Name, LinkIndex: link.Index, MTU: link.MTU}
	for _, a := range addrs {
		ip := a.Prefix.Addr()
		if a.Dev != link.Name || !usable(ip) {
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
	if !local {
		return u, &NotLocalError{Addr: publicIP, Local: localAddrs(addrs)}
	}
	return u, nil
}

// usable reports whether ip can be an underlay address: IPv4, neither
// loopback nor link-local.
func usable(ip netip.Addr) bool {
	return ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast()
}

// localAddrs returns the usable addresses among addrs.
func localAddrs(addrs []Addr) []Addr {
	var out []Addr
	for _, a := range addrs {
		if usable(a.Prefix.Addr()) {
			out = append(out, a)
		}
	}
	return out
}

// NotLocalError says that the public IP asked for is on no interface of
// the node.
type NotLocalError struct {
	Addr  netip.Addr // the public IP asked for
	Local []Addr     // the node's usable IPv4 addresses
}

func (e *NotLocalError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no interface has address %s (--public-ip): ", e.Addr)
	if len(e.Local) == 0 {
		b.WriteString("this node has no usable IPv4 address")
	} else {
		b.WriteString("this node's addresses are")
		for i, a := range e.Local {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %s", a.Dev, a.Prefix)
		}
	}
	b.WriteString("; use one of them, or, behind NAT, publish the NAT address with the node annotation public-ip-overwrite (Kubernetes mode)")
	return b.String()
}
