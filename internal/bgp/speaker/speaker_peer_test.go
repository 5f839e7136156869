package speaker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/bgptest"
)

// GoBGP keeps route selection options in a package variable
// (table.SelectionOptions) that StartBgp writes: two servers in one
// process race. So every test runs at most one speaker in the test
// process; the others run in a copy of the test binary (built with the
// same -race), driven over stdin and stdout by remotePeer.

const peerEnv = "WEFT_BGP_TEST_PEER" // the speaker's Config and Options, JSON

func TestMain(m *testing.M) {
	if conf := os.Getenv(peerEnv); conf != "" {
		os.Exit(peerMain(conf))
	}
	os.Exit(m.Run())
}

type peerConf struct {
	Config  bgp.Config
	Options struct{ Underlay4, Underlay6 string }
	// Passwords are Config.Peers' passwords (not in Peer's JSON).
	Passwords []string
}

type peerRequest struct {
	Op     string // announce, learned, status, graceful, withdraw, stop
	Routes []bgp.Route
}

type peerReply struct {
	Err     string
	Learned []bgp.Route
	Status  []bgp.PeerStatus
	Changes int64
	// Graceful is, by peer address (op graceful), what the speaker saw
	// of the peer's graceful restart.
	Graceful map[string]peerGraceful
}

// peerGraceful is the graceful restart side of a session: the Restart
// State and Forwarding State bits of the peer's last OPEN, and whether
// it has sent all its routes since (End-of-RIB).
type peerGraceful struct {
	Restart, Forwarding, Complete bool
}

// peerMain runs a speaker for the parent test process: its log on
// stderr, one request a line on stdin, one reply a line on stdout.
func peerMain(conf string) int {
	var pc peerConf
	if err := json.Unmarshal([]byte(conf), &pc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for i, pw := range pc.Passwords {
		pc.Config.Peers[i].Password = pw
	}
	level := slog.LevelInfo
	if os.Getenv("WEFT_BGP_TEST_DEBUG") != "" {
		level = slog.LevelDebug // to read GoBGP's own log
	}
	var mu sync.Mutex
	var changes int64
	o := bgp.Options{
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Changed: func() { mu.Lock(); changes++; mu.Unlock() },
	}
	o.Underlay4.UnmarshalText([]byte(pc.Options.Underlay4))
	o.Underlay6.UnmarshalText([]byte(pc.Options.Underlay6))
	s, err := New(pc.Config, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req peerRequest
		var rep peerReply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Err = err.Error()
		}
		switch req.Op {
		case "announce":
			if err := s.Announce(ctx, req.Routes); err != nil {
				rep.Err = err.Error()
			}
		case "withdraw":
			if err := s.Withdraw(ctx); err != nil {
				rep.Err = err.Error()
			}
		case "stop":
			cancel()
			select {
			case err := <-done:
				if err != nil {
					rep.Err = err.Error()
				}
			case <-time.After(10 * time.Second):
				rep.Err = "Run did not return 10 s after its context ended"
			}
			out.Encode(rep)
			return 0
		}
		if req.Op == "graceful" {
			rep.Graceful = map[string]peerGraceful{}
			s.st.mu.Lock()
			for a, p := range s.st.peers {
				rep.Graceful[a.String()] = peerGraceful{Restart: p.restartBit, Forwarding: p.forwardingBit, Complete: p.complete}
			}
			s.st.mu.Unlock()
		}
		rep.Learned, rep.Status = s.Learned(), s.Status()
		mu.Lock()
		rep.Changes = changes
		mu.Unlock()
		select {
		case err := <-done:
			if err != nil && rep.Err == "" {
				rep.Err = "Run: " + err.Error()
			}
			done <- err
		default:
		}
		out.Encode(rep)
	}
	cancel()
	return 0
}

// remotePeer is a speaker in a child process.
type remotePeer struct {
	t    *testing.T
	port int
	log  *bgptest.LogBuffer
	cmd  *exec.Cmd

	mu      sync.Mutex // guards the pipes and stopped
	in      io.WriteCloser
	out     *bufio.Scanner
	stopped bool
}

// startRemote starts a speaker of c in a child process, on 127.0.0.1
// and ::1.
func startRemote(t *testing.T, c bgp.Config, port int) *remotePeer {
	t.Helper()
	return startRemoteAt(t, c, port, lo4)
}

// startRemoteAt is startRemote with the IPv4 underlay address under4
// (another address of 127.0.0.0/8: a third speaker beside the other two).
func startRemoteAt(t *testing.T, c bgp.Config, port int, under4 netip.Addr) *remotePeer {
	t.Helper()
	var pc peerConf
	pc.Config = c
	pc.Options.Underlay4, pc.Options.Underlay6 = under4.String(), lo6.String()
	for _, p := range c.Peers {
		pc.Passwords = append(pc.Passwords, p.Password)
	}
	conf, err := json.Marshal(pc)
	if err != nil {
		t.Fatal(err)
	}
	r := &remotePeer{t: t, port: port, log: &bgptest.LogBuffer{}}
	r.cmd = exec.Command(os.Args[0], "-test.run=^$")
	r.cmd.Env = append(os.Environ(), peerEnv+"="+string(conf))
	r.cmd.Stderr = r.log
	if r.in, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.out = bufio.NewScanner(stdout)
	r.out.Buffer(nil, 1<<20)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.stop()
		if l := r.log.Lines("DATA RACE"); len(l) > 0 {
			t.Errorf("the peer process found a data race:\n%s", r.log.Lines())
		}
	})
	return r
}

func (r *remotePeer) call(req peerRequest) (peerReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rep peerReply
	if r.stopped {
		return rep, errors.New("peer process stopped")
	}
	b, _ := json.Marshal(req)
	if _, err := r.in.Write(append(b, '\n')); err != nil {
		return rep, err
	}
	if !r.out.Scan() {
		return rep, fmt.Errorf("peer process: no reply: %v; its log:\n%s", r.out.Err(), strings.Join(r.log.Lines(), "\n"))
	}
	if err := json.Unmarshal(r.out.Bytes(), &rep); err != nil {
		return rep, err
	}
	if rep.Err != "" {
		return rep, errors.New(rep.Err)
	}
	return rep, nil
}

func (r *remotePeer) must(req peerRequest) peerReply {
	r.t.Helper()
	rep, err := r.call(req)
	if err != nil {
		r.t.Fatalf("peer %s: %v", req.Op, err)
	}
	return rep
}

// stop ends the child's Run as SIGTERM ends the agent's, and waits for it.
func (r *remotePeer) stop() {
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return
	}
	if _, err := r.call(peerRequest{Op: "stop"}); err != nil {
		r.t.Errorf("stop the peer process: %v", err)
	}
	r.mu.Lock()
	r.stopped = true
	r.in.Close()
	r.mu.Unlock()
	waited := make(chan error, 1)
	go func() { waited <- r.cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			r.t.Errorf("peer process: %v", err)
		}
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-waited
		r.t.Errorf("peer process still running 10 s after stop; killed")
	}
}

func (r *remotePeer) announce(routes ...bgp.Route) {
	r.t.Helper()
	r.must(peerRequest{Op: "announce", Routes: routes})
}
func (r *remotePeer) Learned() []bgp.Route {
	r.t.Helper()
	return r.must(peerRequest{Op: "learned"}).Learned
}
func (r *remotePeer) Status() []bgp.PeerStatus {
	r.t.Helper()
	return r.must(peerRequest{Op: "status"}).Status
}
func (r *remotePeer) withdraw() { r.t.Helper(); r.must(peerRequest{Op: "withdraw"}) }

// graceful is what the child saw of peer's graceful restart.
func (r *remotePeer) graceful(peer string) peerGraceful {
	r.t.Helper()
	return r.must(peerRequest{Op: "graceful"}).Graceful[peer]
}
