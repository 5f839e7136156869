package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// requireRouter skips the test without the router kind's binaries, and
// fails it in CI (.ci/run installs bird2 and frr).
func requireRouter(t *testing.T, kind string) {
	t.Helper()
	if err := router.Find(kind); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: .ci/run installs bird2 and frr", err)
		}
		t.Skip(err)
	}
}

// bgpStatus is `weft lab status --json`, the fields these tests read.
type bgpStatus struct {
	Nodes []struct {
		Name, Addr, Subnet, Log string
		BGP                     []struct {
			Address   string
			State     string
			LastError string
		}
	}
	Pods []struct {
		Name, Node string
		Addr       netip.Addr
	}
	Router *struct {
		Socket   string
		Sessions []router.Session
	}
}

func (l *lab) bgpStatus() bgpStatus {
	l.t.Helper()
	var st bgpStatus
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		l.t.Fatal(err)
	}
	return st
}

// session is the router's session with neighbour addr.
func (st bgpStatus) session(addr string) router.Session {
	for _, s := range st.Router.Sessions {
		if s.Neighbor.String() == addr {
			return s
		}
	}
	return router.Session{}
}

// waitFor polls ok every 100 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// routerRoute reports whether the router's kernel table has a route to
// subnet (what BIRD or zebra installed from BGP).
func routerRoute(l *lab, subnet netip.Prefix) bool {
	h, err := netns.Handle(l.name + "-ul")
	if err != nil {
		return false
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netconv.IPNet(subnet)}, netlink.RT_FILTER_DST)
	return err == nil && len(routes) > 0
}

// assertRouted reads the check: every pod reaches ext and ext every
// pod, ICMP and TCP, each side seeing the other's own address (no NAT
// either way).
func assertRouted(t *testing.T, l *lab, pods int) {
	t.Helper()
	rep := l.check()
	toExt, fromExt := 0, 0
	for _, r := range rep.Results {
		switch {
		case r.To == "ext":
			toExt++
		case r.From == "ext":
			fromExt++
		default:
			continue
		}
		if !r.ICMP || !r.TCP || r.SeenAs != r.WantSource {
			t.Errorf("%s -> %s: icmp %v tcp %v, seen as %s, want %s", r.From, r.To, r.ICMP, r.TCP, r.SeenAs, r.WantSource)
		}
		if r.From == "ext" && !strings.HasPrefix(r.SeenAs, "203.0.113.") || r.To == "ext" && !strings.HasPrefix(r.SeenAs, "10.244.") {
			t.Errorf("%s -> %s seen as %s: NAT on the way", r.From, r.To, r.SeenAs)
		}
	}
	if toExt != pods || fromExt != pods || rep.Failed != 0 {
		t.Errorf("%d probes to ext, %d from ext for %d pods; %d failed", toExt, fromExt, pods, rep.Failed)
	}
}

// echoFromExt sends one echo request from ext to dst and says what came
// back within 4 s: "reply", "unreachable" (an ICMP destination
// unreachable, from whom) or "timeout".
func echoFromExt(t *testing.T, l *lab, dst netip.Addr) string {
	t.Helper()
	var res string
	err := netns.Do(l.name+"-ext", func() error {
		pc, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer pc.Close()
		id := int(time.Now().UnixNano() & 0xffff)
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("weft-bgp")}}).Marshal(nil)
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		deadline := time.Now().Add(4 * time.Second)
		_ = pc.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				res = "timeout"
				return nil
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil {
				continue
			}
			switch m.Type {
			case ipv4.ICMPTypeEchoReply:
				if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
					res = "reply"
					return nil
				}
			case ipv4.ICMPTypeDestinationUnreachable:
				res = fmt.Sprintf("unreachable (code %d from %s)", m.Code, from)
				return nil
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// logLines counts the lines of a node's agent log after offset that
// hold every one of words.
func logLines(path string, offset int64, words ...string) []string {
	b, _ := os.ReadFile(path)
	if int64(len(b)) < offset {
		offset = 0
	}
	var out []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		all := line != ""
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestBGP runs the l3 lab with --bgp against both routers: BIRD with
// vxlan and an MD5 password, FRR with host-gw (no tunnel: the router's
// BGP routes carry the pods' traffic between the sides). It measures what
// the acceptance asks and logs the figures.
func TestBGP(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	t.Run("bird-vxlan", func(t *testing.T) {
		requireRouter(t, router.BIRD)
		l, out := newLab(t, "--topology", "l3", "--bgp", "--nodes", "4", "--pods-per-node", "1", "--bgp-password", "s3cret")
		if !strings.Contains(out, "20 passed, 0 failed") || !strings.Contains(out, "\next ") {
			t.Fatalf("lab up:\n%s", out)
		}
		assertRouted(t, l, 4)
		t.Run("restart", func(t *testing.T) { testRestart(t, l) })
		t.Run("md5", func(t *testing.T) { testMD5(t, l) })
		t.Run("failures", func(t *testing.T) { testFailures(t, l, router.BIRD) })
		t.Run("add-remove", func(t *testing.T) { testAddRemove(t, l) })
	})
	t.Run("frr-host-gw", func(t *testing.T) {
		requireRouter(t, router.FRR)
		l, out := newLab(t, "--topology", "l3", "--bgp", "--bgp-router", "frr", "--backend", "host-gw", "--nodes", "4", "--pods-per-node", "1")
		// Every pod pair across the router both ways, and ext.
		if !strings.Contains(out, "20 passed, 0 failed") {
			t.Fatalf("lab up:\n%s", out)
		}
		assertRouted(t, l, 4)
		st := l.bgpStatus()
		for _, n := range st.Nodes {
			// FRR sends a node its own subnet back too (no sender-side loop
			// detection; the node drops it on its AS in the path).
			if s := st.session(n.Addr); s.State != "established" || s.Received != 1 || s.Sent < 3 {
				t.Errorf("FRR's session with %s: %+v", n.Name, s)
			}
		}
		t.Run("restart", func(t *testing.T) { testRestart(t, l) })
		t.Run("add-remove", func(t *testing.T) { testAddRemove(t, l) })
	})
}

// testRestart: an agent restart while ext pings one of its pods 20 times
// a second for 10 s loses nothing (graceful restart: the router keeps the
// route), and the session comes back.
func testRestart(t *testing.T, l *lab) {
	var wg sync.WaitGroup
	var ping string
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ping, perr = l.run("ping", "--count", "200", "--interval", "50ms", "ext", "n1-p1")
	}()
	time.Sleep(2 * time.Second)
	start := time.Now()
	l.must("agent", "restart", "n1")
	restart := time.Since(start)
	wg.Wait()
	t.Logf("agent restart of n1 (%.1fs) during 20 pings/s from ext to n1-p1 for 10 s: %s", restart.Seconds(), strings.TrimSpace(ping))
	if perr != nil || !strings.Contains(ping, "200 sent, 200 received, 0 lost") {
		t.Errorf("ping across the restart: %v\n%s", perr, ping)
	}
	n1 := l.bgpStatus().Nodes[0].Addr
	d := waitFor(t, "n1's session back at the router", 30*time.Second, func() bool { return l.bgpStatus().session(n1).State == "established" })
	t.Logf("n1's session established again %.1fs after the restart returned", d.Seconds())
}

// testMD5: with the wrong password n2's session never comes up (the
// router drops its segments), with the right one it does.
func testMD5(t *testing.T, l *lab) {
	st := l.bgpStatus()
	n2 := st.Nodes[1]
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	off := fileSize(n2.Log)
	l.must("agent", "restart", "n2", "--bgp-peer", "192.0.2.1,as=64500,password-file="+wrong)
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		if s := l.bgpStatus().session(n2.Addr); s.State == "established" {
			t.Fatalf("n2's session with a wrong password established: %+v", s)
		}
	}
	lines := logLines(n2.Log, off, "BGP session cannot come up", "192.0.2.1")
	t.Logf("wrong MD5 password: not established in 15 s; n2's log says (%d lines): %s", len(lines), strings.Join(lines, " | "))
	for _, p := range l.bgpStatus().Nodes[1].BGP {
		t.Logf("n2's /readyz: peer %s state %s, last error %q", p.Address, p.State, p.LastError)
	}
	l.must("agent", "restart", "n2", "--bgp-peer", "router")
	d := waitFor(t, "n2's session with the right password", 30*time.Second, func() bool { return l.bgpStatus().session(n2.Addr).State == "established" })
	t.Logf("right MD5 password: established %.1fs after the agent restarted", d.Seconds())
}

// testFailures: a peer with the wrong AS (n3), an unreachable peer (n1)
// and a flapping peer (n4's session disabled and enabled at the router)
// are each logged in one clear line, and pod traffic between the nodes
// goes on.
func testFailures(t *testing.T, l *lab, kind string) {
	st := l.bgpStatus()
	n1, n3, n4 := st.Nodes[0], st.Nodes[2], st.Nodes[3]
	off1, off3, off4 := fileSize(n1.Log), fileSize(n3.Log), fileSize(n4.Log)
	pw := func(node string) string {
		return ",password-file=" + filepath.Join("/run/weft-lab", l.name, node, "bgp-password")
	}
	l.must("agent", "restart", "n1", "--bgp-peer", "router", "--bgp-peer", "192.0.2.99,as=64500"+pw("n1"))
	l.must("agent", "restart", "n3", "--bgp-peer", "198.51.100.1,as=64501"+pw("n3"))
	flaps := 3
	for range flaps {
		for _, cmd := range []string{"disable n4", "enable n4"} {
			if kind == router.BIRD {
				l.must("exec", "underlay", "--", "birdc", "-s", st.Router.Socket, cmd)
			}
			time.Sleep(3 * time.Second)
		}
		waitFor(t, "n4's session back", 20*time.Second, func() bool { return l.bgpStatus().session(n4.Addr).State == "established" })
	}
	time.Sleep(5 * time.Second) // the wrong AS and the unreachable peer keep retrying
	// ext's probes to n3's pod may fail (the router dropped n3's routes
	// after the wrong AS's NOTIFICATION): only pod-to-pod traffic counts.
	out, _ := l.run("check", "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	bad := 0
	for _, r := range rep.Results {
		if r.From != "ext" && r.To != "ext" && !(r.ICMP && r.TCP && r.SeenAs == r.WantSource) {
			bad++
			t.Errorf("pod traffic %s -> %s during the BGP failures: icmp %v tcp %v", r.From, r.To, r.ICMP, r.TCP)
		}
	}
	for _, c := range []struct {
		what, log string
		off       int64
		words     []string
		want      int
	}{
		{"wrong AS (n3 -> 198.51.100.1 as 64501)", n3.Log, off3, []string{"198.51.100.1", "BGP session cannot come up"}, 1},
		{"unreachable peer (n1 -> 192.0.2.99)", n1.Log, off1, []string{"192.0.2.99", "BGP session cannot come up"}, 1},
		{fmt.Sprintf("flapping peer (n4's session, %d flaps)", flaps), n4.Log, off4, []string{"198.51.100.1", "BGP session down"}, flaps},
	} {
		lines := logLines(c.log, c.off, c.words...)
		all := logLines(c.log, c.off, "BGP")
		t.Logf("%s: %d line(s) %q; all BGP lines since: %d", c.what, len(lines), lines, len(all))
		if len(lines) != c.want {
			t.Errorf("%s: %d log lines, want %d:\n%s", c.what, len(lines), c.want, strings.Join(all, "\n"))
		}
	}
	t.Logf("pod-to-pod probes during the failures: %d failed", bad)
	l.must("agent", "restart", "n1", "--bgp-peer", "router")
	l.must("agent", "restart", "n3", "--bgp-peer", "router")
	for _, n := range []string{n1.Addr, n3.Addr} {
		waitFor(t, n+"'s session back", 30*time.Second, func() bool { return l.bgpStatus().session(n).State == "established" })
	}
}

// testAddRemove: a node added gets its route at the router soon after
// its lease (measured), and ext reaches its pod; removed for good, its
// route stays until the nodes' restart time (30 s) ends, ext getting an
// ICMP unreachable meanwhile (the next hop answers no ARP) and after (no
// route), never a black hole.
func testAddRemove(t *testing.T, l *lab) {
	st := l.bgpStatus()
	name := fmt.Sprintf("n%d", len(st.Nodes)+1)
	subnetFile := filepath.Join("/run/weft-lab", l.name, name, "subnet.env")
	var lease, route time.Time
	var subnet netip.Prefix
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if lease.IsZero() {
				b, err := os.ReadFile(subnetFile)
				m := regexp.MustCompile(`FLANNEL_SUBNET=(\S+)`).FindSubmatch(b)
				if err != nil || m == nil {
					continue
				}
				lease = time.Now()
				subnet = netip.MustParsePrefix(string(m[1])).Masked()
			}
			if routerRoute(l, subnet) {
				route = time.Now()
				return
			}
		}
	}()
	start := time.Now()
	l.must("node", "add", "--pods", "1")
	added := time.Since(start)
	<-done
	if route.IsZero() {
		t.Fatalf("no route at the router for %s (%s)", name, subnet)
	}
	var pod netip.Addr
	for _, p := range l.bgpStatus().Pods {
		if p.Node == name {
			pod = p.Addr
		}
	}
	first := time.Now()
	waitFor(t, "ext's first reply from "+pod.String(), 30*time.Second, func() bool { return echoFromExt(t, l, pod) == "reply" })
	t.Logf("node add %s: %.1fs; lease -> route at the router %s: %d ms; pod ready -> ext's first reply: %d ms",
		name, added.Seconds(), subnet, route.Sub(lease).Milliseconds(), time.Since(first).Milliseconds())

	start = time.Now()
	var dropped time.Duration
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for routerRoute(l, subnet) && time.Since(start) < 60*time.Second {
			time.Sleep(100 * time.Millisecond)
		}
		dropped = time.Since(start)
	}()
	l.must("node", "remove", name)
	removed := time.Since(start)
	var answers []string
	firstUnreachable := time.Duration(-1)
	for running := true; running; {
		select {
		case <-gone:
			running = false
		default:
			a := echoFromExt(t, l, pod)
			select {
			case <-gone: // this echo spans the route's removal: judged by neither rule
				running = false
				continue
			default:
			}
			answers = append(answers, fmt.Sprintf("%.0fs %s", time.Since(start).Seconds(), a))
			if strings.HasPrefix(a, "unreachable") && firstUnreachable < 0 {
				firstUnreachable = time.Since(start)
			}
			if !strings.HasPrefix(a, "unreachable") && firstUnreachable >= 0 {
				t.Errorf("ext got %q after an unreachable", a)
			}
		}
	}
	after := echoFromExt(t, l, pod)
	t.Logf("node remove %s (%.1fs): the router dropped %s %.1fs after the removal began (restart time 30s); "+
		"ext's first ICMP unreachable %.1fs after it (black hole until the router's ARP entry for the node fails); ext meanwhile: %q; after: %q",
		name, removed.Seconds(), subnet, dropped.Seconds(), firstUnreachable.Seconds(), answers, after)
	if dropped > 33*time.Second {
		t.Errorf("route dropped after %s, want within the restart time (30s)", dropped)
	}
	if firstUnreachable < 0 || firstUnreachable > 20*time.Second {
		t.Errorf("ext's first unreachable after %s, want one within 20s of the removal", firstUnreachable)
	}
	if !strings.HasPrefix(after, "unreachable") {
		t.Errorf("ext got %q once the route was dropped, want an ICMP unreachable", after)
	}
}
