package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netconv"
)

var _ Watcher = (*Netlink)(nil)

// NewNetlinkAt is NewNetlink for a handle into the namespace ns (tests):
// Watch opens its socket there. The caller keeps ns open while Watch runs.
func NewNetlinkAt(h *netlink.Handle, ns vns.NsHandle) *Netlink {
	k := NewNetlink(h)
	k.ns = ns
	return k
}

// watchBuffer is the receive buffer Watch asks for: a sync that writes
// 5000 peers' route, neighbour and FDB entries gets 15000 announcements
// back at once (about 1 KiB each as the kernel counts them).
const watchBuffer = 32 << 20

// Watch implements Watcher with one netlink socket subscribed to the link,
// IPv4 and IPv6 route, and neighbour groups (`ip monitor link route
// neigh`), so that the announcements come in the kernel's order: a route's
// link is named by the link announcements before it. The neighbour group
// carries the vxlan devices' FDB (family AF_BRIDGE) too.
func (k *Netlink) Watch(ctx context.Context, fn func(Update)) error {
	ns := k.ns
	if !ns.IsOpen() {
		ns = vns.None()
	}
	s, err := nl.SubscribeAt(ns, vns.None(), unix.NETLINK_ROUTE,
		unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return fmt.Errorf("ip monitor link route neigh: subscribe: %w", err)
	}
	defer s.Close()
	// Forcing the size past net.core.rmem_max needs CAP_NET_ADMIN, which
	// the agent has; without it the kernel's limit applies.
	if err := s.SetReceiveBufferSize(watchBuffer, true); err != nil {
		_ = s.SetReceiveBufferSize(watchBuffer, false)
	}
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()

	// The links' names by index, read once the socket is subscribed:
	// a link announced since then is in both, in order.
	names := map[int]string{}
	links, err := k.h.LinkList()
	if err != nil {
		return Failed("ip link show", err)
	}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	name := func(index int) string {
		if n, ok := names[index]; ok {
			return n
		}
		return linkIndexName(index)
	}
	fn(Update{Kind: UpdateLive})
	for {
		msgs, from, err := s.Receive()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, unix.ENOBUFS):
			fn(Update{Kind: UpdateLost})
			continue
		case err != nil:
			return fmt.Errorf("ip monitor link route neigh: %w", err)
		case from.Pid != nl.PidKernel:
			continue
		}
		for _, m := range msgs {
			deleted := false
			switch m.Header.Type {
			case unix.RTM_DELLINK:
				deleted = true
				fallthrough
			case unix.RTM_NEWLINK:
				l, ok := parseLink(m.Data)
				if !ok {
					continue
				}
				if was, ok := names[l.Index]; ok && was != l.Name {
					fn(Update{Kind: UpdateLink, Deleted: true, Link: Link{Index: l.Index, Name: was}})
				}
				if deleted {
					delete(names, l.Index)
				} else {
					names[l.Index] = l.Name
				}
				fn(Update{Kind: UpdateLink, Deleted: deleted, Link: l})
			case unix.RTM_DELROUTE:
				deleted = true
				fallthrough
			case unix.RTM_NEWROUTE:
				if r, ok := parseRoute(m.Data, name); ok {
					fn(Update{Kind: UpdateRoute, Deleted: deleted, Replace: m.Header.Flags&unix.NLM_F_REPLACE != 0, Route: r})
				}
			case unix.RTM_DELNEIGH:
				deleted = true
				fallthrough
			case unix.RTM_NEWNEIGH:
				if u, ok := neighUpdate(m.Data, deleted, name); ok {
					fn(u)
				}
			}
		}
	}
}

// parseLink reads an RTM_NEWLINK or RTM_DELLINK message: the index, name
// and whether the link is up; the rest is not needed.
func parseLink(b []byte) (Link, bool) {
	if len(b) < unix.SizeofIfInfomsg {
		return Link{}, false
	}
	msg := nl.DeserializeIfInfomsg(b)
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return Link{}, false
	}
	l := Link{Index: int(msg.Index), Up: msg.Flags&unix.IFF_UP != 0}
	for _, a := range attrs {
		if a.Attr.Type == unix.IFLA_IFNAME {
			l.Name = string(trimNUL(a.Value))
		}
	}
	return l, l.Name != ""
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// parseRoute reads an RTM_NEWROUTE or RTM_DELROUTE message as Routes lists
// it: main-table unicast routes only.
func parseRoute(b []byte, name func(int) string) (Route, bool) {
	if len(b) < unix.SizeofRtMsg {
		return Route{}, false
	}
	msg := nl.DeserializeRtMsg(b)
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil || msg.Type != unix.RTN_UNICAST {
		return Route{}, false
	}
	table := uint32(msg.Table)
	var dst, gw net.IP
	index := 0
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			if len(a.Value) >= 4 {
				table = binary.NativeEndian.Uint32(a.Value)
			}
		case unix.RTA_DST:
			dst = a.Value
		case unix.RTA_GATEWAY:
			gw = a.Value
		case unix.RTA_OIF:
			if len(a.Value) >= 4 {
				index = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return Route{}, false
	}
	var prefix netip.Prefix
	switch {
	case dst != nil:
		addr, ok := netip.AddrFromSlice(dst)
		if !ok {
			return Route{}, false
		}
		prefix = netip.PrefixFrom(addr.Unmap(), int(msg.Dst_len))
	case msg.Family == unix.AF_INET6:
		prefix = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	default:
		prefix = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return Route{Dst: prefix, Gw: netconv.Addr(gw), Dev: name(index), OnLink: msg.Flags&unix.RTNH_F_ONLINK != 0, Protocol: Protocol(msg.Protocol)}, true
}

// neighUpdate reads an RTM_NEWNEIGH or RTM_DELNEIGH message: a neighbour
// entry (IPv4 or IPv6) or, for family AF_BRIDGE, an FDB entry with a
// destination, as Neighs and FDB list them.
func neighUpdate(b []byte, deleted bool, name func(int) string) (Update, bool) {
	n, err := netlink.NeighDeserialize(b)
	if err != nil || n.IP == nil {
		return Update{}, false
	}
	listed := n.State&netlink.NUD_PERMANENT != 0 && len(n.HardwareAddr) > 0
	ip := netconv.Addr(n.IP)
	switch n.Family {
	case unix.AF_INET, unix.AF_INET6:
		u := Update{Kind: UpdateNeigh, Deleted: deleted || !listed, Neigh: Neigh{IP: ip, Dev: name(n.LinkIndex)}}
		if !u.Deleted {
			u.Neigh.MAC = n.HardwareAddr.String()
		}
		return u, true
	case unix.AF_BRIDGE:
		if len(n.HardwareAddr) == 0 {
			return Update{}, false
		}
		return Update{Kind: UpdateFDB, Deleted: deleted || !listed, FDB: FDB{MAC: n.HardwareAddr.String(), Dst: ip, Dev: name(n.LinkIndex)}}, true
	}
	return Update{}, false
}
