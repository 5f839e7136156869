package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/speaker"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// loopPlatform is fakePlatform with the underlay on the loopback
// (127.0.0.1), where a real speaker can listen without touching the host.
type loopPlatform struct{ *fakePlatform }

func (l loopPlatform) Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error) {
	return kernel.Underlay{Name: "lo", LinkIndex: 1, MTU: 1500, Addr: netip.MustParseAddr("127.0.0.1"),
		OnLink: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil
}

// GoBGP keeps route selection options in a package variable that
// StartBgp writes: two servers in one process race. So the router runs in
// a copy of the test binary (built with the same -race), as internal/bgp's
// tests run their peers.
const routerEnv = "WEFT_AGENT_TEST_ROUTER" // routerConf, JSON

func TestMain(m *testing.M) {
	if c := os.Getenv(routerEnv); c != "" {
		os.Exit(routerMain(c))
	}
	code := m.Run()
	if weftBGPDir != "" {
		os.RemoveAll(weftBGPDir)
	}
	os.Exit(code)
}

var (
	weftBGPOnce sync.Once
	weftBGPDir  string // holds the weft-bgp built for the tests
	weftBGPErr  error
)

// needWeftBGP builds weft-bgp, the agent's default speaker's program,
// once (with -race when the tests have it) into a directory it puts
// first in PATH, where the agent finds it.
func needWeftBGP(t *testing.T) {
	t.Helper()
	weftBGPOnce.Do(func() {
		dir, err := os.MkdirTemp("", "weft-bgp-agent-test-")
		if err != nil {
			weftBGPErr = err
			return
		}
		weftBGPDir = dir
		args := []string{"build", "-o", filepath.Join(dir, "weft-bgp")}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/weftnet/weft/cmd/weft-bgp")...).CombinedOutput()
		if err != nil {
			weftBGPErr = fmt.Errorf("build weft-bgp: %v\n%s", err, out)
			return
		}
		weftBGPErr = os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	})
	if weftBGPErr != nil {
		t.Fatal(weftBGPErr)
	}
}

// routerConf is the router's speaker: AS 64500 on 127.0.0.2, peering
// with the node (AS 64512) on 127.0.0.1, announcing Announce.
type routerConf struct {
	Port     int
	Announce []bgp.Route
}

// routerMain runs the router: its log on stderr; each line on stdin asks
// for its learned routes, answered as a JSON line on stdout; EOF stops it.
func routerMain(c string) int {
	var rc routerConf
	if err := json.Unmarshal([]byte(c), &rc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sp, err := speaker.New(bgp.Config{Enabled: true, LocalAS: 64500, ListenPort: rc.Port, HoldTime: 9 * time.Second,
		GracefulRestart: true, RestartTime: 30 * time.Second,
		Peers: []bgp.Peer{{Address: netip.MustParseAddr("127.0.0.1"), AS: 64512, Port: uint16(rc.Port)}}},
		bgp.Options{Underlay4: netip.MustParseAddr("127.0.0.2")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	if err := sp.Announce(ctx, rc.Announce); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		out.Encode(sp.Learned())
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// router is the router process.
type router struct {
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

func startRouter(t *testing.T, rc routerConf) *router {
	t.Helper()
	c, _ := json.Marshal(rc)
	r := &router{}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), routerEnv+"="+string(c))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	var err error
	if r.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.out = bufio.NewScanner(stdout)
	r.out.Buffer(nil, 1<<20)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.in.Close()
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("router process: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-waited
			t.Errorf("router process still running 10 s after its stdin closed; killed")
		}
		if strings.Contains(stderr.String(), "DATA RACE") {
			t.Errorf("the router process found a data race:\n%s", stderr.String())
		}
	})
	return r
}

// learned are the router's learned routes.
func (r *router) learned(t *testing.T) []bgp.Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.in.Write([]byte("learned\n")); err != nil {
		t.Errorf("ask the router: %v", err)
		return nil
	}
	if !r.out.Scan() {
		t.Errorf("the router did not answer: %v", r.out.Err())
		return nil
	}
	var out []bgp.Route
	if err := json.Unmarshal(r.out.Bytes(), &out); err != nil {
		t.Errorf("the router's answer: %v", err)
	}
	return out
}

// lockedBuffer is a strings.Builder safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBGPRealSpeaker: the agent with its real speaker (GoBGP in weft-bgp,
// its child) on 127.0.0.1 peers with another real speaker on 127.0.0.2 standing for the
// router (in a child process): the router learns this node's subnet with
// the node's address as next hop, and the route the router announces
// reaches the node state handed to the backend (import on). Then the
// agent restarts over the same subnet.env: its first node state has the
// learned routes pending (so host-gw keeps its route through the router),
// the router never loses the node's route (a restarting speaker: R and F
// bits, its routes before its End-of-RIB), and the router's route comes
// back with the pending flag cleared.
func TestBGPRealSpeaker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two BGP speakers")
	}
	needWeftBGP(t)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on the loopback: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	behind := bgp.Route{Prefix: netip.MustParsePrefix("10.244.200.0/24"), NextHop: netip.MustParseAddr("127.0.0.2")}
	rt := startRouter(t, routerConf{Port: port, Announce: []bgp.Route{behind}})

	m := leasetest.NewMemory()
	m.PutConfig(conf(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"LocalAS":64512,"ListenPort":%d,"HoldTime":9,"RestartTime":30,"Import":true,
		"Peers":[{"Address":"127.0.0.2","AS":64500,"Port":%d}]}}`, port, port))
	file := filepath.Join(t.TempDir(), "subnet.env")
	start := func() (*Agent, *fakePlatform, func()) {
		p := &fakePlatform{}
		a := New(Options{Store: m, SubnetFile: file, Resync: time.Hour, Log: quiet()}, loopPlatform{p})
		actx, acancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		stopped := false
		stop := func() {
			if stopped {
				return
			}
			stopped = true
			acancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		}
		t.Cleanup(stop)
		return a, p, stop
	}
	a, p, stop := start()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s; agent status %+v; router learned %v", what, a.Status(), rt.learned(t))
	}
	waitFor("ready", func() bool { return a.Status().Ready })
	own := netip.MustParsePrefix(a.Status().Subnet)
	hasOwn := func() bool {
		return slices.ContainsFunc(rt.learned(t), func(r bgp.Route) bool {
			return r.Prefix == own && r.NextHop == netip.MustParseAddr("127.0.0.1")
		})
	}
	waitFor("the router learns the node's subnet", hasOwn)
	waitFor("the router's route in the node state, complete", func() bool {
		st, _ := p.lastState()
		return st.Learned[behind.Prefix] == behind.NextHop && !st.LearnedPending
	})
	if st := a.Status(); len(st.BGP) != 1 || st.BGP[0].State != "established" || !st.Ready {
		t.Errorf("status %+v", st)
	}

	// The agent restarts; the router is watched throughout.
	var missing int
	watchDone := make(chan struct{})
	watchStop := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-watchStop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if !hasOwn() {
				missing++
			}
		}
	}()
	stop()
	a, p, _ = start()
	waitFor("ready again", func() bool { return a.Status().Ready })
	waitFor("the router's route back in the node state, complete", func() bool {
		st, _ := p.lastState()
		return st.Learned[behind.Prefix] == behind.NextHop && !st.LearnedPending
	})
	time.Sleep(time.Second) // a flush at the node's End-of-RIB would have landed
	close(watchStop)
	<-watchDone
	if missing > 0 {
		t.Errorf("the router lost the node's route %d times across the agent's restart", missing)
	}
	p.mu.Lock()
	first := p.states[0]
	p.mu.Unlock()
	if !first.LearnedPending || first.Learned == nil || len(first.Learned) != 0 {
		t.Errorf("the restarted agent's first node state: learned %v, pending %v; want none learned yet, pending", first.Learned, first.LearnedPending)
	}
}
