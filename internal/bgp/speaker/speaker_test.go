package speaker

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/bgptest"
)

// These tests run real GoBGP speakers against each other on 127.0.0.1
// and ::1, each on a free high port: no privileges, no namespaces, no
// routes. One speaker runs in the test process, the other in a child
// process (see speaker_peer_test.go); tests with two child processes run
// in parallel.

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func TestNewValidates(t *testing.T) {
	peer := bgp.Peer{Address: lo4, AS: 64500}
	for _, tc := range []struct {
		name string
		c    bgp.Config
		o    bgp.Options
		want string
	}{
		{"no AS", bgp.Config{Peers: []bgp.Peer{peer}}, bgp.Options{Underlay4: lo4}, "local AS"},
		{"no router ID", bgp.Config{LocalAS: 64512}, bgp.Options{Underlay6: lo6}, "router ID"},
		{"IPv6 router ID", bgp.Config{LocalAS: 64512, RouterID: lo6}, bgp.Options{}, "not an IPv4"},
		{"peer without AS", bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{{Address: lo4}}}, bgp.Options{Underlay4: lo4}, "has no AS"},
		{"peer twice", bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{peer, peer}}, bgp.Options{Underlay4: lo4}, "twice"},
		{"port", bgp.Config{LocalAS: 64512, ListenPort: 70000}, bgp.Options{Underlay4: lo4}, "out of range"},
	} {
		if _, err := New(tc.c, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	s, err := New(bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{peer}}, bgp.Options{Underlay4: lo4})
	if err != nil {
		t.Fatal(err)
	}
	if s.routerID != lo4 || s.port != bgp.DefaultPort {
		t.Errorf("router ID %s port %d, want the underlay address and port %d", s.routerID, s.port, bgp.DefaultPort)
	}
	if st := s.Status(); len(st) != 1 || st[0].State != "idle" || st[0].AS != 64500 {
		t.Errorf("Status before Run: %+v", st)
	}
	if l := s.Learned(); l != nil {
		t.Errorf("Learned before Run: %v", l)
	}
}

func TestRunPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := New(bgp.Config{LocalAS: 64512, ListenPort: l.Addr().(*net.TCPAddr).Port}, bgp.Options{Underlay4: lo4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "start BGP speaker") {
		t.Errorf("Run on a taken port: %v, want a start-up error", err)
	}
	if ctx.Err() != nil {
		t.Error("Run with a taken port served until its context ended")
	}
}

// side is a speaker under test, in this process (*node) or in a child
// (*remotePeer).
type side interface {
	announce(routes ...bgp.Route)
	Learned() []bgp.Route
	Status() []bgp.PeerStatus
	withdraw()
	stop()
	logLines(words ...string) []string
}

// node is a speaker in the test process.
type node struct {
	*Speaker
	t       *testing.T
	log     *bgptest.LogBuffer
	changes atomic.Int64
	cancel  context.CancelFunc
	done    chan error
}

// startNode runs a speaker of c in the test process.
func startNode(t *testing.T, c bgp.Config) *node {
	t.Helper()
	return startNodeWith(t, c, bgp.Options{})
}

// startNodeWith is startNode with o's Restarting.
func startNodeWith(t *testing.T, c bgp.Config, o bgp.Options) *node {
	t.Helper()
	n := &node{t: t, log: &bgptest.LogBuffer{}}
	s, err := New(c, bgp.Options{
		Log:       slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Underlay4: lo4, Underlay6: lo6,
		Changed:    func() { n.changes.Add(1) },
		Restarting: o.Restarting,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Speaker = s
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = make(chan error, 1)
	go func() { n.done <- n.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

// stop ends Run (as SIGTERM would) and checks it returned nil.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			n.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		n.t.Errorf("Run did not return 10 s after its context ended")
	}
}

func (n *node) announce(routes ...bgp.Route) {
	n.t.Helper()
	if err := n.Announce(context.Background(), routes); err != nil {
		n.t.Fatalf("Announce: %v", err)
	}
}

func (n *node) withdraw() {
	n.t.Helper()
	if err := n.Withdraw(context.Background()); err != nil {
		n.t.Fatalf("Withdraw: %v", err)
	}
	select {
	case err := <-n.done:
		n.cancel = nil
		if err != nil {
			n.t.Errorf("Run after Withdraw: %v", err)
		}
	case <-time.After(10 * time.Second):
		n.t.Errorf("Run did not return 10 s after Withdraw")
	}
}

func (n *node) logLines(words ...string) []string       { return n.log.Lines(words...) }
func (r *remotePeer) logLines(words ...string) []string { return r.log.Lines(words...) }

func statusOf(t *testing.T, s side, peer netip.Addr) bgp.PeerStatus {
	t.Helper()
	for _, p := range s.Status() {
		if p.Address == peer {
			return p
		}
	}
	t.Fatalf("no status for peer %s", peer)
	return bgp.PeerStatus{}
}

func established(t *testing.T, s side, peers ...netip.Addr) func() bool {
	return func() bool {
		for _, p := range peers {
			if statusOf(t, s, p).State != "established" {
				return false
			}
		}
		return true
	}
}

// conf is the Config of a speaker of AS as, router ID id, on port.
func conf(as uint32, id string, port int, gr bool, peers ...bgp.Peer) bgp.Config {
	return bgp.Config{
		Enabled: true, LocalAS: as, RouterID: netip.MustParseAddr(id), ListenPort: port, Peers: peers,
		HoldTime: 9 * time.Second, GracefulRestart: gr, RestartTime: 30 * time.Second,
	}
}

// pairConfs are two speakers, AS 64512 and 64513, peering over
// 127.0.0.1 and (dual) ::1.
func pairConfs(t *testing.T, gr, dual bool) (bgp.Config, bgp.Config) {
	pa, pb := bgptest.FreePort(t), bgptest.FreePort(t)
	peersA := []bgp.Peer{{Address: lo4, AS: 64513, Port: uint16(pb)}}
	peersB := []bgp.Peer{{Address: lo4, AS: 64512, Port: uint16(pa)}}
	if dual {
		peersA = append(peersA, bgp.Peer{Address: lo6, AS: 64513, Port: uint16(pb)})
		peersB = append(peersB, bgp.Peer{Address: lo6, AS: 64512, Port: uint16(pa)})
	}
	return conf(64512, "192.0.2.11", pa, gr, peersA...), conf(64513, "192.0.2.12", pb, gr, peersB...)
}

func TestSessionAnnounceLearn(t *testing.T) {
	ca, cb := pairConfs(t, true, true)
	a := startNode(t, ca)
	// Announced right after Run: the peers come up with it.
	a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"), bgptest.Route("2001:db8:244:1::/64", "2001:db8::11"))
	b := startRemote(t, cb, int(cb.ListenPort))
	b.announce(bgptest.Route("10.244.2.0/24", "192.0.2.12"))
	bgptest.WaitFor(t, 30*time.Second, "sessions established", established(t, a, lo4, lo6))
	bgptest.WaitFor(t, 10*time.Second, "b learns a's routes", func() bool { return len(b.Learned()) == 2 })

	// The IPv4 prefix over the IPv4 session with its own next hop, the
	// IPv6 prefix over the IPv6 session (MP_REACH_NLRI).
	want := []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: netip.MustParseAddr("192.0.2.11"), Peer: lo4},
		{Prefix: netip.MustParsePrefix("2001:db8:244:1::/64"), NextHop: netip.MustParseAddr("2001:db8::11"), Peer: lo6},
	}
	if got := b.Learned(); !slices.Equal(got, want) {
		t.Errorf("b learned %v, want %v", got, want)
	}
	// a learns b's route, and not its own.
	bgptest.WaitFor(t, 10*time.Second, "a learns b's route", func() bool { return len(a.Learned()) == 1 })
	if got, want := a.Learned(), []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHop: netip.MustParseAddr("192.0.2.12"), Peer: lo4}}; !slices.Equal(got, want) {
		t.Errorf("a learned %v, want %v", got, want)
	}
	if a.changes.Load() == 0 {
		t.Error("a's Changed was never called")
	}
	st := a.Status()
	if len(st) != 2 || st[0].Address != lo4 || st[1].Address != lo6 {
		t.Fatalf("a's status %+v, want 127.0.0.1 then ::1", st)
	}
	if st[0].Sent != 1 || st[0].Received != 1 || st[1].Sent != 1 || st[1].Received != 0 || st[0].AS != 64513 || st[0].Since.IsZero() || st[0].LastError != "" {
		t.Errorf("a's status %+v, want 1 sent and 1 received on 127.0.0.1, 1 sent on ::1", st)
	}
	if s := statusOf(t, b, lo4); s.Received != 1 || s.Sent != 1 || s.Flaps != 0 {
		t.Errorf("b's status of 127.0.0.1: %+v", s)
	}

	// Level-triggered: the same set again changes nothing; a set without
	// the IPv4 route withdraws it.
	a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"), bgptest.Route("2001:db8:244:1::/64", "2001:db8::11"))
	a.announce(bgptest.Route("2001:db8:244:1::/64", "2001:db8::11"), bgptest.Route("10.244.3.0/24", "192.0.2.11"))
	bgptest.WaitFor(t, 10*time.Second, "b loses 10.244.1.0/24 and learns 10.244.3.0/24", func() bool {
		_, old := bgptest.LearnedOf(b, "10.244.1.0/24")
		_, added := bgptest.LearnedOf(b, "10.244.3.0/24")
		return !old && added
	})
	// A new next hop replaces the route.
	a.announce(bgptest.Route("2001:db8:244:1::/64", "2001:db8::11"), bgptest.Route("10.244.3.0/24", "192.0.2.99"))
	bgptest.WaitFor(t, 10*time.Second, "b sees the new next hop", func() bool {
		r, ok := bgptest.LearnedOf(b, "10.244.3.0/24")
		return ok && r.NextHop == netip.MustParseAddr("192.0.2.99")
	})
	if err := a.Announce(context.Background(), []bgp.Route{bgptest.Route("10.244.5.0/24", "2001:db8::11")}); err == nil {
		t.Error("Announce took an IPv4 prefix with an IPv6 next hop")
	}

	// Metrics.
	expect := `
# HELP weft_bgp_peer_up 1 when the BGP session with the peer is established, else 0.
# TYPE weft_bgp_peer_up gauge
weft_bgp_peer_up{peer="127.0.0.1"} 1
weft_bgp_peer_up{peer="::1"} 1
# HELP weft_bgp_prefixes_sent Prefixes announced to the peer on the established session.
# TYPE weft_bgp_prefixes_sent gauge
weft_bgp_prefixes_sent{peer="127.0.0.1"} 1
weft_bgp_prefixes_sent{peer="::1"} 1
# HELP weft_bgp_prefixes_received Prefixes accepted from the peer on the established session.
# TYPE weft_bgp_prefixes_received gauge
weft_bgp_prefixes_received{peer="127.0.0.1"} 1
weft_bgp_prefixes_received{peer="::1"} 0
`
	if err := testutil.CollectAndCompare(a, strings.NewReader(expect), "weft_bgp_peer_up", "weft_bgp_prefixes_sent", "weft_bgp_prefixes_received"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(a, "weft_bgp_peer_state"); n != 2*len(bgp.SessionStates) {
		t.Errorf("%d weft_bgp_peer_state series, want %d", n, 2*len(bgp.SessionStates))
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(a); err != nil {
		t.Errorf("register: %v", err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather: %v", err)
	}

	// b stops (graceful restart): a counts a flap, logs it once at Info,
	// and keeps b's route as stale.
	b.stop()
	bgptest.WaitFor(t, 10*time.Second, "a sees the sessions down", func() bool {
		return statusOf(t, a, lo4).State != "established" && statusOf(t, a, lo6).State != "established"
	})
	s := statusOf(t, a, lo4)
	if s.Flaps != 1 || !strings.Contains(s.LastError, "graceful restart") {
		t.Errorf("a's status after b stopped: %+v, want 1 flap and graceful restart", s)
	}
	if r, ok := bgptest.LearnedOf(a, "10.244.2.0/24"); !ok || r.NextHop != netip.MustParseAddr("192.0.2.12") {
		t.Errorf("a dropped b's route at b's graceful restart: %v", a.Learned())
	}
	if l := a.logLines("BGP session down", "peer=127.0.0.1"); len(l) != 1 {
		t.Errorf("a logged %d lines for the session going down, want 1: %q", len(l), l)
	}
	if l := a.logLines("BGP session up", "peer=127.0.0.1"); len(l) != 1 {
		t.Errorf("a logged %d lines for the session coming up, want 1: %q", len(l), l)
	}
	flaps := `
# HELP weft_bgp_session_flaps_total Times the established session with the peer went down.
# TYPE weft_bgp_session_flaps_total counter
weft_bgp_session_flaps_total{peer="127.0.0.1"} 1
weft_bgp_session_flaps_total{peer="::1"} 1
`
	if err := testutil.CollectAndCompare(a, strings.NewReader(flaps), "weft_bgp_session_flaps_total"); err != nil {
		t.Error(err)
	}
	if l := a.logLines("level=WARN"); len(l) > 0 {
		t.Errorf("a warned about a healthy session: %q", l)
	}
}

// TestGracefulRestart: a speaker stopped through its context with
// graceful restart on closes its sessions without a NOTIFICATION and the
// peer keeps its routes as stale; with it off, or after Withdraw, the
// peer drops them at once.
func TestGracefulRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gr       bool
		withdraw bool
		kept     bool
		cause    string // in the peer's LastError
	}{
		{"graceful restart", true, false, true, "without a NOTIFICATION: graceful restart"},
		{"no graceful restart", false, false, false, "NOTIFICATION: Cease"},
		{"withdraw", true, true, false, "NOTIFICATION: Cease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cb := pairConfs(t, true, false)
			ca.GracefulRestart = tc.gr
			a := startNode(t, ca)
			a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
			b := startRemote(t, cb, int(cb.ListenPort))
			b.announce()
			bgptest.WaitFor(t, 30*time.Second, "b learns a's route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return ok })
			if tc.withdraw {
				a.withdraw()
			} else {
				a.stop()
			}
			bgptest.WaitFor(t, 10*time.Second, "b sees the session down", func() bool { return statusOf(t, b, lo4).State != "established" })
			time.Sleep(time.Second) // the withdrawal, if any, has landed
			if _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); ok != tc.kept {
				t.Errorf("b still has a's route: %v, want %v", ok, tc.kept)
			}
			if s := statusOf(t, b, lo4); !strings.Contains(s.LastError, tc.cause) || s.Flaps != 1 {
				t.Errorf("b's status: %+v, want 1 flap and %q", s, tc.cause)
			}
			if l := b.logLines("BGP session down", tc.cause); len(l) != 1 {
				t.Errorf("b logged %q, want one line for the session going down with %q", l, tc.cause)
			}
		})
	}
}

// TestSessionFailures: a wrong TCP MD5 password, a wrong AS and a peer
// that does not listen never establish, each logged in one line however
// often GoBGP retries; the right password establishes.
func TestSessionFailures(t *testing.T) {
	const wait = 20 * time.Second // GoBGP retries every 2-5 s: several attempts
	t.Run("md5 right", func(t *testing.T) {
		t.Parallel()
		ca, cb := pairConfs(t, true, false)
		ca.Peers[0].Password, cb.Peers[0].Password = `s3cret "#,=`, `s3cret "#,=`
		a, b := startRemote(t, ca, int(ca.ListenPort)), startRemote(t, cb, int(cb.ListenPort))
		a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
		b.announce()
		bgptest.WaitFor(t, 30*time.Second, "b learns a's route over the signed session", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return ok })
	})
	failures := []struct {
		name     string
		setup    func(a, b *bgp.Config)
		causeA   string
		causeB   string
		warnWord string
	}{
		{"md5 wrong", func(a, b *bgp.Config) { a.Peers[0].Password, b.Peers[0].Password = "right", "wrong" },
			"no answer from peer 127.0.0.1", "no answer from peer 127.0.0.1", "TCP MD5"},
		{"wrong AS", func(a, b *bgp.Config) { b.Peers[0].AS = 64999 },
			"refused our OPEN (AS 64512", "is not AS 64999 as configured", "AS"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca, cb := pairConfs(t, true, false)
			tc.setup(&ca, &cb)
			a, b := startRemote(t, ca, int(ca.ListenPort)), startRemote(t, cb, int(cb.ListenPort))
			a.announce()
			b.announce()
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				if s := statusOf(t, a, lo4); s.State == "established" {
					t.Fatalf("the session came up: %+v", s)
				}
				time.Sleep(500 * time.Millisecond)
			}
			for _, x := range []struct {
				name  string
				s     *remotePeer
				cause string
			}{{"a", a, tc.causeA}, {"b", b, tc.causeB}} {
				if s := statusOf(t, x.s, lo4); !strings.Contains(s.LastError, x.cause) {
					t.Errorf("%s's status %+v, want %q", x.name, s, x.cause)
				}
				if l := x.s.logLines("level=WARN"); len(l) != 1 || !strings.Contains(l[0], x.cause) {
					t.Errorf("%s warned %q, want one line with %q", x.name, l, x.cause)
				}
				if testing.Verbose() && os.Getenv("WEFT_BGP_TEST_DEBUG") != "" {
					t.Logf("%s's log:\n%s", x.name, strings.Join(x.s.logLines(), "\n"))
				}
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		c := conf(64512, "192.0.2.11", bgptest.FreePort(t), true, bgp.Peer{Address: lo4, AS: 64500, Port: uint16(bgptest.FreePort(t))})
		a := startRemote(t, c, int(c.ListenPort))
		a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
		time.Sleep(wait)
		if s := statusOf(t, a, lo4); s.State == "established" || !strings.Contains(s.LastError, "refuses connections") {
			t.Errorf("status %+v, want a refused connection", s)
		}
		if l := a.logLines("level=WARN"); len(l) != 1 || !strings.Contains(l[0], "refuses connections") {
			t.Errorf("warned %q, want one line", l)
		}
		if l := a.logLines("level=INFO"); len(l) != 0 {
			t.Errorf("logged at Info about a peer that never answered: %q", l)
		}
	})
}

// A node announces its own routes only: what it learns from one router
// is never passed on to another (a node is no transit between its
// routers), though GoBGP would, eBGP to eBGP, without weft's export
// policy.
func TestLearnedRoutesAreNotPassedOn(t *testing.T) {
	b4, c4 := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	pa, pb, pc := bgptest.FreePort(t), bgptest.FreePort(t), bgptest.FreePort(t)
	a := startNode(t, conf(64512, "192.0.2.11", pa, true,
		bgp.Peer{Address: b4, AS: 64513, Port: uint16(pb)}, bgp.Peer{Address: c4, AS: 64514, Port: uint16(pc)}))
	a.announce(bgptest.Route("10.244.1.0/24", "127.0.0.1"))
	b := startRemoteAt(t, conf(64513, "192.0.2.12", pb, true, bgp.Peer{Address: lo4, AS: 64512, Port: uint16(pa)}), pb, b4)
	b.announce(bgptest.Route("10.244.2.0/24", "127.0.0.2"))
	c := startRemoteAt(t, conf(64514, "192.0.2.13", pc, true, bgp.Peer{Address: lo4, AS: 64512, Port: uint16(pa)}), pc, c4)
	c.announce() // nothing of its own; its peers come up after its first Announce
	bgptest.WaitFor(t, 30*time.Second, "a's sessions established", established(t, a, b4, c4))
	bgptest.WaitFor(t, 10*time.Second, "a learns b's route", func() bool { _, ok := bgptest.LearnedOf(a, "10.244.2.0/24"); return ok })
	bgptest.WaitFor(t, 10*time.Second, "c learns a's own route", func() bool { _, ok := bgptest.LearnedOf(c, "10.244.1.0/24"); return ok })
	// An UPDATE that passed b's route on would follow within
	// milliseconds of a learning it.
	time.Sleep(2 * time.Second)
	if r, ok := bgptest.LearnedOf(c, "10.244.2.0/24"); ok {
		t.Errorf("c learned b's route %v through a: a node must announce only its own routes", r)
	}
	if got := statusOf(t, a, c4).Sent; got != 1 {
		t.Errorf("a sent c %d prefixes, want 1 (its own)", got)
	}
}
