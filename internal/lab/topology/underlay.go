package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// BuildUnderlay turns the namespace ns into the underlay: one bridge (l2),
// or three bridges with the router's addresses and forwarding on (l3).
func BuildUnderlay(ns, topo string) error {
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
		if gw := Gateway(topo, side); gw.IsValid() {
			p := netip.PrefixFrom(gw, Prefix(side).Bits())
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: netconv.IPNet(p)}); err != nil {
				return fmt.Errorf("underlay: address %s on %s: %w", p, br.Name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("underlay: set %s up: %w", br.Name, err)
		}
	}
	if topo == L3 {
		// The router forwards between the sides; this namespace only.
		if err := EnableForwarding(ns); err != nil {
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
	return configureEth0(topo, h)
}

// configureEth0 gives h's end of the veth its address and, on l3, the
// default route via the router.
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
	addr := netip.PrefixFrom(h.Addr, Prefix(h.Side).Bits())
	if err := hh.AddrAdd(eth, &netlink.Addr{IPNet: netconv.IPNet(addr)}); err != nil {
		return fmt.Errorf("%s: address %s: %w", h.NS, addr, err)
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s: set eth0 up: %w", h.NS, err)
	}
	if gw := Gateway(topo, h.Side); gw.IsValid() {
		// `ip route add default via GW dev eth0` inside the host's namespace.
		if err := hh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", h.NS, gw, err)
		}
	}
	return nil
}

// EnableForwarding turns on IPv4 forwarding in namespace ns only: the same
// as `ip netns exec NS sysctl net.ipv4.ip_forward=1`.
func EnableForwarding(ns string) error {
	err := netns.Do(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
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
