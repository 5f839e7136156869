package vxlan

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// dualNode is one side of TestDualStackPingInNamespaces: a namespace whose
// eth0 holds an IPv4 and an IPv6 underlay address, and its vxlan backend.
type dualNode struct {
	ns    string
	h     *netlink.Handle
	b     *Backend
	lease lease.Lease
}

// TestDualStackPingInNamespaces: two fresh namespaces joined by a veth
// (192.0.2.0/24 and 2001:db8:0:1::/64), the dual vxlan backend programmed
// on each with the other's lease; an ICMP echo goes from one node's
// flannel.1 address to the other's, and an ICMPv6 echo from one node's
// flannel-v6.1 address to the other's, both across the vxlan devices.
func TestDualStackPingInNamespaces(t *testing.T) {
	a, b := netnstest.New(t), netnstest.New(t)
	ha, err := netns.Handle(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ha.Close)
	hb, err := netns.Handle(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hb.Close)
	fdB, err := netns.Fd(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fdB.Close()
	// ip link add eth0 type veth peer name eth0 netns B
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(fdB))}); err != nil {
		t.Fatal(err)
	}
	nodes := []*dualNode{{ns: a, h: ha}, {ns: b, h: hb}}
	for i, n := range nodes {
		n.lease = lease.Lease{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1)),
			IPv6Subnet: netip.MustParsePrefix(fmt.Sprintf("2001:db8:244:%d::/64", i+1)),
			Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)),
				PublicIPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:0:1::%d", i+1))}}
		l, err := n.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		// ip addr add 192.0.2.N/24 dev eth0; ip addr add 2001:db8:0:1::N/64 dev eth0 nodad
		for _, p := range []netip.Prefix{netip.PrefixFrom(n.lease.Attrs.PublicIP, 24), netip.PrefixFrom(n.lease.Attrs.PublicIPv6, 64)} {
			if err := n.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		k := kernel.NewNetlink(n.h)
		u, err := kernel.FindUnderlay(k, kernel.UnderlayQuery{Ifaces: []string{"eth0"}, IPv4: true, IPv6: true})
		if err != nil {
			t.Fatal(err)
		}
		u.Addr6 = n.lease.Attrs.PublicIPv6 // --public-ipv6
		n.b, err = New(backend.Env{Kernel: k, Underlay: u, Network: network4, IPv6Network: network6}, Options{Common: backend.Common{Port: 8472}, VNI: 1})
		if err != nil {
			t.Fatal(err)
		}
		attrs := n.b.LeaseAttrs()
		n.lease.Attrs.BackendType, n.lease.Attrs.BackendData, n.lease.Attrs.BackendV6Data = attrs.BackendType, attrs.BackendData, attrs.BackendV6Data
	}
	ctx := context.Background()
	for i, n := range nodes {
		st := backend.NodeState{Network: network4, IPv6Network: network6, Own: n.lease, Peers: []lease.Lease{nodes[0].lease, nodes[1].lease}}
		d := n.b.Plan(st)
		rep, err := n.b.Apply(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Added != 6 || len(d.Skipped) != 0 { // neighbour, FDB entry and route per family
			t.Errorf("node %d: report %+v", i+1, rep)
		}
		dev, err := n.h.LinkByName("flannel-v6.1")
		if err != nil {
			t.Fatal(err)
		}
		v, ok := dev.(*netlink.Vxlan)
		if !ok || !v.SrcAddr.Equal(n.lease.Attrs.PublicIPv6.AsSlice()) || dev.Attrs().MTU != 1430 {
			t.Errorf("node %d: flannel-v6.1 is %+v", i+1, dev)
		}
		if rep, err := n.b.Apply(ctx, n.b.Plan(st)); err != nil || rep.Added+rep.Removed != 0 {
			t.Errorf("node %d: second apply %+v, %v", i+1, rep, err)
		}
	}
	// The devices' addresses: each subnet's network address.
	for _, dst := range []netip.Addr{nodes[1].lease.Subnet.Addr(), nodes[1].lease.IPv6Subnet.Addr()} {
		src := nodes[0].lease.Subnet.Addr()
		dev := "flannel.1"
		if dst.Is6() {
			src, dev = nodes[0].lease.IPv6Subnet.Addr(), "flannel-v6.1"
		}
		before := txPackets(t, ha, dev)
		if err := ping(a, src, dst); err != nil {
			t.Errorf("ping %s -> %s: %v", src, dst, err)
		}
		if after := txPackets(t, ha, dev); after <= before {
			t.Errorf("ping %s -> %s did not leave by %s (tx %d -> %d)", src, dst, dev, before, after)
		}
	}
}

// txPackets is the count of packets dev has sent.
func txPackets(t *testing.T, h *netlink.Handle, dev string) uint64 {
	t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxPackets
}

// ping sends ICMP (ICMPv6) echo requests from src to dst inside the
// namespace ns until a reply comes back, for up to 5 s (the IPv6 device
// address is tentative for a second, while the kernel runs duplicate
// address detection).
func ping(ns string, src, dst netip.Addr) error {
	network, proto := "ip4:icmp", 1
	var req, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		req, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	payload := []byte("weft dual stack")
	return netns.Do(ns, func() error {
		deadline := time.Now().Add(5 * time.Second)
		var last error
		for seq := 1; time.Now().Before(deadline); seq++ {
			c, err := icmp.ListenPacket(network, src.String())
			if err != nil { // the address may still be tentative
				last = err
				time.Sleep(200 * time.Millisecond)
				continue
			}
			last = echo(c, dst, seq, req, reply, proto, payload)
			c.Close()
			if last == nil {
				return nil
			}
		}
		return last
	})
}

// echo sends one echo request on c and waits half a second for its reply.
func echo(c *icmp.PacketConn, dst netip.Addr, seq int, req, reply icmp.Type, proto int, payload []byte) error {
	id := os.Getpid() & 0xffff
	b, err := (&icmp.Message{Type: req, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}).Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq && bytes.Equal(e.Data, payload) && from.String() == dst.String() {
			return nil
		}
	}
}
