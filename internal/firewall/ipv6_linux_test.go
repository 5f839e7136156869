package firewall

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestApplyIPv6InNamespace writes the dual-stack masquerade and forward
// parts into a fresh namespace, fully random and not, and reads table ip6
// weft back with the nft binary; nft checks the rendered text too. The
// forward accepts also go into ip6tables' FORWARD, as into iptables'.
func TestApplyIPv6InNamespace(t *testing.T) {
	fw, name, _ := newFirewall(t, true)
	ctx := context.Background()
	for _, random := range []bool{true, false} {
		s := NewState(MasqueradeRandom(network, subnet, random), Forward(network), MasqueradeRandom(network6, subnet6, random), Forward(network6))
		for range 2 {
			if err := fw.Apply(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		checkTable(t, name, s)
		tx, err := Render(s, Observed{})
		if err != nil {
			t.Fatal(err)
		}
		cmd := netns.Command(name, "nft", "-c", "-f", "/dev/stdin")
		cmd.Stdin = strings.NewReader(tx.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("nft -c rejects the rendered transaction: %v\n%s\n%s", err, out, tx)
		}
	}
	if onPath("iptables-save") && onPath("ip6tables") && onPath("ip6tables-save") && onPath("ip6tables-restore") {
		got := inNS(t, name, "ip6tables", "-S", "WEFT-FWD")
		want := "-N WEFT-FWD\n" +
			`-A WEFT-FWD -s 2001:db8:244::/48 -m comment --comment "weft forward" -j ACCEPT` + "\n" +
			`-A WEFT-FWD -d 2001:db8:244::/48 -m comment --comment "weft forward" -j ACCEPT` + "\n"
		if got != want {
			t.Errorf("ip6tables -S WEFT-FWD:\n%s\nwant\n%s", got, want)
		}
		if got := inNS(t, name, "ip6tables", "-S", "FORWARD"); !strings.Contains(got, wantJump) {
			t.Errorf("ip6tables -S FORWARD:\n%s", got)
		}
	}
	// IPv6 alone: table ip weft and iptables' chain go.
	v6 := NewState(Masquerade(network6, subnet6), Forward(network6))
	if err := fw.Apply(ctx, v6); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, v6)
	if out, err := netns.Command(name, "iptables", "-S", "WEFT-FWD").CombinedOutput(); err == nil {
		t.Errorf("iptables' WEFT-FWD still there with IPv4 off:\n%s", out)
	}
	if err := fw.Apply(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, State{})
}

// TestMasqueradeIPv6Traffic: a pod (2001:db8:244:3::2) behind a node
// reaches an outside host (2001:db8:0:1::2) that has no route back to the
// pods only with the IPv6 masquerade part, and the outside host sees the
// node's address (2001:db8:0:1::1) as the source.
func TestMasqueradeIPv6Traffic(t *testing.T) {
	fw, node, _ := newFirewall(t, false)
	pod, ext := netnstest.New(t), netnstest.New(t)
	h, err := netns.Handle(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, side := range []struct{ ns, veth, nodeAddr, addr string }{
		{pod, "vpod", "2001:db8:244:3::1/64", "2001:db8:244:3::2/64"},
		{ext, "vext", "2001:db8:0:1::1/64", "2001:db8:0:1::2/64"},
	} {
		// node: VETH NODEADDR <-> SIDE: eth0 ADDR
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: side.veth}, PeerName: "eth0"}); err != nil {
			t.Fatal(err)
		}
		addrUpNoDAD(t, h, side.veth, side.nodeAddr)
		peer, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		fd, err := netns.Fd(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		err = h.LinkSetNsFd(peer, int(fd)) // ip link set eth0 netns SIDE
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		sh, err := netns.Handle(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		defer sh.Close()
		addrUpNoDAD(t, sh, "eth0", side.addr)
	}
	ph, err := netns.Handle(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	// ip -6 route add default via 2001:db8:244:3::1, in the pod; the
	// outside host has no route to the pods.
	if err := ph.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: net.ParseIP("2001:db8:244:3::1")}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(node, func() error { // sysctl -w net.ipv6.conf.all.forwarding=1, in the node only
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := netns.Do(ext, func() (err error) { ln, err = net.Listen("tcp", "[2001:db8:0:1::2]:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			c.Close()
		}
	}()
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := netns.Dialer(pod)(ctx, "tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if dial() == nil {
		t.Fatal("the pod reaches the outside host without masquerade: the test proves nothing")
	}
	if err := fw.Apply(context.Background(), NewState(Masquerade(network6, subnet6))); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("pod to the outside with the IPv6 masquerade: %v", err)
	}
	select {
	case src := <-seen:
		if src != netip.MustParseAddr("2001:db8:0:1::1") {
			t.Errorf("the outside host saw %s, want the node's 2001:db8:0:1::1", src)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no connection seen")
	}
}

// addrUpNoDAD is `ip addr add ADDR dev NAME nodad; ip link set NAME up`.
func addrUpNoDAD(t *testing.T, h *netlink.Handle, name, addr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", addr, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}
