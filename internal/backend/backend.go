// Package backend defines the desired state of a node's data plane, the
// Backend seam, and the pure plan/diff of routes, neighbour and FDB entries
// that the vxlan and host-gw backends share.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// Underlay describes the interface node-to-node traffic uses.
type Underlay struct {
	Name      string
	LinkIndex int
	Addr      netip.Addr     // the node's PublicIP
	MTU       int            // the interface MTU
	OnLink    []netip.Prefix // networks directly attached to the interface
}

// IsOnLink reports whether ip is directly reachable on the underlay.
func (u Underlay) IsOnLink(ip netip.Addr) bool {
	for _, p := range u.OnLink {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// NodeState is the whole desired state handed to a backend.
type NodeState struct {
	Network netip.Prefix  // the cluster network
	Own     lease.Lease   // this node's lease
	Peers   []lease.Lease // every other lease, of any backend type
}

// Report says what an Apply really changed.
type Report struct {
	Added, Removed int
	// Skipped names peers that were not programmed, with the reason.
	Skipped []string
}

// Backend programs the kernel for one backend type.
type Backend interface {
	// LeaseAttrs returns the backend part of this node's lease
	// (BackendType, BackendData).
	LeaseAttrs() lease.Attrs
	// MTU is the MTU pods must use.
	MTU() int
	// Apply makes the kernel match state: it may be called again with the
	// same state (idempotent), adds before it deletes, and removes entries
	// for subnets no peer holds, including ones it did not create.
	Apply(ctx context.Context, state NodeState) (Report, error)
	// Close releases what the backend holds in this process (goroutines,
	// sockets, file descriptors). The kernel state stays, so that pod
	// traffic flows across an agent restart. Apply must not be called
	// after Close.
	Close() error
}

// Route is a route in the main table.
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Link   int
	OnLink bool
}

func (r Route) String() string {
	s := fmt.Sprintf("%s via %s dev#%d", r.Dst, r.Gw, r.Link)
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neigh is a permanent neighbour (ARP/NDP) entry.
type Neigh struct {
	IP   netip.Addr
	MAC  string // canonical lower-case form
	Link int
}

// FDB is a permanent bridge forwarding entry on a vxlan device:
// "MAC dst IP self permanent".
type FDB struct {
	MAC  string
	Dst  netip.Addr
	Link int
}

// Plan is a set of kernel entries.
type Plan struct {
	Routes []Route
	Neighs []Neigh
	FDB    []FDB
}

// Diff compares a desired plan with what the kernel has and returns what
// to write (add or replace) and what to delete. Routes are keyed by
// destination, neighbours by (link, IP), FDB entries by (link, MAC): an entry
// whose key is desired is replaced in place, never deleted.
func Diff(want, have Plan) (add, del Plan) {
	add.Routes, del.Routes = diffBy(want.Routes, have.Routes, func(r Route) netip.Prefix { return r.Dst })
	type nk struct {
		link int
		ip   netip.Addr
	}
	add.Neighs, del.Neighs = diffBy(want.Neighs, have.Neighs, func(n Neigh) nk { return nk{n.Link, n.IP} })
	type fk struct {
		link int
		mac  string
	}
	add.FDB, del.FDB = diffBy(want.FDB, have.FDB, func(f FDB) fk { return fk{f.Link, f.MAC} })
	return add, del
}

// diffBy returns the wanted entries missing from have or different there,
// and the entries of have whose key is not wanted at all.
func diffBy[E comparable, K comparable](want, have []E, key func(E) K) (add, del []E) {
	w := make(map[K]bool, len(want))
	for _, e := range want {
		w[key(e)] = true
	}
	h := make(map[K]E, len(have))
	for _, e := range have {
		h[key(e)] = e
	}
	for _, e := range want {
		if cur, ok := h[key(e)]; !ok || cur != e {
			add = append(add, e)
		}
	}
	for _, e := range have {
		if !w[key(e)] {
			del = append(del, e)
		}
	}
	return add, del
}

// Scope says which kernel entries a backend owns, so that it can remove
// entries it did not create (left by a previous run or planted by hand) and
// leave everything else alone.
type Scope struct {
	Network netip.Prefix // only routes to subnets of the cluster network
	Own     netip.Prefix // never the node's own subnet (the CNI bridge has it)
	// RouteLinks are the links whose routes into Network the backend owns.
	RouteLinks []int
	// NeighLinks are the links whose permanent neighbour and FDB entries
	// the backend owns (the vxlan device; never the underlay).
	NeighLinks []int
}

// Owns reports whether a route is in scope.
func (s Scope) Owns(r Route) bool {
	return slices.Contains(s.RouteLinks, r.Link) && r.Dst.Bits() > s.Network.Bits() &&
		s.Network.Contains(r.Dst.Addr()) && r.Dst != s.Own
}

// Filter drops kernel entries outside the scope.
func (s Scope) Filter(have Plan) Plan {
	var out Plan
	for _, r := range have.Routes {
		if s.Owns(r) {
			out.Routes = append(out.Routes, r)
		}
	}
	for _, n := range have.Neighs {
		if slices.Contains(s.NeighLinks, n.Link) {
			out.Neighs = append(out.Neighs, n)
		}
	}
	for _, f := range have.FDB {
		if slices.Contains(s.NeighLinks, f.Link) {
			out.FDB = append(out.FDB, f)
		}
	}
	return out
}

// CanonicalMAC normalises a MAC address string, or returns "" if invalid.
func CanonicalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return ""
	}
	return strings.ToLower(hw.String())
}

// Kind is one row of the backend table (internal/backend/table): a backend
// type and the functions of its package.
type Kind struct {
	// Type is Backend.Type in net-conf.json, in lower case.
	Type string
	// Parse reads the Backend object of net-conf.json (nil when the
	// document has none), fills in defaults and validates. Errors are
	// *config.Error values naming the key, e.g. "Backend.VNI".
	Parse func(raw json.RawMessage) (Options, error)
	// New builds the backend from options Parse returned. It touches
	// nothing in the kernel before the first Apply; goroutines it starts
	// end when ctx ends or on Close.
	New func(ctx context.Context, env Env, opts Options) (Backend, error)
}

// Options are a backend's resolved options.
type Options interface {
	// Type is the backend type the options are for.
	Type() string
	// Resolved renders the options with every default filled in, in the
	// net-conf.json schema, "Type" included (weft config check).
	Resolved() map[string]any
	// Path says in a few words how this node's packets reach a peer, e.g.
	// "vxlan VNI 1 udp/8472 via flannel.1"; onLink: the peer is on the
	// underlay's own segment.
	Path(onLink bool) string
}

// Env is what a backend is built with.
type Env struct {
	Netlink  *netlink.Handle
	Underlay Underlay
	// ReadOnly is set when the store publishes nothing of this node, so
	// peers' backend data must follow from their addresses.
	ReadOnly bool
	Log      *slog.Logger
}

// Common are the options every backend reads, validated the same way.
type Common struct {
	MTU  int // 0 = derive from the underlay interface
	Port int // 0 = the backend's default
}

// RawCommon are the common options as written; a backend embeds it in the
// struct it decodes its Backend object into (config.DecodeBackend).
type RawCommon struct {
	MTU  *int
	Port *int
}

// Resolve validates MTU and Port.
func (r RawCommon) Resolve() (Common, error) {
	var c Common
	if r.MTU != nil {
		if *r.MTU < 0 || *r.MTU > 65535 {
			return c, &config.Error{Key: "Backend.MTU", Msg: fmt.Sprintf("%d is out of range; use 0 (derive from the interface) or a value up to 65535", *r.MTU)}
		}
		c.MTU = *r.MTU
	}
	if r.Port != nil {
		if *r.Port < 0 || *r.Port > 65535 {
			return c, &config.Error{Key: "Backend.Port", Msg: fmt.Sprintf("%d is not a UDP port; use 1-65535 (or 0 for the default)", *r.Port)}
		}
		c.Port = *r.Port
	}
	return c, nil
}

// InnerMTU is the MTU pods get over a backend that adds overhead bytes to
// each packet: the configured MTU, else the underlay's, less the overhead.
func InnerMTU(u Underlay, configured, overhead int) int {
	mtu := u.MTU
	if configured > 0 {
		mtu = configured
	}
	return mtu - overhead
}
