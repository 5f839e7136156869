package topology

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec() // DropForward runs iptables through netns.Command
	os.Exit(m.Run())
}

// TestDropForward sets the policy in a fresh namespace and reads it back
// with iptables there; the root namespace is never touched.
func TestDropForward(t *testing.T) {
	ns := netnstest.New(t)
	if err := CheckIPTables(); err != nil {
		t.Skip(err)
	}
	if err := DropForward(ns); err != nil {
		t.Fatal(err)
	}
	out, err := netns.Command(ns, "iptables", "-w", "5", "-S", "FORWARD").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S FORWARD: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "-P FORWARD DROP") {
		t.Errorf("FORWARD policy in %s:\n%s", ns, out)
	}
}

// TestUnderlayL3 builds a router and attaches a host on each side.
func TestUnderlayL3(t *testing.T) {
	ul, a := netnstest.New(t), netnstest.New(t)
	if err := BuildUnderlay(ul, L3, IPv4); err != nil {
		t.Fatal(err)
	}
	addr, side := NodeAddr(L3, 1, 2)
	if err := Attach(ul, L3, Host{Name: "h1", NS: a, Addr: addr, Side: side}); err != nil {
		t.Fatal(err)
	}
	h, err := netns.Handle(a)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes, err := h.RouteList(nil, 2 /* AF_INET */)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.String())
	}
	if s := strings.Join(got, "\n"); !strings.Contains(s, "Gw: 192.0.2.1") || !strings.Contains(s, "Dst: 192.0.2.0/24") {
		t.Errorf("routes in the host:\n%s", s)
	}
}

// TestUnderlayL3Dual builds a dual-stack router and a host on each side:
// each host has both families' addresses (IPv6 usable at once: no DAD),
// and a TCP connection crosses the router over each family, the server
// seeing the client's own address.
func TestUnderlayL3Dual(t *testing.T) {
	ul, a, b := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	if err := BuildUnderlay(ul, L3, Dual); err != nil {
		t.Fatal(err)
	}
	var hosts []Host
	for i, ns := range []string{a, b} {
		addr, side := NodeAddr(L3, i+1, 2)
		h := Host{Name: fmt.Sprintf("h%d", i+1), NS: ns, Addr: addr, Side: side}.WithIPv6()
		if err := Attach(ul, L3, h); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	if got := hosts[1].Addr6; got != netip.MustParseAddr("2001:db8:0:b::c") {
		t.Errorf("n2's IPv6 address: %s, want 2001:db8:0:b::c (host 12 of side b)", got)
	}
	for _, is6 := range []bool{false, true} {
		src, dst := hosts[0].AddrOf(is6), hosts[1].AddrOf(is6)
		var ln net.Listener
		if err := netns.Do(b, func() error {
			var err error
			ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 7000).String())
			return err
		}); err != nil {
			t.Fatalf("listen on %s: %v", dst, err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
		}()
		var seen string
		err := netns.Do(a, func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 7000).String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			seen, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		ln.Close()
		if err != nil || strings.TrimSpace(seen) != src.String() {
			t.Errorf("%s -> %s across the router: %v, server saw %q", src, dst, err, seen)
		}
	}
}
