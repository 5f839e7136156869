package nflog

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

const (
	testGroup  = 7
	testPrefix = "weft-deny-in "
)

var (
	localAddr  = netip.MustParseAddr("10.244.0.1")
	deniedAddr = netip.MustParseAddr("10.244.9.9")
)

// logNamespace returns a fresh namespace with a veth pair holding
// 10.244.0.1/24, a route to 10.244.9.9 through it, and an output rule that
// logs packets to 10.244.9.9 to NFLOG group 7 and drops them.
func logNamespace(t *testing.T) string {
	t.Helper()
	name := netnstest.New(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	h, err := netns.Handle(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Same as `ip -n NS link add nfl0 type veth peer name nfl1`, `ip -n NS
	// addr add 10.244.0.1/24 dev nfl0`, `ip -n NS route add 10.244.9.9 dev nfl0`.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nfl0"}, PeerName: "nfl1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{"nfl0", "nfl1"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
	l, err := h.LinkByName("nfl0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: localAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatalf("add address: %v", err)
	}
	dst := &net.IPNet{IP: deniedAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("add route: %v", err)
	}
	rules := `table inet weft-nflog-test {
	chain output {
		type filter hook output priority filter; policy accept;
		ip daddr 10.244.9.9 log group 7 prefix "weft-deny-in " drop
	}
}
`
	err = netns.Do(name, func() error {
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(err.Error() + ": " + string(out))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("nft -f: %v", err)
	}
	return name
}

// listen starts Listen in the namespace and returns the packets it
// delivers and its result.
func listen(t *testing.T, ctx context.Context, name string) (<-chan Packet, <-chan error) {
	t.Helper()
	pkts := make(chan Packet, 64)
	done := make(chan error, 1)
	go func() {
		done <- Listen(ctx, testGroup, name, func(p Packet) {
			select {
			case pkts <- p:
			default:
			}
		})
	}()
	return pkts, done
}

// sendUntilLogged sends a packet with send from inside the namespace every
// 100 ms (Listen says nothing when it has bound the group) until one
// arrives that match accepts, and returns it.
func sendUntilLogged(t *testing.T, name string, pkts <-chan Packet, done <-chan error, send func() error, match func(Packet) bool) Packet {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := netns.Do(name, send); err != nil {
			t.Fatalf("send: %v", err)
		}
		for {
			select {
			case p := <-pkts:
				if match(p) {
					return p
				}
				t.Logf("other logged packet: %v", p)
				continue
			case err := <-done:
				t.Fatalf("Listen returned early: %v", err)
			case <-deadline:
				t.Fatal("no logged packet within 10 s")
			case <-tick.C:
			}
			break
		}
	}
}

func TestListen(t *testing.T) {
	name := logNamespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pkts, done := listen(t, ctx, name)

	t.Run("UDP", func(t *testing.T) {
		sent := map[uint16]bool{} // source ports; a message can come after the next send (batching)
		send := func() error {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(deniedAddr, 53)))
			if err != nil {
				return err
			}
			defer c.Close()
			sport := uint16(c.LocalAddr().(*net.UDPAddr).Port)
			sent[sport] = true
			// The output rule drops it: sendmsg fails with EPERM.
			if _, err := c.Write([]byte("weft nflog test")); err != nil && !errors.Is(err, unix.EPERM) {
				return err
			}
			return nil
		}
		p := sendUntilLogged(t, name, pkts, done, send, func(p Packet) bool { return p.Protocol == "UDP" })
		t.Logf("logged: %v", p)
		if !sent[p.SrcPort] {
			t.Errorf("logged source port %d; sent from %v", p.SrcPort, sent)
		}
		want := Packet{Prefix: testPrefix, Src: localAddr, Dst: deniedAddr, Protocol: "UDP", SrcPort: p.SrcPort, DstPort: 53}
		if p != want {
			t.Errorf("logged %+v, want %+v", p, want)
		}
	})

	t.Run("TCP", func(t *testing.T) {
		send := func() error {
			d := net.Dialer{Timeout: 200 * time.Millisecond}
			c, err := d.Dial("tcp4", netip.AddrPortFrom(deniedAddr, 80).String())
			if err == nil {
				c.Close()
				return errors.New("connected to 10.244.9.9:80 past a drop rule")
			}
			return nil
		}
		p := sendUntilLogged(t, name, pkts, done, send, func(p Packet) bool { return p.Protocol == "TCP" })
		t.Logf("logged: %v", p)
		if p.Prefix != testPrefix || p.Src != localAddr || p.Dst != deniedAddr || p.DstPort != 80 || p.SrcPort == 0 {
			t.Errorf("logged %+v, want prefix %q, %v -> %v:80 from a port", p, testPrefix, localAddr, deniedAddr)
		}
	})

	t.Run("second reader is refused at once", func(t *testing.T) {
		ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		start := time.Now()
		err := Listen(ctx2, testGroup, name, func(Packet) { t.Error("second reader got a packet") })
		if !errors.Is(err, ErrGroupBusy) {
			t.Fatalf("second Listen: %v, want ErrGroupBusy", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("second Listen took %v to fail", d)
		}
		if msg := err.Error(); !strings.Contains(msg, "bind group 7") || !strings.Contains(msg, name) || strings.Contains(msg, "\n") {
			t.Errorf("error %q: want one line naming group 7 and the namespace", msg)
		}
		t.Logf("second reader: %v", err)
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Listen after cancel: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Listen still running 2 s after cancel")
	}

	// The group was released with the socket: a new reader binds it and
	// gets packets.
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	pkts3, done3 := listen(t, ctx3, name)
	sendUntilLogged(t, name, pkts3, done3, func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(deniedAddr, 53)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, _ = c.Write([]byte("again"))
		return nil
	}, func(p Packet) bool { return p.Dst == deniedAddr && p.DstPort == 53 })
	cancel3()
	if err := <-done3; err != nil {
		t.Fatalf("third Listen: %v", err)
	}
}

func TestListenMissingNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Listen(ctx, testGroup, "wt-nflog-missing-namespace", func(Packet) {})
	if err == nil || !strings.Contains(err.Error(), "group 7") || !strings.Contains(err.Error(), "wt-nflog-missing-namespace") {
		t.Fatalf("Listen in a missing namespace: %v, want an error naming the group and namespace", err)
	}
	t.Log(err)
}
