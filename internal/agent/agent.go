// Package agent is the per-node daemon: it leases the node's subnet, writes
// subnet.env, and keeps the kernel in line with all leases, level-triggered.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/subnetenv"
)

// Options configure an agent. Zero durations take the defaults.
type Options struct {
	Store lease.Store
	// Underlay says how to find the underlay interface and the node's
	// addresses (--iface, --iface-regex, --iface-can-reach, --public-ip,
	// --public-ipv6); the agent fills in the families the network enables.
	Underlay kernel.UnderlayQuery
	// PublicIPNAT and PublicIPv6NAT: the public address may be on none of
	// the node's interfaces, as the node publishes a NAT address
	// (public-ip-overwrite, public-ipv6-overwrite); the agent warns
	// instead of refusing.
	PublicIPNAT, PublicIPv6NAT bool
	SubnetFile                 string
	IPMasq                     bool
	// IPMasqFullyRandomDisable masquerades without fully-random port
	// mapping (flannel's --ip-masq-fully-random-disable).
	IPMasqFullyRandomDisable bool
	// ForwardRules accepts forwarded traffic from and to the cluster
	// network, also in iptables' FORWARD chain when the host has iptables
	// (flannel's --iptables-forward-rules, on by default there).
	ForwardRules bool
	LeaseTTL     time.Duration // default 24h
	RenewMargin  time.Duration // default 1h (capped to half the TTL)
	Resync       time.Duration // default 30s
	HealthzAddr  string        // "" = no health server
	Pprof        bool          // serve /debug/pprof/ on the health server
	Log          *slog.Logger
	// ReadOnly is set when the store publishes nothing (read-only
	// Kubernetes mode): backend data is derived from node addresses.
	ReadOnly bool
	// Policy configures NetworkPolicy enforcement; nil (etcd mode): the
	// agent leaves the policy table alone.
	Policy *PolicyOptions
	// BGPNode are this node's own BGP settings from weft-agent's flags
	// (--bgp-local-as, --bgp-router-id, --bgp-peer). They override the
	// Node's annotations (Kubernetes mode), which override net-conf.json's
	// BGP object; BGP runs only when that object is there.
	BGPNode bgp.NodeSettings
	// NewSpeaker builds the BGP speaker when BGP is on; nil: proc.New
	// (GoBGP in a weft-bgp child process). Tests give a fake.
	NewSpeaker func(c bgp.Config, o bgp.Options) (Speaker, error)
	// WireGuardKeyFile and WireGuardSocketDir are the wireguard backend's
	// private key file and the directory of its userspace devices' control
	// sockets (backend.Env); "" for the defaults.
	WireGuardKeyFile, WireGuardSocketDir string
}

// Platform is what the agent needs from the node's kernel; Linux provides it.
type Platform interface {
	Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error)
	// Backend builds a backend of kind k with the platform's kernel added
	// to env. Its goroutines end with ctx or on Close.
	Backend(ctx context.Context, k backend.Kind, opts backend.Options, env backend.Env) (backend.Backend, error)
	// EnableForwarding turns on forwarding for IPv4, and for IPv6 when
	// ipv6; underlay is the underlay interface's name.
	EnableForwarding(ipv6 bool, underlay string) error
	// Firewall applies weft's firewall state.
	Firewall() firewall.Applier
	// WatchKernel calls changed, until ctx ends, whenever the kernel's
	// routes, neighbour or FDB entries or links changed other than by the
	// backend's own writes (by hand, by another program), so that the
	// agent puts them right at once.
	WatchKernel(ctx context.Context, changed func()) error
	// Refresh makes the backend's next Apply read the kernel afresh
	// instead of trusting what the platform remembers of it (a full
	// resync, the safety net under WatchKernel).
	Refresh()
}

// Agent is one node's daemon.
type Agent struct {
	o    Options
	p    Platform
	log  *slog.Logger
	m    *metrics
	pm   *policyMetrics // nil unless NetworkPolicy is enforced
	kick chan struct{}  // 1-slot: coalesced "something changed"

	// enfMu serializes calls to the policy enforcer (the policy loop's
	// Apply, a scrape's Denied) and guards denied.
	enfMu  sync.Mutex
	denied deniedTotals

	mu        sync.Mutex // guards the fields below
	leaseOK   bool
	syncErr   error // what the last sync could not apply (backend, firewall, subnet.env), joined
	synced    bool
	skipped   []string
	conflicts []string // routes not written: their destination is routed by something not weft's
	own       lease.Lease
	lastSync  time.Time
	peerCount int
	// set holds the store's leases, validated, kept from the watch's
	// events; listed is set once the first full list has arrived.
	set    *lease.Set
	listed bool
	// ownKey is the store's key of this node's record; ownLost says why
	// the record is not as this node wrote it ("deleted", "changed"), or
	// that every node rejects it for overlapping an older lease, which
	// this node gives up ("overlapping"); "" when none of these.
	ownKey  string
	ownLost string
	// ownOver is the key of the older lease this node's record overlaps,
	// as last reported; overKept is one whose overlap leasing again did
	// not end (the store handed the same subnets back), so that it is not
	// tried again and again.
	ownOver  string
	overKept string
	// storeErr is the last failed probe of the store, since storeSince.
	storeErr   error
	storeSince time.Time
	// pol is NetworkPolicy enforcement as the policy loop reports it.
	pol policyState
	// bgp is the BGP speaker, nil when BGP is off; set once before the
	// agent's goroutines start. bgpErr is why it could not start;
	// announced are the routes it last took.
	bgp       *bgpState
	bgpErr    error
	announced []bgp.Route
}

// New returns an agent.
func New(o Options, p Platform) *Agent {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 24 * time.Hour
	}
	if o.RenewMargin <= 0 {
		o.RenewMargin = time.Hour
	}
	if o.RenewMargin >= o.LeaseTTL { // weft-agent refuses this; a library caller gets a margin that works
		o.RenewMargin = o.LeaseTTL / 2
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	a := &Agent{o: o, p: p, log: o.Log, m: newMetrics(), kick: make(chan struct{}, 1)}
	if o.Policy != nil && o.Policy.Enabled {
		a.registerPolicyMetrics()
	}
	return a
}

// trigger asks for a sync; bursts coalesce into one.
func (a *Agent) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run starts the agent and blocks until ctx ends. On return the data plane
// is left in place, so a restart does not interrupt pod traffic.
func (a *Agent) Run(ctx context.Context) error {
	// Listeners first: a taken port fails the start before anything is
	// leased or written.
	var ln net.Listener
	if a.o.HealthzAddr != "" {
		var err error
		if ln, err = net.Listen("tcp", a.o.HealthzAddr); err != nil {
			return fmt.Errorf("health server: listen on %s: %w", a.o.HealthzAddr, err)
		}
		defer ln.Close()
	}
	if p := a.o.Policy; p != nil && (p.Enforcer == nil || p.Enabled && (p.Source == nil || p.Node == "")) {
		return errors.New("NetworkPolicy: a source, an enforcer and the node's name are required")
	}
	cfg, kind, opts, err := a.loadConfig(ctx)
	if err != nil {
		return err
	}
	bc, err := a.bgpConfig(ctx, cfg)
	if err != nil {
		return err
	}
	v4, v6 := networks(cfg)
	uq := a.o.Underlay
	uq.IPv4, uq.IPv6 = cfg.EnableIPv4, cfg.EnableIPv6
	u, err := a.p.Underlay(uq)
	if nls, only := kernel.NotLocalErrors(err); only && err != nil && a.natAll(nls) {
		for _, nl := range nls {
			a.log.Warn(fmt.Sprintf("%s is on no interface of this node; using it as the node publishes a NAT address (%s)", kernel.PublicIPFlag(nl.Addr), kernel.OverwriteAnnotation(nl.Addr)),
				"public-ip", nl.Addr, "iface", u.Name)
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("find the underlay interface: %w", err)
	}
	a.log.Info("underlay", "iface", u.Name, "public-ip", u.Addr, "public-ipv6", u.Addr6, "mtu", u.MTU)
	// The subnets of the old subnet.env, of the families enabled now.
	var prev lease.Lease
	old, oldErr := subnetenv.Read(a.o.SubnetFile)
	if oldErr == nil {
		if v4.IsValid() {
			prev.Subnet = old.Subnet.Masked()
		}
		if v6.IsValid() {
			prev.IPv6Subnet = old.IPv6Subnet.Masked()
		}
	}
	if bc.Enabled {
		// A restart over the data plane left in place: the old
		// subnet.env is there (checked against the lease below).
		restarting := prev.Subnet.IsValid() || prev.IPv6Subnet.IsValid()
		if err := a.startBGP(bc, u, cfg.EnableIPv4, cfg.EnableIPv6, restarting); err != nil {
			return err
		}
	}
	env := backend.Env{Underlay: u, ReadOnly: a.o.ReadOnly, Log: a.log, Network: v4, IPv6Network: v6,
		WireGuardKeyFile: a.o.WireGuardKeyFile, WireGuardSocketDir: a.o.WireGuardSocketDir}
	if p, ok := a.o.Store.(previousAttrs); ok {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		env.Previous, err = p.PreviousAttrs(pctx)
		cancel()
		if err != nil {
			a.log.Warn("cannot read the attributes this node published before; a new device gets a new MAC", "err", err)
			env.Previous = lease.Attrs{}
		}
	}
	be, err := a.p.Backend(ctx, kind, opts, env)
	if err != nil {
		return err
	}
	defer func() {
		if err := be.Close(); err != nil {
			a.log.Warn("close the backend", "err", err)
		}
	}()
	if c, ok := be.(prometheus.Collector); ok { // the backend's own counters
		a.m.reg.MustRegister(c)
	}
	if _, ok := be.(backend.Tunnel); ok {
		if r, ok := a.p.Firewall().(counterReader); ok { // what its tunnel guard drops
			a.m.reg.MustRegister(guardCollector{r})
		}
	}
	if d, ok := a.p.(interface{ KernelDumps() uint64 }); ok {
		a.m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "weft_kernel_dumps_total", Help: "Tables read whole from the kernel (a route dump, or one device's neighbour or FDB dump): at start, at each full resync, and when the kernel's change notifications could not be trusted.",
		}, func() float64 { return float64(d.KernelDumps()) }))
	}
	var check func(lease.Lease) error
	if c, ok := be.(backend.PeerChecker); ok {
		check = c.CheckPeer
	}
	a.mu.Lock()
	a.set = lease.NewSet(v4, v6, check)
	a.mu.Unlock()
	attrs := be.LeaseAttrs()
	// flannel publishes PublicIP 0.0.0.0 when IPv4 is off; so does the
	// store's JSON, so the record read back compares equal.
	attrs.PublicIP, attrs.PublicIPv6 = netip.IPv4Unspecified(), netip.Addr{}
	if v4.IsValid() {
		attrs.PublicIP = u.Addr
	}
	if v6.IsValid() {
		attrs.PublicIPv6 = u.Addr6
	}
	req := lease.Request{Attrs: attrs, TTL: a.o.LeaseTTL}
	if oldErr == nil {
		req.Prefer = subnets(prev)
	}
	own, err := a.acquire(ctx, req)
	if err != nil {
		return err
	}
	expires := "never"
	if !own.Reservation() {
		expires = own.Expiration.Format(time.RFC3339)
	}
	a.log.Info("leased subnet", "subnet", own.Subnet, "ipv6-subnet", own.IPv6Subnet, "expires", expires)
	a.logSubnetChanges(prev, own)
	if a.bgp != nil && a.bgp.restarting && !own.SameSubnets(prev) {
		// Another subnet: nothing of the old data plane is this node's
		// any more; a speaker that says it kept forwarding would lie.
		if err := a.newSpeaker(false); err != nil {
			return err
		}
	}
	a.releaseStale(ctx, own)
	if err := a.p.EnableForwarding(cfg.EnableIPv6, u.Name); err != nil {
		return err
	}
	if err := subnetenv.Write(a.o.SubnetFile, a.desire(cfg, be, own, nil).Env); err != nil {
		return err
	}
	a.mu.Lock()
	a.own, a.leaseOK, a.ownKey = own, true, own.Key()
	a.mu.Unlock()

	g, ctx := errgroup.WithContext(ctx)
	if ln != nil {
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("health server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	g.Go(func() error { return a.o.Store.Watch(ctx, a.onEvent) })
	g.Go(func() error { return a.p.WatchKernel(ctx, a.trigger) })
	g.Go(func() error { return a.renewLoop(ctx, req) })
	g.Go(func() error { return a.probeLoop(ctx) })
	g.Go(func() error { return a.syncLoop(ctx, cfg, be, req) })
	if a.bgp != nil {
		g.Go(func() error { return a.runBGP(ctx) })
	}
	if p := a.o.Policy; p != nil {
		if p.Enabled {
			g.Go(func() error { p.Source.Run(ctx); return nil })
		}
		g.Go(func() error { return a.policyLoop(ctx) })
	}
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		a.log.Info("stopping; the data plane stays in place")
	}
	return err
}

// networks returns the cluster's networks of the families cfg enables,
// invalid when off.
func networks(cfg *config.Config) (v4, v6 netip.Prefix) {
	if cfg.EnableIPv4 {
		v4 = cfg.IPv4.Network
	}
	if cfg.EnableIPv6 {
		v6 = cfg.IPv6.Network
	}
	return v4, v6
}

// subnets returns l's valid subnets, IPv4 first: the subnets a request
// prefers.
func subnets(l lease.Lease) []netip.Prefix {
	var out []netip.Prefix
	for _, f := range families {
		if s := f.Subnet(l); s.IsValid() {
			out = append(out, s)
		}
	}
	return out
}

// held reports whether l is a lease at all (a subnet of either family).
func held(l lease.Lease) bool { return l.Subnet.IsValid() || l.IPv6Subnet.IsValid() }

// logSubnetChanges says, in one line per family, that this node's subnet
// changed from old's to l's, and what that means for its pods.
func (a *Agent) logSubnetChanges(old, l lease.Lease) {
	for _, f := range families {
		was, now := f.Subnet(old), f.Subnet(l)
		if !was.IsValid() || was == now {
			continue
		}
		a.log.Error(fmt.Sprintf("this node's %s subnet changed from %s to %s: its pods keep their %s addresses, which stay routed to this node's bridge and no longer reach other nodes, until they are recreated", f, was, now, was),
			"old", was, "new", now)
	}
}

// previousAttrs is a Store that keeps what this node published before
// across a reboot (Kubernetes: the Node's annotations).
type previousAttrs interface {
	PreviousAttrs(ctx context.Context) (lease.Attrs, error)
}

// natAll reports whether every public address no interface holds is
// allowed to be a NAT address by its family's option (PublicIPNAT,
// PublicIPv6NAT).
func (a *Agent) natAll(nls []*kernel.NotLocalError) bool {
	for _, nl := range nls {
		if nl.Addr.Is4() && !a.o.PublicIPNAT || !nl.Addr.Is4() && !a.o.PublicIPv6NAT {
			return false
		}
	}
	return true
}

// releaser is a Store that can remove a lease (etcd).
type releaser interface {
	Delete(ctx context.Context, key string) (bool, error)
}

// releaseStale removes the leases this node held before under other
// subnets (lease.SameNode, not a reservation), left behind when its subnet
// changed: nobody else may take them while they stand, and a node never
// routes to itself.
func (a *Agent) releaseStale(ctx context.Context, own lease.Lease) {
	r, ok := a.o.Store.(releaser)
	if !ok {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ls, err := a.o.Store.List(lctx)
	if err != nil {
		a.log.Warn("cannot list leases to release this node's old ones", "err", err)
		return
	}
	for _, l := range ls {
		if l.SameSubnets(own) || !lease.SameNode(l.Attrs, own.Attrs) || l.Reservation() {
			continue
		}
		if _, err := r.Delete(lctx, l.Key()); err != nil {
			a.log.Warn("cannot release this node's old lease", "key", l.Key(), "err", err)
			continue
		}
		a.log.Warn("released this node's old lease", "key", l.Key(), "subnet", own.Subnet, "ipv6-subnet", own.IPv6Subnet)
	}
}

// onEvent takes one event of the store's watch into the lease set; it
// reports each lease whose verdict changed, once, and asks for a sync.
func (a *Agent) onEvent(ev lease.Event) {
	a.mu.Lock()
	verdicts := a.set.Apply(ev)
	if ev.Reset {
		a.listed = true
		a.m.relists.WithLabelValues(ev.Cause).Inc()
	} else {
		a.m.events.WithLabelValues(eventOp(ev)).Inc()
	}
	if _, ok := a.set.Record(a.ownKey); ev.Reset && !ok && held(a.own) {
		// The store names records its own way (Kubernetes: "node/NAME"):
		// find this node's by its subnets and address.
		if r, ok := a.set.Find(func(r lease.Record) bool {
			return r.Err == nil && r.Lease.SameSubnets(a.own) && lease.SameNode(r.Lease.Attrs, a.own.Attrs)
		}); ok {
			a.ownKey = r.Key
		}
	}
	var lost, was string
	if ev.Reset || ev.Record.Key == a.ownKey || slices.ContainsFunc(verdicts, func(v lease.Verdict) bool { return v.Key == a.ownKey }) {
		was = a.ownLost
		a.ownLost = a.ownState()
		lost = a.ownLost
	}
	ownKey, over, reservation := a.ownKey, a.set.Overlapped(a.ownKey), a.own.Reservation()
	older := "" // an overlap to report, once
	if over != a.ownOver {
		a.ownOver, older = over, over
	}
	rejected := a.set.RejectedCount()
	a.mu.Unlock()
	a.m.rejected.Set(float64(rejected))
	if ev.Reset {
		a.log.Info("listed leases", "cause", ev.Cause, "records", len(ev.Leases)+len(ev.Invalid))
	}
	for _, v := range verdicts {
		switch {
		case v.Key == ownKey && over != "" && v.Reason != "":
			// this node's own lease: said below, with what happens now
		case v.Deleted:
			a.log.Info("rejected lease removed from the store", "key", lease.ShortKey(v.Key))
		case v.Reason == "":
			a.log.Info("lease accepted after all", "key", lease.ShortKey(v.Key), "was", v.Was)
		default:
			a.log.Warn("lease rejected: no route is made for it", "key", lease.ShortKey(v.Key), "reason", v.Reason)
		}
	}
	switch {
	case lost == "overlapping" && lost != was:
		a.log.Warn("this node's lease overlaps the older lease "+lease.ShortKey(over)+", which every node keeps instead; giving it up and leasing again",
			"key", lease.ShortKey(ownKey), "older", lease.ShortKey(over))
	case lost != "" && lost != was:
		a.log.Warn("this node's lease was "+lost+" by someone else; writing it back", "key", lease.ShortKey(ownKey))
	}
	_, chooser := a.o.Store.(lease.SubnetChooser)
	switch {
	case older == "" || lost == "overlapping":
	case reservation:
		a.log.Error("this node's lease is a reservation that overlaps the older lease "+lease.ShortKey(older)+": every node rejects it and routes that subnet to the older lease's node, and a reservation is never given up; delete or change the reservation (or the older lease) in the store",
			"key", lease.ShortKey(ownKey), "older", lease.ShortKey(older))
	case !chooser:
		a.log.Error("this node's subnets overlap the older lease "+lease.ShortKey(older)+": every node rejects this node's lease and routes that subnet to the older lease's node; the subnets are assigned to this node (its Node's podCIDRs), not chosen by weft: give it podCIDRs no other node has",
			"key", lease.ShortKey(ownKey), "older", lease.ShortKey(older))
	}
	a.trigger()
}

func eventOp(ev lease.Event) string {
	if ev.Deleted {
		return "delete"
	}
	return "put"
}

// ownState says whether this node's record in the set is as it wrote it:
// "" if so, "deleted" or "changed"; or "overlapping" when every node
// rejects it for overlapping an older lease and this node can lease other
// subnets (not a reservation, which is an operator's; a store that chooses
// subnets, not Kubernetes' podCIDRs). Once deleted, the key is free for
// anyone, so a record under it later is someone else's lease and is not
// written over. a.mu must be held.
func (a *Agent) ownState() string {
	if !held(a.own) {
		return ""
	}
	r, ok := a.set.Record(a.ownKey)
	_, chooser := a.o.Store.(lease.SubnetChooser)
	switch {
	case !ok:
		return "deleted"
	case a.ownLost == "deleted":
		return "deleted"
	case r.Err != nil || !sameAttrs(r.Lease.Attrs, a.own.Attrs):
		return "changed"
	case chooser && !a.own.Reservation() && a.set.Overlapped(a.ownKey) != "" && a.set.Overlapped(a.ownKey) != a.overKept:
		return "overlapping"
	}
	return ""
}

// ownOverlap is the key of the older lease this node's record overlaps,
// or "".
func (a *Agent) ownOverlap() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ownOver
}

// sameAttrs compares what a node publishes in its lease.
func sameAttrs(x, y lease.Attrs) bool {
	return x.PublicIP == y.PublicIP && x.PublicIPv6 == y.PublicIPv6 && x.BackendType == y.BackendType &&
		jsonEqual(x.BackendData, y.BackendData) && jsonEqual(x.BackendV6Data, y.BackendV6Data)
}

func jsonEqual(x, y json.RawMessage) bool {
	if bytes.Equal(x, y) {
		return true
	}
	var bx, by bytes.Buffer
	return json.Compact(&bx, x) == nil && json.Compact(&by, y) == nil && bytes.Equal(bx.Bytes(), by.Bytes())
}

// loadConfig reads and validates the network config and the backend's
// options, waiting for the store to become reachable but failing at once
// on a bad config.
func (a *Agent) loadConfig(ctx context.Context) (*config.Config, backend.Kind, backend.Options, error) {
	var cfg *config.Config
	var kind backend.Kind
	var opts backend.Options
	err := a.retry(ctx, "read the network config", func(ctx context.Context) (bool, error) {
		doc, err := a.o.Store.Config(ctx)
		if err != nil {
			return errors.Is(err, lease.ErrNoConfig), err
		}
		cfg, kind, opts, err = table.Parse(doc)
		return true, err
	})
	if err != nil {
		return nil, kind, nil, err
	}
	if len(cfg.UnknownKeys) > 0 {
		a.log.Warn("net-conf.json has keys weft does not know; they are ignored", "keys", cfg.UnknownKeys)
	}
	if cfg.BackendDefaulted {
		a.log.Warn("net-conf.json has no Backend: using " + table.Default + " as flannel does; " + table.Recommended + " is recommended")
	}
	return cfg, kind, opts, nil
}

// acquire leases a subnet, retrying while the store is unreachable; a full
// network or a bad config is final.
func (a *Agent) acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	var l lease.Lease
	err := a.retry(ctx, "acquire a lease", func(ctx context.Context) (bool, error) {
		var err error
		l, err = a.o.Store.Acquire(ctx, req)
		var cerr *config.Error
		final := errors.Is(err, lease.ErrNoFreeSubnet) || errors.Is(err, lease.ErrNoConfig) ||
			errors.Is(err, lease.ErrMisconfigured) || errors.As(err, &cerr)
		return final, err
	})
	return l, err
}

// retry calls try with a timeout until it succeeds or says its error is
// final, backing off from 0.5s to 10s, and respecting ctx.
func (a *Agent) retry(ctx context.Context, what string, try func(context.Context) (final bool, err error)) error {
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		final, err := try(tctx)
		cancel()
		if err == nil || final {
			return err
		}
		a.log.Warn("cannot "+what+"; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

func (a *Agent) renewLoop(ctx context.Context, req lease.Request) error {
	for {
		a.mu.Lock()
		own := a.own
		a.mu.Unlock()
		if own.Reservation() {
			<-ctx.Done()
			return nil
		}
		wait := time.Until(own.Expiration.Add(-a.o.RenewMargin))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 0)):
		}
		// The sync loop may have leased anew while this slept (a lapsed
		// or overlapping lease): renew the lease the node holds now.
		if !a.holds(own) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		l, err := a.o.Store.Renew(rctx, own)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.m.renewals.WithLabelValues("error").Inc()
			a.log.Error("lease renewal failed; retrying", "subnet", own.Subnet, "err", err)
			a.mu.Lock()
			if sameLease(a.own, own) {
				a.leaseOK = false
			}
			a.mu.Unlock()
			if time.Now().After(own.Expiration) {
				a.trigger() // the sync loop re-acquires a lapsed lease
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
			continue
		}
		a.m.renewals.WithLabelValues("ok").Inc()
		a.mu.Lock()
		if sameLease(a.own, own) {
			a.own, a.leaseOK = l, true
		}
		a.mu.Unlock()
	}
}

// holds tells whether l is still the lease the node holds.
func (a *Agent) holds(l lease.Lease) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return sameLease(a.own, l)
}

// sameLease tells whether a and b are one lease: the same subnets under
// the same store lease (a re-lease of the same subnets has another
// StoreID, and a renewal of the old one must not replace it).
func sameLease(a, b lease.Lease) bool {
	return a.Key() == b.Key() && a.StoreID == b.StoreID
}

// pinger is a Store that can tell cheaply whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// Store probes: every probeEvery, with probeTimeout; readiness drops once
// the store has been unreachable for staleAfter, so that a node whose view
// of the cluster has gone stale says so within seconds.
const (
	probeEvery   = 2 * time.Second
	probeTimeout = 2 * time.Second
	staleAfter   = 3 * time.Second
)

// probeLoop checks that the store answers, for /readyz.
func (a *Agent) probeLoop(ctx context.Context) error {
	p, ok := a.o.Store.(pinger)
	if !ok {
		return nil
	}
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		a.mu.Lock()
		switch {
		case err == nil && a.storeErr != nil:
			a.log.Info("the store answers again", "after", time.Since(a.storeSince).Round(time.Second))
			a.storeErr = nil
		case err != nil && a.storeErr == nil:
			a.log.Warn("the store does not answer; this node's view of the leases may be stale", "err", err)
			a.storeErr, a.storeSince = err, time.Now()
		case err != nil:
			a.storeErr = err
		}
		a.mu.Unlock()
	}
}

// refreshEvery: every this many full syncs, and after a failed sync, the
// kernel is read afresh rather than trusted as its change notifications
// have kept it (a dump costs ~100 ms at 5000 peers; a full sync without it
// a few).
const refreshEvery = 10

// syncLoop runs a sync on every change (incremental: the leases and the
// kernel as remembered) and every Resync (full: the firewall read afresh,
// and every refreshEvery-th time the kernel too), and retries a failed one
// with a full sync that reads the kernel.
func (a *Agent) syncLoop(ctx context.Context, cfg *config.Config, be backend.Backend, req lease.Request) error {
	tick := time.NewTicker(a.o.Resync)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := 200 * time.Millisecond
	marked := false
	s := &syncer{}
	fulls := 0
	for {
		full, refresh := false, false
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-tick.C:
			fulls++
			full, refresh = true, fulls%refreshEvery == 0
		case <-retry.C:
			full, refresh = true, true
		}
		if refresh {
			a.p.Refresh()
		}
		err := a.sync(ctx, cfg, be, req, s, full)
		if errors.Is(err, errNotListed) {
			continue // the first list is on its way; it triggers a sync
		}
		if ctx.Err() != nil {
			return nil
		}
		a.mu.Lock()
		a.syncErr = err
		if err == nil {
			a.synced = true
		}
		a.mu.Unlock()
		if err != nil {
			a.log.Error("sync failed; retrying", "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		if !marked {
			marked = a.markReady(ctx)
		}
	}
}

// readyMarker is a Store that records on the node that its network is up
// (Kubernetes: the condition NetworkUnavailable=False).
type readyMarker interface {
	MarkReady(ctx context.Context) error
}

// markReady tells the store, if it cares, that the node's network is up. It
// reports whether that is done; a failure is retried after the next sync.
func (a *Agent) markReady(ctx context.Context) bool {
	m, ok := a.o.Store.(readyMarker)
	if !ok {
		return true
	}
	mctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := m.MarkReady(mctx); err != nil {
		a.log.Warn("cannot mark the node's network as up; retrying after the next sync", "err", err)
		return false
	}
	return true
}

// syncer is what the sync loop remembers between syncs: the firewall state
// last applied, so that an incremental sync applies it only when it
// changed (its read-back runs iptables-save).
type syncer struct {
	fw   firewall.State
	fwOK bool
	// announced are the routes the speaker last took (annOK), annErr
	// why it did not take the last ones; withdrawn is the speaker that
	// withdrew this node's routes as its Node was deleted, until a new
	// one is in place.
	announced []bgp.Route
	annOK     bool
	annErr    error
	withdrawn Speaker
}

var errNotListed = errors.New("no list of the leases yet")

// sync is one level-triggered pass over the leases as the watch has
// delivered them: take this node's lease back if it is gone or was
// changed, compute the desired state, apply it (backend, firewall,
// subnet.env) and report. A full sync reads the firewall afresh; an
// incremental one applies it only when its state changed. Both trust the
// platform's memory of the kernel unless the caller refreshed it. Each part is
// applied even when another failed; the error says which did not apply.
func (a *Agent) sync(ctx context.Context, cfg *config.Config, be backend.Backend, req lease.Request, s *syncer, full bool) (err error) {
	a.mu.Lock()
	if !a.listed {
		a.mu.Unlock()
		return errNotListed
	}
	// The peers only: Desire then keeps the slice as it is.
	own, lost := a.own, a.ownLost
	leases := a.set.LeasesWhere(backend.NodeState{Own: own}.IsPeer)
	accepted := a.set.Len() - a.set.RejectedCount()
	a.mu.Unlock()
	kind := "incremental"
	if full {
		kind = "full"
	}
	start := time.Now()
	var rep backend.Report
	defer func() {
		a.m.syncDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		a.m.diffSize.WithLabelValues(kind).Observe(float64(rep.Added + rep.Removed))
		res := "ok"
		if err != nil {
			res = "error"
		}
		a.m.syncs.WithLabelValues(kind, res).Inc()
	}()
	if lost != "" {
		// A Node deleted for good first takes its routes off the routers.
		a.withdrawIfRemoved(ctx, s, lost)
		l, err := a.reacquire(ctx, req, own, lost)
		if err != nil {
			return err
		}
		own = l
		a.bgpBack(s)
	}
	d := a.desire(cfg, be, own, leases)
	rep, beErr := be.Apply(ctx, d.Kernel)
	// A destination the kernel routes through something not weft's (this
	// node's old subnet on its bridge, an administrator's route) is
	// reported, not retried: no retry can resolve it.
	var conflicts []string
	for _, c := range kernel.Conflicts(beErr) {
		conflicts = append(conflicts, c.Error())
	}
	slices.Sort(conflicts)
	if beErr = kernel.WithoutConflicts(beErr); beErr != nil {
		beErr = fmt.Errorf("backend: %w", beErr)
	}
	// The firewall does not depend on the peers: it is applied even when
	// the backend could not program some of them.
	var fwErr error
	if full || !s.fwOK || !reflect.DeepEqual(s.fw, d.Firewall) {
		s.fwOK = false
		if fwErr = a.p.Firewall().Apply(ctx, d.Firewall); fwErr != nil {
			fwErr = fmt.Errorf("firewall: %w", fwErr)
		} else {
			s.fw, s.fwOK = d.Firewall, true
		}
	}
	// subnet.env is read back every time (a few hundred bytes), so that
	// a file removed or edited by hand is put right like the rest.
	var envErr error
	if cur, err := subnetenv.Read(a.o.SubnetFile); err != nil || cur != d.Env {
		envErr = subnetenv.Write(a.o.SubnetFile, d.Env)
	}
	// BGP trouble is logged and retried, never a failed sync.
	a.announce(ctx, s, d.Announce, full)
	a.m.applied.WithLabelValues("add").Add(float64(rep.Added))
	a.m.applied.WithLabelValues("remove").Add(float64(rep.Removed))
	a.m.leases.Set(float64(accepted))
	a.m.skipped.Set(float64(len(rep.Skipped) + len(d.Skipped)))
	peers := len(d.Kernel.Node.Peers)
	if rep.Added+rep.Removed > 0 {
		a.log.Info("applied", "added", rep.Added, "removed", rep.Removed, "peers", peers, "sync", kind)
	}
	skipped := slices.Concat(d.Skipped, rep.Skipped)
	a.mu.Lock()
	if !slices.Equal(a.skipped, skipped) {
		for _, s := range skipped {
			if !slices.Contains(a.skipped, s) {
				a.log.Warn("peer skipped", "peer", s)
			}
		}
	}
	for _, c := range conflicts {
		if !slices.Contains(a.conflicts, c) {
			a.log.Warn("route not written: "+c, "sync", kind)
		}
	}
	a.skipped, a.lastSync, a.peerCount, a.conflicts = skipped, time.Now(), peers, conflicts
	a.mu.Unlock()
	a.m.conflicts.Set(float64(len(conflicts)))
	return errors.Join(beErr, fwErr, envErr)
}

// reacquire takes this node's lease back: written back as it was when
// someone changed it, or acquired again (the same subnet if it is still
// free) when it was deleted or lapsed. A lease that overlaps an older one
// is acquired again too: the store deletes it in the write of the new
// one (lease.Choice.Overlapping), which keeps this node's subnet of the
// family that did not overlap.
func (a *Agent) reacquire(ctx context.Context, req lease.Request, own lease.Lease, lost string) (lease.Lease, error) {
	req.Prefer = subnets(own)
	req.Reclaim, req.Reservation = lost == "changed", own.Reservation()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	l, err := a.o.Store.Acquire(rctx, req)
	cancel()
	if err != nil {
		a.mu.Lock()
		a.leaseOK = false
		a.mu.Unlock()
		return own, fmt.Errorf("re-acquire lease: %w", err)
	}
	kept := ""
	switch {
	case !l.SameSubnets(own):
		a.logSubnetChanges(own, l)
	case lost == "overlapping":
		// The store sees no overlap (the older lease is gone, or the store
		// decides otherwise than the leases the watch delivered): keep it,
		// and do not ask again for this older lease.
		kept = a.ownOverlap()
		if kept != "" {
			a.log.Error("leasing again gave this node the same subnets, which overlap the older lease "+lease.ShortKey(kept)+"; keeping them",
				"key", l.Key(), "older", lease.ShortKey(kept))
		}
	default:
		a.log.Warn("this node's lease is back in the store", "key", l.Key(), "was", lost)
	}
	a.mu.Lock()
	// The watch brings the write back soon and checks it then.
	a.own, a.leaseOK, a.ownKey, a.ownLost = l, true, l.Key(), ""
	if kept != "" {
		a.overKept = kept
	}
	a.mu.Unlock()
	return l, nil
}

// desire is Desire with this agent's options.
func (a *Agent) desire(cfg *config.Config, be backend.Backend, own lease.Lease, leases []lease.Lease) Desired {
	v4, v6 := networks(cfg)
	return Desire(Inputs{Network: v4, IPv6Network: v6, Own: own, Leases: leases, MTU: be.MTU(), Backend: be,
		IPMasq: a.o.IPMasq, IPMasqNotRandom: a.o.IPMasqFullyRandomDisable, ForwardRules: a.o.ForwardRules, BGP: a.bgpInputs()})
}

// Status is what /readyz reports.
type Status struct {
	Ready      bool     `json:"ready"`
	Subnet     string   `json:"subnet,omitempty"`
	IPv6Subnet string   `json:"ipv6Subnet,omitempty"`
	LeaseOK    bool     `json:"leaseOK"`
	Synced     bool     `json:"synced"`
	SyncErr    string   `json:"syncError,omitempty"`
	Skipped    []string `json:"skippedPeers,omitempty"`
	// Conflicts are routes weft did not write because the kernel routes
	// their destination through something that is not weft's.
	Conflicts []string `json:"routeConflicts,omitempty"`
	Peers     int      `json:"peers"`
	LastSync  string   `json:"lastSync,omitempty"`
	// StoreErr is set while the store does not answer; the node is not
	// ready once that has lasted a few seconds, as its view may be stale.
	StoreErr string `json:"storeError,omitempty"`
	// Rejected are the store's records that are not used, by key, with
	// the reason. They do not make this node unready.
	Rejected map[string]string `json:"rejectedLeases,omitempty"`
	// Policy is NetworkPolicy enforcement (Kubernetes mode); while it is
	// enabled, the node is ready once its policies are in force.
	Policy *PolicyStatus `json:"networkPolicy,omitempty"`
	// BGP are the BGP sessions, by peer address, while BGP is on; with
	// the routes announced, the routes learned (import on) and why the
	// speaker could not start. None of them makes the node unready: pod
	// networking does not depend on BGP.
	BGP          []bgp.PeerStatus `json:"bgp,omitempty"`
	BGPAnnounced []bgp.Route      `json:"bgpAnnounced,omitempty"`
	BGPLearned   []bgp.Route      `json:"bgpLearned,omitempty"`
	BGPErr       string           `json:"bgpError,omitempty"`
}

// Status returns the agent's readiness.
func (a *Agent) Status() Status {
	var s Status
	a.bgpStatus(&s) // before a.mu: it asks the speaker
	a.mu.Lock()
	defer a.mu.Unlock()
	s.LeaseOK, s.Synced, s.Skipped, s.Conflicts, s.Peers = a.leaseOK, a.synced, a.skipped, a.conflicts, a.peerCount
	if a.own.Subnet.IsValid() {
		s.Subnet = a.own.Subnet.String()
	}
	if a.own.IPv6Subnet.IsValid() {
		s.IPv6Subnet = a.own.IPv6Subnet.String()
	}
	if a.syncErr != nil {
		s.SyncErr = a.syncErr.Error()
	}
	if !a.lastSync.IsZero() {
		s.LastSync = a.lastSync.Format(time.RFC3339Nano)
	}
	stale := false
	if a.storeErr != nil {
		s.StoreErr = a.storeErr.Error()
		stale = time.Since(a.storeSince) >= staleAfter
	}
	if a.set != nil {
		if r := a.set.Rejected(); len(r) > 0 {
			s.Rejected = make(map[string]string, len(r))
			for k, why := range r {
				s.Rejected[lease.ShortKey(k)] = why
			}
		}
	}
	s.Policy = a.policyStatus()
	policyOK := s.Policy == nil || !s.Policy.Enabled || s.Policy.Error == "" && s.Policy.LastSync != ""
	s.Ready = s.LeaseOK && s.Synced && a.syncErr == nil && !stale && policyOK
	return s
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		s := a.Status()
		w.Header().Set("Content-Type", "application/json")
		if !s.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	if a.o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	return mux
}

// HealthzAddr formats a listen address from flannel's flags.
func HealthzAddr(ip string, port int) string {
	if port <= 0 {
		return ""
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}
