package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func needIPTables(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range append([]string{"iptables", "iptables-save", "iptables-restore"}, bins...) {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("no %s: %v", b, err)
		}
	}
}

const (
	wantJump   = `-A FORWARD -m comment --comment "weft forward" -j WEFT-FWD`
	wantAccept = `-A WEFT-FWD -s 10.244.0.0/16 -m comment --comment "weft forward" -j ACCEPT` + "\n" +
		`-A WEFT-FWD -d 10.244.0.0/16 -m comment --comment "weft forward" -j ACCEPT`
)

// TestIPTablesForward: under Docker's `iptables -P FORWARD DROP`, the
// forward part puts its accepts into iptables' FORWARD, once; the next
// syncs cost one iptables-save and write nothing; without the part they go.
func TestIPTablesForward(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			ipt := "iptables-" + backend
			needIPTables(t, ipt, ipt+"-save", ipt+"-restore")
			fw, name, logs := newFirewall(t, true)
			ctx := context.Background()
			// The host's rules live in this backend; the other is empty.
			inNS(t, name, ipt, "-P", "FORWARD", "DROP")
			s := NewState(Masquerade(network, subnet), Forward(network))
			if err := fw.Apply(ctx, s); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "binary="+ipt) {
				t.Errorf("the backend holding the DROP policy was not chosen:\n%s", logs)
			}
			check := func() {
				t.Helper()
				fwd := inNS(t, name, ipt, "-S", "FORWARD")
				if fwd != "-P FORWARD DROP\n"+wantJump+"\n" {
					t.Errorf("%s -S FORWARD:\n%s", ipt, fwd)
				}
				if got := inNS(t, name, ipt, "-S", "WEFT-FWD"); got != "-N WEFT-FWD\n"+wantAccept+"\n" {
					t.Errorf("%s -S WEFT-FWD:\n%s", ipt, got)
				}
			}
			check()
			execs, restores := fw.ipt.execs, fw.ipt.restores
			for range 2 {
				if err := fw.Apply(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if d := fw.ipt.execs - execs; d != 2 || fw.ipt.restores != restores {
				t.Errorf("two syncs with nothing to change ran %d binaries and %d restores, want 2 and 0", d, fw.ipt.restores-restores)
			}
			check()
			// Removed by hand (a firewall reload): back at the next sync.
			inNS(t, name, ipt, "-D", "FORWARD", "-m", "comment", "--comment", "weft forward", "-j", "WEFT-FWD")
			if err := fw.Apply(ctx, s); err != nil {
				t.Fatal(err)
			}
			check()
			// Without the forward part: gone, and the policy stays.
			if err := fw.Apply(ctx, NewState(Masquerade(network, subnet))); err != nil {
				t.Fatal(err)
			}
			if got := inNS(t, name, ipt, "-S", "FORWARD"); got != "-P FORWARD DROP\n" {
				t.Errorf("FORWARD after the forward part went:\n%s", got)
			}
			if out, err := netns.Command(name, ipt, "-S", "WEFT-FWD").CombinedOutput(); err == nil {
				t.Errorf("WEFT-FWD still there:\n%s", out)
			}
			// Known clean: the next syncs run nothing.
			execs = fw.ipt.execs
			if err := fw.Apply(ctx, NewState(Masquerade(network, subnet))); err != nil {
				t.Fatal(err)
			}
			if fw.ipt.execs != execs {
				t.Errorf("a sync without the forward part ran %d binaries after cleaning up", fw.ipt.execs-execs)
			}
		})
	}
}

// TestIPTablesForwardOff: with --iptables-forward-rules=false weft runs no
// iptables binary and says once where its accepts are.
func TestIPTablesForwardOff(t *testing.T) {
	needIPTables(t)
	fw, name, logs := newFirewall(t, false)
	for range 2 {
		if err := fw.Apply(context.Background(), NewState(Forward(network))); err != nil {
			t.Fatal(err)
		}
	}
	if fw.ipt.execs != 0 {
		t.Errorf("%d iptables binaries run", fw.ipt.execs)
	}
	if n := strings.Count(logs.String(), "iptables forward rules are off"); n != 1 {
		t.Errorf("logged the note %d times:\n%s", n, logs)
	}
	if got := inNS(t, name, "iptables-save", "-t", "filter"); strings.Contains(got, "WEFT") {
		t.Errorf("WEFT chains written:\n%s", got)
	}
}

// TestForwardDropTraffic routes between two pod namespaces through a node
// namespace whose iptables FORWARD policy is DROP: blocked until weft
// applies the forward part, blocked again once it is gone.
func TestForwardDropTraffic(t *testing.T) {
	needIPTables(t)
	fw, node, _ := newFirewall(t, true)
	a, b := netnstest.New(t), netnstest.New(t)
	h, err := netns.Handle(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i, pod := range []string{a, b} {
		// node: vethI 10.244.I.1/24 <-> pod: eth0 10.244.I.2/24, default via .1
		ph := vethTo(t, h, fmt.Sprintf("veth%d", i), fmt.Sprintf("10.244.%d.1/24", i), pod, fmt.Sprintf("10.244.%d.2/24", i))
		gw := netip.MustParseAddr(fmt.Sprintf("10.244.%d.1", i))
		if err := ph.RouteAdd(&netlink.Route{Gw: gw.AsSlice()}); err != nil { // ip route add default via gw
			t.Fatal(err)
		}
	}
	if err := netns.Do(node, func() error { // sysctl -w net.ipv4.ip_forward=1, in the node only
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	inNS(t, node, "iptables", "-P", "FORWARD", "DROP")

	addr, _ := serveIn(t, b, "10.244.1.2:0")
	dial := func() error { return dialFrom(a, addr) }
	if dial() == nil {
		t.Fatal("traffic passes the DROP policy before weft applied anything")
	}
	ctx := context.Background()
	// The forward accepts in weft's own table alone do not help...
	nftOnly, err := New(Options{Namespace: node})
	if err != nil {
		t.Fatal(err)
	}
	defer nftOnly.Close()
	if err := nftOnly.Apply(ctx, NewState(Forward(network))); err != nil {
		t.Fatal(err)
	}
	if dial() == nil {
		t.Fatal("traffic passes the iptables DROP policy with accepts only in nftables: the test proves nothing")
	}
	// ...those in iptables' FORWARD do.
	if err := fw.Apply(ctx, NewState(Forward(network))); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("pod to pod through the node with the forward part: %v", err)
	}
	if err := fw.Apply(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	if dial() == nil {
		t.Fatal("traffic still passes after the forward part went")
	}
}

// serveIn listens on TCP addr in namespace ns until the test ends,
// accepting and closing connections; it returns the address listened on
// and the source addresses of the connections accepted.
func serveIn(t *testing.T, ns, addr string) (string, <-chan netip.Addr) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap():
			default:
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), seen
}

// dialFrom connects to TCP addr from namespace ns, within two seconds.
func dialFrom(ns, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := netns.Dialer(ns)(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// vethTo links the node (h) to namespace ns: veth NAME with nodeAddr in
// the node, its peer eth0 with addr in ns. It returns ns's handle, closed
// when the test ends.
func vethTo(t *testing.T, h *netlink.Handle, name, nodeAddr, ns, addr string) *netlink.Handle {
	t.Helper()
	// ip link add NAME type veth peer name eth0
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	addrUp(t, h, name, nodeAddr)
	peer, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := netns.Fd(ns)
	if err != nil {
		t.Fatal(err)
	}
	err = h.LinkSetNsFd(peer, int(fd)) // ip link set eth0 netns NS
	fd.Close()
	if err != nil {
		t.Fatal(err)
	}
	nh, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nh.Close)
	addrUp(t, nh, "eth0", addr)
	return nh
}

// addrUp is `ip addr add ADDR dev NAME; ip link set NAME up`, with
// nodad for an IPv6 address, so that it is usable at once.
func addrUp(t *testing.T, h *netlink.Handle, name, addr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", addr, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

// TestIPTablesDespiteNFTFailure: a rejected nftables transaction does not
// keep the forward accepts out of iptables.
func TestIPTablesDespiteNFTFailure(t *testing.T) {
	needIPTables(t)
	fw, name, _ := newFirewall(t, true)
	bad := NewState(Forward(network), Part{Name: "bad", Family: IPv4, Chains: []Chain{{
		Name:  "bad",
		Base:  &Base{Type: TypeFilter, Hook: HookForward, Priority: PriorityFilter},
		Rules: []Rule{{Src: in(network), Verdict: VerdictMasquerade}},
	}}})
	if err := fw.Apply(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "nftables") {
		t.Fatalf("apply: %v, want the nftables error", err)
	}
	if got := inNS(t, name, "iptables", "-S", "WEFT-FWD"); got != "-N WEFT-FWD\n"+wantAccept+"\n" {
		t.Errorf("iptables -S WEFT-FWD:\n%s", got)
	}
	checkTable(t, name, State{})
}
