package cni

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/sysctl"
)

// Funcs are the plugin's commands, for skel.PluginMainFuncs.
var Funcs = skel.CNIFuncs{Add: Add, Del: Del, Check: Check, Status: Status, GC: GC}

// bridgeMAC is the bridge's own MAC: locally administered, 0a:58 and the
// last four bytes of the gateway's address (all of an IPv4 one), so that
// it is the same after the bridge is made again.
func bridgeMAC(gw netip.Addr) net.HardwareAddr {
	b := gw.As16()
	return net.HardwareAddr{0x0a, 0x58, b[12], b[13], b[14], b[15]}
}

// pinMAC keeps the MAC of a bridge made before (by an older weft-cni, or
// flannel's bridge plugin) from following its ports: setting it, to the
// value it has, makes it the bridge's own (addr_assign_type 3, "set"),
// `ip link set cni0 address $(cat /sys/class/net/cni0/address)`.
func pinMAC(br netlink.Link) error {
	b, err := os.ReadFile("/sys/class/net/" + br.Attrs().Name + "/addr_assign_type")
	if err != nil || strings.TrimSpace(string(b)) == "3" {
		return nil // unknown (no sysfs here), or set already
	}
	mac := br.Attrs().HardwareAddr
	if len(mac) != 6 || bytes.Equal(mac, make([]byte, 6)) {
		return nil // no port yet: it is set when the bridge is made
	}
	if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
		return fmt.Errorf("pin the MAC %s of bridge %s: %w", mac, br.Attrs().Name, err)
	}
	return nil
}

// ensureBridge creates or repairs the node bridge in the current (host)
// namespace: `ip link add cni0 type bridge; ip addr replace GW/LEN dev cni0
// [nodad]` for each family; `ip link set cni0 up`. It reports whether it
// created the bridge; if so and it fails, it deletes the bridge again. The
// caller holds the bridge lock.
func ensureBridge(name string, n node) (br netlink.Link, created bool, err error) {
	br, err = netlink.LinkByName(name)
	if err != nil {
		if !errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, false, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, n.mtu
		// A MAC of its own, set at creation: a bridge without one takes
		// the lowest of its ports' MACs, and changes it as pods come and
		// go, so that the pods' neighbour entries for the gateway go stale
		// and their packets to other nodes are lost until they ask again.
		la.HardwareAddr = bridgeMAC(n.fams[0].gw)
		switch err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); {
		case os.IsExist(err): // made by someone else meanwhile
		case err != nil:
			return nil, false, fmt.Errorf("create bridge %s: %w", name, err)
		default:
			created = true
			defer func() {
				if err != nil {
					_ = netlink.LinkDel(&netlink.Bridge{LinkAttrs: la}) // `ip link del cni0`
				}
			}()
		}
		if br, err = netlink.LinkByName(name); err != nil {
			return nil, created, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil, false, fmt.Errorf("%s exists and is not a bridge (%s)", name, br.Type())
	}
	if err := pinMAC(br); err != nil {
		return nil, created, err
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var want netip.Prefix // none: the node has no subnet of this family
		for _, f := range n.fams {
			if (fam == netlink.FAMILY_V4) == f.gw.Is4() {
				want = f.gateway()
			}
		}
		if err := ensureAddr(br, fam, want); err != nil {
			return nil, created, err
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, created, fmt.Errorf("set %s up: %w", name, err)
	}
	return br, created, nil
}

// enableForwarding turns forwarding on in the node's namespace for each
// family of the node, as the bridge plugin does for flannel's pods (its
// isGateway, which flannel sets): `sysctl -w net.ipv4.ip_forward=1` and
// `sysctl -w net.ipv6.conf.all.forwarding=1`. A knob that is on already is
// not written.
func enableForwarding(n node) error {
	for _, f := range n.fams {
		if _, err := sysctl.Ensure("1", sysctl.Forwarding(f.gw.Is6())...); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

// ensureAddr makes want the bridge's only address of family fam, other
// than link-local ones (the kernel's own, for IPv6): a stale one (the
// node's subnet changed, or the family went away) is removed.
func ensureAddr(br netlink.Link, fam int, want netip.Prefix) error {
	name := br.Attrs().Name
	addrs, err := netlink.AddrList(br, fam) // `ip -4|-6 addr show dev cni0`
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	has := false
	for _, a := range addrs {
		got, ok := netconv.Prefix(a.IPNet)
		switch {
		case ok && got.Addr().IsLinkLocalUnicast():
			continue
		case ok && want.IsValid() && got == want:
			has = true
			continue
		}
		if err := netlink.AddrDel(br, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if has || !want.IsValid() {
		return nil
	}
	if err := netlink.AddrAdd(br, podAddr(want)); err != nil && !os.IsExist(err) {
		return fmt.Errorf("add %s to %s: %w", want, name, err)
	}
	return nil
}

// podAddr is the netlink address of p. An IPv6 one skips duplicate address
// detection (`ip addr add P dev IF nodad`): the address is the pod's or
// the bridge's by IPAM's word, and DAD would keep it tentative, unusable,
// for a second or more after the link comes up. The bridge plugin turns
// DAD off in the pod instead (accept_dad=0), which needs the plugin inside
// the pod's namespace; the flag does the same from a netlink handle.
func podAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: netconv.IPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// hostVethName derives the host-side name from the attachment, so that a
// retried ADD or a DEL finds the same interface: "veth" + 8 hex digits.
func hostVethName(att Attachment) string {
	sum := sha256.Sum256([]byte(att.ContainerID + "/" + att.IfName))
	return "veth" + hex.EncodeToString(sum[:4])
}

// podNetns opens CNI_NETNS after checking that it is a network namespace
// and not the plugin's own (the node's): an interface for a pod put there
// would land among the node's own, and DEL would delete the node's.
func podNetns(path string) (vns.NsHandle, error) {
	bad := func(format string, a ...any) (vns.NsHandle, error) {
		return -1, types.NewError(types.ErrInvalidNetNS, "weft-cni: "+fmt.Sprintf(format, a...), "")
	}
	if path == "" {
		return -1, types.NewError(types.ErrInvalidEnvironmentVariables, "weft-cni: CNI_NETNS is not set", "")
	}
	fd, err := vns.GetFromPath(path)
	if err != nil {
		return bad("CNI_NETNS %s: %v", path, err)
	}
	// `lsns`' test: the descriptor is a namespace, and of the network kind.
	if t, err := unix.IoctlRetInt(int(fd), unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		fd.Close()
		return bad("CNI_NETNS %s is not a network namespace", path)
	}
	var pod, own unix.Stat_t
	if err := unix.Fstat(int(fd), &pod); err != nil {
		fd.Close()
		return bad("CNI_NETNS %s: %v", path, err)
	}
	if err := unix.Stat("/proc/self/ns/net", &own); err != nil {
		fd.Close()
		return -1, fmt.Errorf("weft-cni: read the plugin's own network namespace: %w", err)
	}
	if pod.Dev == own.Dev && pod.Ino == own.Ino {
		fd.Close()
		return bad("CNI_NETNS %s is the plugin's own network namespace (the node's, inode %d): a pod needs its own", path, pod.Ino)
	}
	return fd, nil
}

// podHandle opens a netlink handle inside the pod's namespace, after
// podNetns's checks.
func podHandle(path string) (*netlink.Handle, vns.NsHandle, error) {
	fd, err := podNetns(path)
	if err != nil {
		return nil, fd, err
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, fd, fmt.Errorf("weft-cni: netlink in %s: %w", path, err)
	}
	return h, fd, nil
}

// load reads the plugin's config, the node's subnet and the IPAM store.
func load(args *skel.CmdArgs) (*NetConf, node, *Store, error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return nil, node{}, nil, err
	}
	n, err := conf.node()
	if err != nil {
		return nil, node{}, nil, err
	}
	st, err := conf.store()
	if err != nil {
		return nil, node{}, nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	return conf, n, st, nil
}

// lockBridge serialises, between plugin processes, the creation of the
// bridge, the attachment of veths to it and its removal by a failed ADD
// that created it, so that no ADD's veth is attached to a bridge another
// is deleting.
func lockBridge(conf *NetConf) (func(), error) {
	unlock, err := lockFile(filepath.Join(conf.DataDir, "bridge-"+conf.Bridge+".lock"))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, "weft-cni: "+err.Error(), "")
	}
	return unlock, nil
}

// removeUnusedBridge deletes the bridge a failed ADD created, unless
// another ADD has attached a port to it since: `ip link del cni0`.
func removeUnusedBridge(conf *NetConf) {
	unlock, err := lockBridge(conf)
	if err != nil {
		return
	}
	defer unlock()
	br, err := netlink.LinkByName(conf.Bridge)
	if err != nil {
		return
	}
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			return
		}
	}
	_ = netlink.LinkDel(br)
}

// Add implements CNI ADD. Every input (config, CNI_NETNS, subnet.env, the
// pod's interface name) is checked before anything is touched, and a
// failing ADD leaves nothing behind: no veth, no address, no allocation, no
// masquerade, and no bridge if it created it. The pod gets an address of
// each family the node has, and routes of each (podRoutes).
func Add(args *skel.CmdArgs) (err error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	ph, pfd, err := podHandle(args.Netns)
	if err != nil {
		return err
	}
	defer pfd.Close()
	defer ph.Close()
	n, err := conf.node()
	if err != nil {
		return err
	}
	if _, err := ph.LinkByName(args.IfName); err == nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("weft-cni: CNI_IFNAME %s already exists in CNI_NETNS %s", args.IfName, args.Netns), "")
	}
	st, err := conf.store()
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	att := Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	hostName := hostVethName(att)
	created := false
	var addrs []netip.Addr
	defer func() {
		if err != nil { // leave nothing half-done
			// Deleting the host end deletes the pod end and its address.
			if l, lerr := netlink.LinkByName(hostName); lerr == nil {
				_ = netlink.LinkDel(l)
			}
			if n.ipMasq {
				_ = masqDel(context.Background(), addrs)
			}
			_ = st.Release(att)
			if created {
				removeUnusedBridge(conf)
			}
		}
	}()
	for _, f := range n.fams {
		a, err := st.Allocate(f.subnet, att)
		if err != nil {
			return types.NewError(types.ErrIOFailure, err.Error(), "")
		}
		addrs = append(addrs, a)
	}
	unlock, err := lockBridge(conf)
	if err != nil {
		return err
	}
	br, created, err := ensureBridge(conf.Bridge, n)
	if err != nil {
		unlock()
		return err
	}
	if err := enableForwarding(n); err != nil {
		unlock()
		return fmt.Errorf("weft-cni: %w", err)
	}
	// `ip link add vethXXXX mtu MTU master cni0 type veth peer name eth0 netns POD`
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: n.mtu, MasterIndex: br.Attrs().Index},
		PeerName:      args.IfName,
		PeerNamespace: netlink.NsFd(int(pfd)),
	}
	if old, lerr := netlink.LinkByName(hostName); lerr == nil {
		_ = netlink.LinkDel(old) // a previous, interrupted ADD of the same attachment
	}
	err = netlink.LinkAdd(veth)
	unlock()
	if err != nil {
		return fmt.Errorf("weft-cni: create veth %s/%s: %w", hostName, args.IfName, err)
	}
	hostLink, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("weft-cni: look up %s: %w", hostName, err)
	}
	// `bridge link set dev vethXXXX hairpin on|off`: on, a pod reaches
	// itself through a service address (the reply leaves by the port the
	// request came in).
	if err := netlink.LinkSetHairpin(hostLink, conf.HairpinMode); err != nil {
		return fmt.Errorf("weft-cni: set hairpin mode of %s: %w", hostName, err)
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("weft-cni: set %s up: %w", hostName, err)
	}
	pod, err := ph.LinkByName(args.IfName)
	if err != nil {
		return fmt.Errorf("weft-cni: look up %s in the pod: %w", args.IfName, err)
	}
	if pod.Attrs().MTU != n.mtu {
		if err := ph.LinkSetMTU(pod, n.mtu); err != nil {
			return fmt.Errorf("weft-cni: set MTU of %s: %w", args.IfName, err)
		}
	}
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostLink.Attrs().HardwareAddr.String()},
			{Name: args.IfName, Mac: pod.Attrs().HardwareAddr.String(), Sandbox: args.Netns},
		},
	}
	idx := 1
	for _, a := range addrs {
		f, _ := n.family(a)
		own := netip.PrefixFrom(a, f.subnet.Bits())
		// `ip addr add ADDR/LEN dev eth0 [nodad]`
		if err := ph.AddrAdd(pod, podAddr(own)); err != nil {
			return fmt.Errorf("weft-cni: add %s to %s: %w", own, args.IfName, err)
		}
		result.IPs = append(result.IPs, &current.IPConfig{Interface: &idx, Address: *netconv.IPNet(own), Gateway: f.gw.AsSlice()})
	}
	if err := ph.LinkSetUp(pod); err != nil {
		return fmt.Errorf("weft-cni: set %s up: %w", args.IfName, err)
	}
	if lo, err := ph.LinkByName("lo"); err == nil {
		_ = ph.LinkSetUp(lo)
	}
	for _, r := range podRoutes(n, conf.DefaultGateway) {
		// `ip route add DST via GW dev eth0`
		if err := ph.RouteAdd(&netlink.Route{LinkIndex: pod.Attrs().Index, Dst: netconv.IPNet(r.dst), Gw: r.gw.AsSlice()}); err != nil {
			return fmt.Errorf("weft-cni: add %s: %w", r, err)
		}
		result.Routes = append(result.Routes, &types.Route{Dst: *netconv.IPNet(r.dst), GW: r.gw.AsSlice()})
	}
	if n.ipMasq {
		if err := masqAdd(context.Background(), n, addrs); err != nil {
			return fmt.Errorf("weft-cni: %w", err)
		}
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// Del implements CNI DEL: idempotent; a missing namespace, interface,
// allocation or masquerade is success. It deletes only what ADD made: the
// host end of the veth pair (which takes the pod's end with it, wherever
// the pod is), the pod's masquerade and its allocations. It never enters
// CNI_NETNS, so an interface of that name that ADD did not make there (ADD
// refused because it existed, or the namespace is the node's own) is left
// alone.
func Del(args *skel.CmdArgs) error {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	st, err := conf.store()
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	att := Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	// `ip link del vethXXXX`
	if l, err := netlink.LinkByName(hostVethName(att)); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("weft-cni: delete %s: %w", hostVethName(att), err)
		}
	}
	addrs, err := st.Lookup(att)
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	// Whatever FLANNEL_IPMASQ says now: it may have changed since ADD.
	if err := masqDel(context.Background(), addrs); err != nil {
		return fmt.Errorf("weft-cni: %w", err)
	}
	return st.Release(att)
}

// Check implements CNI CHECK: the interface, its addresses, its routes and
// its hairpin mode are as ADD left them.
func Check(args *skel.CmdArgs) error {
	conf, n, st, err := load(args)
	if err != nil {
		return err
	}
	addrs, err := st.Lookup(Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("weft-cni: no address allocated to %s/%s", args.ContainerID, args.IfName)
	}
	ph, pfd, err := podHandle(args.Netns)
	if err != nil {
		return err
	}
	defer pfd.Close()
	defer ph.Close()
	link, err := ph.LinkByName(args.IfName)
	if err != nil {
		return fmt.Errorf("weft-cni: interface %s: %w", args.IfName, err)
	}
	have, err := ph.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("weft-cni: list addresses of %s: %w", args.IfName, err)
	}
	for _, a := range addrs {
		f, ok := n.family(a)
		if !ok {
			return fmt.Errorf("weft-cni: %s has %s, of a family the node no longer has", args.IfName, a)
		}
		want := netip.PrefixFrom(a, f.subnet.Bits())
		if !slices.ContainsFunc(have, func(h netlink.Addr) bool { p, ok := netconv.Prefix(h.IPNet); return ok && p == want }) {
			return fmt.Errorf("weft-cni: %s lacks address %s", args.IfName, want)
		}
	}
	routes, err := ph.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("weft-cni: list routes of %s: %w", args.IfName, err)
	}
	for _, r := range podRoutes(n, conf.DefaultGateway) {
		if conf.DefaultGateway && r.dst.Bits() != 0 {
			// The default route covers the cluster network; pods made
			// before weft-cni added that route too have only the default.
			continue
		}
		if !slices.ContainsFunc(routes, func(h netlink.Route) bool {
			dst := netip.PrefixFrom(unspecified(r.gw), 0)
			if h.Dst != nil {
				dst, _ = netconv.Prefix(h.Dst)
			}
			return dst == r.dst && netconv.Addr(h.Gw) == r.gw
		}) {
			return fmt.Errorf("weft-cni: %s has no %s", args.IfName, r)
		}
	}
	host, err := netlink.LinkByName(hostVethName(Attachment{ContainerID: args.ContainerID, IfName: args.IfName}))
	if err != nil {
		return fmt.Errorf("weft-cni: the host end of %s: %w", args.IfName, err)
	}
	// `bridge -d link show dev vethXXXX`
	if pi, err := netlink.LinkGetProtinfo(host); err != nil {
		return fmt.Errorf("weft-cni: bridge port flags of %s: %w", host.Attrs().Name, err)
	} else if pi.Hairpin != conf.HairpinMode && conf.Delegate != nil {
		// Only a conflist that asks for a mode is held to it: weft-cni's
		// own default became hairpin on, and older pods' ports are off.
		return fmt.Errorf("weft-cni: bridge port %s has hairpin %t, want %t", host.Attrs().Name, pi.Hairpin, conf.HairpinMode)
	}
	return nil
}

// Status implements CNI STATUS: ready when subnet.env is there and the
// allocation directory is usable.
func Status(args *skel.CmdArgs) error {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := conf.node(); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	if _, err := conf.store(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	return nil
}

// GC implements CNI GC: it releases the allocations, and removes the
// masquerade, of attachments the runtime no longer knows.
func GC(args *skel.CmdArgs) error {
	var gc struct {
		NetConf
		ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
	}
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(args.StdinData, &gc); err != nil {
		return types.NewError(types.ErrDecodingFailure, "weft-cni: GC input", err.Error())
	}
	st, err := conf.store()
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	keep := make([]Attachment, 0, len(gc.ValidAttachments))
	for _, a := range gc.ValidAttachments {
		keep = append(keep, Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return st.GC(keep, func(gone []netip.Addr) error {
		if err := masqDel(context.Background(), gone); err != nil {
			return fmt.Errorf("weft-cni: %w", err)
		}
		return nil
	})
}
