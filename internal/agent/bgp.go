package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/kernel"
)

// Speaker is the BGP speaker as the agent drives it; *bgp.Speaker is one.
// The agent calls Run once, in its errgroup, and the others from its sync
// loop and status endpoint while Run runs.
type Speaker interface {
	// Run serves until ctx ends, then closes graceful-restart sessions
	// without a NOTIFICATION (routers keep the routes for RestartTime).
	// It returns an error only when the speaker cannot start.
	Run(ctx context.Context) error
	// Announce sets the complete set of routes to announce; calling it
	// again with the same set changes nothing.
	Announce(ctx context.Context, routes []bgp.Route) error
	// Withdraw withdraws every route and closes the sessions with a
	// NOTIFICATION: the node is leaving for good.
	Withdraw(ctx context.Context) error
	// Learned returns the best routes learned from the peers, sorted.
	Learned() []bgp.Route
	// Status returns the peers' sessions, sorted by address.
	Status() []bgp.PeerStatus
}

var _ Speaker = (*bgp.Speaker)(nil)

// newSpeaker is Options.NewSpeaker's default: GoBGP in process.
func newSpeaker(c bgp.Config, o bgp.Options) (Speaker, error) { return bgp.New(c, o) }

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
// before the agent's goroutines start, then only read.
type bgpState struct {
	cfg bgp.Config
	sp  Speaker
	// next4 and next6 are the node's underlay addresses of the enabled
	// families: the next hops of its announced subnets.
	next4, next6 netip.Addr
}

// startBGP builds the speaker of c (on) over the underlay u, and puts its
// series on the agent's registry. The speaker opens nothing until Run.
func (a *Agent) startBGP(c bgp.Config, u kernel.Underlay, v4, v6 bool) error {
	st := &bgpState{cfg: c}
	if v4 {
		st.next4 = u.Addr
	}
	if v6 {
		st.next6 = u.Addr6
	}
	newSp := a.o.NewSpeaker
	if newSp == nil {
		newSp = newSpeaker
	}
	sp, err := newSp(c, bgp.Options{Log: a.log.With("component", "bgp"), Underlay4: st.next4, Underlay6: st.next6, Changed: a.trigger})
	if err != nil {
		return fmt.Errorf("BGP: %w", err)
	}
	st.sp = sp
	if col, ok := sp.(prometheus.Collector); ok {
		a.m.reg.MustRegister(col)
	}
	peers := make([]string, 0, len(c.Peers))
	for _, p := range c.Peers {
		peers = append(peers, fmt.Sprintf("%s (AS %d)", p.Address, p.AS))
	}
	a.log.Info("BGP on", "local-as", c.LocalAS, "peers", peers, "import", c.Import, "routable-networks", c.RoutableNetworks,
		"graceful-restart", c.GracefulRestart)
	a.mu.Lock()
	a.bgp = st
	a.mu.Unlock()
	return nil
}

// runBGP runs the speaker until ctx ends. A speaker that cannot start is
// reported (log, /readyz bgpError) and does not end the agent: pod
// networking does not depend on BGP.
func (a *Agent) runBGP(ctx context.Context) error {
	err := a.bgp.sp.Run(ctx)
	if err != nil && ctx.Err() == nil {
		a.log.Error("the BGP speaker stopped; pod networking goes on without it", "err", err)
		a.mu.Lock()
		a.bgpErr = err
		a.mu.Unlock()
	}
	return nil
}

// bgpInputs are the BGP part of the desired state's inputs; nil when BGP
// is off.
func (a *Agent) bgpInputs() *BGPInputs {
	if a.bgp == nil {
		return nil
	}
	in := &BGPInputs{NextHop4: a.bgp.next4, NextHop6: a.bgp.next6, Routable: a.bgp.cfg.RoutableNetworks}
	if a.bgp.cfg.Import {
		in.Learned = a.bgp.sp.Learned()
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
	if a.bgp == nil || s.annOK && !full && slices.Equal(s.announced, routes) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := a.bgp.sp.Announce(actx, routes)
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
// In etcd mode a deleted lease is taken back and nothing is withdrawn.
func (a *Agent) withdrawIfRemoved(ctx context.Context, s *syncer, lost string) {
	if a.bgp == nil || lost != "deleted" || s.withdrawn {
		return
	}
	if _, ok := a.o.Store.(nodeStore); !ok {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := a.bgp.sp.Withdraw(wctx)
	cancel()
	if err != nil {
		a.log.Error("BGP: this node's Node was deleted, and withdrawing its routes failed; the routers drop them when the restart time runs out", "err", err)
	} else {
		a.log.Warn("BGP: this node's Node was deleted: its routes are withdrawn")
	}
	// Announce again once the Node is back, even the same routes.
	s.withdrawn, s.annOK = true, false
	a.mu.Lock()
	a.announced = nil
	a.mu.Unlock()
}

// bgpStatus fills the BGP part of s. The speaker is asked without a.mu
// held.
func (a *Agent) bgpStatus(s *Status) {
	a.mu.Lock()
	st := a.bgp
	s.BGPAnnounced = a.announced
	if a.bgpErr != nil {
		s.BGPErr = a.bgpErr.Error()
	}
	a.mu.Unlock()
	if st == nil {
		return
	}
	s.BGP = st.sp.Status()
	if st.cfg.Import {
		s.BGPLearned = st.sp.Learned()
	}
}
