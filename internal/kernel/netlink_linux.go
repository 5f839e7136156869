package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netconv"
)

// Netlink is the Kernel of the namespace a netlink handle points into.
type Netlink struct {
	h     *netlink.Handle
	ns    vns.NsHandle // the namespace Watch subscribes in; None: the process's own
	names Names        // for AddLinkCmd's lower device, in error messages only

	mu sync.Mutex // guards indexes
	// indexes are the links' indexes by name as last read (LinkByName,
	// the link dump of every listing), so that a write does not look its
	// link up again: a sync reads (EnsureLink, then the listings of
	// Apply) before it writes. A link gone since fails the write with
	// ENODEV, and the next read refreshes the map.
	indexes map[string]int
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink returns the Kernel behind h: netlink.NewHandle() for the
// process's own namespace, or a handle into another one (tests). The caller
// keeps h and closes it. As a Watcher it subscribes in the process's own
// namespace (NewNetlinkAt for another).
func NewNetlink(h *netlink.Handle) *Netlink {
	k := &Netlink{h: h, ns: vns.None(), indexes: map[string]int{}}
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
		if isLinkGone(err) {
			k.remember(name, 0)
		}
		return Link{}, failed("ip link show "+name, err)
	}
	k.remember(name, l.Attrs().Index)
	return link(l), nil
}

// remember records the index of the link called name; 0 forgets it.
func (k *Netlink) remember(name string, index int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if index == 0 {
		delete(k.indexes, name)
		return
	}
	k.indexes[name] = index
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
	k.remember(name, 0)
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

// index returns the index of the link called dev, for a write that cmd
// names; "" is index 0 (any link, for a delete).
func (k *Netlink) index(cmd, dev string) (int, error) {
	if dev == "" {
		return 0, nil
	}
	k.mu.Lock()
	index, ok := k.indexes[dev]
	k.mu.Unlock()
	if ok {
		return index, nil
	}
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return 0, failed(cmd, err)
	}
	k.remember(dev, l.Attrs().Index)
	return l.Attrs().Index, nil
}

// devNames returns the names of every link by index (`ip link show`), for
// a read that names its entries' links; cmd names the read in errors.
func (k *Netlink) devNames(cmd string) (func(index int) string, error) {
	links, err := k.h.LinkList()
	if err != nil {
		return nil, Failed(cmd, err)
	}
	byIndex := make(map[int]string, len(links))
	indexes := make(map[string]int, len(links))
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
		indexes[l.Attrs().Name] = l.Attrs().Index
	}
	k.mu.Lock()
	k.indexes = indexes
	k.mu.Unlock()
	return NameOrIndex(func(index int) (string, bool) { s, ok := byIndex[index]; return s, ok }), nil
}

// Addrs implements Kernel.
func (k *Netlink) Addrs() ([]Addr, error) {
	const cmd = "ip addr show"
	names, err := k.devNames(cmd)
	if err != nil {
		return nil, err
	}
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, Failed(cmd, err)
	}
	out := make([]Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := netconv.Prefix(a.IPNet); ok {
			out = append(out, Addr{Dev: names(a.LinkIndex), Prefix: p,
				Dynamic: a.Flags&unix.IFA_F_PERMANENT == 0, Deprecated: a.Flags&unix.IFA_F_DEPRECATED != 0})
		}
	}
	return out, nil
}

// RouteGet implements RouteGetter: `ip route get DST`.
func (k *Netlink) RouteGet(dst netip.Addr) (string, netip.Addr, error) {
	cmd := "ip route get " + dst.String()
	rs, err := k.h.RouteGet(dst.AsSlice())
	if err != nil {
		return "", netip.Addr{}, Failed(cmd, err)
	}
	if len(rs) == 0 {
		return "", netip.Addr{}, Failed(cmd, errors.New("no route"))
	}
	l, err := k.h.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", netip.Addr{}, Failed(cmd, err)
	}
	return l.Attrs().Name, netconv.Addr(rs[0].Src), nil
}

func nlAddr(index int, a Addr) (netlink.Link, *netlink.Addr) {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}, &netlink.Addr{IPNet: netconv.IPNet(a.Prefix)}
}

// ReplaceAddr implements Kernel.
func (k *Netlink) ReplaceAddr(a Addr) error {
	cmd := AddrCmd("replace", a)
	index, err := k.index(cmd, a.Dev)
	if err != nil {
		return err
	}
	if err := k.h.AddrReplace(nlAddr(index, a)); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteAddr implements Kernel.
func (k *Netlink) DeleteAddr(a Addr) error {
	cmd := AddrCmd("del", a)
	index, err := k.index(cmd, a.Dev)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = k.h.AddrDel(nlAddr(index, a))
	if err == nil || errors.Is(err, unix.EADDRNOTAVAIL) || isLinkGone(err) {
		return nil
	}
	return Failed(cmd, err)
}

// Routes implements Kernel.
func (k *Netlink) Routes() ([]Route, error) {
	const cmd = "ip route show table main"
	names, err := k.devNames(cmd)
	if err != nil {
		return nil, err
	}
	routes, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, Failed(cmd, err)
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
		out = append(out, Route{Dst: dst, Gw: netconv.Addr(r.Gw), Dev: names(r.LinkIndex), OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0, Protocol: Protocol(r.Protocol)})
	}
	return out, nil
}

// nlRoute is r for netlink, through the link index; its protocol is
// r.Protocol (0 matches any, in a delete).
func nlRoute(index int, r Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: index, Dst: netconv.IPNet(r.Dst), Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(r.Protocol)}
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
	cmd := RouteCmd("replace", r)
	index, err := k.index(cmd, r.Dev)
	if err != nil {
		return err
	}
	if err := k.h.RouteReplace(nlRoute(index, r.written())); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteRoute implements Kernel.
func (k *Netlink) DeleteRoute(r Route) error {
	cmd := RouteCmd("del", r)
	index, err := k.index(cmd, r.Dev)
	if IsNotFound(err) {
		return nil // the link's routes went with it
	}
	if err != nil {
		return err
	}
	err = k.h.RouteDel(nlRoute(index, r))
	if err == nil || errors.Is(err, unix.ESRCH) || isLinkGone(err) {
		return nil
	}
	return Failed(cmd, err)
}

// Neighs implements Kernel. It lists IPv4 and IPv6 separately: a dump of
// every family would include the bridge FDB.
func (k *Netlink) Neighs(dev string) ([]Neigh, error) {
	cmd := "ip neigh show dev " + dev
	index, err := k.index(cmd, dev)
	if err != nil {
		return nil, err
	}
	var out []Neigh
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := k.h.NeighList(index, family)
		if err != nil {
			return nil, failed(cmd, err)
		}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) == 0 {
				continue
			}
			out = append(out, Neigh{IP: netconv.Addr(n.IP), MAC: n.HardwareAddr.String(), Dev: dev})
		}
	}
	return out, nil
}

// ReplaceNeigh implements Kernel.
func (k *Netlink) ReplaceNeigh(n Neigh) error {
	cmd := NeighCmd("replace", n)
	hw, err := net.ParseMAC(n.MAC)
	if err != nil {
		return Failed(cmd, err)
	}
	index, err := k.index(cmd, n.Dev)
	if err != nil {
		return err
	}
	if err := k.h.NeighSet(&netlink.Neigh{LinkIndex: index, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: n.IP.AsSlice(), HardwareAddr: hw}); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteNeigh implements Kernel.
func (k *Netlink) DeleteNeigh(n Neigh) error {
	cmd := NeighCmd("del", n)
	index, err := k.index(cmd, n.Dev)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = k.h.NeighDel(&netlink.Neigh{LinkIndex: index, IP: n.IP.AsSlice()})
	if err == nil || errors.Is(err, unix.ENOENT) || isLinkGone(err) {
		return nil
	}
	return Failed(cmd, err)
}

// FDB implements Kernel.
func (k *Netlink) FDB(dev string) ([]FDB, error) {
	cmd := "bridge fdb show dev " + dev
	index, err := k.index(cmd, dev)
	if err != nil {
		return nil, err
	}
	fdb, err := k.h.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		return nil, failed(cmd, err)
	}
	var out []FDB
	for _, n := range fdb {
		if n.IP == nil || len(n.HardwareAddr) == 0 || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		out = append(out, FDB{MAC: n.HardwareAddr.String(), Dst: netconv.Addr(n.IP), Dev: dev})
	}
	return out, nil
}

// nlFDB is f for netlink, without its link's index.
func nlFDB(f FDB) (*netlink.Neigh, error) {
	hw, err := net.ParseMAC(f.MAC)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: hw}, nil
}

// ReplaceFDB implements Kernel.
func (k *Netlink) ReplaceFDB(f FDB) error {
	cmd := FDBCmd("replace", f)
	n, err := nlFDB(f)
	if err != nil {
		return Failed(cmd, err)
	}
	if n.LinkIndex, err = k.index(cmd, f.Dev); err != nil {
		return err
	}
	if err := k.h.NeighSet(n); err != nil {
		return failed(cmd, err)
	}
	return nil
}

// DeleteFDB implements Kernel.
func (k *Netlink) DeleteFDB(f FDB) error {
	cmd := FDBCmd("del", f)
	n, err := nlFDB(f)
	if err != nil {
		return Failed(cmd, err)
	}
	n.LinkIndex, err = k.index(cmd, f.Dev)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := k.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) && !isLinkGone(err) {
		return Failed(cmd, err)
	}
	return nil
}
