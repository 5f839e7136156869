package bgp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// ErrWithdrawn is Announce's error after Withdraw: a speaker that
// withdrew is done; a node that comes back needs a new one.
var ErrWithdrawn = errors.New("bgp: the speaker withdrew this node's routes and stopped (Withdraw); a new speaker must announce them")

// Options are what a speaker needs from the node beyond its Config.
type Options struct {
	// Log receives the speaker's lines: a session going up or down at
	// Info, each distinct error cause once at Warn, GoBGP's own log at
	// Debug. nil: slog.Default().
	Log *slog.Logger
	// Underlay4 and Underlay6 are the node's underlay addresses: the
	// addresses the speaker listens and connects on, the next hop of a
	// Route announced without one, and (Underlay4) the router ID when
	// Config.RouterID is unset.
	Underlay4, Underlay6 netip.Addr
	// Changed is called (from GoBGP's event goroutine, or a timer's)
	// when learned routes, a peer's state or Synced changed. It must not
	// block. nil: none.
	Changed func()
	// Restarting: the agent restarts over a data plane still in place
	// (its subnet is the one it had): with graceful restart on, the
	// speaker is the Restarting Speaker of RFC 4724. Its OPEN carries the
	// Restart State (R) bit and, for its family, the Forwarding State (F)
	// bit, so that routers keep this node's stale routes until its
	// End-of-RIB instead of flushing them when the session comes back
	// (RFC 4724 4.2: F clear means flush at once); and GoBGP defers its
	// first UPDATEs until the peers' End-of-RIB (or deferralTime), then
	// sends this node's routes and its End-of-RIB.
	Restarting bool
}

// CheckSpeaker checks what a speaker of c needs: a local AS, an IPv4
// router ID (c's, else o.Underlay4, which it returns), a listen port in
// range, and peers each with an address and an AS, none twice.
func CheckSpeaker(c Config, o Options) (routerID netip.Addr, err error) {
	if c.LocalAS == 0 {
		return netip.Addr{}, errors.New("bgp: local AS is not set")
	}
	id := c.RouterID
	if !id.IsValid() {
		id = o.Underlay4
	}
	if !id.IsValid() {
		return netip.Addr{}, errors.New("bgp: no router ID: this node has no IPv4 underlay address; set the router ID")
	}
	if !id.Is4() {
		return netip.Addr{}, fmt.Errorf("bgp: router ID %s is not an IPv4 address", id)
	}
	if c.ListenPort > 65535 {
		return netip.Addr{}, fmt.Errorf("bgp: listen port %d is out of range", c.ListenPort)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		a := p.Address.Unmap()
		if !a.IsValid() {
			return netip.Addr{}, errors.New("bgp: a peer has no address")
		}
		if p.AS == 0 {
			return netip.Addr{}, fmt.Errorf("bgp: peer %s has no AS", a)
		}
		if seen[a] {
			return netip.Addr{}, fmt.Errorf("bgp: peer %s is configured twice", a)
		}
		seen[a] = true
	}
	return id, nil
}

// ResolveRoute checks a route to announce and fills in its next hop: the
// underlay address of its family (u4 or u6) when it has none. The
// prefix is masked, addresses unmapped, Peer cleared.
func ResolveRoute(r Route, u4, u6 netip.Addr) (Route, error) {
	if !r.Prefix.IsValid() {
		return r, errors.New("bgp: announce: a route has no prefix")
	}
	r.Prefix = netip.PrefixFrom(r.Prefix.Addr().Unmap(), r.Prefix.Bits()).Masked()
	r.NextHop = r.NextHop.Unmap()
	r.Peer = netip.Addr{}
	if !r.NextHop.IsValid() {
		r.NextHop = u4
		if r.Prefix.Addr().Is6() {
			r.NextHop = u6
		}
		if !r.NextHop.IsValid() {
			return r, fmt.Errorf("bgp: announce %s: no next hop and no underlay address of its family", r.Prefix)
		}
	}
	if r.NextHop.Is4() != r.Prefix.Addr().Is4() {
		return r, fmt.Errorf("bgp: announce %s: next hop %s is of the other family", r.Prefix, r.NextHop)
	}
	return r, nil
}
