package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
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
		Name, Addr, Addr6, Subnet, Log string
		AgentPID                       int
		BGP                            []struct {
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

// routerHops are the next hops of the router's kernel routes to subnet
// (what BIRD or zebra installed from BGP); nil when it has none.
func routerHops(l *lab, subnet netip.Prefix) []netip.Addr {
	h, err := netns.Handle(l.name + "-ul")
	if err != nil {
		return nil
	}
	defer h.Close()
	fam := netlink.FAMILY_V4
	if subnet.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(fam, &netlink.Route{Dst: netconv.IPNet(subnet)}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range routes {
		out = append(out, netconv.Addr(r.Gw))
	}
	return out
}

// routerRoute reports whether the router's kernel table has a route to
// subnet.
func routerRoute(l *lab, subnet netip.Prefix) bool { return len(routerHops(l, subnet)) > 0 }

// The networks each side of the check must see the other from: ext's
// (the outside network, either family) and the pods'.
var (
	extNets = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:0:f::/64")}
	podNets = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8:244::/56")}
)

// within reports whether address a is in one of nets.
func within(a string, nets []netip.Prefix) bool {
	x, err := netip.ParseAddr(a)
	return err == nil && slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Contains(x) })
}

// assertRouted reads the check: every pod reaches ext and ext every
// pod, ICMP and TCP, over each of fams (4, 6), each side seeing the
// other's own address (no NAT either way), and every pod reaches every
// other.
func assertRouted(t *testing.T, l *lab, pods int, fams ...int) {
	t.Helper()
	if len(fams) == 0 {
		fams = []int{4}
	}
	rep := l.check()
	toExt, fromExt := map[int]int{}, map[int]int{}
	for _, r := range rep.Results {
		switch {
		case r.To == "ext":
			toExt[r.Family]++
		case r.From == "ext":
			fromExt[r.Family]++
		}
		if !r.ICMP || !r.TCP || r.SeenAs != r.WantSource {
			t.Errorf("%s -> %s over IPv%d: icmp %v tcp %v, seen as %s, want %s", r.From, r.To, r.Family, r.ICMP, r.TCP, r.SeenAs, r.WantSource)
		}
		if r.From == "ext" && !within(r.SeenAs, extNets) || r.From != "ext" && !within(r.SeenAs, podNets) {
			t.Errorf("%s -> %s over IPv%d seen as %s: NAT on the way", r.From, r.To, r.Family, r.SeenAs)
		}
	}
	for _, f := range fams {
		if toExt[f] != pods || fromExt[f] != pods {
			t.Errorf("IPv%d: %d probes to ext, %d from ext for %d pods", f, toExt[f], fromExt[f], pods)
		}
	}
	if len(toExt) != len(fams) || rep.Failed != 0 {
		t.Errorf("probes to ext over %d families, want %v; %d failed", len(toExt), fams, rep.Failed)
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

// TestBGP runs the l3 lab with --bgp against both routers, one lab
// after the other: BIRD with vxlan and an MD5 password (etcd mode, the
// nodes' settings from flags); FRR with host-gw (no tunnel: the router's
// BGP routes carry the pods' traffic between the sides) in Kubernetes
// mode (the settings from the Node annotations the lab writes); BIRD in a
// dual-stack lab (the IPv6 subnets over the IPv6 sessions). It measures
// what the acceptance asks and logs the figures.
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
		t.Run("restart", func(t *testing.T) { testRestart(t, l, false) })
		t.Run("md5", func(t *testing.T) { testMD5(t, l) })
		t.Run("failures", func(t *testing.T) { testFailures(t, l, router.BIRD) })
		t.Run("add-remove", func(t *testing.T) { testAddRemove(t, l, false) })
	})
	t.Run("frr-host-gw-kube", func(t *testing.T) {
		requireRouter(t, router.FRR)
		api := kubeapitest.Binary(t)
		l, out := newLab(t, "--topology", "l3", "--bgp", "--bgp-router", "frr", "--backend", "host-gw", "--nodes", "4", "--pods-per-node", "1",
			"--store", "kube", "--kube-apiserver", api)
		// Every pod pair across the router both ways, and ext.
		if !strings.Contains(out, "20 passed, 0 failed") {
			t.Fatalf("lab up:\n%s", out)
		}
		assertRouted(t, l, 4)
		st := l.bgpStatus()
		for i, n := range st.Nodes {
			// FRR sends a node its own subnet back too (no sender-side loop
			// detection; the node drops it on its AS in the path).
			if s := st.session(n.Addr); s.State != "established" || s.Received != 1 || s.Sent < 3 {
				t.Errorf("FRR's session with %s: %+v", n.Name, s)
			}
			assertFromAnnotations(t, l, n.Name, n.AgentPID, i+1)
		}
		t.Run("restart", func(t *testing.T) { testRestart(t, l, true) })
		t.Run("add-remove", func(t *testing.T) { testAddRemove(t, l, true) })
	})
	t.Run("bird-dual", func(t *testing.T) {
		requireRouter(t, router.BIRD)
		l, out := newLab(t, "--topology", "l3", "--bgp", "--ip-family", "dual", "--nodes", "2", "--pods-per-node", "1")
		// 2 pods: each to the other and to ext, ext to each, per family.
		if !strings.Contains(out, "12 passed, 0 failed") {
			t.Fatalf("lab up:\n%s", out)
		}
		assertRouted(t, l, 2, 4, 6)
		st := l.bgpStatus()
		for _, n := range st.Nodes {
			subnets := strings.Split(n.Subnet, ",")
			if len(subnets) != 2 {
				t.Fatalf("%s's subnets: %q", n.Name, n.Subnet)
			}
			for i, addr := range []string{n.Addr, n.Addr6} {
				// Each family's subnet over that family's session (BIRD
				// sends a node nothing of its own back: the other node's).
				s := st.session(addr)
				subnet := netip.MustParsePrefix(subnets[i]).Masked()
				hops := routerHops(l, subnet)
				t.Logf("the router's session with %s %s: %s, %d received, %d sent; its route to %s via %v", n.Name, addr, s.State, s.Received, s.Sent, subnet, hops)
				if s.State != "established" || s.Received != 1 || s.Sent != 1 {
					t.Errorf("BIRD's session with %s at %s: %+v", n.Name, addr, s)
				}
				if len(hops) != 1 || hops[0].String() != addr {
					t.Errorf("the router's route to %s's %s: via %v, want %s", n.Name, subnet, hops, addr)
				}
			}
		}
	})
}

// assertFromAnnotations: in Kubernetes mode node k's BGP settings come
// from its Node's annotations (its AS, its peers), not from flags.
func assertFromAnnotations(t *testing.T, l *lab, name string, pid, k int) {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("%s's agent: %v", name, err)
	}
	if args := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(args, "--bgp-") {
		t.Errorf("%s's agent has BGP flags, want its Node's annotations alone: %s", name, args)
	}
	node, err := l.admin().CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if as := node.Annotations["bgp.weft.io/local-as"]; as != strconv.Itoa(64512+k) || !strings.Contains(node.Annotations["bgp.weft.io/peers"], `"AS":64500`) {
		t.Errorf("%s's annotations: %v", name, node.Annotations)
	}
}

// testRestart: an agent restart while ext pings one of its pods 20 times
// a second for 10 s loses nothing (graceful restart: the router keeps the
// route), and the session comes back. For the whole restart, until the
// session has been back 3 s, a route subscription in the router's
// namespace sees its route to n1's subnet never go nor change next hop
// (a router that flushes the stale route when the session re-opens
// without the Restart and Forwarding bits, and installs it again ms
// later, fails this, as no ping at 50 ms could tell). With hostGW
// (import on), n1-p1 pings a pod on the other side of the router 20
// times a second too, losing nothing, and n1's own learned route
// (proto 87) to that pod's subnet never goes: the restarted agent holds
// the routes it learned until its session is back.
func testRestart(t *testing.T, l *lab, hostGW bool) {
	st := l.bgpStatus()
	n1 := st.Nodes[0]
	subnet := netip.MustParsePrefix(strings.Split(n1.Subnet, ",")[0]).Masked()
	watches := []*routeWatch{watchRoute(t, "the router's route to n1's "+subnet.String(), l.name+"-ul", subnet, 0)}
	var far string // a pod on the other side of the router
	if hostGW {
		side := func(addr string) string { return addr[:strings.LastIndex(addr, ".")] }
		for _, p := range st.Pods {
			for _, n := range st.Nodes {
				if p.Node == n.Name && far == "" && side(n.Addr) != side(n1.Addr) {
					far = p.Name
					farSubnet := netip.MustParsePrefix(strings.Split(n.Subnet, ",")[0]).Masked()
					watches = append(watches, watchRoute(t, "n1's learned route (proto 87) to "+n.Name+"'s "+farSubnet.String(),
						l.name+"-n1", farSubnet, 87))
				}
			}
		}
		if far == "" {
			t.Fatalf("no pod on the other side of the router from n1 (%s): %+v", n1.Addr, st.Pods)
		}
	}
	pings := []struct{ from, to string }{{"ext", "n1-p1"}}
	if far != "" {
		pings = append(pings, struct{ from, to string }{"n1-p1", far})
	}
	var wg sync.WaitGroup
	outs, errs := make([]string, len(pings)), make([]error, len(pings))
	for i, p := range pings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = l.run("ping", "--count", "200", "--interval", "50ms", p.from, p.to)
		}()
	}
	time.Sleep(2 * time.Second)
	start := time.Now()
	l.must("agent", "restart", "n1")
	restart := time.Since(start)
	wg.Wait()
	for i, p := range pings {
		t.Logf("agent restart of n1 (%.1fs) during 20 pings/s from %s to %s for 10 s: %s", restart.Seconds(), p.from, p.to, strings.TrimSpace(outs[i]))
		if errs[i] != nil || !strings.Contains(outs[i], "200 sent, 200 received, 0 lost") {
			t.Errorf("ping %s -> %s across the restart: %v\n%s", p.from, p.to, errs[i], outs[i])
		}
	}
	d := waitFor(t, "n1's session back at the router", 30*time.Second, func() bool { return l.bgpStatus().session(n1.Addr).State == "established" })
	t.Logf("n1's session established again %.1fs after the restart returned", d.Seconds())
	time.Sleep(3 * time.Second) // the routes the session brings back settle
	for _, w := range watches {
		w.check(t)
	}
}

// routeWatch follows the routes to exactly one prefix in one namespace
// from a netlink route subscription (`ip -n NS monitor route`), so that
// a route missing for a millisecond is seen: each moment the namespace
// has no such route, and each next hop other than the first seen.
type routeWatch struct {
	what   string
	prefix netip.Prefix
	proto  netlink.RouteProtocol // 0: any
	start  time.Time
	done   chan struct{}
	closed chan struct{}

	mu     sync.Mutex
	cur    map[netip.Addr]bool // the next hops the namespace has now
	first  netip.Addr          // the next hop of the first route seen
	seen   bool
	since  time.Time       // when the route last went (zero: it is there)
	gaps   []string        // when each went, and for how long
	others map[string]bool // next hops other than first
	errs   []string
	events int
}

// watchRoute subscribes to the route changes of namespace ns (listing
// its routes first) and follows those to prefix of protocol proto;
// stopped when the test ends.
func watchRoute(t *testing.T, what, ns string, prefix netip.Prefix, proto int) *routeWatch {
	t.Helper()
	h, err := netns.Fd(ns)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer h.Close()
	w := &routeWatch{what: what, prefix: prefix, proto: netlink.RouteProtocol(proto), start: time.Now(), done: make(chan struct{}),
		closed: make(chan struct{}), cur: map[netip.Addr]bool{}, others: map[string]bool{}}
	ch := make(chan netlink.RouteUpdate, 1024)
	err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{Namespace: &h, ListExisting: true,
		ReceiveBufferSize: 1 << 20, ErrorCallback: func(err error) {
			select {
			case <-w.done: // the socket closed by stop
				return
			default:
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.errs = append(w.errs, err.Error())
		}})
	if err != nil {
		t.Fatalf("%s: subscribe to route changes in %s: %v", what, ns, err)
	}
	go func() {
		defer close(w.closed)
		for u := range ch {
			w.update(u)
		}
	}()
	t.Cleanup(w.stop)
	// The listing comes first: the route must be there before the test
	// goes on.
	waitFor(t, what+" listed", 5*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.seen })
	return w
}

func (w *routeWatch) update(u netlink.RouteUpdate) {
	r := u.Route
	if p, ok := netconv.Prefix(r.Dst); !ok || p.Masked() != w.prefix || (w.proto != 0 && r.Protocol != w.proto) ||
		(r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
		return
	}
	gws := []netip.Addr{netconv.Addr(r.Gw)}
	if len(r.MultiPath) > 0 {
		gws = nil
		for _, nh := range r.MultiPath {
			gws = append(gws, netconv.Addr(nh.Gw))
		}
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events++
	switch u.Type {
	case unix.RTM_NEWROUTE:
		if u.NlFlags&unix.NLM_F_REPLACE != 0 {
			clear(w.cur)
		}
		for _, gw := range gws {
			if !w.seen {
				w.first, w.seen = gw, true
			}
			if gw != w.first {
				w.others[fmt.Sprintf("%s at +%dms", gw, now.Sub(w.start).Milliseconds())] = true
			}
			w.cur[gw] = true
		}
		if !w.since.IsZero() {
			w.gaps = append(w.gaps, fmt.Sprintf("gone at +%dms for %.1fms", w.since.Sub(w.start).Milliseconds(), float64(now.Sub(w.since).Microseconds())/1000))
			w.since = time.Time{}
		}
	case unix.RTM_DELROUTE:
		for _, gw := range gws {
			delete(w.cur, gw)
		}
		if len(w.cur) == 0 && w.since.IsZero() {
			w.since = now
		}
	}
}

// stop ends the subscription; idempotent.
func (w *routeWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	select {
	case <-w.closed:
	case <-time.After(5 * time.Second):
	}
}

// check stops the watch and fails the test if the route went at any
// moment, or had another next hop than the first, or the subscription
// reported an error (events may have been lost).
func (w *routeWatch) check(t *testing.T) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	gaps := w.gaps
	if !w.since.IsZero() {
		gaps = append(gaps, fmt.Sprintf("gone at +%dms and not back after %.1fs", w.since.Sub(w.start).Milliseconds(), time.Since(w.since).Seconds()))
	}
	others := slices.Sorted(maps.Keys(w.others))
	t.Logf("%s, watched %.1fs (%d route events): via %s; missing %d time(s) %q; other next hops %q",
		w.what, time.Since(w.start).Seconds(), w.events, w.first, len(gaps), gaps, others)
	if len(gaps) > 0 || len(others) > 0 || len(w.errs) > 0 {
		t.Errorf("%s: missing %d time(s) %q, other next hops %q, subscription errors %q; want it there via %s throughout",
			w.what, len(gaps), gaps, others, w.errs, w.first)
	}
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
// its lease (measured), and ext reaches its pod. Removed for good, in
// etcd mode (its agent stopped first) its route stays until the nodes'
// restart time (30 s) ends, ext getting an ICMP unreachable meanwhile
// (once the router's ARP entry for the node fails) and after (no route);
// in Kubernetes mode (kube: its Node deleted while its agent runs) the
// agent withdraws its routes, the router drops the route within a couple
// of seconds, and ext's very next echo gets a net unreachable from the
// router.
func testAddRemove(t *testing.T, l *lab, kube bool) {
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
			time.Sleep(50 * time.Millisecond)
		}
		dropped = time.Since(start)
	}()
	if kube {
		out := l.must("node", "remove", name)
		removed := time.Since(start)
		<-gone
		echoStart := time.Now()
		a := echoFromExt(t, l, pod)
		answered := time.Since(echoStart)
		t.Logf("node remove %s, Kubernetes mode (%.1fs): the router dropped %s %.1fs after the removal began (the agent withdrew on its Node's deletion); "+
			"ext's next echo: %q in %d ms; node remove said: %s", name, removed.Seconds(), subnet, dropped.Seconds(), a, answered.Milliseconds(), strings.TrimSpace(out))
		if dropped > 3*time.Second {
			t.Errorf("route dropped after %s, want within a couple of seconds (the agent withdraws at once)", dropped)
		}
		if !strings.Contains(out, name+" withdrew its routes") {
			t.Errorf("node remove did not see the withdrawal:\n%s", out)
		}
		if a != "unreachable (code 0 from 203.0.113.1)" || answered > time.Second {
			t.Errorf("ext's echo once the route was dropped: %q after %s, want at once a net unreachable (code 0) from the router", a, answered)
		}
		return
	}
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
			case <-gone:
				// This echo spans the route's removal: sent while the router
				// still routed it to the dead next hop, its packet waits on
				// the ARP entry the route's removal drops, and nothing
				// answers. Judged by neither rule.
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
	t.Logf("node remove %s, etcd mode (%.1fs): the router dropped %s %.1fs after the removal began (restart time 30s); "+
		"ext's first ICMP unreachable %.1fs after it (black hole until the router's ARP entry for the node fails); ext meanwhile: %q; after: %q",
		name, removed.Seconds(), subnet, dropped.Seconds(), firstUnreachable.Seconds(), answers, after)
	if dropped > 33*time.Second {
		t.Errorf("route dropped after %s, want within the restart time (30s)", dropped)
	}
	if firstUnreachable < 0 || firstUnreachable > 20*time.Second {
		t.Errorf("ext's first unreachable after %s, want one within 20s of the removal", firstUnreachable)
	}
	if after != "unreachable (code 0 from 203.0.113.1)" {
		t.Errorf("ext got %q once the route was dropped, want a net unreachable (code 0) from the router", after)
	}
}
