package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netconv"
)

// Netlink is the Kernel of the namespace a netlink handle points into.
type Netlink struct {
	h     *netlink.Handle
	names Names // for error messages only
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink returns the Kernel behind h: netlink.NewHandle() for the
// process's own namespace, or a handle into another one (tests). The caller
// keeps h and closes it.
func NewNetlink(h *netlink.Handle) *Netlink {
	k := &Netlink{h: h}
	k.names = NameOrIndex(func(index int) (string, bool) {
		l, err := h.LinkByIndex(index)
		if err != nil {
			return "", false
		}
		return l.Attrs().Name, true
	})
	return k
}

// link converts what netlink reports into a Link.
func link(l netlink.Link) Link {
	a := l.Attrs()
	out := Link{Index: a.Index, Name: a.Name, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if len(a.HardwareAddr) > 0 {
		out.MAC = a.HardwareAddr.String()
	}
	switch l := l.(type) {
	case *netlink.Vxlan:
		out.VXLAN = VXLAN{VNI: l.VxlanId, Local: netconv.Addr(l.SrcAddr), Dev: l.VtepDevIndex, Port: l.Port, Learning: l.Learning, GBP: l.GBP}
	case *netlink.Tuntap:
		out.Kind = "tap"
		if l.Mode == netlink.TUNTAP_MODE_TUN {
			out.Kind = KindTUN
		}
	}
	return out
}

// isLinkGone reports whether err says that a link does not exist.
func isLinkGone(err error) bool {
	return errors.As(err, new(netlink.LinkNotFoundError)) || errors.Is(err, unix.ENODEV)
}

// failed wraps err with cmd, marking a missing link as not found.
func failed(cmd string, err error) error {
	if isLinkGone(err) {
		err = NotFound(err)
	}
	return Failed(cmd, err)
}

// LinkByName implements Kernel.
func (k *Netlink) LinkByName(name string) (Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return Link{}, failed("ip link show "+name, err)
	}
	return link(l), nil
}

// LinkByIndex implements Kernel.
func (k *Netlink) LinkByIndex(index int) (Link, error) {
	l, err := k.h.LinkByIndex(index)
	if err != nil {
		return Link{}, failed("ip link show "+linkIndexName(index), err)
	}
	return link(l), nil
}

// AddLink implements Kernel.
func (k *Netlink) AddLink(l Link) (Link, error) {
	cmd := AddLinkCmd(l, k.names)
	if l.Kind != KindVXLAN {
		return Link{}, Failed(cmd, fmt.Errorf("weft adds only %s links", KindVXLAN))
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = l.Name, l.MTU
	if l.MAC != "" {
		hw, err := net.ParseMAC(l.MAC)
		if err != nil {
			return Link{}, Failed(cmd, err)
		}
		attrs.HardwareAddr = hw
	}
	v := l.VXLAN
	nl := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: v.VNI, VtepDevIndex: v.Dev, Port: v.Port, Learning: v.Learning, GBP: v.GBP}
	if v.Local.IsValid() {
		nl.SrcAddr = v.Local.AsSlice()
	}
	if err := k.h.LinkAdd(nl); err != nil {
		return Link{}, failed(cmd, err)
	}
	return k.LinkByName(l.Name)
}

// byName looks a link up for a change; cmd names the change in errors.
func (k *Netlink) byName(cmd, name string) (netlink.Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return nil, failed(cmd, err)
	}
	return l, nil
}

// DeleteLink implements Kernel.
func (k *Netlink) DeleteLink(name string) error {
	cmd := LinkCmd("del", name)
	l, err := k.byName(cmd, name)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := k.h.LinkDel(l); err != nil && !isLinkGone(err) {
		return Failed(cmd, err)
	}
	return nil
}

// set looks up the link and runs one change on it.
func (k *Netlink) set(name string, change func(netlink.Link) error, args ...string) error {
	cmd := LinkCmd("set", name, args...)
	l, err := k.byName(cmd, name)
	if err != nil {
		return err
	}
	if err := change(l); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// SetLinkMTU implements Kernel.
func (k *Netlink) SetLinkMTU(name string, mtu int) error {
	return k.set(name, func(l netlink.Link) error { return k.h.LinkSetMTU(l, mtu) }, "mtu", fmt.Sprint(mtu))
}

// SetLinkMAC implements Kernel.
func (k *Netlink) SetLinkMAC(name, mac string) error {
	return k.set(name, func(l netlink.Link) error {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return err
		}
		return k.h.LinkSetHardwareAddr(l, hw)
	}, "address", mac)
}

// SetLinkUp implements Kernel.
func (k *Netlink) SetLinkUp(name string) error {
	return k.set(name, k.h.LinkSetUp, "up")
}

// SetIPv6AddrGen implements Kernel.
func (k *Netlink) SetIPv6AddrGen(name string, on bool) error {
	mode, arg := 1, "none" // IN6_ADDR_GEN_MODE_NONE
	if on {
		mode, arg = 0, "eui64" // IN6_ADDR_GEN_MODE_EUI64
	}
	return k.set(name, func(l netlink.Link) error {
		err := k.h.LinkSetIP6AddrGenMode(l, mode)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil // IPv6 is off in this kernel: nothing is generated
		}
		return err
	}, "addrgenmode", arg)
}

// Addrs implements Kernel.
func (k *Netlink) Addrs() ([]Addr, error) {
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, Failed("ip addr show", err)
	}
	out := make([]Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := netconv.Prefix(a.IPNet); ok {
			out = append(out, Addr{Link: a.LinkIndex, Prefix: p})
		}
	}
	return out, nil
}

func nlAddr(a Addr) (netlink.Link, *netlink.Addr) {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: a.Link}}, &netlink.Addr{IPNet: netconv.IPNet(a.Prefix)}
}

// ReplaceAddr implements Kernel.
func (k *Netlink) ReplaceAddr(a Addr) error {
	if err := k.h.AddrReplace(nlAddr(a)); err != nil {
		return failed(AddrCmd("replace", a, k.names), err)
	}
	return nil
}

// DeleteAddr implements Kernel.
func (k *Netlink) DeleteAddr(a Addr) error {
	err := k.h.AddrDel(nlAddr(a))
	if err == nil || errors.Is(err, unix.EADDRNOTAVAIL) || isLinkGone(err) {
		return nil
	}
	return Failed(AddrCmd("del", a, k.names), err)
}

// Routes implements Kernel.
func (k *Netlink) Routes() ([]Route, error) {
	routes, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, Failed("ip route show table main", err)
	}
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		dst, ok := netconv.Prefix(r.Dst)
		if r.Dst == nil { // a default route
			ok = true
			dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if r.Family == netlink.FAMILY_V6 {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		}
		if !ok {
			continue
		}
		out = append(out, Route{Dst: dst, Gw: netconv.Addr(r.Gw), Link: r.LinkIndex, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0})
	}
	return out, nil
}

func (k *Netlink) nlRoute(r Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: r.Link, Dst: netconv.IPNet(r.Dst), Table: unix.RT_TABLE_MAIN}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// ReplaceRoute implements Kernel.
func (k *Netlink) ReplaceRoute(r Route) error {
	if err := k.h.RouteReplace(k.nlRoute(r)); err != nil {
		return failed(RouteCmd("replace", r, k.names), err)
	}
	return nil
}

// DeleteRoute implements Kernel.
func (k *Netlink) DeleteRoute(r Route) error {
	err := k.h.RouteDel(k.nlRoute(r))
	if err == nil || errors.Is(err, unix.ESRCH) || isLinkGone(err) {
		return nil
	}
	return Failed(RouteCmd("del", r, k.names), err)
}

// Neighs implements Kernel. It lists IPv4 and IPv6 separately: a dump of
// every family would include the bridge FDB.
func (k *Netlink) Neighs(link int) ([]Neigh, error) {
	var out []Neigh
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := k.h.NeighList(link, family)
		if err != nil {
			return nil, failed("ip neigh show dev "+k.names(link), err)
		}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) == 0 {
				continue
			}
			out = append(out, Neigh{IP: netconv.Addr(n.IP), MAC: n.HardwareAddr.String(), Link: link})
		}
	}
	return out, nil
}

// ReplaceNeigh implements Kernel.
func (k *Netlink) ReplaceNeigh(n Neigh) error {
	cmd := NeighCmd("replace", n, k.names)
	hw, err := net.ParseMAC(n.MAC)
	if err != nil {
		return Failed(cmd, err)
	}
	if err := k.h.NeighSet(&netlink.Neigh{LinkIndex: n.Link, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: n.IP.AsSlice(), HardwareAddr: hw}); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteNeigh implements Kernel.
func (k *Netlink) DeleteNeigh(n Neigh) error {
	err := k.h.NeighDel(&netlink.Neigh{LinkIndex: n.Link, IP: n.IP.AsSlice()})
	if err == nil || errors.Is(err, unix.ENOENT) || isLinkGone(err) {
		return nil
	}
	return Failed(NeighCmd("del", n, k.names), err)
}

// FDB implements Kernel.
func (k *Netlink) FDB(link int) ([]FDB, error) {
	fdb, err := k.h.NeighList(link, unix.AF_BRIDGE)
	if err != nil {
		return nil, failed("bridge fdb show dev "+k.names(link), err)
	}
	var out []FDB
	for _, n := range fdb {
		if n.IP == nil || len(n.HardwareAddr) == 0 || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		out = append(out, FDB{MAC: n.HardwareAddr.String(), Dst: netconv.Addr(n.IP), Link: link})
	}
	return out, nil
}

func nlFDB(f FDB) (*netlink.Neigh, error) {
	hw, err := net.ParseMAC(f.MAC)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: f.Link, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: hw}, nil
}

// ReplaceFDB implements Kernel.
func (k *Netlink) ReplaceFDB(f FDB) error {
	cmd := FDBCmd("replace", f, k.names)
	n, err := nlFDB(f)
	if err != nil {
		return Failed(cmd, err)
	}
	if err := k.h.NeighSet(n); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteFDB implements Kernel.
func (k *Netlink) DeleteFDB(f FDB) error {
	cmd := FDBCmd("del", f, k.names)
	n, err := nlFDB(f)
	if err != nil {
		return Failed(cmd, err)
	}
	if err := k.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) && !isLinkGone(err) {
		return Failed(cmd, err)
	}
	return nil
}
