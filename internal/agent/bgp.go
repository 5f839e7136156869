package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/proc"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/kernel"
)

// Speaker is the BGP speaker as the agent drives it: *proc.Speaker, GoBGP
// in a weft-bgp child process (the agent links no GoBGP), or, in tests,
// *speaker.Speaker, GoBGP in process.
// The agent calls Run once per speaker, in its errgroup, and the others
// from its sync loop and status endpoint while Run runs. A speaker that
// withdrew is done: the agent builds a new one when its Node is back.
type Speaker interface {
	// Run serves until ctx ends, then closes graceful-restart sessions
	// without a NOTIFICATION (routers keep the routes for RestartTime).
	// It returns nil early when Withdraw stopped it, and an error only
	// when the speaker cannot start.
	Run(ctx context.Context) error
	// Announce sets the complete set of routes to announce; calling it
	// again with the same set changes nothing. After Withdraw it changes
	// nothing and returns an error (bgp.ErrWithdrawn).
	Announce(ctx context.Context, routes []bgp.Route) error
	// Withdraw withdraws every route and closes the sessions with a
	// NOTIFICATION: the node is leaving for good. Run returns; when
	// Withdraw returns, the speaker holds no port any more.
	Withdraw(ctx context.Context) error
	// Learned returns the best routes learned from the peers, sorted.
	Learned() []bgp.Route
	// Synced reports whether Learned is complete (every peer has sent
	// its routes since Run started, or the restart time has passed);
	// false before Run and after Withdraw. Options.Changed is called when
	// it turns true.
	Synced() bool
	// Status returns the peers' sessions, sorted by address.
	Status() []bgp.PeerStatus
}

var _ Speaker = (*proc.Speaker)(nil)

// newSpeaker is Options.NewSpeaker's default: GoBGP in weft-bgp, which
// must be beside weft-agent or in PATH (else the agent does not start).
func newSpeaker(c bgp.Config, o bgp.Options) (Speaker, error) { return proc.New(c, o) }

// nodeStore is a Store whose records are the cluster's Nodes (Kubernetes
// mode): it reads this node's annotations, and this node's record deleted
// means its Node was deleted, the node removed for good.
type nodeStore interface {
	NodeAnnotations(ctx context.Context) (map[string]string, error)
}

// bgpConfig resolves this node's BGP config: net-conf.json's BGP object
// (cfg.BGP), the Node's annotations over it (Kubernetes mode), the
// flags (Options.BGPNode) over those, validated. A mistake is an error of
// one line naming the key, the annotation or the flag; the zero Config
// when BGP is off.
func (a *Agent) bgpConfig(ctx context.Context, cfg *config.Config) (bgp.Config, error) {
	c, err := bgp.Parse(cfg.BGP)
	if err != nil {
		return bgp.Config{}, err
	}
	flags := a.o.BGPNode
	if !c.Enabled {
		if flags.LocalAS != 0 || flags.RouterID.IsValid() || flags.PeersSet {
			a.log.Warn("the --bgp-* flags are ignored: BGP is off (net-conf.json has no BGP object, or it says \"Enabled\": false)")
		}
		return bgp.Config{}, nil
	}
	if ns, ok := a.o.Store.(nodeStore); ok {
		var ann map[string]string
		err := a.retry(ctx, "read this node's annotations", func(ctx context.Context) (bool, error) {
			var err error
			ann, err = ns.NodeAnnotations(ctx)
			return false, err
		})
		if err != nil {
			return bgp.Config{}, err
		}
		n, err := bgp.ParseAnnotations(ann)
		if err != nil {
			return bgp.Config{}, err
		}
		c = c.WithNode(n)
	}
	c = c.WithNode(flags)
	if err := c.Validate(); err != nil {
		return bgp.Config{}, err
	}
	for _, w := range c.Warnings() {
		a.log.Warn(w)
	}
	return c, nil
}

// bgpState is the agent's BGP speaker and what it was built with; set
// before the agent's goroutines start. Its fields are then only read,
// but sp, which a.mu guards (Agent.speaker): a speaker that withdrew is
// replaced once the Node is back.
type bgpState struct {
	cfg bgp.Config
	sp  Speaker
	// next4 and next6 are the node's underlay addresses of the enabled
	// families: the next hops of its announced subnets.
	next4, next6 netip.Addr
	// restarting: the speaker was built as a restarting speaker
	// (bgp.Options.Restarting).
	restarting bool
	// back takes a signal when this node's lease is back after its
	// routes were withdrawn: runBGP builds a new speaker then.
	back chan struct{}
}

// startBGP builds the speaker of c (on) over the underlay u, and puts its
// series on the agent's registry. The speaker opens nothing until Run.
// restarting: the agent restarts over the data plane it left in place
// (subnet.env holds a subnet): the speaker asks routers to keep this
// node's routes until its End-of-RIB.
func (a *Agent) startBGP(c bgp.Config, u kernel.Underlay, v4, v6, restarting bool) error {
	st := &bgpState{cfg: c, back: make(chan struct{}, 1)}
	if v4 {
		st.next4 = u.Addr
	}
	if v6 {
		st.next6 = u.Addr6
	}
	a.mu.Lock()
	a.bgp = st
	a.mu.Unlock()
	if err := a.newSpeaker(restarting); err != nil {
		return err
	}
	peers := make([]string, 0, len(c.Peers))
	for _, p := range c.Peers {
		peers = append(peers, fmt.Sprintf("%s (AS %d)", p.Address, p.AS))
	}
	a.log.Info("BGP on", "local-as", c.LocalAS, "peers", peers, "import", c.Import, "routable-networks", c.RoutableNetworks,
		"graceful-restart", c.GracefulRestart, "restarting", restarting && c.GracefulRestart)
	return nil
}

// newSpeaker builds a speaker for a.bgp and puts it in place of the one
// there (whose Run has returned, or was never called): its series
// replace the old one's on the registry.
func (a *Agent) newSpeaker(restarting bool) error {
	st := a.bgp
	newSp := a.o.NewSpeaker
	if newSp == nil {
		newSp = newSpeaker
	}
	sp, err := newSp(st.cfg, bgp.Options{Log: a.log.With("component", "bgp"), Underlay4: st.next4, Underlay6: st.next6,
		Changed: a.trigger, Restarting: restarting})
	if err != nil {
		return fmt.Errorf("BGP: %w", err)
	}
	a.mu.Lock()
	old := st.sp
	st.sp, st.restarting = sp, restarting
	a.mu.Unlock()
	if col, ok := old.(prometheus.Collector); ok {
		a.m.reg.Unregister(col)
	}
	if col, ok := sp.(prometheus.Collector); ok {
		a.m.reg.MustRegister(col)
	}
	return nil
}

// speaker is the current speaker; nil when BGP is off.
func (a *Agent) speaker() Speaker {
	if a.bgp == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bgp.sp
}

// runBGP runs the speaker until ctx ends. A speaker that cannot start is
// reported (log, /readyz bgpError) and does not end the agent: pod
// networking does not depend on BGP. A speaker that withdrew (the Node
// was deleted) is replaced by a new one once this node's lease is back,
// which announces its routes again.
func (a *Agent) runBGP(ctx context.Context) error {
	for {
		err := a.speaker().Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			a.log.Error("the BGP speaker stopped; pod networking goes on without it", "err", err)
			a.mu.Lock()
			a.bgpErr = err
			a.mu.Unlock()
			return nil
		}
		// Withdraw stopped it.
		select {
		case <-ctx.Done():
			return nil
		case <-a.bgp.back:
		}
		if err := a.newSpeaker(false); err != nil {
			err = fmt.Errorf("%w; restart the agent to announce this node's routes again", err)
			a.log.Error("BGP: this node's Node is back, and a new BGP speaker cannot be built", "err", err)
			a.mu.Lock()
			a.bgpErr = err
			a.mu.Unlock()
			return nil
		}
		a.log.Info("BGP: this node's Node is back: a new speaker announces its routes")
		a.trigger() // the next sync hands it the routes
	}
}

// bgpInputs are the BGP part of the desired state's inputs; nil when BGP
// is off.
func (a *Agent) bgpInputs() *BGPInputs {
	if a.bgp == nil {
		return nil
	}
	in := &BGPInputs{NextHop4: a.bgp.next4, NextHop6: a.bgp.next6, Routable: a.bgp.cfg.RoutableNetworks}
	if a.bgp.cfg.Import {
		sp := a.speaker()
		// Synced first: what it vouches for was learned by then.
		in.LearnedPending = !sp.Synced()
		in.Learned = sp.Learned()
		if in.Learned == nil {
			in.Learned = []bgp.Route{} // import on: an empty set, not off
		}
	}
	return in
}

// announce hands the speaker the routes to announce when they differ from
// what it last took, and on a full sync (it is idempotent). A failure is
// logged and tried again at the next sync; it does not fail the sync.
func (a *Agent) announce(ctx context.Context, s *syncer, routes []bgp.Route, full bool) {
	if a.bgp == nil {
		return
	}
	sp := a.speaker()
	if s.withdrawn != nil {
		if s.withdrawn == sp {
			return // withdrawn: nothing to announce until the new speaker is there
		}
		s.withdrawn = nil
	}
	if s.annOK && !full && slices.Equal(s.announced, routes) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := sp.Announce(actx, routes)
	cancel()
	if err != nil {
		if ctx.Err() == nil && (s.annErr == nil || s.annErr.Error() != err.Error()) {
			a.log.Warn("BGP: cannot announce this node's subnets; retrying at the next sync", "routes", routes, "err", err)
		}
		s.annOK, s.annErr = false, err
		return
	}
	if !slices.Equal(s.announced, routes) || !s.annOK {
		a.log.Info("BGP: announcing", "routes", routes)
	}
	s.announced, s.annOK, s.annErr = slices.Clone(routes), true, nil
	a.mu.Lock()
	a.announced = s.announced
	a.mu.Unlock()
}

// withdrawIfRemoved withdraws this node's routes, once, when its Node was
// deleted (Kubernetes mode: the node is removed for good), so that the
// routers drop them at once instead of keeping them for the restart time.
// The speaker is done then; bgpBack asks for a new one once the lease is
// back. In etcd mode a deleted lease is taken back and nothing is
// withdrawn.
func (a *Agent) withdrawIfRemoved(ctx context.Context, s *syncer, lost string) {
	if a.bgp == nil || lost != "deleted" {
		return
	}
	if _, ok := a.o.Store.(nodeStore); !ok {
		return
	}
	sp := a.speaker()
	if s.withdrawn == sp {
		return // this speaker withdrew already
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := sp.Withdraw(wctx)
	cancel()
	if err != nil {
		a.log.Error("BGP: this node's Node was deleted, and withdrawing its routes failed; the routers drop them when the restart time runs out", "err", err)
	} else {
		a.log.Warn("BGP: this node's Node was deleted: its routes are withdrawn")
	}
	// A new speaker announces again once the Node is back, even the
	// same routes.
	s.withdrawn, s.annOK = sp, false
	a.mu.Lock()
	a.announced = nil
	a.mu.Unlock()
}

// bgpBack tells runBGP that this node's lease is back after its routes
// were withdrawn: time for a new speaker.
func (a *Agent) bgpBack(s *syncer) {
	if a.bgp == nil || s.withdrawn == nil {
		return
	}
	select {
	case a.bgp.back <- struct{}{}:
	default: // one is pending already
	}
}

// bgpStatus fills the BGP part of s. The speaker is asked without a.mu
// held.
func (a *Agent) bgpStatus(s *Status) {
	a.mu.Lock()
	st := a.bgp
	var sp Speaker
	if st != nil {
		sp = st.sp
	}
	s.BGPAnnounced = a.announced
	if a.bgpErr != nil {
		s.BGPErr = a.bgpErr.Error()
	}
	a.mu.Unlock()
	if st == nil {
		return
	}
	s.BGP = sp.Status()
	if st.cfg.Import {
		s.BGPLearned = sp.Learned()
	}
}
