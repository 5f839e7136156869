package proc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/bgptest"
)

// These tests run the real weft-bgp, built by TestMain (with -race when
// the tests have it) into a directory put first in PATH, against each
// other on 127.0.0.1 and ::1, each on a free high port: no privileges,
// no namespaces, no routes. Every speaker is a weft-bgp child of its
// own (GoBGP's package state allows one per process); TestAgentDies
// runs an agent of its own, a copy of the test binary.

const agentEnv = "WEFT_PROC_TEST_AGENT" // the simulated agent's agentConf, JSON

var (
	buildOnce sync.Once
	binDir    string // holds the weft-bgp built for the tests
	buildErr  error
)

func TestMain(m *testing.M) {
	if conf := os.Getenv(agentEnv); conf != "" {
		os.Exit(agentMain(conf))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// needBinary builds weft-bgp once, with -race when the tests have it,
// into a directory it puts first in PATH.
func needBinary(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "weft-bgp-test-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		args := []string{"build", "-o", filepath.Join(dir, Binary)}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/weftnet/weft/cmd/weft-bgp")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build weft-bgp: %v\n%s", err, out)
			return
		}
		buildErr = os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func TestNewValidates(t *testing.T) {
	needBinary(t)
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
		{"peer without address", bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{{AS: 1}}}, bgp.Options{Underlay4: lo4}, "no address"},
		{"peer twice", bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{peer, peer}}, bgp.Options{Underlay4: lo4}, "twice"},
		{"port", bgp.Config{LocalAS: 64512, ListenPort: 70000}, bgp.Options{Underlay4: lo4}, "out of range"},
	} {
		if _, err := New(tc.c, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	s, err := New(bgp.Config{LocalAS: 64512, Peers: []bgp.Peer{{Address: lo6, AS: 64501}, peer}}, bgp.Options{Underlay4: lo4})
	if err != nil {
		t.Fatal(err)
	}
	if s.bin != filepath.Join(binDir, Binary) {
		t.Errorf("weft-bgp found at %s, want %s", s.bin, filepath.Join(binDir, Binary))
	}
	if st := s.Status(); len(st) != 2 || st[0].Address != lo4 || st[0].State != "idle" || st[1].AS != 64501 {
		t.Errorf("Status before Run: %+v, want both peers idle, sorted", st)
	}
	if s.Learned() != nil || s.Synced() {
		t.Errorf("before Run: Learned %v, Synced %v", s.Learned(), s.Synced())
	}
	if err := s.Announce(context.Background(), []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: lo6}}); err == nil {
		t.Error("Announce took an IPv4 prefix with an IPv6 next hop")
	}
	if err := s.Announce(context.Background(), []bgp.Route{{Prefix: netip.MustParsePrefix("2001:db8::/64")}}); err == nil {
		t.Error("Announce took an IPv6 prefix with no next hop and no IPv6 underlay")
	}
	if err := s.Announce(context.Background(), []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.1.0/24")}}); err != nil {
		t.Errorf("Announce before Run: %v", err)
	}
}

// TestMissingBinary: without weft-bgp beside the program or in PATH, New
// says what to install.
func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New(bgp.Config{LocalAS: 64512}, bgp.Options{Underlay4: lo4})
	if err == nil || !strings.Contains(err.Error(), "install weft-bgp") || !strings.Contains(err.Error(), "nor in PATH") {
		t.Errorf("New without weft-bgp: %v, want an error saying to install it", err)
	}
}

// agent is a proc.Speaker under test, as the agent runs it.
type agent struct {
	*Speaker
	t       *testing.T
	log     *bgptest.LogBuffer
	changes atomic.Int64
	cancel  context.CancelFunc
	done    chan error
}

func startAgent(t *testing.T, c bgp.Config) *agent {
	t.Helper()
	needBinary(t)
	a := &agent{t: t, log: &bgptest.LogBuffer{}, done: make(chan error, 1)}
	s, err := New(c, bgp.Options{
		Log:       slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "bgp"),
		Underlay4: lo4, Underlay6: lo6,
		Changed: func() { a.changes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	a.Speaker = s
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		a.stop()
		if l := a.log.Lines("DATA RACE"); len(l) > 0 {
			t.Errorf("weft-bgp found a data race:\n%s", strings.Join(a.log.Lines(), "\n"))
		}
	})
	return a
}

// stop ends Run as SIGTERM ends the agent, and checks it returned nil in
// time.
func (a *agent) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	select {
	case err := <-a.done:
		if err != nil {
			a.t.Errorf("Run: %v", err)
		}
	case <-time.After(stopTimeout + 5*time.Second):
		a.t.Errorf("Run did not return %s after its context ended", stopTimeout+5*time.Second)
	}
}

func (a *agent) announce(routes ...bgp.Route) {
	a.t.Helper()
	if err := a.Announce(context.Background(), routes); err != nil {
		a.t.Fatalf("Announce: %v", err)
	}
}

// pid is the running child's PID; 0 when none runs.
func (a *agent) pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur == nil {
		return 0
	}
	return a.cur.cmd.Process.Pid
}

func statusOf(t *testing.T, s interface{ Status() []bgp.PeerStatus }, peer netip.Addr) bgp.PeerStatus {
	t.Helper()
	for _, p := range s.Status() {
		if p.Address == peer {
			return p
		}
	}
	t.Fatalf("no status for peer %s", peer)
	return bgp.PeerStatus{}
}

// pairConfs are two speakers, AS 64512 and 64513, peering over
// 127.0.0.1 and (dual) ::1, with graceful restart, the first with a TCP
// MD5 password of odd characters (it goes over the wire).
func pairConfs(t *testing.T, dual bool) (bgp.Config, bgp.Config) {
	pa, pb := bgptest.FreePort(t), bgptest.FreePort(t)
	const pw = `s3cret "#,= `
	peersA := []bgp.Peer{{Address: lo4, AS: 64513, Port: uint16(pb), Password: pw}}
	peersB := []bgp.Peer{{Address: lo4, AS: 64512, Port: uint16(pa), Password: pw}}
	if dual {
		peersA = append(peersA, bgp.Peer{Address: lo6, AS: 64513, Port: uint16(pb)})
		peersB = append(peersB, bgp.Peer{Address: lo6, AS: 64512, Port: uint16(pa)})
	}
	conf := func(as uint32, id string, port int, peers []bgp.Peer) bgp.Config {
		return bgp.Config{Enabled: true, LocalAS: as, RouterID: netip.MustParseAddr(id), ListenPort: port, Peers: peers,
			HoldTime: 9 * time.Second, GracefulRestart: true, RestartTime: 30 * time.Second}
	}
	return conf(64512, "192.0.2.11", pa, peersA), conf(64513, "192.0.2.12", pb, peersB)
}

// sessionUpRE is internal/lab/bgpbench's pattern for the agent's line.
var sessionUpRE = regexp.MustCompile(`^time=(\S+) level=INFO msg="BGP session up" `)

// TestSession: two speakers in weft-bgp children peer; routes, statuses,
// metrics and log lines come through the wire; a child killed is started
// again without the peer losing a route; the agent's stop closes the
// sessions without a NOTIFICATION: the peer keeps the routes.
func TestSession(t *testing.T) {
	ca, cb := pairConfs(t, true)
	a := startAgent(t, ca)
	a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"), bgptest.Route("2001:db8:244:1::/64", "2001:db8::11"))
	b := startAgent(t, cb)
	b.announce(bgptest.Route("10.244.2.0/24", "192.0.2.12"))
	bgptest.WaitFor(t, 30*time.Second, "sessions established", func() bool {
		return statusOf(t, a, lo4).State == "established" && statusOf(t, a, lo6).State == "established"
	})
	bgptest.WaitFor(t, 10*time.Second, "b learns a's routes", func() bool { return len(b.Learned()) == 2 })
	want := []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: netip.MustParseAddr("192.0.2.11"), Peer: lo4},
		{Prefix: netip.MustParsePrefix("2001:db8:244:1::/64"), NextHop: netip.MustParseAddr("2001:db8::11"), Peer: lo6},
	}
	if got := b.Learned(); !slices.Equal(got, want) {
		t.Errorf("b learned %v, want %v", got, want)
	}
	bgptest.WaitFor(t, 10*time.Second, "a learns b's route", func() bool { return len(a.Learned()) == 1 })
	if got, want := a.Learned(), []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHop: netip.MustParseAddr("192.0.2.12"), Peer: lo4}}; !slices.Equal(got, want) {
		t.Errorf("a learned %v, want %v", got, want)
	}
	bgptest.WaitFor(t, 10*time.Second, "a synced (b's End-of-RIB)", a.Synced)
	if a.changes.Load() == 0 {
		t.Error("a's Changed was never called")
	}
	// The prefix counts come within the child's poll.
	bgptest.WaitFor(t, 5*time.Second, "a's prefix counts", func() bool {
		st := a.Status()
		return st[0].Sent == 1 && st[0].Received == 1 && st[1].Sent == 1 && st[1].Received == 0
	})
	if s := statusOf(t, a, lo4); s.AS != 64513 || s.Since.IsZero() || s.LastError != "" || s.Flaps != 0 {
		t.Errorf("a's status of 127.0.0.1: %+v", s)
	}
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
	// The child's log lines, logged again through the agent's logger as
	// the lab reads them.
	up := a.log.Lines(`msg="BGP session up"`, "peer=127.0.0.1", "as=64513")
	if len(up) != 1 || !sessionUpRE.MatchString(up[0]) || !strings.Contains(up[0], "component=bgp") {
		t.Errorf("a's session up lines %q, want one the lab's pattern reads", up)
	}
	if l := a.log.Lines("level=WARN"); len(l) > 0 {
		t.Errorf("a warned about healthy sessions: %q", l)
	}
	if l := a.log.Lines(); slices.ContainsFunc(l, func(s string) bool { return strings.Contains(s, "s3cret") }) {
		t.Errorf("a password in a's log: %q", l)
	}

	// a's child is killed: Run starts it again (one line), as a
	// restarting speaker; b never loses a's routes (graceful restart),
	// and the flap counts on across children.
	pid := a.pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bgptest.WaitFor(t, 10*time.Second, "a's child started again", func() bool { p := a.pid(); return p != 0 && p != pid })
	bgptest.WaitFor(t, 30*time.Second, "the sessions back", func() bool {
		return statusOf(t, a, lo4).State == "established" && statusOf(t, a, lo6).State == "established"
	})
	if l := a.log.Lines("weft-bgp died; starting it again"); len(l) != 1 || !strings.Contains(l[0], "signal: killed") {
		t.Errorf("a logged %q, want one line for the child's death", l)
	}
	if _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); !ok {
		t.Errorf("b lost a's route when a's child died: %v", b.Learned())
	}
	bgptest.WaitFor(t, 10*time.Second, "a learns b's route again", func() bool { return len(a.Learned()) == 1 })
	if s := statusOf(t, a, lo4); s.Flaps != 1 {
		t.Errorf("a's flaps of 127.0.0.1 after its child died: %d, want 1", s.Flaps)
	}
	if s := statusOf(t, b, lo4); s.Flaps != 1 || !strings.Contains(s.LastError, "graceful restart") {
		t.Errorf("b's status of a after a's child died: %+v, want one flap without a NOTIFICATION", s)
	}

	// The agent stops: no NOTIFICATION, b keeps a's routes as stale.
	a.stop()
	if p := a.pid(); p != 0 {
		t.Errorf("a child %d still there after Run returned", p)
	}
	bgptest.WaitFor(t, 10*time.Second, "b sees the sessions down", func() bool { return statusOf(t, b, lo4).State != "established" })
	time.Sleep(time.Second)
	if s := statusOf(t, b, lo4); s.Flaps != 2 || !strings.Contains(s.LastError, "without a NOTIFICATION: graceful restart") {
		t.Errorf("b's status of a after a stopped: %+v, want a second flap without a NOTIFICATION", s)
	}
	if _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); !ok {
		t.Errorf("b dropped a's route at a's graceful stop: %v", b.Learned())
	}
	if a.Learned() != nil || a.Synced() {
		t.Errorf("a after Run: Learned %v, Synced %v; want nil, false", a.Learned(), a.Synced())
	}
}

// TestWithdraw: Withdraw has the child withdraw and close with a
// NOTIFICATION, so the peer drops the routes; Run returns, the child is
// gone, Announce says ErrWithdrawn.
func TestWithdraw(t *testing.T) {
	t.Parallel()
	ca, cb := pairConfs(t, false)
	a := startAgent(t, ca)
	a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
	b := startAgent(t, cb)
	b.announce()
	bgptest.WaitFor(t, 30*time.Second, "b learns a's route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return ok })
	pid := a.pid()
	if err := a.Withdraw(context.Background()); err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
		t.Errorf("a's child %d still runs after Withdraw returned", pid)
	}
	select {
	case err := <-a.done:
		a.cancel = nil
		if err != nil {
			t.Errorf("Run after Withdraw: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10 s after Withdraw")
	}
	if err := a.Announce(context.Background(), []bgp.Route{bgptest.Route("10.244.1.0/24", "192.0.2.11")}); err != bgp.ErrWithdrawn {
		t.Errorf("Announce after Withdraw: %v, want bgp.ErrWithdrawn", err)
	}
	bgptest.WaitFor(t, 10*time.Second, "b drops a's route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return !ok })
	if s := statusOf(t, b, lo4); !strings.Contains(s.LastError, "NOTIFICATION: Cease") {
		t.Errorf("b's status of a: %+v, want a Cease NOTIFICATION", s)
	}
}

// TestPortTaken: a speaker that cannot start makes Run return the child's
// error, and weft-bgp is not started again.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	needBinary(t)
	s, err := New(bgp.Config{LocalAS: 64512, ListenPort: l.Addr().(*net.TCPAddr).Port}, bgp.Options{Underlay4: lo4, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "start BGP speaker") {
		t.Errorf("Run on a taken port: %v, want the start-up error", err)
	}
	if ctx.Err() != nil {
		t.Error("Run with a taken port served until its context ended")
	}
}

// zombie reports whether process pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// childrenOf returns the PIDs of the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// agentConf is the simulated agent's speaker (TestAgentDies).
type agentConf struct {
	Config Config
	Routes []bgp.Route
}

// agentMain is a simulated agent: it runs a speaker of its config,
// announces its routes and waits to be killed.
func agentMain(conf string) int {
	var ac agentConf
	if err := json.Unmarshal([]byte(conf), &ac); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := New(ac.Config.BGP(), bgp.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Underlay4: lo4, Underlay6: lo6})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Announce(context.Background(), ac.Routes); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestAgentDies: the agent killed (SIGKILL: no chance to stop its
// child), its weft-bgp dies with it (Pdeathsig), and the kernel closes
// its sessions without a NOTIFICATION: the peer keeps the routes.
func TestAgentDies(t *testing.T) {
	t.Parallel()
	// This process adopts the agent's orphans, to read how weft-bgp
	// ended: killed, not exited on its own (its stdin closing would stop
	// it gracefully too, later).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	needBinary(t)
	ca, cb := pairConfs(t, false)
	conf, err := json.Marshal(agentConf{Config: WireConfig(ca), Routes: []bgp.Route{bgptest.Route("10.244.1.0/24", "192.0.2.11")}})
	if err != nil {
		t.Fatal(err)
	}
	log := &bgptest.LogBuffer{}
	sim := exec.Command(os.Args[0], "-test.run=^$")
	sim.Env = append(os.Environ(), agentEnv+"="+string(conf))
	sim.Stderr = log
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sim.Wait() }()
	t.Cleanup(func() {
		_ = sim.Process.Kill()
		<-waited
	})
	b := startAgent(t, cb)
	b.announce()
	bgptest.WaitFor(t, 30*time.Second, "b learns the agent's route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return ok })
	kids := childrenOf(t, sim.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("the agent has children %v, want its weft-bgp", kids)
	}
	if err := sim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-waited
	waited <- nil // for the cleanup
	reaped := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(kids[0], &ws, 0, nil); err != nil {
			t.Errorf("wait for weft-bgp: %v", err)
		}
		reaped <- ws
	}()
	select {
	case ws := <-reaped:
		if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
			t.Errorf("weft-bgp ended with %#x, want killed by SIGKILL (Pdeathsig)", ws)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("weft-bgp still runs 5 s after the agent was killed")
	}
	bgptest.WaitFor(t, 10*time.Second, "b sees the session down", func() bool { return statusOf(t, b, lo4).State != "established" })
	time.Sleep(time.Second)
	if s := statusOf(t, b, lo4); !strings.Contains(s.LastError, "without a NOTIFICATION: graceful restart") {
		t.Errorf("b's status of the killed agent: %+v, want the session closed without a NOTIFICATION", s)
	}
	if _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); !ok {
		t.Errorf("b dropped the killed agent's route: %v", b.Learned())
	}
	if l := log.Lines("DATA RACE"); len(l) > 0 {
		t.Errorf("the agent found a data race:\n%s", strings.Join(log.Lines(), "\n"))
	}
}
