package wireguard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// DefaultSocketDir is where userspace WireGuard devices put their control
// sockets, and where `wg` looks for them.
const DefaultSocketDir = "/var/run/wireguard"

// Backend is the wireguard backend.
type Backend struct {
	k         kernel.Kernel
	cfg       Options
	u         kernel.Underlay
	fams      []backend.Family // the enabled families, IPv4 first
	log       *slog.Logger
	socketDir string
	priv, pub [KeyLen]byte

	mu sync.Mutex // guards the fields below; held through Apply and Close
	// userspace is the data path, chosen by the first Apply: nil until
	// then, false for the kernel's WireGuard, true for wireguard-go.
	userspace *bool
	links     map[string]link // the devices open, by name
	// written is, per device name, the endpoint last written to each of
	// its peers (by public key): see keepRoamed.
	written map[string]map[[KeyLen]byte]netip.AddrPort
	closed  bool
}

var _ backend.Backend = (*Backend)(nil)
var _ backend.PeerChecker = (*Backend)(nil)

// errClosed is returned by Apply after Close.
var errClosed = errors.New("wireguard: the backend is closed")

// link is one WireGuard device as the backend holds it open: the kernel's
// (configured through wgctrl) or wireguard-go's (on a TUN device).
type link interface {
	// get reads the device's configuration back (`wg show DEV dump`).
	get() (State, error)
	// set changes it (`wg set DEV ...`).
	set(c Config) error
	// alive reports whether the device the link holds is still the one
	// called by its name in the kernel (a TUN deleted by hand is not).
	alive(k kernel.Kernel) bool
	// close releases what the process holds; the device and its routes
	// stay in the kernel.
	close() error
}

// New prepares the backend: it reads (or makes) the private key file, and
// touches nothing in the kernel until the first Apply, which chooses the
// data path (the kernel's WireGuard, else wireguard-go) and opens the
// devices. The devices' goroutines end when ctx ends, or on Close.
func New(ctx context.Context, env backend.Env, cfg Options) (*Backend, error) {
	if env.ReadOnly {
		return nil, errors.New("wireguard: a read-only store publishes no public key of this node, and peers need it: use a store this node can write, or another backend")
	}
	b := &Backend{k: env.Kernel, cfg: cfg, u: env.Underlay, log: env.Log, socketDir: env.WireGuardSocketDir, links: map[string]link{},
		written: map[string]map[[KeyLen]byte]netip.AddrPort{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.socketDir == "" {
		b.socketDir = DefaultSocketDir
	}
	b.fams = env.Families()
	if len(b.fams) == 0 {
		return nil, errors.New("wireguard: no address family: neither an IPv4 nor an IPv6 network is enabled")
	}
	if len(b.fams) == 2 {
		if err := cfg.CheckIPv6(); err != nil {
			return nil, err
		}
	}
	for _, f := range b.fams {
		if _, err := f.Local(env.Underlay); err != nil {
			return nil, fmt.Errorf("wireguard: %s: %w", b.deviceOf(f), err)
		}
	}
	path := env.WireGuardKeyFile
	if path == "" {
		path = DefaultKeyFile
	}
	priv, generated, err := LoadKey(path)
	if err != nil {
		return nil, err
	}
	b.priv, b.pub = priv, PublicKey(priv)
	if generated {
		b.log.Info("wireguard: generated a new private key", "file", path, "public-key", keyString(b.pub))
	}
	// A goroutine blocked in a read sees no context: closing the devices
	// is what ends it.
	context.AfterFunc(ctx, func() { _ = b.Close() })
	return b, nil
}

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(ctx, env, opts.(Options))
}

// PublicKeyString is this node's public key as `wg` prints it.
func (b *Backend) PublicKeyString() string { return keyString(b.pub) }

// LeaseAttrs implements backend.Backend: for each enabled family, flannel's
// data, the public key and the port peers reach the family's device at
// (ListenPortV6 for IPv6 in Mode separate, ListenPort otherwise).
func (b *Backend) LeaseAttrs() lease.Attrs {
	a := lease.Attrs{BackendType: Type}
	for _, f := range b.fams {
		port := b.cfg.ListenPort
		if b.deviceOf(f) == DeviceName6 {
			port = b.cfg.ListenPortV6
		}
		data, _ := json.Marshal(Data{PublicKey: keyString(b.pub), Port: uint16(port)})
		f.SetData(&a, data)
	}
	return a
}

// MTU implements backend.Backend: Backend.MTU, else the underlay's, less
// Overhead, as flannel.
func (b *Backend) MTU() int { return backend.InnerMTU(b.u, b.cfg.MTU, Overhead) }

// listenPort is the port of the device called name.
func (b *Backend) listenPort(name string) int {
	if name == DeviceName6 {
		return b.cfg.ListenPortV6
	}
	return b.cfg.ListenPort
}

// Apply implements backend.Backend. For each of d's devices it opens the
// device when it is not open yet (the first call; or a TUN deleted by
// hand), puts it right (kernel.EnsureLink: MTU, addresses, up), then makes
// the device hold this node's private key, its listen port and exactly the
// peers d.Node asks for (Peers): it reads the device's peers back and
// changes only what differs, in one configuration per device, so that a
// peer whose key changed is replaced at once and a departed peer's key is
// removed. A peer's endpoint is written when the lease's changed or the
// peer is new to the device, not when WireGuard moved it to where the
// peer's packets come from (roaming, NAT: keepRoamed). A peer new to the
// device is sent a keepalive at once, which
// starts a handshake: after an agent restart the peers' stale sessions
// are replaced before they time out. Last come the routes (kernel.Apply).
// Report.Added and Removed count peers added and removed and routes
// written and deleted.
func (b *Backend) Apply(ctx context.Context, d backend.Desired) (backend.Report, error) {
	rep := backend.Report{Skipped: d.Skipped}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	// The peers skipped are discarded: Plan put them in d.Skipped, which
	// rep reports already.
	peers, _ := b.Peers(d.Node)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return rep, errClosed
	}
	var errs []error
	for _, dev := range d.Devices {
		l, err := b.open(ctx, dev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		added, removed, err := b.configure(l, dev.Name, peers[dev.Name])
		rep.Added += added
		rep.Removed += removed
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	added, removed, err := kernel.Apply(ctx, b.k, d.Entries, d.Scope)
	rep.Added += added
	rep.Removed += removed
	if err != nil {
		errs = append(errs, fmt.Errorf("wireguard: %w", err))
	}
	return rep, errors.Join(errs...)
}

// configure makes the device l (called name) hold the private key, its
// listen port and exactly peers, keeping roamed endpoints (keepRoamed).
func (b *Backend) configure(l link, name string, peers []Peer) (added, removed int, err error) {
	have, err := l.get()
	if err != nil {
		return 0, 0, fmt.Errorf("wireguard: read %s back: %w", name, err)
	}
	want := State{PrivateKey: b.priv, ListenPort: b.listenPort(name), Peers: keepRoamed(peers, have.Peers, b.written[name])}
	c, added, removed := Diff(want, have)
	if c.empty() {
		b.remember(name, peers)
		return 0, 0, nil
	}
	had := make(map[[KeyLen]byte]bool, len(have.Peers))
	for _, p := range have.Peers {
		had[p.Key] = true
	}
	isNew := func(p Peer) bool { return !had[p.Key] }
	// A peer new to the device is sent a keepalive, which starts a
	// handshake (WireGuard sends one when persistent keepalive is turned
	// on): after a restart, peers replace the sessions the old process
	// held within a round trip, not after WireGuard's timeout. Of two
	// nodes, the one with the lower public key kicks at once and the other
	// 200 ms later unless it heard from the peer meanwhile: two initiations
	// that cross each leave the other's response invalid, and then neither
	// node sends until WireGuard retries 5 s later.
	var now, later []Peer
	for i, p := range c.Peers {
		if p.Remove || !isNew(p.Peer) {
			continue
		}
		switch {
		case bytes.Compare(b.pub[:], p.Key[:]) < 0:
			if p.Keepalive == 0 {
				c.Peers[i].Keepalive = time.Second
				now = append(now, p.Peer)
			}
		default:
			c.Peers[i].Keepalive = 0
			later = append(later, p.Peer)
		}
	}
	if err := l.set(c); err != nil {
		return 0, 0, fmt.Errorf("wireguard: configure %s: %w", name, err)
	}
	b.remember(name, peers)
	if len(now) > 0 {
		if err := l.set(keepalives(now, false)); err != nil {
			return added, removed, fmt.Errorf("wireguard: configure %s: %w", name, err)
		}
	}
	if len(later) > 0 {
		time.AfterFunc(kickDelay, func() { b.kick(l, name, later) })
	}
	for _, p := range c.Peers {
		switch {
		case p.Remove:
			b.log.Info("wireguard: peer removed", "device", name, "peer", p.String())
		case isNew(p.Peer):
			b.log.Info("wireguard: peer added", "device", name, "peer", p.String(), "endpoint", p.Endpoint, "allowed-ips", p.AllowedIPs)
		default:
			b.log.Info("wireguard: peer updated", "device", name, "peer", p.String(), "endpoint", p.Endpoint, "allowed-ips", p.AllowedIPs)
		}
	}
	return added, removed, nil
}

// remember records the lease endpoints of peers as written to the device
// called name (keepRoamed), and forgets its other peers.
func (b *Backend) remember(name string, peers []Peer) {
	m := make(map[[KeyLen]byte]netip.AddrPort, len(peers))
	for _, p := range peers {
		m[p.Key] = p.Endpoint
	}
	b.written[name] = m
}

// kickDelay is how long the node with the higher public key waits before
// it starts a handshake with a new peer.
const kickDelay = 200 * time.Millisecond

// keepalives is the change that sets the peers' keepalives, if the device
// has them: each one's own, or with kick at least 1 s (which sends one at
// once where it was off).
func keepalives(peers []Peer, kick bool) Config {
	var c Config
	for _, p := range peers {
		if kick && p.Keepalive == 0 {
			p.Keepalive = time.Second
		}
		c.Peers = append(c.Peers, PeerChange{Peer: Peer{Key: p.Key, Keepalive: p.Keepalive}, KeepaliveOnly: true})
	}
	return c
}

// kick starts a handshake with each of peers that the device l (called
// name) still holds and has received nothing from since it got them, and
// gives each its keepalive.
func (b *Backend) kick(l link, name string, peers []Peer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.links[name] != l {
		return
	}
	have, err := l.get()
	if err != nil {
		b.log.Debug("wireguard: read the device back", "device", name, "err", err)
		return
	}
	var quiet []Peer
	for _, p := range peers {
		// Nothing received: the peer has not started a handshake either
		// (its initiation would count).
		if s, ok := have.Status[p.Key]; ok && s.LastHandshake.IsZero() && s.RxBytes == 0 {
			quiet = append(quiet, p)
		}
	}
	err = errors.Join(l.set(keepalives(quiet, true)), l.set(keepalives(peers, false)))
	if err != nil {
		b.log.Debug("wireguard: start handshakes", "device", name, "err", err)
	}
}

// open returns the open device dev names, opening it (and, the first
// time, choosing the data path) when need be, and puts the kernel device
// right (kernel.EnsureLink).
func (b *Backend) open(ctx context.Context, dev kernel.Device) (link, error) {
	l := b.links[dev.Name]
	if l != nil && !l.alive(b.k) {
		b.log.Warn("wireguard: " + dev.Name + " is gone (deleted by hand?); opening it again")
		if err := l.close(); err != nil {
			b.log.Debug("wireguard: close the old device", "device", dev.Name, "err", err)
		}
		delete(b.links, dev.Name)
		l = nil
	}
	if l == nil {
		if b.userspace == nil {
			userspace, err := b.choose(dev)
			if err != nil {
				return nil, err
			}
			b.userspace = &userspace
		}
		var err error
		if *b.userspace {
			l, err = openUserspace(dev.Name, dev.MTU, b.priv, b.listenPort(dev.Name), b.socketDir, b.k, b.log)
		} else {
			l, err = openKernel(dev.Name, dev.MTU)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard: %w", err)
		}
		b.links[dev.Name] = l
	}
	if *b.userspace {
		dev.Kind = kernel.KindTUN
	}
	if err := kernel.EnsureLink(ctx, b.k, dev); err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	return l, nil
}

// choose picks the data path, once: a device of dev's name that exists
// already says which (a kernel WireGuard device is reused; a TUN device is
// a restarted agent's own, re-attached); else the kernel's WireGuard when
// it creates the device, and wireguard-go when the kernel has no
// WireGuard (the choice is logged).
func (b *Backend) choose(dev kernel.Device) (userspace bool, err error) {
	l, err := b.k.LinkByName(dev.Name)
	switch {
	case err == nil && l.Kind == KindWireGuard:
		b.log.Info("wireguard: using the kernel's WireGuard (existing device " + dev.Name + ")")
		return false, nil
	case err == nil && l.Kind == kernel.KindTUN:
		b.log.Info("wireguard: re-attaching wireguard-go to the existing TUN " + dev.Name)
		return true, nil
	case err == nil:
		return false, fmt.Errorf("wireguard: %s is a %s device, not wireguard; delete it (ip link del %s)", dev.Name, l.Kind, dev.Name)
	case !kernel.IsNotFound(err):
		return false, fmt.Errorf("wireguard: %w", err)
	}
	err = addKernelLink(dev.Name, dev.MTU)
	switch {
	case err == nil:
		b.log.Info("wireguard: using the kernel's WireGuard on " + dev.Name)
		return false, nil
	case unsupported(err):
		b.log.Info(fmt.Sprintf("wireguard: kernel module not available (%v); using wireguard-go on TUN %s", err, dev.Name))
		return true, nil
	}
	return false, fmt.Errorf("wireguard: %w", err)
}

// Userspace reports whether the backend runs wireguard-go (true) or the
// kernel's WireGuard (false); ok is false before the first Apply chose.
func (b *Backend) Userspace() (userspace, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.userspace == nil {
		return false, false
	}
	return *b.userspace, true
}

// Close implements backend.Backend: it stops wireguard-go and removes its
// control sockets, and closes the kernel client. The devices stay, with
// their addresses and routes: a userspace device is a persistent TUN that
// drops what is routed to it until an agent opens it again (pod traffic is
// never sent unencrypted), and a kernel device keeps carrying traffic with
// the peers it has. Calling it again is harmless.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	var errs []error
	for name, l := range b.links {
		if err := l.close(); err != nil {
			errs = append(errs, fmt.Errorf("wireguard: close %s: %w", name, err))
		}
		delete(b.links, name)
	}
	return errors.Join(errs...)
}
