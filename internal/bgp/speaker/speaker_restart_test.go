package speaker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/bgptest"
)

// TestRestartingKeepsRoutesAtThePeer: an agent that restarts over its
// data plane (Options.Restarting) sends the Restart State and Forwarding
// State bits in its OPEN (a router that sees F clear flushes the stale
// routes at once, RFC 4724 4.2), announces its routes and its End-of-RIB,
// and the peer never loses its route across the restart. Without
// Restarting, neither bit is set: the reviewer's finding, kept as the
// contrast.
func TestRestartingKeepsRoutesAtThePeer(t *testing.T) {
	ca, cb := pairConfs(t, true, false)
	own := bgptest.Route("10.244.1.0/24", "192.0.2.11")
	a := startNode(t, ca)
	a.announce(own)
	b := startRemote(t, cb, int(cb.ListenPort))
	b.announce(bgptest.Route("10.244.2.0/24", "192.0.2.12"))
	bgptest.WaitFor(t, 30*time.Second, "b learns a's route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); return ok })
	if g := b.graceful(lo4.String()); g.Restart || g.Forwarding || !g.Complete {
		t.Errorf("first start: b saw %+v, want neither bit and a's End-of-RIB", g)
	}

	// Watch b's RIB through the restart: a's route must never be missing.
	var mu sync.Mutex
	var missing []time.Time
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			rep, err := b.call(peerRequest{Op: "learned"})
			if err != nil {
				return
			}
			found := false
			for _, r := range rep.Learned {
				found = found || r.Prefix == own.Prefix
			}
			if !found {
				mu.Lock()
				missing = append(missing, time.Now())
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	a.stop() // SIGTERM: sessions closed without a NOTIFICATION
	bgptest.WaitFor(t, 10*time.Second, "b sees the session down", func() bool { return statusOf(t, b, lo4).State != "established" })
	a2 := startNodeWith(t, ca, bgp.Options{Restarting: true})
	a2.announce(own)
	bgptest.WaitFor(t, 30*time.Second, "the session back", established(t, a2, lo4))
	bgptest.WaitFor(t, 15*time.Second, "b has a2's End-of-RIB", func() bool { return b.graceful(lo4.String()).Complete })
	time.Sleep(time.Second) // a flush at the End-of-RIB would have landed
	stopWatch()
	<-watched
	g := b.graceful(lo4.String())
	if !g.Restart || !g.Forwarding {
		t.Errorf("restarting: b saw %+v in a2's OPEN, want the Restart State and Forwarding State bits", g)
	}
	mu.Lock()
	if len(missing) > 0 {
		t.Errorf("b lost a's route %d times during the restart, first at %s", len(missing), missing[0].Format(time.StampMilli))
	}
	mu.Unlock()
	if _, ok := bgptest.LearnedOf(b, "10.244.1.0/24"); !ok {
		t.Errorf("b lost a's route after a2's End-of-RIB: %v", b.Learned())
	}
	// a2 took b's routes (GoBGP's deferral ended with b's End-of-RIB),
	// and a later Announce reaches b (LocalRestarting was cleared).
	bgptest.WaitFor(t, 10*time.Second, "a2 learns b's route", func() bool { _, ok := bgptest.LearnedOf(a2, "10.244.2.0/24"); return ok })
	a2.announce(own, bgptest.Route("10.244.3.0/24", "192.0.2.11"))
	bgptest.WaitFor(t, 10*time.Second, "b learns a2's new route", func() bool { _, ok := bgptest.LearnedOf(b, "10.244.3.0/24"); return ok })
}

// TestSynced: Synced turns true once every peer has sent its routes
// (End-of-RIB with graceful restart, the session up without), or when
// RestartTime has passed with a peer still down; Changed is called then.
// It is false before Run and after Withdraw, and Announce after Withdraw
// is an error.
func TestSynced(t *testing.T) {
	t.Run("end of RIB", func(t *testing.T) {
		ca, cb := pairConfs(t, true, false)
		b := startRemote(t, cb, int(cb.ListenPort))
		b.announce(bgptest.Route("10.244.2.0/24", "192.0.2.12"))
		s, err := New(ca, bgp.Options{Underlay4: lo4})
		if err != nil {
			t.Fatal(err)
		}
		if s.Synced() {
			t.Error("Synced before Run")
		}
		a := startNode(t, ca)
		a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
		bgptest.WaitFor(t, 30*time.Second, "a synced", a.Synced)
		if _, ok := bgptest.LearnedOf(a, "10.244.2.0/24"); !ok {
			t.Errorf("a synced without b's route: %v", a.Learned())
		}
		if statusOf(t, a, lo4).State != "established" {
			t.Error("a synced with its only peer down")
		}
		a.withdraw()
		if a.Synced() {
			t.Error("Synced after Withdraw")
		}
		if err := a.Announce(context.Background(), []bgp.Route{bgptest.Route("10.244.1.0/24", "192.0.2.11")}); !errors.Is(err, bgp.ErrWithdrawn) {
			t.Errorf("Announce after Withdraw: %v, want ErrWithdrawn", err)
		}
	})
	t.Run("no graceful restart", func(t *testing.T) {
		ca, cb := pairConfs(t, true, false)
		ca.GracefulRestart = false
		b := startRemote(t, cb, int(cb.ListenPort))
		b.announce(bgptest.Route("10.244.2.0/24", "192.0.2.12"))
		a := startNode(t, ca)
		a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
		bgptest.WaitFor(t, 30*time.Second, "the session up", established(t, a, lo4))
		bgptest.WaitFor(t, 5*time.Second, "a synced with its session up", a.Synced)
	})
	t.Run("peer down", func(t *testing.T) {
		c := conf(64512, "192.0.2.11", bgptest.FreePort(t), true, bgp.Peer{Address: lo4, AS: 64513, Port: uint16(bgptest.FreePort(t))})
		c.RestartTime = 3 * time.Second
		a := startNode(t, c)
		start := time.Now()
		a.announce(bgptest.Route("10.244.1.0/24", "192.0.2.11"))
		bgptest.WaitFor(t, 5*time.Second, "the server up", func() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.srv != nil })
		before := a.changes.Load()
		if a.Synced() {
			t.Fatal("synced at once with a peer down")
		}
		// The speaker's own clock starts after the test's start: it is
		// synced no sooner than RestartTime after that, and says so.
		bgptest.WaitFor(t, 10*time.Second, "synced after the restart time", a.Synced)
		if took := time.Since(start); took < c.RestartTime {
			t.Errorf("synced %s after the start with the peer down, before the restart time %s", took, c.RestartTime)
		}
		bgptest.WaitFor(t, 5*time.Second, "Changed once synced", func() bool { return a.changes.Load() > before })
	})
	t.Run("no peers", func(t *testing.T) {
		a := startNode(t, conf(64512, "192.0.2.11", bgptest.FreePort(t), true))
		a.announce()
		bgptest.WaitFor(t, 5*time.Second, "synced with nothing to learn", a.Synced)
	})
}

// TestWithdrawBeforeAddPeer: Withdraw while Run waits for the first
// Announce (it adds the peers then) ends Run with nil, not with an
// AddPeer failure on a stopped server.
func TestWithdrawBeforeAddPeer(t *testing.T) {
	for range 3 {
		c := conf(64512, "192.0.2.11", bgptest.FreePort(t), true, bgp.Peer{Address: lo4, AS: 64513, Port: uint16(bgptest.FreePort(t))})
		s, err := New(c, bgp.Options{Underlay4: lo4})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		bgptest.WaitFor(t, 5*time.Second, "the server up", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.srv != nil })
		// Announce and Withdraw race Run's AddPeer.
		go s.Announce(context.Background(), []bgp.Route{bgptest.Route("10.244.1.0/24", "192.0.2.11")})
		if err := s.Withdraw(context.Background()); err != nil {
			t.Errorf("Withdraw: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after Withdraw: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after Withdraw")
		}
	}
}
