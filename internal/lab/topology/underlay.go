package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// BuildUnderlay turns the namespace ns into the underlay: one bridge (l2),
// or three bridges with the router's addresses and forwarding on (l3),
// IPv6 too in a lab of family ipv6 or dual.
func BuildUnderlay(ns, topo, fam string) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, side := range bridgeSides(topo) {
		// `ip link add br-a type bridge`
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Bridge(side)}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("underlay: add bridge %s: %w", br.Name, err)
		}
		l, err := h.LinkByName(br.Name)
		if err != nil {
			return err
		}
		for _, gw := range Gateways(topo, side, fam) {
			if err := addAddr(h, l, side, gw); err != nil {
				return fmt.Errorf("underlay: %w", err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("underlay: set %s up: %w", br.Name, err)
		}
	}
	if topo == L3 {
		// The router forwards between the sides; this namespace only.
		if err := EnableForwarding(ns, HasIPv6(fam)); err != nil {
			return fmt.Errorf("underlay: %w", err)
		}
	}
	return nil
}

// Attach plugs host h into the underlay namespace ul on h.Side: a veth
// whose end "eth0" is created directly inside h's namespace (never in the
// root namespace), with h's address and, on l3, a default route via the
// router.
func Attach(ul, topo string, h Host) error {
	uh, err := netns.Handle(ul)
	if err != nil {
		return err
	}
	defer uh.Close()
	br, err := uh.LinkByName(Bridge(h.Side))
	if err != nil {
		return fmt.Errorf("underlay: bridge %s: %w", Bridge(h.Side), err)
	}
	fd, err := netns.Fd(h.NS)
	if err != nil {
		return err
	}
	defer fd.Close()
	// `ip link add NAME master br-X type veth peer name eth0 netns NS`
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Name, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(fd)),
	}
	if err := uh.LinkAdd(veth); err != nil {
		return fmt.Errorf("underlay: veth for %s: %w", h.Name, err)
	}
	l, err := uh.LinkByName(h.Name)
	if err != nil {
		return err
	}
	if err := uh.LinkSetUp(l); err != nil {
		return fmt.Errorf("underlay: set %s up: %w", h.Name, err)
	}
	// The switch's port sends what a wire carries: frames of at most the
	// MTU with their checksums complete. A veth would otherwise pass a
	// super-packet, or a checksum left for offload, from one host's stack
	// to the next, which only a kernel receiver accepts (flannel's udp
	// datagrams go to a userspace socket on flanneld's and weft's TUN
	// path).
	if err := netns.Do(ul, func() error { return kernel.SetTxChecksum(h.Name, false) }); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	return configureEth0(topo, h)
}

// addAddr puts a on link l with its side's prefix length: the same as
// `ip addr add A/LEN dev L`, with `nodad` for IPv6: the lab's addresses
// are unique by plan, and duplicate address detection would hold an
// address tentative (unusable) for a second or more.
func addAddr(h *netlink.Handle, l netlink.Link, side string, a netip.Addr) error {
	p := netip.PrefixFrom(a, SegmentOf(side, a).Bits())
	na := &netlink.Addr{IPNet: netconv.IPNet(p)}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, na); err != nil {
		return fmt.Errorf("address %s on %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

// configureEth0 gives h's end of the veth its addresses and, on l3, the
// default routes via the router.
func configureEth0(topo string, h Host) error {
	hh, err := netns.Handle(h.NS)
	if err != nil {
		return err
	}
	defer hh.Close()
	eth, err := hh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("%s: %w", h.NS, err)
	}
	for _, a := range h.Addrs() {
		if err := addAddr(hh, eth, h.Side, a); err != nil {
			return fmt.Errorf("%s: %w", h.NS, err)
		}
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s: set eth0 up: %w", h.NS, err)
	}
	// GRO on, as a NIC has it (a veth's is off): the udp backend's
	// kernel path decapsulates at XDP, before GRO, and relies on GRO to
	// merge the datagrams' TCP segments again.
	if err := netns.Do(h.NS, func() error { return kernel.SetGRO("eth0", true) }); err != nil {
		return fmt.Errorf("%s: %w", h.NS, err)
	}
	gw := Gateway(topo, h.Side)
	if !gw.IsValid() {
		return nil
	}
	for _, a := range h.Addrs() {
		via := gw
		if a.Is6() {
			via = Mirror6(h.Side, gw)
		}
		// `ip route add default via GW dev eth0` (`ip -6 route ...` for
		// IPv6) inside the host's namespace.
		if err := hh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: via.AsSlice()}); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", h.NS, via, err)
		}
	}
	return nil
}

// EnableForwarding turns on IPv4 forwarding, and IPv6's when v6, in
// namespace ns only: the same as `ip netns exec NS sysctl
// net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`.
func EnableForwarding(ns string, v6 bool) error {
	knobs := []string{"/proc/sys/net/ipv4/ip_forward"}
	if v6 {
		knobs = append(knobs, "/proc/sys/net/ipv6/conf/all/forwarding")
	}
	err := netns.Do(ns, func() error {
		for _, k := range knobs {
			if err := os.WriteFile(k, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: enable forwarding: %w", ns, err)
	}
	return nil
}

// errNoIPTables says what to install for --forward-drop.
var errNoIPTables = errors.New("--forward-drop needs the iptables binary (apt-get install iptables)")

// CheckIPTables reports whether DropForward can run here.
func CheckIPTables() error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return errNoIPTables
	}
	return nil
}

// DropForward sets the FORWARD chain's policy to DROP in namespace ns, as
// Docker does on every host it runs on: `ip netns exec NS iptables -P
// FORWARD DROP`. Pod traffic then flows only if something accepts it in
// that chain.
func DropForward(ns string) error {
	if err := CheckIPTables(); err != nil {
		return err
	}
	cmd := netns.Command(ns, "iptables", "-w", "5", "-P", "FORWARD", "DROP")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: iptables -P FORWARD DROP: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}
