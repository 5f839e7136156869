// Package kerneltest holds Fake, an in-memory kernel.Kernel for tests. It
// keeps links, addresses, main-table routes, neighbour and FDB entries, so
// reads see earlier writes; it can be preloaded with what a node already
// has, made to fail chosen calls, and it records every write as the
// iproute2 command that does the same, one a line, for golden tests. It is
// a kernel.Watcher too: its changes, weft's writes and the ones made "by
// hand" through its other methods, are announced as the kernel announces
// them.
//
// It lives beside package kernel rather than in it so that package kernel's
// own tests use it from outside (package kernel_test), through the exported
// contract only, as a backend's tests do; and so that nothing a node runs
// imports it.
package kerneltest

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/weftnet/weft/internal/kernel"
)

// Fake is an in-memory kernel.Kernel. It models what the backends rely on
// and what a kernel does on its own when things change under them:
// deleting a link removes its addresses, routes and entries; setting a link
// down (SetDown) removes the routes through it and its neighbour entries
// (FDB entries stay); a route needs its link up, and a gateway that is not
// onlink must lie in a network of the link's addresses; a vxlan device's
// MTU is at most its lower link's less 50; deleting a primary IPv4 address
// deletes the secondary ones in its network. It keeps none of the routes and
// addresses the kernel generates itself (connected and local routes, IPv6
// link-local addresses). The paired tests of package kernel run the same
// scenarios here and in a real namespace and compare what they read back.
type Fake struct {
	mu     sync.Mutex // guards every field below
	next   int        // the next link index
	links  map[int]*kernel.Link
	addrs  []kernel.Addr
	routes []kernel.Route
	neighs []neigh
	fdb    []kernel.FDB
	fails  []fail
	writes []string
	// watchers are the live subscriptions of Watch, each with the
	// updates queued for it.
	watchers map[*watcher]bool
	watched  *sync.Cond // on mu: a watcher delivered its queue or ended
}

// watcher is one subscription of Watch; Fake.mu guards its fields.
type watcher struct {
	queue     []kernel.Update
	queued    int           // updates queued so far
	delivered int           // updates fn has returned from
	wake      chan struct{} // 1 slot: the queue has updates
	fail      chan error    // 1 slot: end the subscription with this error
	ended     bool
}

type neigh struct {
	kernel.Neigh
	permanent bool // else learnt by the kernel
}

type fail struct {
	prefix string
	err    error
}

var (
	_ kernel.Kernel  = (*Fake)(nil)
	_ kernel.Watcher = (*Fake)(nil)
)

// New returns a kernel with only lo (index 1, up, 127.0.0.1/8), as a new
// network namespace has once its loopback is up.
func New() *Fake {
	f := &Fake{next: 1, links: map[int]*kernel.Link{}, watchers: map[*watcher]bool{}}
	f.watched = sync.NewCond(&f.mu)
	lo := f.AddDevice(kernel.Link{Name: "lo", Kind: "device", MTU: 65536, Up: true})
	f.addrs = append(f.addrs, kernel.Addr{Dev: lo.Name, Prefix: netip.MustParsePrefix("127.0.0.1/8")})
	return f
}

// Writes returns the commands of the writes made since the last call, one
// a line, and forgets them. A failed write is not listed.
func (f *Fake) Writes() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := strings.Join(f.writes, "\n")
	if s != "" {
		s += "\n"
	}
	f.writes = nil
	return s
}

// Fail makes every later call whose command starts with prefix fail with
// err (and change nothing), until Fail(prefix, nil). Reads have commands
// too: "ip link show NAME", "ip addr show", "ip route show table main",
// "ip neigh show dev NAME", "bridge fdb show dev NAME".
func (f *Fake) Fail(prefix string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails = slices.DeleteFunc(f.fails, func(x fail) bool { return x.prefix == prefix })
	if err != nil {
		f.fails = append(f.fails, fail{prefix, err})
	}
}

// The methods below stand for what others do (the node's own setup,
// another program, an administrator by hand); they are not recorded.

// AddDevice adds a link of any kind, such as the underlay (a "veth" or
// "device") or a TUN device a backend opened, with the next free index
// unless l.Index is set. It returns the link.
func (f *Fake) AddDevice(l kernel.Link) kernel.Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Index == 0 {
		l.Index = f.next
	}
	f.next = max(f.next, l.Index+1)
	f.links[l.Index] = &l
	f.emitLink(&l, false)
	return l
}

// AddUnderlay adds eth0 (a veth, MTU 1500, up) with the addresses given
// ("192.0.2.1/24", "2001:db8:0:1::1/64") and returns the underlay over it
// as the agent finds it: Addr and Addr6 the first address of each family,
// OnLink their networks (link-local addresses count for neither). Nothing
// is recorded as written.
func (f *Fake) AddUnderlay(addrs ...string) (kernel.Underlay, error) {
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, MAC: "02:00:c0:00:02:01", Up: true})
	u := kernel.Underlay{Name: eth0.Name, LinkIndex: eth0.Index, MTU: eth0.MTU}
	for _, s := range addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return u, err
		}
		f.mu.Lock()
		f.addrs = append(f.addrs, kernel.Addr{Dev: eth0.Name, Prefix: p})
		f.mu.Unlock()
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		first := &u.Addr
		if p.Addr().Is6() {
			first = &u.Addr6
		}
		if !first.IsValid() {
			*first = p.Addr()
		}
		u.OnLink = append(u.OnLink, p.Masked())
	}
	return u, nil
}

// RemoveDevice removes a link as the kernel does when it goes away on its
// own (a TUN device whose last descriptor was closed), with what DeleteLink
// removes. A missing link is no error.
func (f *Fake) RemoveDevice(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			f.remove(l.Index)
			return
		}
	}
}

// remove deletes a link and everything on it, announcing the link only
// (the kernel does not announce the routes it removes with a link); f.mu
// is held.
func (f *Fake) remove(index int) {
	l := f.links[index]
	name := l.Name
	delete(f.links, index)
	f.emitLink(l, true)
	f.addrs = slices.DeleteFunc(f.addrs, func(a kernel.Addr) bool { return a.Dev == name })
	f.routes = slices.DeleteFunc(f.routes, func(r kernel.Route) bool { return r.Dev == name })
	f.neighs = slices.DeleteFunc(f.neighs, func(n neigh) bool { return n.Dev == name })
	f.fdb = slices.DeleteFunc(f.fdb, func(e kernel.FDB) bool { return e.Dev == name })
}

// SetDown is `ip link set NAME down` by hand: the kernel removes the routes
// through the link and its neighbour entries with it.
func (f *Fake) SetDown(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.byName("ip link set "+name+" down", name)
	if err != nil {
		return err
	}
	l.Up = false
	f.routes = slices.DeleteFunc(f.routes, func(r kernel.Route) bool { return r.Dev == name })
	f.neighs = slices.DeleteFunc(f.neighs, func(n neigh) bool { return n.Dev == name })
	f.emitLink(l, false) // and nothing of what went with it
	return nil
}

// AddLearnedNeigh adds a neighbour entry the kernel learnt itself (state
// reachable, not permanent), which Neighs does not list.
func (f *Fake) AddLearnedNeigh(n kernel.Neigh) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.neighs = slices.DeleteFunc(f.neighs, func(x neigh) bool { return x.Dev == n.Dev && x.IP == n.IP })
	f.neighs = append(f.neighs, neigh{Neigh: n})
	f.emit(kernel.Update{Kind: kernel.UpdateNeigh, Deleted: true, Neigh: kernel.Neigh{IP: n.IP, Dev: n.Dev}})
}

// AddRoute adds a route as another program or an administrator does
// (`ip route add`): with r.Protocol, boot when 0, as iproute2 writes it.
// It replaces the route to r.Dst, if any, and needs no link: a route to a
// link that the fake does not know stands for one the kernel keeps on its
// own (a connected route).
func (f *Fake) AddRoute(r kernel.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Protocol == 0 {
		r.Protocol = kernel.ProtoBoot
	}
	f.routes = slices.DeleteFunc(f.routes, func(x kernel.Route) bool { return x.Dst == r.Dst })
	f.routes = append(f.routes, r)
	f.emit(kernel.Update{Kind: kernel.UpdateRoute, Replace: true, Route: r})
}

// RemoveRoute is `ip route del DST` by hand.
func (f *Fake) RemoveRoute(dst netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteRoutes(func(x kernel.Route) bool { return x.Dst == dst })
}

// RemoveNeigh is `ip neigh del IP dev DEV` by hand.
func (f *Fake) RemoveNeigh(dev string, ip netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteNeighs(func(x neigh) bool { return x.Dev == dev && x.IP == ip })
}

// RemoveFDB is `bridge fdb del MAC dev DEV` by hand.
func (f *Fake) RemoveFDB(dev, mac string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteFDB(func(x kernel.FDB) bool { return x.Dev == dev && x.MAC == mac })
}

// deleteRoutes removes the routes del matches and announces each; f.mu
// is held.
func (f *Fake) deleteRoutes(del func(kernel.Route) bool) {
	f.routes = slices.DeleteFunc(f.routes, func(x kernel.Route) bool {
		if del(x) {
			f.emit(kernel.Update{Kind: kernel.UpdateRoute, Deleted: true, Route: x})
			return true
		}
		return false
	})
}

// deleteNeighs removes the neighbour entries del matches and announces
// each; f.mu is held.
func (f *Fake) deleteNeighs(del func(neigh) bool) {
	f.neighs = slices.DeleteFunc(f.neighs, func(x neigh) bool {
		if del(x) {
			f.emit(kernel.Update{Kind: kernel.UpdateNeigh, Deleted: true, Neigh: kernel.Neigh{IP: x.IP, Dev: x.Dev}})
			return true
		}
		return false
	})
}

// deleteFDB removes the FDB entries del matches and announces each; f.mu
// is held.
func (f *Fake) deleteFDB(del func(kernel.FDB) bool) {
	f.fdb = slices.DeleteFunc(f.fdb, func(x kernel.FDB) bool {
		if del(x) {
			f.emit(kernel.Update{Kind: kernel.UpdateFDB, Deleted: true, FDB: x})
			return true
		}
		return false
	})
}

// Overflow makes every subscription announce that changes were lost, as
// the kernel does when a subscriber's socket buffer overflows (ENOBUFS).
func (f *Fake) Overflow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emit(kernel.Update{Kind: kernel.UpdateLost})
}

// FailWatch ends every subscription with err, once it has delivered what
// was queued before.
func (f *Fake) FailWatch(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		select {
		case w.fail <- err:
		default:
		}
	}
}

// Watch implements kernel.Watcher. Its subscription is live as soon as it
// is called; the updates are delivered from the calling goroutine, in the
// order of the changes.
func (f *Fake) Watch(ctx context.Context, fn func(kernel.Update)) error {
	w := &watcher{wake: make(chan struct{}, 1), fail: make(chan error, 1)}
	f.mu.Lock()
	f.watchers[w] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.watchers, w)
		w.ended = true
		f.watched.Broadcast()
		f.mu.Unlock()
	}()
	fn(kernel.Update{Kind: kernel.UpdateLive})
	for {
		var failed error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		case failed = <-w.fail:
		}
		f.mu.Lock()
		q := w.queue
		w.queue = nil
		f.mu.Unlock()
		for _, u := range q {
			fn(u)
		}
		f.mu.Lock()
		w.delivered += len(q)
		f.watched.Broadcast()
		f.mu.Unlock()
		if failed != nil {
			return failed
		}
	}
}

// Flush waits until every subscription has delivered the updates of the
// changes made so far (or ended).
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		for upTo := w.queued; w.delivered < upTo && !w.ended; {
			f.watched.Wait()
		}
	}
}

// emit queues u for every subscription; f.mu is held.
func (f *Fake) emit(u kernel.Update) {
	for w := range f.watchers {
		w.queue = append(w.queue, u)
		w.queued++
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// emitLink announces a link's new state, or that it is gone; f.mu is held.
func (f *Fake) emitLink(l *kernel.Link, deleted bool) {
	f.emit(kernel.Update{Kind: kernel.UpdateLink, Deleted: deleted, Link: *l})
}

// The methods below implement kernel.Kernel.

// names names links by index for AddLinkCmd; f.mu is held.
func (f *Fake) names(index int) string {
	if l, ok := f.links[index]; ok {
		return l.Name
	}
	return fmt.Sprintf("if%d", index)
}

// call checks an injected failure for cmd; f.mu is held.
func (f *Fake) call(cmd string) error {
	for _, x := range f.fails {
		if strings.HasPrefix(cmd, x.prefix) {
			return kernel.Failed(cmd, x.err)
		}
	}
	return nil
}

// wrote records a successful write; f.mu is held.
func (f *Fake) wrote(cmd string) { f.writes = append(f.writes, cmd) }

func errno(cmd string, e syscall.Errno) error {
	if e == syscall.ENODEV {
		return kernel.Failed(cmd, kernel.NotFound(e))
	}
	return kernel.Failed(cmd, e)
}

// byName finds a link for cmd; f.mu is held.
func (f *Fake) byName(cmd, name string) (*kernel.Link, error) {
	if err := f.call(cmd); err != nil {
		return nil, err
	}
	for _, l := range f.links {
		if l.Name == name {
			return l, nil
		}
	}
	return nil, errno(cmd, syscall.ENODEV)
}

// index is the index of the link called name, or 0; f.mu is held.
func (f *Fake) index(name string) int {
	for _, l := range f.links {
		if l.Name == name {
			return l.Index
		}
	}
	return 0
}

// byIndex finds a link for cmd; f.mu is held.
func (f *Fake) byIndex(cmd string, index int) (*kernel.Link, error) {
	if err := f.call(cmd); err != nil {
		return nil, err
	}
	if l, ok := f.links[index]; ok {
		return l, nil
	}
	return nil, errno(cmd, syscall.ENODEV)
}

// LinkByName implements kernel.Kernel.
func (f *Fake) LinkByName(name string) (kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.byName("ip link show "+name, name)
	if err != nil {
		return kernel.Link{}, err
	}
	return *l, nil
}

// LinkByIndex implements kernel.Kernel.
func (f *Fake) LinkByIndex(index int) (kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.byIndex(fmt.Sprintf("ip link show if%d", index), index)
	if err != nil {
		return kernel.Link{}, err
	}
	return *l, nil
}

// maxMTU is the largest MTU of a link of kind and vxlan attributes v, as
// the kernel enforces it: a vxlan device's lower device's MTU less the
// headroom of its family (VXLAN_HEADROOM 50 over IPv4, VXLAN6_HEADROOM 70
// over IPv6); f.mu is held.
func (f *Fake) maxMTU(kind string, v kernel.VXLAN) int {
	if lower, ok := f.links[v.Dev]; ok && kind == kernel.KindVXLAN {
		if v.Local.Is6() {
			return lower.MTU - 70
		}
		return lower.MTU - 50
	}
	return 65535
}

// AddLink implements kernel.Kernel.
func (f *Fake) AddLink(l kernel.Link) (kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.AddLinkCmd(l, f.names)
	if err := f.call(cmd); err != nil {
		return kernel.Link{}, err
	}
	if l.Kind != kernel.KindVXLAN {
		return kernel.Link{}, errno(cmd, syscall.EOPNOTSUPP)
	}
	for _, x := range f.links {
		if x.Name == l.Name {
			return kernel.Link{}, errno(cmd, syscall.EEXIST)
		}
	}
	if _, ok := f.links[l.VXLAN.Dev]; l.VXLAN.Dev != 0 && !ok {
		return kernel.Link{}, errno(cmd, syscall.ENODEV)
	}
	if l.MAC != "" && kernel.CanonicalMAC(l.MAC) != l.MAC {
		return kernel.Link{}, errno(cmd, syscall.EINVAL)
	}
	limit := f.maxMTU(l.Kind, l.VXLAN)
	if l.MTU > limit {
		return kernel.Link{}, errno(cmd, syscall.EINVAL)
	}
	l.Index = f.next
	f.next++
	if l.MTU == 0 {
		l.MTU = min(limit, 1500)
	}
	if l.MAC == "" { // the kernel picks a random one; this one is stable
		l.MAC = net.HardwareAddr{0x0e, 0xfa, 0xce, 0, byte(l.Index >> 8), byte(l.Index)}.String()
	}
	l.Up = false
	f.links[l.Index] = &l
	f.wrote(cmd)
	f.emitLink(&l, false)
	return l, nil
}

// DeleteLink implements kernel.Kernel.
func (f *Fake) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.LinkCmd("del", name)
	l, err := f.byName(cmd, name)
	if kernel.IsNotFound(err) {
		f.wrote(cmd)
		return nil
	}
	if err != nil {
		return err
	}
	f.remove(l.Index)
	f.wrote(cmd)
	return nil
}

// set runs one change on a link; f.mu is held.
func (f *Fake) set(name string, change func(*kernel.Link) syscall.Errno, args ...string) error {
	cmd := kernel.LinkCmd("set", name, args...)
	l, err := f.byName(cmd, name)
	if err != nil {
		return err
	}
	if e := change(l); e != 0 {
		return errno(cmd, e)
	}
	f.wrote(cmd)
	f.emitLink(l, false)
	return nil
}

// SetLinkMTU implements kernel.Kernel.
func (f *Fake) SetLinkMTU(name string, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set(name, func(l *kernel.Link) syscall.Errno {
		if mtu < 68 || mtu > f.maxMTU(l.Kind, l.VXLAN) {
			return syscall.EINVAL
		}
		l.MTU = mtu
		return 0
	}, "mtu", fmt.Sprint(mtu))
}

// SetLinkMAC implements kernel.Kernel.
func (f *Fake) SetLinkMAC(name, mac string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set(name, func(l *kernel.Link) syscall.Errno {
		switch {
		case l.MAC == "":
			return syscall.EOPNOTSUPP // a TUN device has no MAC
		case kernel.CanonicalMAC(mac) != mac:
			return syscall.EINVAL
		}
		l.MAC = mac
		return 0
	}, "address", mac)
}

// SetLinkUp implements kernel.Kernel.
func (f *Fake) SetLinkUp(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set(name, func(l *kernel.Link) syscall.Errno { l.Up = true; return 0 }, "up")
}

// SetIPv6AddrGen implements kernel.Kernel. The fake generates no
// link-local addresses, so the mode changes nothing it keeps.
func (f *Fake) SetIPv6AddrGen(name string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	mode := "none"
	if on {
		mode = "eui64"
	}
	return f.set(name, func(*kernel.Link) syscall.Errno { return 0 }, "addrgenmode", mode)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Addrs implements kernel.Kernel: by link, then address.
func (f *Fake) Addrs() ([]kernel.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ip addr show"); err != nil {
		return nil, err
	}
	out := slices.Clone(f.addrs)
	slices.SortFunc(out, func(a, b kernel.Addr) int {
		return cmp.Or(cmp.Compare(f.index(a.Dev), f.index(b.Dev)), comparePrefix(a.Prefix, b.Prefix))
	})
	return out, nil
}

// ReplaceAddr implements kernel.Kernel.
func (f *Fake) ReplaceAddr(a kernel.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.AddrCmd("replace", a)
	if _, err := f.byName(cmd, a.Dev); err != nil {
		return err
	}
	if i := slices.IndexFunc(f.addrs, a.Same); i >= 0 {
		f.addrs[i] = a
	} else {
		f.addrs = append(f.addrs, a)
	}
	f.wrote(cmd)
	return nil
}

// DeleteAddr implements kernel.Kernel.
func (f *Fake) DeleteAddr(a kernel.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.AddrCmd("del", a)
	if err := f.call(cmd); err != nil {
		return err
	}
	// Deleting a primary IPv4 address deletes the secondary ones in its
	// network with it (net.ipv4.conf.*.promote_secondaries is 0 in a new
	// namespace). The primary is the first address of the network on the
	// link.
	var primary bool
	for _, x := range f.addrs {
		if x.Dev == a.Dev && x.Prefix.Addr().Is4() && x.Prefix.Masked() == a.Prefix.Masked() {
			primary = x.Same(a)
			break
		}
	}
	f.addrs = slices.DeleteFunc(f.addrs, func(x kernel.Addr) bool {
		return x.Same(a) || primary && x.Dev == a.Dev && x.Prefix.Masked() == a.Prefix.Masked()
	})
	f.wrote(cmd)
	return nil
}

// Routes implements kernel.Kernel: by destination.
func (f *Fake) Routes() ([]kernel.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ip route show table main"); err != nil {
		return nil, err
	}
	out := slices.Clone(f.routes)
	slices.SortFunc(out, func(a, b kernel.Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out, nil
}

// ReplaceRoute implements kernel.Kernel.
func (f *Fake) ReplaceRoute(r kernel.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.RouteCmd("replace", r)
	l, err := f.byName(cmd, r.Dev)
	if err != nil {
		return err
	}
	if !l.Up {
		return errno(cmd, syscall.ENETDOWN) // "Nexthop device is not up"
	}
	if r.Gw.IsValid() && !r.OnLink && !f.covers(l.Name, r.Gw) {
		return errno(cmd, syscall.ENETUNREACH) // "Nexthop has invalid gateway"
	}
	if r.Protocol == 0 {
		r.Protocol = kernel.ProtoWeft
	}
	// The kernel announces a replacement (no deletion of the route it
	// replaces), and nothing when the route is there as it is.
	if !slices.Contains(f.routes, r) {
		f.routes = slices.DeleteFunc(f.routes, func(x kernel.Route) bool { return x.Dst == r.Dst })
		f.routes = append(f.routes, r)
		f.emit(kernel.Update{Kind: kernel.UpdateRoute, Replace: true, Route: r})
	}
	f.wrote(cmd)
	return nil
}

// covers reports whether an address of the link has a network that holds
// ip; f.mu is held.
func (f *Fake) covers(dev string, ip netip.Addr) bool {
	for _, a := range f.addrs {
		if a.Dev == dev && a.Prefix.Masked().Contains(ip) {
			return true
		}
	}
	return false
}

// DeleteRoute implements kernel.Kernel: the route to r.Dst goes if its
// link, gateway and protocol match those given.
func (f *Fake) DeleteRoute(r kernel.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.RouteCmd("del", r)
	if err := f.call(cmd); err != nil {
		return err
	}
	f.deleteRoutes(func(x kernel.Route) bool {
		return x.Dst == r.Dst && (r.Dev == "" || x.Dev == r.Dev) && (!r.Gw.IsValid() || x.Gw == r.Gw) &&
			(r.Protocol == 0 || x.Protocol == r.Protocol)
	})
	f.wrote(cmd)
	return nil
}

// Neighs implements kernel.Kernel: by address.
func (f *Fake) Neighs(dev string) ([]kernel.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.byName("ip neigh show dev "+dev, dev); err != nil {
		return nil, err
	}
	var out []kernel.Neigh
	for _, n := range f.neighs {
		if n.Dev == dev && n.permanent {
			out = append(out, n.Neigh)
		}
	}
	slices.SortFunc(out, func(a, b kernel.Neigh) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// ReplaceNeigh implements kernel.Kernel.
func (f *Fake) ReplaceNeigh(n kernel.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.NeighCmd("replace", n)
	if _, err := f.byName(cmd, n.Dev); err != nil {
		return err
	}
	if kernel.CanonicalMAC(n.MAC) != n.MAC {
		return errno(cmd, syscall.EINVAL)
	}
	if !slices.Contains(f.neighs, neigh{Neigh: n, permanent: true}) {
		f.neighs = slices.DeleteFunc(f.neighs, func(x neigh) bool { return x.Dev == n.Dev && x.IP == n.IP })
		f.neighs = append(f.neighs, neigh{Neigh: n, permanent: true})
		f.emit(kernel.Update{Kind: kernel.UpdateNeigh, Neigh: n})
	}
	f.wrote(cmd)
	return nil
}

// DeleteNeigh implements kernel.Kernel.
func (f *Fake) DeleteNeigh(n kernel.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.NeighCmd("del", n)
	if err := f.call(cmd); err != nil {
		return err
	}
	f.deleteNeighs(func(x neigh) bool { return x.Dev == n.Dev && x.IP == n.IP })
	f.wrote(cmd)
	return nil
}

// FDB implements kernel.Kernel: by MAC.
func (f *Fake) FDB(dev string) ([]kernel.FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.byName("bridge fdb show dev "+dev, dev); err != nil {
		return nil, err
	}
	var out []kernel.FDB
	for _, e := range f.fdb {
		if e.Dev == dev {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b kernel.FDB) int { return strings.Compare(a.MAC, b.MAC) })
	return out, nil
}

// ReplaceFDB implements kernel.Kernel.
func (f *Fake) ReplaceFDB(e kernel.FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.FDBCmd("replace", e)
	l, err := f.byName(cmd, e.Dev)
	if err != nil {
		return err
	}
	if kernel.CanonicalMAC(e.MAC) != e.MAC {
		return errno(cmd, syscall.EINVAL)
	}
	if l.Kind != kernel.KindVXLAN {
		// Another device takes the MAC into its unicast filter and
		// keeps no destination, so FDB does not list it.
		f.wrote(cmd)
		return nil
	}
	if !slices.Contains(f.fdb, e) {
		f.fdb = slices.DeleteFunc(f.fdb, func(x kernel.FDB) bool { return x.Dev == e.Dev && x.MAC == e.MAC })
		f.fdb = append(f.fdb, e)
		f.emit(kernel.Update{Kind: kernel.UpdateFDB, FDB: e})
	}
	f.wrote(cmd)
	return nil
}

// DeleteFDB implements kernel.Kernel: the entry for e.MAC goes if its
// destination is e.Dst (the kernel's vxlan driver ignores a delete whose
// destination differs).
func (f *Fake) DeleteFDB(e kernel.FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := kernel.FDBCmd("del", e)
	if err := f.call(cmd); err != nil {
		return err
	}
	f.deleteFDB(func(x kernel.FDB) bool { return x == e })
	f.wrote(cmd)
	return nil
}
