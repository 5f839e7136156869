package trace

import (
	"errors"
	"fmt"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// Netlink reads namespaces' kernel state over netlink (and weft's
// postrouting chain with nft), without entering them. Namespaces are
// where a veth's other end may be (the lab's).
type Netlink struct {
	Namespaces []string
	// NAT, if set, says which namespaces have weft's postrouting chain
	// to read (the nodes'); nil: all of them.
	NAT func(ns string) bool
}

var (
	_ Kernel   = Netlink{}
	_ Counters = Netlink{}
)

// Stats implements Counters: `ip -s link` of ns.
func (Netlink) Stats(ns string) (map[string]Stats, error) {
	h, links, err := linksOf(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	out := map[string]Stats{}
	for _, l := range links {
		if st := l.Attrs().Statistics; st != nil {
			out[l.Attrs().Name] = Stats{Rx: st.RxPackets, Tx: st.TxPackets}
		}
	}
	return out, nil
}

// linksOf opens a netlink handle in ns and lists its links; the caller
// closes the handle.
func linksOf(ns string) (*netlink.Handle, []netlink.Link, error) {
	h, err := netns.Handle(ns)
	if err != nil {
		return nil, nil, err
	}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("list links in %s: %w", ns, err)
	}
	return h, links, nil
}

// nsids maps the namespace IDs wanted, which h's namespace gives some of
// the others of k.Namespaces (its veths' IFLA_LINK_NETNSID), to their
// names; it stops looking once it has them all.
func (k Netlink) nsids(h *netlink.Handle, self string, wanted map[int]bool) map[int]string {
	out := map[int]string{}
	for _, ns := range k.Namespaces {
		if len(out) == len(wanted) {
			break
		}
		if ns == self {
			continue
		}
		fd, err := netns.Fd(ns)
		if err != nil {
			continue
		}
		id, err := h.GetNetNsIdByFd(int(fd))
		fd.Close()
		if err == nil && wanted[id] {
			out[id] = ns
		}
	}
	return out
}

// Snapshot implements Kernel: `ip -d link`, `ip addr`, `ip neigh` and
// `bridge fdb` of ns, and `nft list chain ip weft postrouting`.
func (k Netlink) Snapshot(ns string) (*Snapshot, error) {
	h, links, err := linksOf(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	s := &Snapshot{}
	wanted := map[int]bool{}
	for _, l := range links {
		if v, ok := l.(*netlink.Veth); ok && v.NetNsID >= 0 {
			wanted[v.NetNsID] = true
		}
	}
	ids := k.nsids(h, ns, wanted)
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		li := Link{Index: a.Index, Name: a.Name, Kind: l.Type(), Up: a.Flags&unix.IFF_UP != 0 && a.OperState != netlink.OperDown, Master: a.MasterIndex}
		if len(a.HardwareAddr) > 0 {
			li.MAC = strings.ToLower(a.HardwareAddr.String())
		}
		if x := a.Xdp; x != nil && x.Attached && x.ProgId != 0 {
			li.XDP = progName(ebpf.ProgramID(x.ProgId))
		}
		switch v := l.(type) {
		case *netlink.Veth:
			li.Peer, li.PeerNS = a.ParentIndex, ids[a.NetNsID]
		case *netlink.Vxlan:
			li.VNI, li.Port = v.VxlanId, v.Port
			if v.SrcAddr != nil {
				li.Local = netconv.Addr(v.SrcAddr)
			}
		case *netlink.Tuntap:
			li.Kind = "tuntap"
			li.TCXEgress = tcxEgress(ns, a.Index)
		case *netlink.Device:
			if l.Type() == "loopback" || a.Name == "lo" {
				li.Kind = ""
			}
		}
		addrs, err := h.AddrList(l, unix.AF_UNSPEC)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if p, ok := netconv.Prefix(ad.IPNet); ok {
				li.Addrs = append(li.Addrs, p)
			}
		}
		s.Links = append(s.Links, li)
	}
	neighs, err := h.NeighList(0, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		if n.IP == nil || len(n.HardwareAddr) == 0 {
			continue
		}
		s.Neighs = append(s.Neighs, Neigh{IP: netconv.Addr(n.IP), MAC: strings.ToLower(n.HardwareAddr.String()), Dev: names[n.LinkIndex], State: neighState(n.State)})
	}
	fdb, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	for _, n := range fdb {
		if len(n.HardwareAddr) == 0 {
			continue
		}
		e := Neigh{MAC: strings.ToLower(n.HardwareAddr.String()), Dev: names[n.LinkIndex], State: neighState(n.State)}
		if n.IP != nil {
			e.IP = netconv.Addr(n.IP)
		}
		s.FDB = append(s.FDB, e)
	}
	if k.NAT == nil || k.NAT(ns) {
		s.NAT, s.NAT6, s.NATErr = readNAT(ns)
	}
	return s, nil
}

// readNAT lists weft's postrouting chains in ns with nft. A missing table
// or chain is no rules.
func readNAT(ns string) (v4, v6 []string, errText string) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, nil, "nft not found (install nftables)"
	}
	for _, fam := range []string{"ip", "ip6"} {
		out, err := netns.Command(ns, "nft", "list", "chain", fam, "weft", "postrouting").Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				continue // no such table or chain
			}
			return nil, nil, err.Error()
		}
		lines := strings.Split(string(out), "\n")
		if fam == "ip" {
			v4 = lines
		} else {
			v6 = lines
		}
	}
	return v4, v6, ""
}

func neighState(st int) string {
	var out []string
	for _, s := range []struct {
		bit  int
		name string
	}{{netlink.NUD_PERMANENT, "PERMANENT"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_NOARP, "NOARP"}} {
		if st&s.bit != 0 {
			out = append(out, s.name)
		}
	}
	return strings.Join(out, ",")
}

// RouteGet implements Kernel: `ip route get DST from SRC iif IIF` for the
// route and its source, and the same with fibmatch for the prefix that
// matched.
func (Netlink) RouteGet(ns string, src, dst netip.Addr, iif string) (Route, error) {
	h, err := netns.Handle(ns)
	if err != nil {
		return Route{}, err
	}
	defer h.Close()
	opts := netlink.RouteGetOptions{Iif: iif}
	if src.IsValid() {
		opts.SrcAddr = src.AsSlice()
	}
	get := func(o netlink.RouteGetOptions) (netlink.Route, error) {
		rs, err := h.RouteGetWithOptions(dst.AsSlice(), &o)
		if err != nil {
			return netlink.Route{}, err
		}
		if len(rs) == 0 {
			return netlink.Route{}, errors.New("no route")
		}
		return rs[0], nil
	}
	r, err := get(opts)
	if err != nil {
		return Route{}, fmt.Errorf("ip route get %s from %s iif %q: %w", dst, src, iif, err)
	}
	out := Route{Gw: netconv.Addr(r.Gw), Src: netconv.Addr(r.Src), Table: r.Table, Type: routeType(r.Type)}
	if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
		out.Dev = l.Attrs().Name
	}
	opts.FIBMatch = true
	m, err := get(opts)
	if err != nil {
		return Route{}, fmt.Errorf("ip route get fibmatch %s from %s iif %q: %w", dst, src, iif, err)
	}
	{
		if m.Dst != nil {
			out.Dst, _ = netconv.Prefix(m.Dst)
		} else {
			out.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if dst.Is6() {
				out.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		}
		out.Proto = protoName(m.Protocol)
		out.OnLink = m.Flags&unix.RTNH_F_ONLINK != 0
		out.Table = m.Table
		if out.Type == "unicast" {
			out.Type = routeType(m.Type)
		}
	}
	return out, nil
}

func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST, 0:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	}
	return fmt.Sprint(t)
}

func protoName(p netlink.RouteProtocol) string {
	if kernel.Protocol(p) == kernel.ProtoWeft {
		return "weft"
	}
	return p.String()
}

// tcxEgress names the programs at tcx egress of device idx of namespace
// ns; none where the kernel has no tcx.
func tcxEgress(ns string, idx int) []string {
	var names []string
	_ = netns.Do(ns, func() error {
		q, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		for _, p := range q.Programs {
			names = append(names, progName(p.ID))
		}
		return nil
	})
	return names
}

// progName is a program's name, "" when it cannot be read.
func progName(id ebpf.ProgramID) string {
	name, _ := kernel.BPFProgramName(id)
	return name
}
