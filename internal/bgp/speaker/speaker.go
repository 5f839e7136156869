// Package speaker is the BGP speaker itself: GoBGP
// (github.com/osrg/gobgp/v4) in process, configured from a bgp.Config.
// weft-bgp runs it, in a child process of weft-agent (package proc): the
// agent does not link GoBGP.
package speaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/weftnet/weft/internal/bgp"
)

// ConnectRetry is how often GoBGP retries a connection to a peer that is
// not established: a fixed interval with 0-25% jitter (GoBGP has no
// exponential backoff); each attempt's connect times out after
// ConnectRetry-1 s. After a session error GoBGP also waits its idle hold
// time (5 s) before it tries again.
const ConnectRetry = 5 * time.Second

// Speaker is one node's BGP speaker: GoBGP in process, configured from a
// Config. New validates; Run serves; Announce, Withdraw, Learned and
// Status may be called from any goroutine at any time, before, during
// and after Run.
//
// Speaker is a prometheus.Collector; see Describe for its metrics.
type Speaker struct {
	cfg      bgp.Config
	log      *slog.Logger
	changed  func()
	routerID netip.Addr
	port     int32 // GoBGP's listen port; -1: do not listen
	listen   []string
	under4   netip.Addr
	under6   netip.Addr
	// restarting: Options.Restarting.
	restarting bool

	announced     chan struct{} // closed by the first Announce
	announcedOnce sync.Once
	stop          chan struct{} // closed by Withdraw (first thing): Run returns
	stopOnce      sync.Once
	// withdrawDone is closed when Withdraw has sent its NOTIFICATIONs:
	// Run returns no sooner, so that a caller that exits when Run
	// returns (weft-bgp) does not close the sessions before they go.
	withdrawDone     chan struct{}
	withdrawDoneOnce sync.Once

	mu sync.Mutex // guards the fields below; held across GoBGP's path calls (GoBGP's callbacks and log never take it)
	// srv is the running server: nil before Run started it and after it
	// stopped.
	srv       *server.BgpServer
	ran       bool                       // Run was called
	withdrawn bool                       // Withdraw was called: announce nothing any more
	want      map[netip.Prefix]bgp.Route // the last Announce's routes, next hops resolved
	have      map[netip.Prefix]bgp.Route // the routes in GoBGP's RIB

	st peerStates

	// lmu guards learned (taken in GoBGP's best-path callback, so never
	// held across a GoBGP call).
	lmu sync.Mutex
	// learned are the best paths from peers, by prefix, as GoBGP's
	// best-path events report them: read from those events rather than
	// listed from GoBGP's RIB, whose ListPath reads paths that GoBGP's
	// session goroutines write (Path.MarkStale during a peer's graceful
	// restart: a data race in GoBGP v4.8.0 that -race reports).
	learned map[netip.Prefix]bgp.Route
}

// New returns the speaker of c. It opens nothing; Run starts it.
func New(c bgp.Config, o bgp.Options) (*Speaker, error) {
	id, err := bgp.CheckSpeaker(c, o)
	if err != nil {
		return nil, err
	}
	port := int32(c.ListenPort)
	switch {
	case c.ListenPort == 0:
		port = bgp.DefaultPort
	case c.ListenPort < 0:
		port = -1
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Speaker{
		cfg:          c,
		log:          log,
		changed:      o.Changed,
		routerID:     id,
		port:         port,
		under4:       o.Underlay4,
		under6:       o.Underlay6,
		restarting:   o.Restarting,
		announced:    make(chan struct{}),
		stop:         make(chan struct{}),
		withdrawDone: make(chan struct{}),
		have:         map[netip.Prefix]bgp.Route{},
	}
	for _, a := range []netip.Addr{o.Underlay4, o.Underlay6} {
		if a.IsValid() {
			s.listen = append(s.listen, a.String())
		}
	}
	s.st.peers = map[netip.Addr]*peerState{}
	for _, p := range c.Peers {
		s.st.peers[p.Address.Unmap()] = &peerState{conf: p, state: "idle", causes: map[string]int{}}
	}
	return s, nil
}

// Run starts GoBGP, listening on the underlay addresses at
// Config.ListenPort, announces the routes of the last Announce, adds the
// peers and serves until ctx ends. Then it closes the sessions: with
// graceful restart on, without a NOTIFICATION (GoBGP's StopBgp with
// AllowGracefulRestart), so routers keep this node's routes as stale for
// RestartTime while the agent restarts; with it off, with a Cease
// NOTIFICATION, so they drop them. Run returns nil then, and also when
// Withdraw stopped the speaker; it returns an error only when the speaker
// cannot start (e.g. the listen port is taken). Run may be called once.
//
// Peers are added once the first Announce has come (or after
// RestartTime at most: by then a router has dropped this node's stale
// routes anyway): a restarted agent's first UPDATE and End-of-RIB then
// carry its routes, and a router that kept them as stale replaces them
// without a gap instead of dropping them at the End-of-RIB.
func (s *Speaker) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("bgp: speaker already ran")
	}
	s.ran = true
	withdrawn := s.withdrawn
	s.mu.Unlock()
	defer func() {
		if s.stopped() {
			<-s.withdrawDone
		}
	}()
	if withdrawn {
		return nil
	}

	srv := server.NewBgpServer(server.LoggerOption(slog.New(&gobgpLog{next: s.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "gobgp")}), s: s}), nil))
	go srv.Serve()
	global := &api.Global{
		Asn:             s.cfg.LocalAS,
		RouterId:        s.routerID.String(),
		ListenPort:      s.port,
		ListenAddresses: s.listen,
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{}) // ends Serve
		return fmt.Errorf("start BGP speaker AS %d (router ID %s, port %d on %v): %w", s.cfg.LocalAS, s.routerID, s.port, s.listen, err)
	}
	if err := exportOwnOnly(ctx, srv); err != nil {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return err
	}
	watch, cancelWatch := context.WithCancel(context.Background())
	defer cancelWatch()
	err := srv.WatchEvent(watch, server.WatchEventMessageCallbacks{
		OnPeerUpdate: s.onPeerEvent,
		OnBestPath:   s.onBestPath,
		OnPathEor:    s.onEor,
	}, server.WatchPeer(), server.WatchBestPath(false), server.WatchEor(false))
	if err != nil {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("watch BGP events: %w", err)
	}

	s.mu.Lock()
	if s.withdrawn { // Withdraw came while we started
		s.mu.Unlock()
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return nil
	}
	s.srv = srv
	if err := s.syncLocked(); err != nil {
		s.log.Warn("BGP: announce", "error", err)
	}
	s.mu.Unlock()
	s.st.mu.Lock()
	s.st.start = time.Now()
	s.st.mu.Unlock()
	// Synced turns true RestartTime after the start at the latest: tell
	// the agent then.
	settle := time.AfterFunc(s.restartTime(), s.notify)
	defer settle.Stop()

	first := time.NewTimer(s.restartTime())
	select {
	case <-s.announced:
	case <-first.C:
		s.log.Warn("BGP: nothing to announce yet after the restart time; adding the peers anyway", "restart-time", s.restartTime())
	case <-ctx.Done():
	case <-s.stop:
	}
	first.Stop()
	for _, p := range s.cfg.Peers {
		if ctx.Err() != nil {
			break
		}
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			if s.stopped() { // Withdraw closes stop before it stops the server
				return nil
			}
			s.shutdown(false)
			return fmt.Errorf("add BGP peer %s AS %d: %w", p.Address, p.AS, err)
		}
	}

	select {
	case <-ctx.Done():
		s.shutdown(s.cfg.GracefulRestart)
	case <-s.stop:
	}
	return nil
}

// exportPolicy names the export policy exportOwnOnly installs.
const exportPolicy = "weft-own-routes-only"

// exportOwnOnly makes srv announce only the routes this node originates
// (Announce's): a route learned from one peer is never passed on to
// another, which GoBGP does by default from eBGP peer to eBGP peer, so a
// node is never a transit between its routers (and the cluster's
// subnets never reach a router through a node that does not hold them).
// The same as gobgp's `policy statement ... condition route-type local`,
// `global policy export add ... default reject`.
func exportOwnOnly(ctx context.Context, srv *server.BgpServer) error {
	p := &api.Policy{Name: exportPolicy, Statements: []*api.Statement{{
		Name:       exportPolicy + "-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
		return fmt.Errorf("BGP: add export policy %s: %w", exportPolicy, err)
	}
	err := srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("BGP: assign export policy %s: %w", exportPolicy, err)
	}
	return nil
}

// stopped reports whether Withdraw was called.
func (s *Speaker) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// shutdown stops the server. graceful: close the sessions without a
// NOTIFICATION where graceful restart was negotiated.
func (s *Speaker) shutdown(graceful bool) {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	if err := srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Warn("BGP: stop speaker", "error", err)
	}
}

// restartTime is Config.RestartTime or its default.
func (s *Speaker) restartTime() time.Duration {
	if s.cfg.RestartTime > 0 {
		return s.cfg.RestartTime
	}
	return bgp.DefaultRestartTime
}

// deferralTime is how long a restarting speaker (Options.Restarting)
// holds back its UPDATEs for the peers' End-of-RIB (RFC 4724's
// Selection_Deferral_Timer; GoBGP's default is 360 s). This node only
// originates routes, it selects none it passes on: waiting buys nothing
// beyond the peers' routes coming first, and a peer that is down must
// not keep the others from this node's routes for long. Half the
// restart time: routers keep the stale routes meanwhile.
func (s *Speaker) deferralTime() time.Duration {
	return max(s.restartTime()/2, time.Second)
}

// apiPeer is GoBGP's configuration of peer p.
func (s *Speaker) apiPeer(p bgp.Peer) *api.Peer {
	hold := p.HoldTime
	if hold == 0 {
		hold = s.cfg.HoldTime
	}
	if hold == 0 {
		hold = bgp.DefaultHoldTime
	}
	holdSec := max(uint64(hold/time.Second), 3) // RFC 4271: 0 or at least 3 s
	port := uint32(p.Port)
	if port == 0 {
		port = bgp.DefaultPort
	}
	addr := p.Address.Unmap()
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	local := s.under4
	if addr.Is6() {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		local = s.under6
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: addr.String(),
			PeerAsn:         p.AS,
			AuthPassword:    p.Password, // TCP MD5 (RFC 2385), set on the listener and the connecting socket
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(ConnectRetry / time.Second),
			HoldTime:          holdSec,
			KeepaliveInterval: max(holdSec/3, 1),
		}},
		Transport: &api.Transport{RemotePort: port},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: family, Enabled: true},
		}},
	}
	if local.IsValid() {
		ap.Transport.LocalAddress = local.String()
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if s.cfg.GracefulRestart {
		// LocalRestarting: the R bit, the F bit of the family (GoBGP sets
		// both from it, pkg/server/fsm.go), and GoBGP's deferral of its
		// UPDATEs until the peers' End-of-RIB; it clears it then
		// (pkg/server/server.go, handleFSMMessage and softResetOut).
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(s.restartTime() / time.Second),
			DeferralTime: uint32(s.deferralTime() / time.Second), LocalRestarting: s.restarting}
		ap.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return ap
}

// Announce makes routes the complete set of prefixes this node
// announces: GoBGP gets the missing ones and loses the ones no longer
// wanted (level-triggered; calling it again with the same routes changes
// nothing). An IPv4 prefix goes to the IPv4 peers, an IPv6 prefix to the
// IPv6 peers (in MP_REACH_NLRI), each with origin IGP and its NextHop (the
// zero NextHop: the underlay address of its family). Before Run has
// started the server the set is kept and announced when it starts; after
// Withdraw it changes nothing and returns ErrWithdrawn.
func (s *Speaker) Announce(ctx context.Context, routes []bgp.Route) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := make(map[netip.Prefix]bgp.Route, len(routes))
	for _, r := range routes {
		r, err := bgp.ResolveRoute(r, s.under4, s.under6)
		if err != nil {
			return err
		}
		if old, dup := want[r.Prefix]; dup && old.NextHop != r.NextHop {
			return fmt.Errorf("bgp: announce %s: two next hops, %s and %s", r.Prefix, old.NextHop, r.NextHop)
		}
		want[r.Prefix] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.withdrawn {
		return bgp.ErrWithdrawn
	}
	s.want = want
	s.announcedOnce.Do(func() { close(s.announced) })
	if s.srv == nil {
		return nil
	}
	return s.syncLocked()
}

// syncLocked makes GoBGP's local routes s.want: adds first, then
// deletes. s.mu must be held and s.srv set.
func (s *Speaker) syncLocked() error {
	var errs []error
	for _, p := range sortedPrefixes(s.want) {
		r := s.want[p]
		if old, ok := s.have[p]; ok && old == r {
			continue
		}
		path, err := apiPath(r)
		if err == nil {
			// Same prefix, new next hop: GoBGP replaces the path (an
			// implicit withdraw), no delete needed.
			_, err = s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s via %s: %w", r.Prefix, r.NextHop, err))
			continue
		}
		s.have[p] = r
	}
	for _, p := range sortedPrefixes(s.have) {
		if _, ok := s.want[p]; ok {
			continue
		}
		r := s.have[p]
		path, err := apiPath(r)
		if err == nil {
			err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s via %s: %w", r.Prefix, r.NextHop, err))
			continue
		}
		delete(s.have, p)
	}
	return errors.Join(errs...)
}

func sortedPrefixes(m map[netip.Prefix]bgp.Route) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, comparePrefix)
	return ps
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// apiPath is GoBGP's path for r: origin IGP and the next hop, in
// NEXT_HOP for IPv4 and in MP_REACH_NLRI for IPv6 (RFC 4760).
func apiPath(r bgp.Route) (*apiutil.Path, error) {
	nlri, err := gobgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	origin := gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if r.Prefix.Addr().Is4() {
		nh, err := gobgp.NewPathAttributeNextHop(r.NextHop)
		if err != nil {
			return nil, err
		}
		return &apiutil.Path{Family: gobgp.RF_IPv4_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, nh}}, nil
	}
	mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_IPv6_UC, []gobgp.PathNLRI{{NLRI: nlri}}, r.NextHop)
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{Family: gobgp.RF_IPv6_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, mp}}, nil
}

// Withdraw withdraws every route this node announces and closes the
// sessions with a Cease NOTIFICATION (no graceful restart: routers drop
// the routes now), for a node that leaves for good. Run returns. Later
// Announce calls return ErrWithdrawn: a node that comes back needs a new
// Speaker (Run may start one once this one's Withdraw has returned: the
// server is stopped by then).
func (s *Speaker) Withdraw(ctx context.Context) error {
	// Run learns first that what follows is no failure.
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.withdrawn = true
	s.want = nil
	srv := s.srv
	var err error
	if srv != nil && len(s.have) > 0 {
		// Explicit withdrawals first; the NOTIFICATION below drops
		// whatever a router still holds anyway.
		if err = srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
			err = fmt.Errorf("withdraw BGP routes: %w", err)
		}
		clear(s.have)
	}
	s.mu.Unlock()
	s.shutdown(false)
	s.withdrawDoneOnce.Do(func() { close(s.withdrawDone) })
	return err
}

// Learned returns the best routes GoBGP learned from peers (not this
// node's own), sorted by prefix; nil when the speaker is not running.
func (s *Speaker) Learned() []bgp.Route {
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if !running {
		return nil
	}
	s.lmu.Lock()
	out := make([]bgp.Route, 0, len(s.learned))
	for _, r := range s.learned {
		out = append(out, r)
	}
	s.lmu.Unlock()
	if len(out) == 0 {
		return nil
	}
	slices.SortFunc(out, func(a, b bgp.Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// nextHop is the next hop in a path's attributes.
func nextHop(attrs []gobgp.PathAttributeInterface) netip.Addr {
	for _, a := range attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			return a.Value.Unmap()
		case *gobgp.PathAttributeMpReachNLRI:
			return a.Nexthop.Unmap()
		}
	}
	return netip.Addr{}
}

// onBestPath is GoBGP's callback for best-path changes, one path per
// prefix whose best path changed: a best path from a peer is what that
// prefix is learned as; a withdrawal, or our own path becoming the best,
// unlearns it. A change is news for the agent.
func (s *Speaker) onBestPath(paths []*apiutil.Path, _ time.Time) {
	changed := false
	s.lmu.Lock()
	for _, p := range paths {
		n, ok := p.Nlri.(*gobgp.IPAddrPrefix)
		if !ok {
			continue
		}
		nh := nextHop(p.Attrs)
		_, had := s.learned[n.Prefix]
		if p.Withdrawal || !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified() || !nh.IsValid() {
			if had {
				delete(s.learned, n.Prefix)
				changed = true
			}
			continue
		}
		if s.learned == nil {
			s.learned = map[netip.Prefix]bgp.Route{}
		}
		r := bgp.Route{Prefix: n.Prefix, NextHop: nh, Peer: p.PeerAddress.Unmap()}
		if s.learned[n.Prefix] != r {
			s.learned[n.Prefix] = r
			changed = true
		}
	}
	s.lmu.Unlock()
	if changed {
		s.notify()
	}
}

func (s *Speaker) notify() {
	if s.changed != nil {
		s.changed()
	}
}
