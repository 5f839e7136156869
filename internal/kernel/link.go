package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Device is the wanted state of a backend's device, for EnsureLink.
type Device struct {
	Name  string
	Kind  string // KindVXLAN or KindTUN
	VXLAN VXLAN  // KindVXLAN: the attributes the device must have
	MTU   int    // 0 leaves the MTU as it is
	MAC   string // KindVXLAN: canonical form; "" keeps the device's own
	// Addrs is the exact set of addresses the device must hold in each
	// family they are of: any other address of that family is removed,
	// except IPv6 link-local ones while NoIPv6AddrGen is false (the kernel
	// generates those). Addresses of other families are left alone, as
	// flannel leaves them (it manages IPv4 on flannel.1, IPv6 on its own
	// device).
	Addrs []netip.Prefix
	// NoIPv6AddrGen turns off IPv6 link-local addresses (`addrgenmode
	// none`), for a device that carries IPv4 only: no router solicitations.
	NoIPv6AddrGen bool
}

// Recreates reports whether EnsureLink deletes the existing link l and
// creates the device anew: l is of another kind, or a vxlan device with
// other attributes (the kernel changes none of them in place).
func (d Device) Recreates(l Link) bool {
	return l.Kind != d.Kind || l.VXLAN != d.VXLAN
}

// EnsureLink makes the device d describes exist with its kind, MTU, MAC,
// addresses and up. It is level-triggered: it reads
// the device and writes only what differs, so a device changed by hand (set
// down, another MTU, an address removed or added) is put back by the next
// call, and a call on a device that is right writes nothing.
//
// A missing vxlan device is created; one whose vxlan attributes (or kind)
// differ is deleted and created again with the same MAC, so that peers'
// FDB entries stay right. A TUN device is never created here (its backend
// opens it and holds its descriptor): a missing one gives an error for which
// IsNotFound is true, and a link of the TUN's name of another kind an error.
// A failed write does not stop the others; every failure is returned,
// joined. When ctx ends, EnsureLink stops before its next write.
func EnsureLink(ctx context.Context, k Kernel, d Device) error {
	l, err := k.LinkByName(d.Name)
	switch {
	case IsNotFound(err) && d.Kind == KindTUN:
		return fmt.Errorf("tun device %s does not exist (its backend opens it): %w", d.Name, err)
	case IsNotFound(err):
		if err := ctx.Err(); err != nil {
			return err
		}
		if l, err = k.AddLink(Link{Name: d.Name, Kind: d.Kind, MTU: d.MTU, MAC: d.MAC, VXLAN: d.VXLAN}); err != nil {
			return err
		}
	case err != nil:
		return err
	case l.Kind != d.Kind && d.Kind != KindVXLAN:
		return fmt.Errorf("%s is a %s device, not %s; delete it (ip link del %s)", d.Name, l.Kind, d.Kind, d.Name)
	case d.Recreates(l):
		mac := d.MAC
		if mac == "" {
			mac = l.MAC
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := k.DeleteLink(d.Name); err != nil {
			return err
		}
		if l, err = k.AddLink(Link{Name: d.Name, Kind: d.Kind, MTU: d.MTU, MAC: mac, VXLAN: d.VXLAN}); err != nil {
			return err
		}
	}
	name := l.Name

	addrs, err := k.Addrs()
	if err != nil {
		return err
	}
	var have []netip.Prefix
	linkLocal := false
	for _, a := range addrs {
		if a.Dev != name {
			continue
		}
		have = append(have, a.Prefix)
		linkLocal = linkLocal || isIPv6LinkLocal(a.Prefix)
	}

	var writes []func() error
	if d.MAC != "" && l.MAC != d.MAC {
		writes = append(writes, func() error { return k.SetLinkMAC(name, d.MAC) })
	}
	if d.MTU > 0 && l.MTU != d.MTU {
		writes = append(writes, func() error { return k.SetLinkMTU(name, d.MTU) })
	}
	// The mode is read nowhere, so it is set whenever the device is about
	// to come up (it counts from then on) or shows that it is not none.
	if d.NoIPv6AddrGen && (!l.Up || linkLocal) {
		writes = append(writes, func() error { return k.SetIPv6AddrGen(name, false) })
	}
	// Addresses are removed before the wanted ones are added, unlike
	// routes: deleting a primary IPv4 address deletes the secondary ones in
	// its network with it (unless promote_secondaries is set), so a new
	// own subnet added first, in the old one's network (udp's 10.244.7.0/16
	// after 10.244.3.0/16), would vanish with the old address.
	family := map[bool]bool{} // Is4 -> the device's addresses of that family are d.Addrs
	for _, p := range d.Addrs {
		family[p.Addr().Is4()] = true
	}
	owned := func(p netip.Prefix) bool {
		if isIPv6LinkLocal(p) {
			return d.NoIPv6AddrGen
		}
		return family[p.Addr().Is4()]
	}
	for _, p := range have {
		if !slices.Contains(d.Addrs, p) && owned(p) {
			writes = append(writes, func() error { return k.DeleteAddr(Addr{Dev: name, Prefix: p}) })
		}
	}
	for _, p := range d.Addrs {
		if !slices.Contains(have, p) {
			writes = append(writes, func() error { return k.ReplaceAddr(Addr{Dev: name, Prefix: p}) })
		}
	}
	if !l.Up {
		writes = append(writes, func() error { return k.SetLinkUp(name) })
	}
	// A failed write does not stop the others: a device with the wrong MTU
	// that is up still carries traffic.
	var errs []error
	for _, w := range writes {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := w(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isIPv6LinkLocal reports whether p is an fe80::/10 address, which the
// kernel generates for a link unless its addrgenmode is none.
func isIPv6LinkLocal(p netip.Prefix) bool {
	return p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()
}
