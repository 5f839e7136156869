package kernel

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// UpdateKind says what an Update announces.
type UpdateKind int

const (
	// UpdateLive says the subscription is live: every change after it is
	// announced, so a read made after it misses nothing. Watch sends it
	// once, first.
	UpdateLive UpdateKind = iota + 1
	// UpdateLost says changes were lost (the socket's receive buffer
	// overflowed: ENOBUFS): what the kernel has must be read again.
	UpdateLost
	// UpdateLink: Link changed (RTM_NEWLINK: up or down, MTU, ...), or with
	// Deleted, the link called Link.Name is gone (RTM_DELLINK, or it was
	// renamed: then an UpdateLink for the new name follows).
	UpdateLink
	// UpdateRoute: Route was added to the main table (RTM_NEWROUTE), with
	// Replace replacing the route to its destination, or with Deleted, it
	// was removed (RTM_DELROUTE).
	UpdateRoute
	// UpdateNeigh: Neigh is now the permanent entry for (Dev, IP), or with
	// Deleted, (Dev, IP) has no permanent entry any more (RTM_DELNEIGH, or
	// an RTM_NEWNEIGH that is not permanent).
	UpdateNeigh
	// UpdateFDB: FDB is now the permanent entry for (Dev, MAC) of a vxlan
	// device (RTM_NEWNEIGH of family AF_BRIDGE), or with Deleted, the entry
	// (Dev, MAC, Dst) is gone.
	UpdateFDB
)

// Update is one change a Watcher announces. Only the field its Kind names
// is set.
type Update struct {
	Kind    UpdateKind
	Deleted bool
	Replace bool // UpdateRoute: NLM_F_REPLACE, as `ip route replace` (and weft) write
	Link    Link
	Route   Route
	Neigh   Neigh
	FDB     FDB
}

// Watcher announces the changes of a namespace's links, main-table
// unicast routes, permanent neighbour entries and vxlan FDB entries (`ip
// monitor link route neigh`).
type Watcher interface {
	// Watch subscribes and calls fn with each change, in the kernel's
	// order, from one goroutine; fn must not call the Watcher. Its first
	// call is UpdateLive, once the subscription is live. It returns when
	// ctx ends (with ctx's error) or when the subscription fails (with
	// that error); fn is not called after it returns.
	Watch(ctx context.Context, fn func(Update)) error
}

// Cached is a Kernel that answers Routes, Neighs and FDB from an in-memory
// mirror of the kernel, kept current by a Watcher's subscription (Run), so
// that Apply diffs two in-memory sets and writes only the difference. The
// first read of each table dumps it from the kernel; a write goes through
// to the kernel and, when it succeeds, into the mirror. The link and
// address calls go straight to the wrapped Kernel.
//
// The mirror holds every main-table route, by destination and link (the
// first the dump lists of each, then the latest announced; metrics are not
// kept: a route written in place of another, as weft and `ip route
// replace` write, replaces every other route to its destination but IPv6
// connected ones), and the permanent neighbour and FDB entries of each
// device a read asked for. While no subscription is live (before Run, or
// after it returned) every read dumps, as the wrapped Kernel does.
type Cached struct {
	Kernel // the wrapped kernel; the calls Cached does not define go to it

	w     Watcher
	dumps atomic.Uint64
	drops atomic.Uint64

	// mu guards the fields below. It is held through a dump and a write,
	// so that an update waits for the dump it follows (and is applied on
	// top of it) and the echo of a write finds the write in the mirror.
	mu     sync.Mutex
	live   bool                                 // a subscription is live: reads fill the mirror
	routes map[routeKey]Route                   // by destination and link; nil until dumped
	devs   map[netip.Prefix][]string            // the links of the routes to each destination
	sorted []Route                              // routes by destination; nil when stale
	neighs map[string]*table[netip.Addr, Neigh] // by device; a device is absent until dumped
	fdb    map[string]*table[string, FDB]       // by device; a device is absent until dumped
	// found marks the keys diffInPlace found in the mirror; kept, cleared
	// at each use, so that a sync does not allocate them anew.
	found struct {
		routes map[netip.Prefix]struct{}
		neighs map[neighKey]struct{}
		fdb    map[fdbKey]struct{}
	}
}

// diffInPlace is Diff(want, scope.Filter(everything)) with the conflicts
// Apply finds, computed against the mirror where it lies: its maps are the
// index, and the keys found are marked in maps kept from one sync to the
// next, so a sync allocates in proportion to what it changes, not to the
// cluster. ok is false when the mirror does not hold every table (not
// live, not yet dumped): Apply then reads and diffs as usual.
func (c *Cached) diffInPlace(want Plan, scope Scope) (add, del Plan, conflicts []error, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.routes == nil {
		return add, del, nil, false
	}
	for _, dev := range scope.NeighDevs {
		if c.neighs[dev] == nil || c.fdb[dev] == nil {
			return add, del, nil, false
		}
	}
	if c.found.routes == nil {
		c.found.routes, c.found.neighs, c.found.fdb = map[netip.Prefix]struct{}{}, map[neighKey]struct{}{}, map[fdbKey]struct{}{}
	}
	found := &c.found
	clear(found.routes)
	clear(found.neighs)
	clear(found.fdb)
	// Routes, keyed by destination: the owned route to each wanted one.
	for _, r := range want.Routes {
		var cur, foreign Route
		owned, foreigner := false, false
		for _, dev := range c.devs[r.Dst] {
			x := c.routes[routeKey{r.Dst, dev}]
			if scope.Owns(x) {
				cur, owned = x, true
			} else if !foreigner {
				foreign, foreigner = x, true
			}
		}
		if owned {
			found.routes[r.Dst] = struct{}{}
			if cur.written() == r.written() {
				continue
			}
		}
		if foreigner {
			conflicts = append(conflicts, &ConflictError{Want: r, Have: foreign})
			continue
		}
		add.Routes = append(add.Routes, r)
	}
	// An owned route to a destination nobody wants goes.
	for _, r := range c.routes {
		if _, ok := found.routes[r.Dst]; !ok && scope.Owns(r) {
			del.Routes = append(del.Routes, r)
		}
	}
	// Neighbour and FDB entries, keyed by (device, IP) and (device, MAC),
	// owned on the devices of scope.NeighDevs (neighbours of the
	// networks' families).
	for _, n := range want.Neighs {
		if t := c.neighs[n.Dev]; t != nil {
			if cur, ok := t.m[n.IP]; ok && scope.ownsNeigh(cur) {
				found.neighs[neighKey{n.Dev, n.IP}] = struct{}{}
				if cur == n {
					continue
				}
			}
		}
		add.Neighs = append(add.Neighs, n)
	}
	for _, f := range want.FDB {
		if t := c.fdb[f.Dev]; t != nil && slices.Contains(scope.NeighDevs, f.Dev) {
			if cur, ok := t.m[f.MAC]; ok {
				found.fdb[fdbKey{f.Dev, f.MAC}] = struct{}{}
				if cur == f {
					continue
				}
			}
		}
		add.FDB = append(add.FDB, f)
	}
	for _, dev := range scope.NeighDevs {
		for _, n := range c.neighs[dev].m {
			if _, ok := found.neighs[neighKey{n.Dev, n.IP}]; !ok && scope.ownsNeigh(n) {
				del.Neighs = append(del.Neighs, n)
			}
		}
		for _, f := range c.fdb[dev].m {
			if _, ok := found.fdb[fdbKey{f.Dev, f.MAC}]; !ok {
				del.FDB = append(del.FDB, f)
			}
		}
	}
	return add, del, conflicts, true
}

type neighKey struct {
	dev string
	ip  netip.Addr
}

type fdbKey struct {
	dev, mac string
}

var _ Kernel = (*Cached)(nil)

// NewCached returns k behind a mirror that w keeps current once Run runs.
// w watches the namespace k is the kernel of (a *Netlink is both).
func NewCached(k Kernel, w Watcher) *Cached {
	return &Cached{Kernel: k, w: w, neighs: map[string]*table[netip.Addr, Neigh]{}, fdb: map[string]*table[string, FDB]{}}
}

// RouteGet implements RouteGetter when the wrapped kernel does (it is
// not cached: it is asked once, at start); else it returns
// errors.ErrUnsupported.
func (c *Cached) RouteGet(dst netip.Addr) (string, netip.Addr, error) {
	if g, ok := c.Kernel.(RouteGetter); ok {
		return g.RouteGet(dst)
	}
	return "", netip.Addr{}, errors.ErrUnsupported
}

// Run subscribes through the Watcher and keeps the mirror current until ctx
// ends or the subscription fails. It calls changed (from its own
// goroutine, without a lock: it must not block long) when an update changes
// the mirror: an entry added, changed or removed by someone else (the
// announcement of Cached's own write changes nothing and calls nothing);
// and when the mirror was dropped because it could no longer be trusted (a
// link it has entries of was deleted, renamed or set down: the kernel
// removes that link's routes without announcing it; changes were lost;
// the subscription failed). The next read then dumps again.
//
// Run returns ctx's error when ctx ends, or the subscription's error;
// until Run is called again every read dumps. One Run at a time.
func (c *Cached) Run(ctx context.Context, changed func()) error {
	err := c.w.Watch(ctx, func(u Update) {
		if c.update(u) {
			changed()
		}
	})
	c.mu.Lock()
	c.live = false
	c.dropLocked()
	c.mu.Unlock()
	if ctx.Err() == nil {
		changed() // changes may have been missed
	}
	return err
}

// Invalidate drops the mirror: the next read of each table dumps it again
// (the periodic full resync).
func (c *Cached) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked()
}

// Live reports whether a subscription is live, so that reads are answered
// from the mirror.
func (c *Cached) Live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// Dumps returns how many tables Cached has read from the kernel: a route
// dump, or one device's neighbour or FDB dump, each counts one.
func (c *Cached) Dumps() uint64 { return c.dumps.Load() }

// Drops returns how many times the mirror was dropped (Invalidate, a lost
// update, a link gone or down, the subscription's end).
func (c *Cached) Drops() uint64 { return c.drops.Load() }

// dropLocked forgets the mirror and reports whether any of it was filled;
// c.mu is held.
func (c *Cached) dropLocked() bool {
	filled := c.routes != nil || len(c.neighs) > 0 || len(c.fdb) > 0
	if filled {
		c.drops.Add(1)
	}
	c.routes, c.devs, c.sorted = nil, nil, nil
	clear(c.neighs)
	clear(c.fdb)
	return filled
}

// routeKey is how the mirror tells routes apart.
type routeKey struct {
	dst netip.Prefix
	dev string
}

func keyOf(r Route) routeKey { return routeKey{r.Dst, r.Dev} }

// replaceLocked puts r in the mirror in place of the routes to its
// destination that a replacement takes out; c.mu is held and the routes
// are filled.
func (c *Cached) replaceLocked(r Route) {
	for _, dev := range slices.Clone(c.devs[r.Dst]) {
		k := routeKey{r.Dst, dev}
		if x := c.routes[k]; dev != r.Dev && !(x.Protocol == ProtoKernel && x.Dst.Addr().Is6()) {
			c.delRouteLocked(k)
		}
	}
	c.setRouteLocked(r)
}

// setRouteLocked puts r in the mirror (in place of the route to its
// destination through its link, if any); c.mu is held.
func (c *Cached) setRouteLocked(r Route) {
	k := keyOf(r)
	if _, ok := c.routes[k]; !ok {
		c.devs[r.Dst] = append(c.devs[r.Dst], r.Dev)
	}
	c.routes[k] = r
	c.sorted = nil
}

// delRouteLocked takes the route under k out of the mirror; c.mu is held.
func (c *Cached) delRouteLocked(k routeKey) {
	if _, ok := c.routes[k]; !ok {
		return
	}
	delete(c.routes, k)
	if devs := slices.DeleteFunc(c.devs[k.dst], func(d string) bool { return d == k.dev }); len(devs) > 0 {
		c.devs[k.dst] = devs
	} else {
		delete(c.devs, k.dst)
	}
	c.sorted = nil
}

// sortedLocked returns the routes in order; c.mu is held and the routes
// are filled.
func (c *Cached) sortedLocked() []Route {
	if c.sorted == nil {
		c.sorted = make([]Route, 0, len(c.routes))
		for _, r := range c.routes {
			c.sorted = append(c.sorted, r)
		}
		slices.SortFunc(c.sorted, compareRoutes)
	}
	return c.sorted
}

// update applies u to the mirror and reports whether the mirror changed
// (or was dropped) because of it.
func (c *Cached) update(u Update) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch u.Kind {
	case UpdateLive:
		c.live = true
		c.dropLocked()
		return false
	case UpdateLost:
		c.dropLocked()
		return true
	case UpdateLink:
		name := u.Link.Name
		_, neighs := c.neighs[name]
		_, fdb := c.fdb[name]
		if u.Deleted && !neighs && !fdb {
			// A link that is none of the backend's devices (a pod's veth,
			// most often) is gone, and the kernel took its routes with it
			// without a word: forget those, keep the rest (a dump costs
			// ~100 ms at 5000 peers; pods come and go all day).
			removed := false
			for k := range c.routes {
				if k.dev == name {
					c.delRouteLocked(k)
					removed = true
				}
			}
			return removed
		}
		if (u.Deleted || !u.Link.Up) && c.hasLinkLocked(name) {
			return c.dropLocked()
		}
	case UpdateRoute:
		if c.routes == nil {
			return false
		}
		r := u.Route
		cur, ok := c.routes[keyOf(r)]
		switch {
		case u.Deleted && ok && cur == r:
			c.delRouteLocked(keyOf(r))
			return true
		case u.Deleted:
			return false
		case !u.Replace:
			c.setRouteLocked(r)
			return !ok || cur != r
		}
		n := len(c.routes)
		c.replaceLocked(r)
		return !ok || cur != r || len(c.routes) != n
	case UpdateNeigh:
		n := u.Neigh
		t, ok := c.neighs[n.Dev]
		if !ok {
			return false
		}
		cur, ok := t.m[n.IP]
		switch {
		case u.Deleted && ok:
			t.del(n.IP)
		case u.Deleted, ok && cur == n:
			return false
		default:
			t.set(n.IP, n)
		}
		return true
	case UpdateFDB:
		f := u.FDB
		t, ok := c.fdb[f.Dev]
		if !ok {
			return false
		}
		cur, ok := t.m[f.MAC]
		switch {
		case u.Deleted && ok && cur.Dst == f.Dst:
			t.del(f.MAC)
		case u.Deleted, ok && cur == f:
			return false
		default:
			t.set(f.MAC, f)
		}
		return true
	}
	return false
}

// hasLinkLocked reports whether the mirror holds entries of the link
// called name, or its (possibly empty) neighbour or FDB table; c.mu is
// held.
func (c *Cached) hasLinkLocked(name string) bool {
	if _, ok := c.neighs[name]; ok {
		return true
	}
	if _, ok := c.fdb[name]; ok {
		return true
	}
	for _, r := range c.routes {
		if r.Dev == name {
			return true
		}
	}
	return false
}

// Routes implements Kernel: from the mirror once it is filled.
func (c *Cached) Routes() ([]Route, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.routes == nil {
		routes, err := c.Kernel.Routes()
		c.dumps.Add(1)
		if err != nil || !c.live {
			return routes, err
		}
		c.routes = make(map[routeKey]Route, len(routes))
		c.devs = make(map[netip.Prefix][]string, len(routes))
		for _, r := range routes {
			if _, ok := c.routes[keyOf(r)]; !ok {
				c.setRouteLocked(r)
			}
		}
		c.sorted = nil
	}
	return slices.Clone(c.sortedLocked()), nil
}

// ReplaceRoute implements Kernel.
func (c *Cached) ReplaceRoute(r Route) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.ReplaceRoute(r); err != nil {
		return err
	}
	if c.routes != nil {
		c.replaceLocked(r.written())
	}
	return nil
}

// DeleteRoute implements Kernel.
func (c *Cached) DeleteRoute(r Route) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.DeleteRoute(r); err != nil {
		return err
	}
	if c.routes == nil {
		return nil
	}
	// The kernel deletes the first route that matches (in the mirror's
	// order: by link name).
	devs := slices.Sorted(slices.Values(c.devs[r.Dst]))
	for _, dev := range devs {
		cur := c.routes[routeKey{r.Dst, dev}]
		if (r.Dev == "" || cur.Dev == r.Dev) && (!r.Gw.IsValid() || cur.Gw == r.Gw) && (r.Protocol == 0 || cur.Protocol == r.Protocol) {
			c.delRouteLocked(keyOf(cur))
			break
		}
	}
	return nil
}

// table is one device's neighbour or FDB entries in the mirror, with
// their list in order, kept until they change.
type table[K comparable, E any] struct {
	m      map[K]E
	sorted []E // nil when stale
}

func newTable[K comparable, E any](list []E, key func(E) K) *table[K, E] {
	t := &table[K, E]{m: make(map[K]E, len(list))}
	for _, e := range list {
		t.m[key(e)] = e
	}
	return t
}

func (t *table[K, E]) set(k K, e E) { t.m[k] = e; t.sorted = nil }
func (t *table[K, E]) del(k K)      { delete(t.m, k); t.sorted = nil }

// list returns a copy of the entries, ordered by cmp.
func (t *table[K, E]) list(cmp func(a, b E) int) []E {
	if t.sorted == nil {
		t.sorted = make([]E, 0, len(t.m))
		for _, e := range t.m {
			t.sorted = append(t.sorted, e)
		}
		slices.SortFunc(t.sorted, cmp)
	}
	return slices.Clone(t.sorted)
}

// Neighs implements Kernel: from the mirror once dev's table is filled.
func (c *Cached) Neighs(dev string) ([]Neigh, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.neighs[dev]
	if !ok {
		neighs, err := c.Kernel.Neighs(dev)
		c.dumps.Add(1)
		if err != nil || !c.live {
			return neighs, err
		}
		t = newTable(neighs, func(n Neigh) netip.Addr { return n.IP })
		c.neighs[dev] = t
	}
	return t.list(func(a, b Neigh) int { return a.IP.Compare(b.IP) }), nil
}

// ReplaceNeigh implements Kernel.
func (c *Cached) ReplaceNeigh(n Neigh) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.ReplaceNeigh(n); err != nil {
		return err
	}
	if t, ok := c.neighs[n.Dev]; ok {
		t.set(n.IP, n)
	}
	return nil
}

// DeleteNeigh implements Kernel.
func (c *Cached) DeleteNeigh(n Neigh) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.DeleteNeigh(n); err != nil {
		return err
	}
	if t, ok := c.neighs[n.Dev]; ok {
		t.del(n.IP)
	}
	return nil
}

// FDB implements Kernel: from the mirror once dev's table is filled.
func (c *Cached) FDB(dev string) ([]FDB, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.fdb[dev]
	if !ok {
		fdb, err := c.Kernel.FDB(dev)
		c.dumps.Add(1)
		if err != nil || !c.live {
			return fdb, err
		}
		t = newTable(fdb, func(f FDB) string { return f.MAC })
		c.fdb[dev] = t
	}
	return t.list(func(a, b FDB) int { return strings.Compare(a.MAC, b.MAC) }), nil
}

// ReplaceFDB implements Kernel.
func (c *Cached) ReplaceFDB(f FDB) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.ReplaceFDB(f); err != nil {
		return err
	}
	if t, ok := c.fdb[f.Dev]; ok {
		t.set(f.MAC, f)
	}
	return nil
}

// DeleteFDB implements Kernel.
func (c *Cached) DeleteFDB(f FDB) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Kernel.DeleteFDB(f); err != nil {
		return err
	}
	if t, ok := c.fdb[f.Dev]; ok && t.m[f.MAC].Dst == f.Dst {
		t.del(f.MAC)
	}
	return nil
}

// DeleteLink implements Kernel: the kernel removes the link's routes with
// it without announcing them, so the mirror is dropped.
func (c *Cached) DeleteLink(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.Kernel.DeleteLink(name)
	if c.hasLinkLocked(name) {
		c.dropLocked()
	}
	return err
}

// DeleteAddr implements Kernel: the kernel removes the routes that use the
// address as their source without announcing them, so the routes are read
// again.
func (c *Cached) DeleteAddr(a Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.Kernel.DeleteAddr(a)
	if c.routes != nil {
		c.routes, c.devs, c.sorted = nil, nil, nil
		c.drops.Add(1)
	}
	return err
}

// compareRoutes orders routes by destination, then link.
func compareRoutes(a, b Route) int {
	return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), strings.Compare(a.Dev, b.Dev))
}
