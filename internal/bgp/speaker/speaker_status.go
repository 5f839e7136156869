package speaker

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/weftnet/weft/internal/bgp"
)

// Peer state and error causes.
//
// GoBGP reports a session's state changes as events (WatchPeer), with a
// reason when it goes down. But its outgoing connections (v4 connects
// out in a goroutine of its own while the session waits in "active")
// fail silently: a refused or timed-out connect, a peer that answers our
// OPEN with a NOTIFICATION, are visible only in GoBGP's log. So the
// speaker reads both: the events for states, flaps and the reason an
// established session went down, and GoBGP's log records (gobgpLog) for
// why a session does not come up.
//
// A session that does not come up is retried every few seconds, each
// time with the same cause: each cause is logged once, when it comes a
// second time (a single one may be a connection collision both sides
// resolve, not a problem), and again only after the session was up.

// peerStates are the sessions' states. Its lock is never held while
// calling GoBGP or Options.Changed.
type peerStates struct {
	mu    sync.Mutex // guards the fields below and peers' values
	peers map[netip.Addr]*peerState
	// start is when Run started the server; synced latches Synced.
	start  time.Time
	synced bool
}

type peerState struct {
	conf      bgp.Peer
	state     string
	since     time.Time
	flaps     uint64
	lastError string
	// causes counts each cause seen since the session was last up;
	// strong counts the strong ones (see noteLocked).
	causes map[string]int
	strong int
	// notification is the last NOTIFICATION the peer sent on an
	// established session (code<<8|subcode), for the line saying why it
	// went down.
	notification uint16
	// complete: the session is established and the peer has sent all
	// its routes: its End-of-RIB came, or none will (graceful restart not
	// negotiated: the routes came with the session).
	complete bool
	// restartBit and forwardingBit are the Restart State bit and the
	// family's Forwarding State bit of the peer's graceful restart
	// capability in its last OPEN (RFC 4724 3): it restarted, and kept
	// forwarding meanwhile.
	restartBit, forwardingBit bool
}

// family is the one address family of a session with peer addr.
func family(addr netip.Addr) gobgp.Family {
	if addr.Is4() {
		return gobgp.RF_IPv4_UC
	}
	return gobgp.RF_IPv6_UC
}

// Synced reports whether Learned is complete: every peer's session is
// established and the peer has sent all its routes (its End-of-RIB
// marker, RFC 4724, where graceful restart was negotiated; the session up
// where it was not), or RestartTime has passed since Run started the
// server (a peer that is not up by then is not waited for; with no peers
// there is nothing to wait for). It stays true once it is (a router's own
// restart is graceful restart's business: its routes stay, as stale,
// until it is back). False before Run has started the server and after
// Withdraw: Learned is nil then. Options.Changed is called when it may
// have turned true.
func (s *Speaker) Synced() bool {
	s.mu.Lock()
	running := s.srv != nil && !s.withdrawn
	s.mu.Unlock()
	if !running {
		return false
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.synced || s.st.start.IsZero() {
		return s.st.synced
	}
	all := true
	for _, p := range s.st.peers {
		all = all && p.complete
	}
	if all || time.Since(s.st.start) >= s.restartTime() {
		s.st.synced = true
		if !all {
			s.log.Info("BGP: not every peer has sent its routes within the restart time; the routes learned so far are taken as complete", "restart-time", s.restartTime())
		}
	}
	return s.st.synced
}

// onEor is GoBGP's callback for an End-of-RIB marker from a peer: the
// peer has sent all its routes of the family.
func (s *Speaker) onEor(eor *apiutil.Path, _ time.Time) {
	addr := eor.PeerAddress.Unmap()
	s.st.mu.Lock()
	p := s.st.peers[addr]
	done := p != nil && p.state == "established" && eor.Family == family(addr) && !p.complete
	if done {
		p.complete = true
	}
	s.st.mu.Unlock()
	if done {
		s.log.Debug("BGP: the peer has sent all its routes (End-of-RIB)", "peer", addr)
		s.notify()
	}
}

// graceful reads the peer's graceful restart capability of its OPEN:
// whether it will send an End-of-RIB for the family of the session (this
// speaker asked for graceful restart and the peer has it for the family),
// and its Restart State and Forwarding State bits.
func (s *Speaker) graceful(addr netip.Addr, caps []gobgp.ParameterCapabilityInterface) (eor, restart, forwarding bool) {
	f := family(addr)
	for _, c := range caps {
		gr, ok := c.(*gobgp.CapGracefulRestart)
		if !ok {
			continue
		}
		restart = gr.Flags&0x08 != 0
		for _, t := range gr.Tuples {
			if t.AFI == f.Afi() && t.SAFI == f.Safi() {
				eor = s.cfg.GracefulRestart
				forwarding = t.Flags&0x80 != 0
			}
		}
	}
	return eor, restart, forwarding
}

func stateName(s gobgp.FSMState) string {
	if int(s) >= 0 && int(s) < len(bgp.SessionStates) {
		return bgp.SessionStates[s]
	}
	return "unknown"
}

// onPeerEvent is GoBGP's callback for a session's state change.
func (s *Speaker) onPeerEvent(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress.Unmap()
	next := stateName(ev.Peer.State.SessionState)
	s.st.mu.Lock()
	p := s.st.peers[addr]
	if p == nil || p.state == next {
		s.st.mu.Unlock()
		return
	}
	prev := p.state
	p.state, p.since = next, at
	var cause string
	switch {
	case next == "established":
		if p.causes[p.lastError] == 1 {
			// A cause seen once before the session came up was a
			// transient (e.g. a connection collision), not a failure.
			p.lastError = ""
		}
		clear(p.causes)
		p.strong = 0
		p.notification = 0
		var eor bool
		eor, p.restartBit, p.forwardingBit = s.graceful(addr, ev.Peer.State.RemoteCap)
		p.complete = !eor
	case prev == "established":
		p.flaps++
		p.complete = false
		cause = s.downCause(addr, p, ev.Peer.State.DisconnectReason, ev.Peer.State.DisconnectMessage)
		if cause != "" {
			p.lastError = cause
			p.causes[cause] = 2 // logged below, not again at the next retry
		}
	default:
		if c := s.eventCause(addr, p, prev, ev.Peer.State.DisconnectReason, ev.Peer.State.DisconnectMessage); c != "" {
			s.noteLocked(addr, p, c, false)
		}
	}
	s.st.mu.Unlock()

	switch {
	case next == "established":
		s.log.Info("BGP session up", "peer", addr, "as", p.conf.AS)
	case prev == "established":
		if cause == "" {
			cause = "closed"
		}
		s.log.Info("BGP session down", "peer", addr, "as", p.conf.AS, "state", next, "cause", cause)
	default:
		s.log.Debug("BGP session state", "peer", addr, "from", prev, "to", next)
	}
	s.notify()
}

// noteLocked records cause c for peer p (not established): it becomes
// p's LastError, and it is logged the second time it comes. A weak cause
// (the peer closed a connection) is often the echo of another one (a
// peer in its idle hold time after an error closes every connection):
// it counts only while no other cause has come. s.st.mu must be held.
func (s *Speaker) noteLocked(addr netip.Addr, p *peerState, c string, weak bool) {
	if p.state == "established" {
		return // a stray outgoing connection's trouble, not the session's
	}
	if weak && p.strong > 0 {
		return
	}
	if !weak {
		p.strong++
	}
	p.lastError = c
	p.causes[c]++
	if p.causes[c] == 2 {
		s.log.Warn("BGP session cannot come up", "peer", addr, "as", p.conf.AS, "cause", c)
	}
}

// note records cause c for the peer at addr.
func (s *Speaker) note(addr netip.Addr, c string, weak bool) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if p := s.st.peers[addr.Unmap()]; p != nil {
		s.noteLocked(addr.Unmap(), p, c, weak)
	}
}

// downCause says why an established session went down.
func (s *Speaker) downCause(addr netip.Addr, p *peerState, r api.PeerState_DisconnectReason, msg string) string {
	switch r {
	case api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:
		return fmt.Sprintf("hold timer expired: no message from peer %s within the hold time", addr)
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		if p.notification != 0 {
			return fmt.Sprintf("peer %s closed the session (NOTIFICATION: %s)", addr, notificationText(uint8(p.notification>>8), uint8(p.notification)))
		}
		return fmt.Sprintf("peer %s closed the session (%s)", addr, msg)
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:
		return fmt.Sprintf("we closed the session with peer %s (%s)", addr, msg)
	case api.PeerState_DISCONNECT_REASON_READ_FAILED, api.PeerState_DISCONNECT_REASON_WRITE_FAILED:
		return fmt.Sprintf("connection to peer %s lost (%s)", addr, msg)
	case api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART:
		return fmt.Sprintf("peer %s closed the connection without a NOTIFICATION: graceful restart, its routes kept as stale until it is back or its restart time ends", addr)
	case api.PeerState_DISCONNECT_REASON_HARD_RESET:
		return fmt.Sprintf("peer %s reset the session (NOTIFICATION: hard reset)", addr)
	case api.PeerState_DISCONNECT_REASON_ADMIN_DOWN, api.PeerState_DISCONNECT_REASON_DECONFIGURED:
		return ""
	}
	if msg == "" || msg == "dying" {
		return ""
	}
	return fmt.Sprintf("session with peer %s went down (%s)", addr, msg)
}

// eventCause says why a session that is not established went back to
// idle, when the event says more than the log does.
func (s *Speaker) eventCause(addr netip.Addr, p *peerState, prev string, r api.PeerState_DisconnectReason, msg string) string {
	switch r {
	case api.PeerState_DISCONNECT_REASON_INVALID_MSG:
		if prev == "openconfirm" {
			// We took the peer's OPEN; it answered ours with something
			// else than a KEEPALIVE: its NOTIFICATION refusing us, which
			// GoBGP neither logs nor reports.
			return s.refusedOpen(addr)
		}
	case api.PeerState_DISCONNECT_REASON_BAD_PEER_AS:
		return badPeerAS(addr, p.conf.AS)
	case api.PeerState_DISCONNECT_REASON_RESTART_TIMER_EXPIRED:
		return fmt.Sprintf("peer %s did not come back within its graceful restart time: its routes are withdrawn", addr)
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		// The event names the NOTIFICATION only in GoBGP's words; the
		// one that matters most is compared in those same words.
		if msg == "notification-received "+gobgp.NewNotificationErrorCode(gobgp.BGP_ERROR_OPEN_MESSAGE_ERROR, gobgp.BGP_ERROR_SUB_BAD_PEER_AS).String() {
			return fmt.Sprintf("peer %s says our AS %d is wrong (OPEN error: bad peer AS)", addr, s.cfg.LocalAS)
		}
		return fmt.Sprintf("peer %s refused the session (%s)", addr, msg)
	}
	return "" // the log record that came with it says it better
}

func (s *Speaker) refusedOpen(addr netip.Addr) string {
	return fmt.Sprintf("peer %s refused our OPEN (AS %d, router ID %s): check that it has this node as a neighbour with AS %d", addr, s.cfg.LocalAS, s.routerID, s.cfg.LocalAS)
}

func badPeerAS(addr netip.Addr, as uint32) string {
	return fmt.Sprintf("peer %s is not AS %d as configured (OPEN error: bad peer AS)", addr, as)
}

// notificationText names a NOTIFICATION's error (RFC 4271 section 4.5,
// RFC 4486).
func notificationText(code, sub uint8) string {
	switch uint16(code)<<8 | uint16(sub) {
	case uint16(gobgp.BGP_ERROR_OPEN_MESSAGE_ERROR)<<8 | uint16(gobgp.BGP_ERROR_SUB_BAD_PEER_AS):
		return "OPEN error: bad peer AS"
	case uint16(gobgp.BGP_ERROR_OPEN_MESSAGE_ERROR)<<8 | uint16(gobgp.BGP_ERROR_SUB_BAD_BGP_IDENTIFIER):
		return "OPEN error: bad BGP identifier"
	case uint16(gobgp.BGP_ERROR_OPEN_MESSAGE_ERROR)<<8 | uint16(gobgp.BGP_ERROR_SUB_UNACCEPTABLE_HOLD_TIME):
		return "OPEN error: unacceptable hold time"
	case uint16(gobgp.BGP_ERROR_CEASE)<<8 | uint16(gobgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN):
		return "Cease: administrative shutdown"
	case uint16(gobgp.BGP_ERROR_CEASE)<<8 | uint16(gobgp.BGP_ERROR_SUB_PEER_DECONFIGURED):
		return "Cease: peer deconfigured"
	case uint16(gobgp.BGP_ERROR_CEASE)<<8 | uint16(gobgp.BGP_ERROR_SUB_ADMINISTRATIVE_RESET):
		return "Cease: administrative reset"
	case uint16(gobgp.BGP_ERROR_CEASE)<<8 | uint16(gobgp.BGP_ERROR_SUB_CONNECTION_REJECTED):
		return "Cease: connection rejected"
	case uint16(gobgp.BGP_ERROR_HOLD_TIMER_EXPIRED) << 8:
		return "hold timer expired"
	}
	return gobgp.NewNotificationErrorCode(code, sub).String()
}

// logCause turns one of GoBGP's log records about the peer at addr into
// a cause, "" when the record is not about trouble; weak: see noteLocked.
// The records are GoBGP v4.8.0's (pkg/server/fsm.go); a test fails when
// they change.
func (s *Speaker) logCause(addr netip.Addr, msg string, a logAttrs) (cause string, weak bool) {
	s.st.mu.Lock()
	p := s.st.peers[addr.Unmap()]
	var conf bgp.Peer
	if p != nil {
		conf = p.conf
	}
	s.st.mu.Unlock()
	if p == nil {
		return "", false
	}
	port := conf.Port
	if port == 0 {
		port = bgp.DefaultPort
	}
	switch msg {
	case "failed to connect":
		// Only GoBGP's log says why a connect failed, as the text of a
		// net.OpError.
		switch {
		case strings.Contains(a.err, "connection refused"):
			return fmt.Sprintf("peer %s refuses connections on port %d (no BGP speaker there, or it has no session for this node)", addr, port), false
		case strings.Contains(a.err, "i/o timeout"):
			return fmt.Sprintf("no answer from peer %s port %d (unreachable, or the TCP MD5 password does not match: a wrong signature is dropped in silence)", addr, port), false
		}
		return fmt.Sprintf("cannot connect to peer %s port %d: %s", addr, port, a.err), false
	case "sent notification":
		switch {
		case a.code == int64(gobgp.BGP_ERROR_OPEN_MESSAGE_ERROR) && a.sub == int64(gobgp.BGP_ERROR_SUB_BAD_PEER_AS):
			return badPeerAS(addr, conf.AS), false
		case a.code == int64(gobgp.BGP_ERROR_FSM_ERROR) && a.sub == 1:
			// The peer answered our OPEN with a NOTIFICATION; GoBGP
			// does not say which.
			return s.refusedOpen(addr), false
		case a.code == int64(gobgp.BGP_ERROR_CEASE):
			return "", false // our own shutdown or a collision
		case a.code >= 0:
			return fmt.Sprintf("peer %s sent an OPEN we refuse (%s)", addr, notificationText(uint8(a.code), uint8(a.sub))), false
		}
	case "received notification":
		if a.code >= 0 {
			s.st.mu.Lock()
			p.notification = uint16(a.code)<<8 | uint16(a.sub)
			s.st.mu.Unlock()
		}
	case "outgoing connection IO error":
		return fmt.Sprintf("peer %s closed the connection after our OPEN without a NOTIFICATION (does it have this node as a neighbour, at this address?)", addr), true
	case "outgoing connection closing due to hold timer expired in OPEN SENT state":
		return fmt.Sprintf("peer %s accepted the connection but sent no OPEN", addr), false
	}
	return "", false
}

// Status returns the peers' sessions, sorted by address.
func (s *Speaker) Status() []bgp.PeerStatus {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	type counts struct{ sent, received int }
	prefixes := map[netip.Addr]counts{}
	if srv != nil {
		_ = srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if p.Conf == nil {
				return
			}
			addr, err := netip.ParseAddr(p.Conf.NeighborAddress)
			if err != nil {
				return
			}
			var c counts
			for _, af := range p.AfiSafis {
				if af.State != nil {
					c.sent += int(af.State.Advertised)
					c.received += int(af.State.Accepted)
				}
			}
			prefixes[addr.Unmap()] = c
		})
	}
	s.st.mu.Lock()
	out := make([]bgp.PeerStatus, 0, len(s.st.peers))
	for addr, p := range s.st.peers {
		c := prefixes[addr]
		out = append(out, bgp.PeerStatus{
			Address: addr, AS: p.conf.AS, State: p.state, Since: p.since,
			Sent: c.sent, Received: c.received, Flaps: p.flaps, LastError: p.lastError,
		})
	}
	s.st.mu.Unlock()
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

// gobgpLog is the slog.Handler GoBGP logs to: it passes GoBGP's records
// on to the speaker's log at Debug (Error at Warn), since GoBGP logs each
// retry of a failing session, and it reads the records that say why a
// session does not come up (Speaker.logCause).
type gobgpLog struct {
	next slog.Handler
	s    *Speaker
	peer netip.Addr // the peer the logger is about: GoBGP's "Key" attribute
}

type logAttrs struct {
	code, sub int64
	err       string
}

func (h *gobgpLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *gobgpLog) Handle(ctx context.Context, r slog.Record) error {
	peer := h.peer
	a := logAttrs{code: -1, sub: -1}
	r.Attrs(func(at slog.Attr) bool {
		switch at.Key {
		case "Key":
			if p, err := netip.ParseAddr(at.Value.String()); err == nil {
				peer = p
			}
		case "Code":
			if at.Value.Kind() == slog.KindInt64 {
				a.code = at.Value.Int64()
			}
		case "Subcode":
			if at.Value.Kind() == slog.KindInt64 {
				a.sub = at.Value.Int64()
			}
		case "Error":
			a.err = at.Value.String()
		}
		return true
	})
	if peer.IsValid() {
		if c, weak := h.s.logCause(peer, r.Message, a); c != "" {
			h.s.note(peer, c, weak)
		}
	}
	level := slog.LevelDebug
	if r.Level >= slog.LevelError {
		level = slog.LevelWarn
	}
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
	r.Attrs(func(at slog.Attr) bool { out.AddAttrs(at); return true })
	return h.next.Handle(ctx, out)
}

func (h *gobgpLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, at := range attrs {
		if at.Key == "Key" {
			if p, err := netip.ParseAddr(at.Value.String()); err == nil {
				c.peer = p
			}
		}
	}
	c.next = h.next.WithAttrs(attrs)
	return &c
}

func (h *gobgpLog) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
