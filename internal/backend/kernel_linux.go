package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel reads and writes Plan entries through netlink. It is the thin,
// impure end of planning; H may point into another namespace (tests).
type Kernel struct {
	H *netlink.Handle
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipToAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// Read returns the kernel's entries within scope.
func (k Kernel) Read(scope Scope) (Plan, error) {
	var have Plan
	family := netlink.FAMILY_V4
	if scope.Network.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := k.H.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return have, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		dst, ok := ipNetToPrefix(r.Dst)
		if !ok || r.Type != unix.RTN_UNICAST {
			continue
		}
		have.Routes = append(have.Routes, Route{Dst: dst, Gw: ipToAddr(r.Gw), Link: r.LinkIndex, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0})
	}
	for _, link := range scope.NeighLinks {
		neighs, err := k.H.NeighList(link, family)
		if err != nil {
			return have, fmt.Errorf("list neighbours on link %d: %w", link, err)
		}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr == nil {
				continue
			}
			have.Neighs = append(have.Neighs, Neigh{IP: ipToAddr(n.IP), MAC: n.HardwareAddr.String(), Link: link})
		}
		fdb, err := k.H.NeighList(link, unix.AF_BRIDGE)
		if err != nil {
			return have, fmt.Errorf("list fdb on link %d: %w", link, err)
		}
		for _, n := range fdb {
			if n.IP == nil || n.HardwareAddr == nil || n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			have.FDB = append(have.FDB, FDB{MAC: n.HardwareAddr.String(), Dst: ipToAddr(n.IP), Link: link})
		}
	}
	return scope.Filter(have), nil
}

// Apply writes want: adds and replacements first, deletions after, so
// traffic to a peer that stays never sees a gap. Every failure is returned
// (joined); the caller retries the whole sync.
func (k Kernel) Apply(want Plan, scope Scope) (Report, error) {
	have, err := k.Read(scope)
	if err != nil {
		return Report{}, err
	}
	add, del := Diff(want, have)
	var rep Report
	var errs []error
	count := func(err error, n *int) {
		if err != nil {
			errs = append(errs, err)
		} else {
			*n++
		}
	}
	for _, f := range add.FDB {
		count(k.setFDB(f), &rep.Added)
	}
	for _, n := range add.Neighs {
		count(k.setNeigh(n), &rep.Added)
	}
	for _, r := range add.Routes {
		count(k.replaceRoute(r), &rep.Added)
	}
	for _, r := range del.Routes {
		count(k.deleteRoute(r), &rep.Removed)
	}
	for _, n := range del.Neighs {
		count(k.deleteNeigh(n), &rep.Removed)
	}
	for _, f := range del.FDB {
		count(k.deleteFDB(f), &rep.Removed)
	}
	return rep, errors.Join(errs...)
}

func (k Kernel) nlRoute(r Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: r.Link, Dst: prefixToIPNet(r.Dst), Table: unix.RT_TABLE_MAIN}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// replaceRoute is `ip route replace DST via GW dev LINK [onlink]`.
func (k Kernel) replaceRoute(r Route) error {
	if err := k.H.RouteReplace(k.nlRoute(r)); err != nil {
		return fmt.Errorf("replace route %s: %w", r, err)
	}
	return nil
}

// deleteRoute is `ip route del DST`; a route already gone is success.
func (k Kernel) deleteRoute(r Route) error {
	if err := k.H.RouteDel(k.nlRoute(r)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

// setNeigh is `ip neigh replace IP lladdr MAC dev LINK nud permanent`.
func (k Kernel) setNeigh(n Neigh) error {
	hw, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("neighbour %s: %w", n.IP, err)
	}
	if err := k.H.NeighSet(&netlink.Neigh{LinkIndex: n.Link, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: n.IP.AsSlice(), HardwareAddr: hw}); err != nil {
		return fmt.Errorf("set neighbour %s lladdr %s: %w", n.IP, n.MAC, err)
	}
	return nil
}

func (k Kernel) deleteNeigh(n Neigh) error {
	hw, _ := net.ParseMAC(n.MAC)
	if err := k.H.NeighDel(&netlink.Neigh{LinkIndex: n.Link, IP: n.IP.AsSlice(), HardwareAddr: hw}); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete neighbour %s: %w", n.IP, err)
	}
	return nil
}

// setFDB is `bridge fdb replace MAC dst IP dev LINK self permanent`.
func (k Kernel) setFDB(f FDB) error {
	hw, err := net.ParseMAC(f.MAC)
	if err != nil {
		return fmt.Errorf("fdb %s: %w", f.MAC, err)
	}
	if err := k.H.NeighSet(&netlink.Neigh{LinkIndex: f.Link, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: hw}); err != nil {
		return fmt.Errorf("set fdb %s dst %s: %w", f.MAC, f.Dst, err)
	}
	return nil
}

func (k Kernel) deleteFDB(f FDB) error {
	hw, _ := net.ParseMAC(f.MAC)
	if err := k.H.NeighDel(&netlink.Neigh{LinkIndex: f.Link, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: hw}); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete fdb %s dst %s: %w", f.MAC, f.Dst, err)
	}
	return nil
}

// FindUnderlay finds the underlay interface: by name when iface is set,
// else the interface that holds publicIP, else the one of the default route.
func FindUnderlay(h *netlink.Handle, iface string, publicIP netip.Addr) (Underlay, error) {
	var link netlink.Link
	var err error
	switch {
	case iface != "":
		link, err = h.LinkByName(iface)
		if err != nil {
			return Underlay{}, fmt.Errorf("find interface %s: %w", iface, err)
		}
	case publicIP.IsValid():
		link, err = linkWithAddr(h, publicIP)
		if err != nil {
			return Underlay{}, err
		}
	default:
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return Underlay{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				if link, err = h.LinkByIndex(r.LinkIndex); err == nil {
					break
				}
			}
		}
		if link == nil {
			return Underlay{}, errors.New("no default route to pick the underlay interface from; set --iface or --public-ip")
		}
	}
	u := Underlay{Name: link.Attrs().Name, LinkIndex: link.Attrs().Index, MTU: link.Attrs().MTU}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return u, fmt.Errorf("list addresses of %s: %w", u.Name, err)
	}
	for _, a := range addrs {
		p, ok := ipNetToPrefix(a.IPNet)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		u.OnLink = append(u.OnLink, p.Masked())
		if !u.Addr.IsValid() && (!publicIP.IsValid() || publicIP == p.Addr()) {
			u.Addr = p.Addr()
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

func linkWithAddr(h *netlink.Handle, ip netip.Addr) (netlink.Link, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ipToAddr(a.IP) == ip {
			return h.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has address %s; set --iface", ip)
}
