package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// guardListen counts the UDP datagrams arriving in namespace ns on port
// (any address) until the test ends.
func guardListen(t *testing.T, ns string, port int) *atomic.Int64 {
	t.Helper()
	var pc net.PacketConn
	if err := netns.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// guardSend sends count datagrams with payload m to dst from namespace
// ns, from src: an address the namespace does not own is sent as it is
// (IP_TRANSPARENT), as a host forging it would.
func guardSend(ns string, src netip.Addr, dst netip.AddrPort, count int, m []byte) error {
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
		pc, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(src, 0).String())
		if err != nil {
			return err
		}
		defer pc.Close()
		for range count {
			if _, err := pc.WriteTo(m, net.UDPAddrFromAddrPort(dst)); err != nil {
				return err
			}
		}
		return nil
	})
}

var guardPacketsRE = regexp.MustCompile(`packets (\d+) bytes`)

// guardCounter reads a tunnel guard counter of node's table ip weft.
func (w *wgLab) guardCounter(t *testing.T, node, name string) int {
	t.Helper()
	out := w.must("exec", node, "--", "nft", "list", "counter", "ip", "weft", name)
	m := guardPacketsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: nft list counter ip weft %s:\n%s", node, name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// guardDropRule returns the handle of the drop rule of chain (tunnel-in,
// tunnel-out) in node's table ip weft, and false when there is none.
func (w *wgLab) guardDropRule(t *testing.T, node, chain string) (string, bool) {
	t.Helper()
	out, err := w.run("exec", node, "--", "nft", "-a", "list", "chain", "ip", "weft", chain)
	if err != nil {
		return "", false // the chain itself is gone
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " drop # handle ") {
			return l[strings.LastIndex(l, " ")+1:], true
		}
	}
	return "", false
}

// TestWireGuardGuard: on a wireguard lab, the agent's tunnel guard (issue
// 14 review): n1's table ip weft holds tunnel-in and tunnel-out; a
// datagram forged on the underlay with a source in n2's pod subnet and
// sent to n1's pod through n1's underlay address reaches no pod and is
// counted, and without the drop rule (deleted by hand: the control) it
// does arrive, until the agent puts the rule back at its next full sync;
// the guard stays while n1's agent is stopped. With n1's route of the
// cluster network to flannel-wg deleted by hand (and a default route to
// leak through), pod traffic to n2 never appears in clear on the underlay
// before the agent restores the route, and without the guard's egress
// rule it does (the control).
func TestWireGuardGuard(t *testing.T) {
	l, out := newLab(t, "--backend", "wireguard", "--nodes", "2", "--pods-per-node", "1")
	if !strings.Contains(out, "4 passed, 0 failed") {
		t.Fatalf("wireguard lab with the guard: want 4 passing probes:\n%s", out)
	}
	w := newWGLab(t, l)
	n1sub, n2sub := netip.MustParsePrefix(w.subnet["n1"]), netip.MustParsePrefix(w.subnet["n2"])
	table := w.must("exec", "n1", "--", "nft", "list", "table", "ip", "weft")
	for _, want := range []string{
		"chain tunnel-in {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tiifname \"flannel-wg\" return\n" +
			"\t\tip saddr " + n1sub.String() + " return\n\t\tip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter name \"tunnel-in-dropped\" drop\n",
		"chain tunnel-out {\n\t\ttype filter hook postrouting priority filter; policy accept;\n\t\toifname \"flannel-wg\" return\n" +
			"\t\tip daddr " + n1sub.String() + " return\n\t\tip daddr 10.244.0.0/16 counter name \"tunnel-out-dropped\" drop\n",
	} {
		if !strings.Contains(table, want) {
			t.Fatalf("n1's table ip weft lacks\n%s\nin\n%s", want, table)
		}
	}
	t.Run("Ingress", func(t *testing.T) { w.testGuardIngress(t, n2sub) })
	t.Run("Egress", w.testGuardEgress)
}

func (w *wgLab) testGuardIngress(t *testing.T, n2sub netip.Prefix) {
	const count, port = 20, 7401
	// A host of our own on the underlay (192.0.2.201), routing n1's pod
	// through n1's underlay address: the forgery reaches n1 as a plain IP
	// packet to its MAC.
	ns := w.ns("gsp")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := topology.Attach(w.ns("ul"), topology.L2, topology.Host{Name: "gsp", NS: ns, Addr: netip.MustParseAddr("192.0.2.201"), Side: "a"}); err != nil {
		t.Fatal(err)
	}
	pod := w.pod["n1-p1"]
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// ip route add POD/32 via N1, in our host
	if err := h.RouteAdd(&netlink.Route{Dst: netconv.IPNet(netip.PrefixFrom(pod, 32)), Gw: w.node["n1"].AsSlice()}); err != nil {
		t.Fatal(err)
	}
	b := n2sub.Addr().As4()
	b[3] = 9
	forged := netip.AddrFrom4(b) // .9 of n2's subnet
	got := guardListen(t, w.ns("n1-p1"), port)
	send := func() (arrived, counted int) {
		t.Helper()
		before, had := got.Load(), w.guardCounter(t, "n1", "tunnel-in-dropped")
		if err := guardSend(ns, forged, netip.AddrPortFrom(pod, port), count, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		return int(got.Load() - before), w.guardCounter(t, "n1", "tunnel-in-dropped") - had
	}
	if arrived, counted := send(); arrived != 0 || counted != count {
		t.Errorf("forged from %s on the underlay: %d of %d arrived at %s, the guard counted %d; want 0 and %d", forged, arrived, count, pod, counted, count)
	} else {
		t.Logf("forged from %s on the underlay: 0 of %d arrived at %s, tunnel-in-dropped +%d", forged, count, pod, counted)
	}
	// The agent's /metrics reads the same counter.
	nft := w.guardCounter(t, "n1", "tunnel-in-dropped")
	body, err := process.Get(w.ns("n1"), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	series := `weft_tunnel_guard_dropped_packets_total{direction="in",family="IPv4"} ` + strconv.Itoa(nft) + "\n"
	if !strings.Contains(string(body), series) {
		t.Errorf("n1's /metrics has no %q (nft counts %d):\n%s", strings.TrimSpace(series), nft, grepLines(string(body), "weft_tunnel_guard"))
	}
	// The control: the drop rule deleted by hand, the same datagrams
	// arrive. The agent puts it back at its next full sync (the lab's
	// resync interval, 10 s), so the sends follow the deletion at once,
	// and are retried if the rule came back before them.
	var deleted time.Time
	arrived := 0
	for try := 0; try < 3 && arrived == 0; try++ {
		h, ok := w.guardDropRule(t, "n1", "tunnel-in")
		if !ok {
			t.Fatal("n1's tunnel-in has no drop rule")
		}
		w.must("exec", "n1", "--", "nft", "delete", "rule", "ip", "weft", "tunnel-in", "handle", h)
		deleted = time.Now()
		arrived, _ = send()
		if _, back := w.guardDropRule(t, "n1", "tunnel-in"); back && arrived == 0 {
			continue // the agent was quicker than the sends: again
		}
	}
	if arrived != count {
		t.Fatalf("control: without the drop rule %d of %d forged datagrams arrived; want all: the test proves nothing", arrived, count)
	}
	t.Logf("control: without the drop rule, %d of %d forged datagrams arrived", arrived, count)
	for {
		if _, ok := w.guardDropRule(t, "n1", "tunnel-in"); ok {
			break
		}
		if time.Since(deleted) > 15*time.Second {
			t.Fatal("the agent did not put the drop rule back within 15 s (the lab's resync interval is 10 s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the agent put the drop rule back %s after it was deleted", time.Since(deleted).Round(100*time.Millisecond))
	if arrived, counted := send(); arrived != 0 || counted != count {
		t.Errorf("after the agent put the guard back: %d arrived, %d counted; want 0 and %d", arrived, counted, count)
	}
	// The guard stays while the agent is stopped (the firewall is left as
	// it is on exit).
	w.must("agent", "stop", "n1")
	stopped := true
	defer func() {
		if stopped {
			w.must("agent", "start", "n1")
		}
	}()
	if arrived, counted := send(); arrived != 0 || counted != count {
		t.Errorf("with n1's agent stopped: %d arrived, %d counted; want 0 and %d", arrived, counted, count)
	}
	w.must("agent", "start", "n1")
	stopped = false
}

// testGuardEgress sends datagrams from n1-p1 to n2-p1 every 200 µs while
// n1's route of the cluster network to flannel-wg is missing; n1 gets a
// default route via ext first, so that without the guard the datagrams
// would leave on the underlay in clear. Once with the agent running (the
// route deleted by hand, which the agent restores at once: a window of
// well under a millisecond), then with n1's agent stopped (the route
// stays missing: 1 s of traffic), and the control: the egress drop rule
// deleted too.
func (w *wgLab) testGuardEgress(t *testing.T) {
	const port = 7402
	m := []byte("guard-" + fmt.Sprintf("%x", marker()[:8]))
	w.must("exec", "n1", "--", "ip", "route", "add", "default", "via", "192.0.2.254")
	t.Cleanup(func() { _, _ = w.run("exec", "n1", "--", "ip", "route", "del", "default", "via", "192.0.2.254") })
	atN2 := guardListen(t, w.ns("n2-p1"), port)
	h := w.handle("n1")
	wg, err := h.LinkByName("flannel-wg")
	if err != nil {
		t.Fatal(err)
	}
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	route := &netlink.Route{Dst: netconv.IPNet(cluster), LinkIndex: wg.Attrs().Index}
	hasRoute := func(h *netlink.Handle) bool {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netconv.IPNet(cluster)}, netlink.RT_FILTER_DST)
		return err == nil && len(rs) == 1 && rs[0].LinkIndex == wg.Attrs().Index
	}
	type result struct{ sent, reached, leaked, dropped int }
	// traffic sends from n1-p1 to n2-p1 while during runs (and 300 ms
	// before and after), capturing n1's port of the underlay switch.
	traffic := func(t *testing.T, during func()) result {
		t.Helper()
		cap := startCapture(t, w.ns("ul"), "n1", m)
		had, n2had := w.guardCounter(t, "n1", "tunnel-out-dropped"), atN2.Load()
		var stop atomic.Bool
		var wgSend sync.WaitGroup
		var sendErr error
		var r result
		wgSend.Add(1)
		go func() {
			defer wgSend.Done()
			sendErr = netns.Do(w.ns("n1-p1"), func() error {
				c, err := net.Dial("udp4", netip.AddrPortFrom(w.pod["n2-p1"], port).String())
				if err != nil {
					return err
				}
				defer c.Close()
				for !stop.Load() {
					_, _ = c.Write(m) // EPERM when the guard drops it on the way out
					r.sent++
					time.Sleep(200 * time.Microsecond)
				}
				return nil
			})
		}()
		time.Sleep(300 * time.Millisecond)
		during()
		time.Sleep(300 * time.Millisecond)
		stop.Store(true)
		wgSend.Wait()
		if sendErr != nil {
			t.Fatal(sendErr)
		}
		time.Sleep(200 * time.Millisecond)
		for _, f := range cap.stop() {
			if f.marker {
				r.leaked++
			}
		}
		r.reached, r.dropped = int(atN2.Load()-n2had), w.guardCounter(t, "n1", "tunnel-out-dropped")-had
		return r
	}
	// ip route del 10.244.0.0/16 dev flannel-wg
	delRoute := func() {
		if err := h.RouteDel(route); err != nil {
			t.Fatal(err)
		}
	}
	delRule := func() {
		h, ok := w.guardDropRule(t, "n1", "tunnel-out")
		if !ok {
			t.Fatal("n1's tunnel-out has no drop rule")
		}
		w.must("exec", "n1", "--", "nft", "delete", "rule", "ip", "weft", "tunnel-out", "handle", h)
	}

	// 1. Agent running: deleted and restored at once.
	var missing time.Duration
	r := traffic(t, func() {
		delRoute()
		missing = w.resynced(t, "n1", "the route of 10.244.0.0/16 to flannel-wg", hasRoute)
	})
	t.Logf("agent running, route deleted: %d datagrams sent, %d reached n2-p1, %d in clear on the underlay, tunnel-out dropped %d; the agent restored the route after %s",
		r.sent, r.reached, r.leaked, r.dropped, missing)
	if r.leaked != 0 {
		t.Errorf("%d pod datagrams left n1 in clear while its route to flannel-wg was missing", r.leaked)
	}
	if r.reached < r.sent/2 {
		t.Errorf("only %d of %d datagrams reached n2-p1: the pod traffic did not flow around the deletion", r.reached, r.sent)
	}

	// 2. Agent stopped: the route stays missing.
	w.must("agent", "stop", "n1")
	started := false
	start := func() {
		if !started {
			started = true
			w.must("agent", "start", "n1")
		}
	}
	defer start()
	r = traffic(t, func() {
		delRoute()
		if hasRoute(h) {
			t.Fatal("the route is back with n1's agent stopped")
		}
		time.Sleep(time.Second)
	})
	t.Logf("agent stopped, route deleted: %d datagrams sent, %d reached n2-p1, %d in clear on the underlay, tunnel-out dropped %d",
		r.sent, r.reached, r.leaked, r.dropped)
	if r.leaked != 0 {
		t.Errorf("%d pod datagrams left n1 in clear while its agent was stopped and its route missing", r.leaked)
	}
	if r.dropped < r.sent/2 {
		t.Errorf("the guard dropped %d of %d datagrams sent, most of them while the route was missing: want most", r.dropped, r.sent)
	}

	// 3. The control: the egress drop rule deleted too, they leak.
	delRule()
	r = traffic(t, func() { time.Sleep(300 * time.Millisecond) })
	t.Logf("control, route and egress drop rule deleted (agent stopped): %d sent, %d in clear on the underlay, tunnel-out dropped %d",
		r.sent, r.leaked, r.dropped)
	if r.leaked < r.sent*9/10 || r.dropped != 0 {
		t.Errorf("control: without the egress drop rule %d of %d datagrams appeared in clear on the underlay (%d dropped); want most: the test proves nothing", r.leaked, r.sent, r.dropped)
	}

	// The agent, started again, puts both back.
	at := time.Now()
	start()
	w.resynced(t, "n1", "the route of 10.244.0.0/16 to flannel-wg", hasRoute)
	routeBack := time.Since(at)
	for {
		if _, ok := w.guardDropRule(t, "n1", "tunnel-out"); ok {
			break
		}
		if time.Since(at) > 15*time.Second {
			t.Fatal("the agent did not put the egress drop rule back within 15 s of its start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("agent started: route back after %s, egress drop rule after %s", routeBack.Round(10*time.Millisecond), time.Since(at).Round(10*time.Millisecond))
}

// grepLines are the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
