package firewall

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// udpListen listens on UDP addr in namespace ns until the test ends and
// returns the sources of the datagrams it receives.
func udpListen(t *testing.T, ns, addr string) (netip.AddrPort, <-chan netip.Addr) {
	t.Helper()
	var pc net.PacketConn
	if err := netns.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	got := make(chan netip.Addr, 64)
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case got <- from.(*net.UDPAddr).AddrPort().Addr().Unmap():
			default:
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), got
}

// udpSend sends n datagrams to dst from namespace ns, from address src
// ("" for the one the kernel picks). A src the namespace does not own is
// sent as is (IP_TRANSPARENT), as a host forging it would. It returns the
// first send error (EPERM when a firewall drops the datagram on the way
// out).
func udpSend(ns, src string, dst netip.AddrPort, n int) error {
	return netns.Do(ns, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		local := ":0"
		if src != "" {
			local = net.JoinHostPort(src, "0")
		}
		pc, err := lc.ListenPacket(context.Background(), "udp4", local)
		if err != nil {
			return err
		}
		defer pc.Close()
		var first error
		for i := range n {
			if _, err := pc.WriteTo(fmt.Appendf(nil, "guard test %d", i), net.UDPAddrFromAddrPort(dst)); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}

// received counts what arrives on got within d.
func received(got <-chan netip.Addr, d time.Duration) []netip.Addr {
	var out []netip.Addr
	deadline := time.After(d)
	for {
		select {
		case a := <-got:
			out = append(out, a)
		case <-deadline:
			return out
		}
	}
}

var packetsRE = regexp.MustCompile(`packets (\d+) bytes`)

// counterPackets reads `nft list counter FAM weft NAME` in namespace ns.
func counterPackets(t *testing.T, ns string, fam Family, name string) int {
	t.Helper()
	out := inNS(t, ns, "nft", "list", "counter", string(fam), Table, name)
	m := packetsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("nft list counter %s: %s", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestTunnelGuardTraffic: a node (10.244.3.0/24) with a pod (10.244.3.2),
// an underlay link to a host (192.0.2.2, also its default gateway) and a
// stand-in for flannel-wg (a veth of that name to a "remote node" that owns
// remote pod 10.244.2.2), with rp_filter off. With the tunnel guard, a
// datagram forged on the underlay from remote pod address 10.244.2.9 never
// reaches the pod and is counted, while the same from the tunnel does; with
// the tunnel's route gone, the pod's and the host's traffic to the remote
// pod does not leave on the underlay in clear, and is counted. What must
// still pass does: tunnel traffic both ways, host to pods local and remote,
// the pod to the outside (masqueraded), the outside to the pod, and a
// remote pod's unmasqueraded packet to the node's own underlay address. Without
// the guard the forgery and the leak do get through, so the test can fail.
func TestTunnelGuardTraffic(t *testing.T) {
	fw, node, _ := newFirewall(t, false)
	pod, under, peer := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	h, err := netns.Handle(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pp := netip.MustParsePrefix
	ipnet := func(p netip.Prefix) *net.IPNet {
		return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	podH := vethTo(t, h, "vpod", "10.244.3.1/24", pod, "10.244.3.2/24")
	underH := vethTo(t, h, "eth1", "192.0.2.1/24", under, "192.0.2.2/24")
	peerH := vethTo(t, h, "flannel-wg", "10.244.3.0/32", peer, "10.244.2.2/32")
	route := func(h *netlink.Handle, dst string, gw string, dev string) {
		t.Helper()
		r := &netlink.Route{}
		if dst != "" {
			r.Dst = ipnet(pp(dst))
		}
		if gw != "" {
			r.Gw = netip.MustParseAddr(gw).AsSlice()
		}
		if dev != "" {
			l, err := h.LinkByName(dev)
			if err != nil {
				t.Fatal(err)
			}
			r.LinkIndex, r.Scope = l.Attrs().Index, netlink.SCOPE_LINK
		}
		if err := h.RouteAdd(r); err != nil {
			t.Fatalf("ip route add %s via %s dev %s: %v", dst, gw, dev, err)
		}
	}
	route(podH, "", "10.244.3.1", "")                  // pod: default via 10.244.3.1
	route(underH, "10.244.0.0/16", "192.0.2.1", "")    // underlay host: the pods via the node
	route(peerH, "10.244.3.0/24", "", "eth0")          // remote node: this node's pods through the "tunnel"
	route(h, "", "192.0.2.2", "")                      // node: default via the underlay
	tunnelRoute := &netlink.Route{Dst: ipnet(network)} // node: 10.244.0.0/16 dev flannel-wg
	if l, err := h.LinkByName("flannel-wg"); err != nil {
		t.Fatal(err)
	} else {
		tunnelRoute.LinkIndex, tunnelRoute.Scope = l.Attrs().Index, netlink.SCOPE_LINK
	}
	if err := h.RouteAdd(tunnelRoute); err != nil {
		t.Fatal(err)
	}
	// The underlay host also owns remote pod address 10.244.2.2 (on lo),
	// so that a datagram to the remote pod that leaks onto the underlay in
	// clear is received there.
	if lo, err := underH.LinkByName("lo"); err != nil {
		t.Fatal(err)
	} else if err := underH.AddrAdd(lo, &netlink.Addr{IPNet: ipnet(pp("10.244.2.2/32"))}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(node, func() error {
		for file, v := range map[string]string{
			"ipv4/ip_forward": "1",
			// answer the remote node's ARP for the local pod on the tunnel
			"ipv4/conf/flannel-wg/proxy_arp":    "1",
			"ipv4/neigh/flannel-wg/proxy_delay": "0", // at once, not within 0.8 s
			// loose or no reverse path filter: what the guard is for
			"ipv4/conf/all/rp_filter": "0", "ipv4/conf/eth1/rp_filter": "0", "ipv4/conf/default/rp_filter": "0",
		} {
			if err := os.WriteFile("/proc/sys/net/"+file, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	weft := []Part{MasqueradeExcept(network, subnet, true, nil), Forward(network)}
	guarded := NewState(append(weft, TunnelGuard(network, subnet, []string{"flannel-wg"}),
		TunnelGuard(network6, subnet6, []string{"flannel-wg-v6"}))...)
	unguarded := NewState(weft...)
	if err := fw.Apply(ctx, guarded); err != nil {
		t.Fatal(err)
	}
	checkTable(t, node, guarded)

	podAddr, atPod := udpListen(t, pod, "10.244.3.2:0")
	remote, atRemote := udpListen(t, peer, "10.244.2.2:0")
	_, leaked := udpListen(t, under, "10.244.2.2:"+strconv.Itoa(int(remote.Port())))
	outside, atOutside := udpListen(t, under, "192.0.2.2:0")
	nodeAddr, atNode := udpListen(t, node, "192.0.2.1:0")
	const n = 5
	wait := 500 * time.Millisecond
	expect := func(what string, got <-chan netip.Addr, want netip.Addr, count int) {
		t.Helper()
		seen := received(got, wait)
		ok := len(seen) == count
		for _, a := range seen {
			ok = ok && a == want
		}
		if !ok {
			t.Errorf("%s: received from %v, want %d from %s", what, seen, count, want)
		}
	}
	send := func(ns, src string, dst netip.AddrPort) {
		t.Helper()
		if err := udpSend(ns, src, dst, n); err != nil {
			t.Fatalf("send to %s from %s in %s: %v", dst, src, ns, err)
		}
	}
	a := netip.MustParseAddr

	// Ingress: forged on the underlay, dropped and counted; through the
	// tunnel, delivered.
	send(under, "10.244.2.9", podAddr)
	expect("forged remote pod source on the underlay", atPod, a("10.244.2.9"), 0)
	if got := counterPackets(t, node, IPv4, CounterTunnelIn); got != n {
		t.Errorf("tunnel-in-dropped: %d packets, want %d", got, n)
	}
	// Counters reads the same, as the agent's metrics do.
	if c, err := fw.Counters(); err != nil {
		t.Fatal(err)
	} else if got := c[IPv4][CounterTunnelIn].Packets; got != n {
		t.Errorf("Counters: %s %s: %d packets, want %d (all: %v)", IPv4, CounterTunnelIn, got, n, c)
	} else if _, ok := c[IPv6][CounterTunnelOut]; !ok {
		t.Errorf("Counters: no %s %s (all: %v)", IPv6, CounterTunnelOut, c)
	}
	send(peer, "", podAddr)
	expect("remote pod through the tunnel", atPod, a("10.244.2.2"), n)
	// What must still pass.
	send(pod, "", remote)
	expect("pod to remote pod through the tunnel", atRemote, a("10.244.3.2"), n)
	send(node, "", remote)
	expect("host to remote pod (source: its tunnel address)", atRemote, a("10.244.3.0"), n)
	send(node, "", podAddr)
	expect("host to local pod", atPod, a("10.244.3.1"), n)
	send(pod, "", outside)
	expect("pod to the outside, masqueraded", atOutside, a("192.0.2.1"), n)
	send(under, "", podAddr)
	expect("outside to the pod", atPod, a("192.0.2.2"), n)
	// A remote pod's packet to this node's own address crosses the
	// underlay in clear, with the pod's source when its node does not
	// masquerade (a NodePort, the API server): not the guard's to drop.
	send(under, "10.244.2.9", nodeAddr)
	expect("remote pod to the node's own address, unmasqueraded, on the underlay", atNode, a("10.244.2.9"), n)
	if got := counterPackets(t, node, IPv4, CounterTunnelIn); got != n {
		t.Errorf("tunnel-in-dropped: %d packets after legitimate traffic, want %d", got, n)
	}
	if got := counterPackets(t, node, IPv4, CounterTunnelOut); got != 0 {
		t.Errorf("tunnel-out-dropped: %d packets after legitimate traffic, want 0", got)
	}

	// Egress: the tunnel's route gone (ip route del 10.244.0.0/16 dev
	// flannel-wg), the default route would carry remote pods' traffic in
	// clear: dropped and counted.
	if err := h.RouteDel(tunnelRoute); err != nil {
		t.Fatal(err)
	}
	send(pod, "", remote)
	if err := udpSend(node, "", remote, n); !errors.Is(err, unix.EPERM) {
		t.Errorf("host to remote pod without the tunnel's route: %v, want EPERM", err)
	}
	expect("leak onto the underlay", leaked, netip.Addr{}, 0)
	if got := counterPackets(t, node, IPv4, CounterTunnelOut); got != 2*n {
		t.Errorf("tunnel-out-dropped: %d packets, want %d", got, 2*n)
	}

	// A sync rewrites the chains but keeps the counters' counts.
	if err := fw.Apply(ctx, guarded); err != nil {
		t.Fatal(err)
	}
	if in, out := counterPackets(t, node, IPv4, CounterTunnelIn), counterPackets(t, node, IPv4, CounterTunnelOut); in != n || out != 2*n {
		t.Errorf("counters after a sync: in %d, out %d; want %d, %d", in, out, n, 2*n)
	}

	// Control: without the guard, the forgery and the leak get through.
	if err := fw.Apply(ctx, unguarded); err != nil {
		t.Fatal(err)
	}
	checkTable(t, node, unguarded)
	if out := inNS(t, node, "nft", "list", "counters", "table", "ip", Table); packetsRE.MatchString(out) {
		t.Errorf("counters left without the guard:\n%s", out)
	}
	send(under, "10.244.2.9", podAddr)
	expect("forged source without the guard (control)", atPod, a("10.244.2.9"), n)
	send(pod, "", remote)
	// pod to pod keeps its source: the pod's address, in clear
	expect("leak without the guard (control)", leaked, a("10.244.3.2"), n)
}
