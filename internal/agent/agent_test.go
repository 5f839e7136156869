package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/firewall/firewalltest"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// fakePlatform records what the agent asks of the kernel.
type fakePlatform struct {
	mu       sync.Mutex // guards the fields below
	calls    []string
	states   []backend.NodeState
	failNext int   // Apply fails this many more times
	applyErr error // Apply returns this (after applying)
	fw       firewalltest.Fake
	closed   bool        // the backend was closed
	env      backend.Env // what the backend was built with
	// addr and addr6 replace the underlay's addresses when valid (a
	// second node).
	addr, addr6 netip.Addr
	// refuseOwn: Apply fails, as the kernel does for vxlan (`ip route
	// replace 2001:db8:244:61::/64 via 2001:db8:244:61:: dev flannel-v6.1
	// onlink: invalid argument`), while a peer's subnet overlaps this
	// node's own.
	refuseOwn bool
}

func (f *fakePlatform) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

// Underlay is eth0 with 192.0.2.1/24 and 2001:db8:0:1::1/64, of the
// families asked for.
func (f *fakePlatform) Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error) {
	f.record("underlay")
	u := kernel.Underlay{Name: "eth0", LinkIndex: 2, MTU: 1500}
	if q.IPv4 {
		u.Addr = cmp.Or(f.addr, netip.MustParseAddr("192.0.2.1"))
		u.OnLink = append(u.OnLink, netip.MustParsePrefix("192.0.2.0/24"))
	}
	if q.IPv6 {
		u.Addr6 = cmp.Or(f.addr6, netip.MustParseAddr("2001:db8:0:1::1"))
		u.OnLink = append(u.OnLink, netip.MustParsePrefix("2001:db8:0:1::/64"))
	}
	return u, nil
}

func (f *fakePlatform) Backend(_ context.Context, k backend.Kind, _ backend.Options, env backend.Env) (backend.Backend, error) {
	f.record("backend " + k.Type)
	f.mu.Lock()
	f.env = env
	f.mu.Unlock()
	return fakeBackend{f}, nil
}

func (f *fakePlatform) EnableForwarding(ipv6 bool, _ string) error {
	f.record(map[bool]string{false: "forwarding", true: "forwarding ipv4 ipv6"}[ipv6])
	return nil
}

func (f *fakePlatform) Firewall() firewall.Applier { return &f.fw }

func (f *fakePlatform) WatchKernel(ctx context.Context, changed func()) error {
	<-ctx.Done()
	return nil
}

func (f *fakePlatform) Refresh() { f.record("refresh") }

func (f *fakePlatform) lastState() (backend.NodeState, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return backend.NodeState{}, 0
	}
	return f.states[len(f.states)-1], len(f.states)
}

type fakeBackend struct{ f *fakePlatform }

func (fakeBackend) LeaseAttrs() lease.Attrs                   { return lease.Attrs{BackendType: "host-gw"} }
func (fakeBackend) MTU() int                                  { return 1500 }
func (fakeBackend) Plan(st backend.NodeState) backend.Desired { return backend.Desired{Node: st} }
func (b fakeBackend) Apply(ctx context.Context, d backend.Desired) (backend.Report, error) {
	st := d.Node
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	b.f.states = append(b.f.states, st)
	if b.f.failNext > 0 {
		b.f.failNext--
		return backend.Report{}, errors.New("injected kernel failure")
	}
	for _, p := range st.Peers {
		if b.f.refuseOwn && p.Overlaps(st.Own) {
			return backend.Report{}, fmt.Errorf("ip route replace %s via %s: invalid argument", p.Key(), st.Own.IPv6Subnet.Addr())
		}
	}
	return backend.Report{Added: len(st.Peers)}, b.f.applyErr
}
func (b fakeBackend) Close() error {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	b.f.closed = true
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func start(t *testing.T, store lease.Store, p Platform, subnetFile string) (*Agent, context.CancelFunc, chan error) {
	t.Helper()
	a := New(Options{Store: store, SubnetFile: subnetFile, IPMasq: true, ForwardRules: true, Resync: time.Hour, Log: quiet()}, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a, cancel, done
}

func TestLevelTriggered(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{}
	file := filepath.Join(t.TempDir(), "subnet.env")
	a, _, _ := start(t, m, p, file)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), "FLANNEL_NETWORK=10.244.0.0/16\n") {
		t.Fatalf("subnet.env: %q %v", b, err)
	}
	// A burst of lease events: every sync sees the whole current set.
	for i := range 20 {
		m.Reserve(lease.Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(100 + i), 0}), 24),
			Attrs: lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), BackendType: "host-gw"}})
	}
	eventually(t, "20 peers", func() bool { st, _ := p.lastState(); return len(st.Peers) == 20 })
	_, syncs := p.lastState()
	if syncs > 12 {
		t.Errorf("20 events cost %d syncs; they should coalesce", syncs)
	}
	m.Delete(lease.Key(netip.MustParsePrefix("10.244.100.0/24"), netip.Prefix{}))
	eventually(t, "19 peers", func() bool { st, _ := p.lastState(); return len(st.Peers) == 19 })
}

func TestFailedSyncIsRetriedAndReadinessFollows(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{failNext: 3}
	a, _, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	// The first syncs fail: not ready, but retried without any new event.
	eventually(t, "ready after retries", func() bool { return a.Status().Ready })
	if _, n := p.lastState(); n < 4 {
		t.Errorf("only %d applies; failures must be retried", n)
	}
	p.mu.Lock()
	p.failNext = 1000
	p.mu.Unlock()
	m.Reserve(lease.Lease{Subnet: netip.MustParsePrefix("10.244.200.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.200"), BackendType: "host-gw"}})
	eventually(t, "not ready", func() bool { return !a.Status().Ready })
	if s := a.Status(); !strings.Contains(s.SyncErr, "injected") {
		t.Errorf("status does not say why: %+v", s)
	}
	p.mu.Lock()
	p.failNext = 0
	p.mu.Unlock()
	eventually(t, "ready again", func() bool { return a.Status().Ready })
}

func TestOwnLeaseDeletedIsTakenBack(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{}
	a, _, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	subnet := a.Status().Subnet
	m.Delete(lease.Key(netip.MustParsePrefix(subnet), netip.Prefix{}))
	eventually(t, "lease back", func() bool {
		ls, _ := m.List(context.Background())
		return len(ls) == 1 && ls[0].Subnet.String() == subnet
	})
}

func TestRestartKeepsSubnetFromSubnetFile(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	file := filepath.Join(t.TempDir(), "subnet.env")
	if err := os.WriteFile(file, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.77.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, _, _ := start(t, m, &fakePlatform{}, file)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	if got := a.Status().Subnet; got != "10.244.77.0/24" {
		t.Errorf("subnet %s; the old subnet.env asked for 10.244.77.0/24", got)
	}
}

// A bad config stops the agent before it touches the node.
func TestBadConfigChangesNothing(t *testing.T) {
	for _, doc := range []string{
		`{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"banana"}}`,
		`not json`,
	} {
		m := leasetest.NewMemory()
		m.PutConfig([]byte(doc))
		p := &fakePlatform{}
		file := filepath.Join(t.TempDir(), "subnet.env")
		a := New(Options{Store: m, SubnetFile: file, Log: quiet()}, p)
		err := a.Run(context.Background())
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %v is not a config error", doc, err)
		}
		if len(p.calls) != 0 {
			t.Errorf("%s: the agent touched the node: %v", doc, p.calls)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("%s: subnet.env written", doc)
		}
		if ls, _ := m.List(context.Background()); len(ls) != 0 {
			t.Errorf("%s: a lease was taken", doc)
		}
	}
}

func TestFullNetworkFails(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"host-gw"}}`))
	m.Reserve(lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.9")}})
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "s"), Log: quiet()}, &fakePlatform{})
	err := a.Run(context.Background())
	if !errors.Is(err, lease.ErrNoFreeSubnet) || !strings.Contains(err.Error(), "10.244.0.0/16") {
		t.Fatalf("error %v does not say the network is out of subnets", err)
	}
}

// A backend that cannot program a peer does not keep the firewall from
// being applied, and the firewall failing does not keep the peers from
// being programmed; the status says which part failed.
func TestFirewallAppliedWhenTheBackendFails(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{failNext: 1000}
	a, cancel, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "a failed sync", func() bool { return strings.Contains(a.Status().SyncErr, "injected kernel failure") })
	txs := p.fw.Transactions()
	if len(txs) == 0 {
		t.Fatal("no firewall transaction while the backend fails")
	}
	subnet := a.Status().Subnet
	for _, rule := range []string{
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr " + subnet + " ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 accept",
		"ip daddr 10.244.0.0/16 accept",
	} {
		if !strings.Contains(txs[0], rule) {
			t.Errorf("the firewall transaction lacks %q:\n%s", rule, txs[0])
		}
	}
	if chains, ok := p.fw.Chains(firewall.IPv4); !ok || !slices.Equal(chains, []string{"forward", "postrouting"}) {
		t.Errorf("weft's table has chains %v (exists: %v)", chains, ok)
	}
	if s := a.Status(); s.Ready || !strings.Contains(s.SyncErr, "backend:") || strings.Contains(s.SyncErr, "firewall:") {
		t.Errorf("status does not say the backend failed and the firewall did not: %+v", s)
	}
	p.mu.Lock()
	p.failNext = 0
	p.mu.Unlock()
	p.fw.FailWith(errors.New("injected firewall failure"))
	a.trigger()
	eventually(t, "the firewall's failure reported", func() bool {
		s := a.Status()
		return strings.Contains(s.SyncErr, "firewall: injected") && !strings.Contains(s.SyncErr, "backend:")
	})
	if _, n := p.lastState(); n == 0 {
		t.Error("the backend was not applied")
	}
	p.fw.FailWith(nil)
	a.trigger()
	eventually(t, "ready", func() bool { return a.Status().Ready })
	cancel()
	eventually(t, "the backend closed when the agent stopped", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closed
	})
}

// subnet.env is part of the desired state: removed or edited by hand, it
// is written again at the next sync.
func TestSubnetFileIsPutBack(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{}
	file := filepath.Join(t.TempDir(), "subnet.env")
	a, _, _ := start(t, m, p, file)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []func() error{
		func() error { return os.Remove(file) },
		func() error { return os.WriteFile(file, []byte("FLANNEL_NETWORK=10.99.0.0/16\n"), 0o644) },
	} {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		a.trigger()
		eventually(t, "subnet.env put back", func() bool {
			got, err := os.ReadFile(file)
			return err == nil && string(got) == string(want)
		})
	}
}

// A forged lease over this node's subnet is rejected once, by key, shows
// in /readyz, and neither becomes a peer nor makes the node unready.
func TestForgedLeaseIsRejected(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{}
	a, _, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	own := netip.MustParsePrefix(a.Status().Subnet)
	forged := lease.Lease{Subnet: netip.PrefixFrom(own.Addr(), own.Bits()+1), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.66"), BackendType: "host-gw"}}
	outside := lease.Lease{Subnet: netip.MustParsePrefix("192.0.2.0/30"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.67"), BackendType: "host-gw"}}
	peer := lease.Lease{Subnet: netip.MustParsePrefix("10.244.200.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.68"), BackendType: "host-gw"}}
	m.Reserve(forged)
	m.Reserve(outside)
	m.Reserve(peer)
	eventually(t, "the good peer programmed", func() bool {
		st, _ := p.lastState()
		return len(st.Peers) == 1 && st.Peers[0].Subnet == peer.Subnet
	})
	s := a.Status()
	if !s.Ready || len(s.Rejected) != 2 || !strings.Contains(s.Rejected[forged.Key()], "overlaps the older lease "+lease.Key(own, netip.Prefix{})) ||
		!strings.Contains(s.Rejected[outside.Key()], "outside the network") {
		t.Fatalf("status %+v", s)
	}
	m.Delete(forged.Key())
	m.Delete(outside.Key())
	eventually(t, "rejections withdrawn", func() bool { return len(a.Status().Rejected) == 0 })
}

// A lease event is applied incrementally: the kernel as remembered, the
// firewall left alone since it did not change; the resync reads both.
func TestIncrementalAndFullSyncs(t *testing.T) {
	for _, resync := range []time.Duration{time.Hour, 50 * time.Millisecond} {
		m := leasetest.NewMemory()
		m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
		p := &fakePlatform{}
		a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), IPMasq: true, ForwardRules: true, Resync: resync, Log: quiet()}, p)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		eventually(t, "ready", func() bool { return a.Status().Ready })
		count := func() (applies, refreshes int) {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, c := range p.calls {
				if c == "refresh" {
					refreshes++
				}
			}
			return len(p.fw.Transactions()), refreshes
		}
		if resync == time.Hour {
			fw0, r0 := count()
			m.Reserve(lease.Lease{Subnet: netip.MustParsePrefix("10.244.201.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.69"), BackendType: "host-gw"}})
			eventually(t, "the peer programmed", func() bool { st, _ := p.lastState(); return len(st.Peers) == 1 })
			if fw, r := count(); fw != fw0 || r != r0 || fw0 != 1 || r0 != 0 {
				t.Errorf("firewall applies %d -> %d, refreshes %d -> %d; want 1 -> 1 and none", fw0, fw, r0, r)
			}
		} else {
			eventually(t, "full resyncs apply the firewall, and every 10th refreshes the kernel", func() bool { fw, r := count(); return r >= 1 && fw >= 11 })
			if fw, r := count(); r > fw/refreshEvery {
				t.Errorf("%d refreshes for %d firewall applies: the kernel is refreshed at every full resync", r, fw)
			}
		}
		cancel()
		<-done
	}
}

// Another lease with this node's address (its old lease, or a forgery) is
// never a peer: the node would route to itself.
func TestLeaseWithOwnAddressIsNoPeer(t *testing.T) {
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1")}}
	old := lease.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1")}}
	peer := lease.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.2")}}
	d := Desire(Inputs{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: own, Leases: []lease.Lease{own, old, peer}, MTU: 1500, Backend: fakeBackend{}})
	if len(d.Kernel.Node.Peers) != 1 || d.Kernel.Node.Peers[0].Subnet != peer.Subnet {
		t.Fatalf("peers %+v", d.Kernel.Node.Peers)
	}
}

// pingStore is a memory store whose Ping fails on demand.
type pingStore struct {
	*leasetest.Memory
	mu   sync.Mutex
	down bool
}

func (s *pingStore) Ping(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("connection refused")
	}
	return nil
}

// A store that stops answering makes the node unready within seconds, and
// ready again when it answers.
func TestStaleStoreMakesUnready(t *testing.T) {
	m := &pingStore{Memory: leasetest.NewMemory()}
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	a, _, _ := start(t, m, &fakePlatform{}, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	m.mu.Lock()
	m.down = true
	m.mu.Unlock()
	t0 := time.Now()
	for a.Status().Ready {
		if time.Since(t0) > probeEvery+probeTimeout+staleAfter+2*time.Second {
			t.Fatal("still ready with the store down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("unready %v after the store went down", time.Since(t0).Round(100*time.Millisecond))
	if s := a.Status(); !strings.Contains(s.StoreErr, "connection refused") {
		t.Fatalf("status %+v", s)
	}
	m.mu.Lock()
	m.down = false
	m.mu.Unlock()
	eventually(t, "ready again", func() bool { return a.Status().Ready })
}

// nodeKeyed is a store that names records as the Kubernetes store does
// ("node/NAME"), not by their subnets.
type nodeKeyed struct{ *leasetest.Memory }

func (s nodeKeyed) Watch(ctx context.Context, sink func(lease.Event)) error {
	rekey := func(r lease.Record) lease.Record { r.Key = "node/" + strings.ReplaceAll(r.Key, "/", "_"); return r }
	return s.Memory.Watch(ctx, func(ev lease.Event) {
		for i := range ev.Leases {
			ev.Leases[i] = rekey(ev.Leases[i])
		}
		ev.Record = rekey(ev.Record)
		sink(ev)
	})
}

// A store whose keys are not the lease's subnets still has this node's
// record found: the agent neither re-acquires in a loop nor calls its own
// lease gone.
func TestOwnRecordUnderAnotherKey(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	a, _, _ := start(t, nodeKeyed{m}, &fakePlatform{}, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	m.Reserve(lease.Lease{Subnet: netip.MustParsePrefix("10.244.202.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.70"), BackendType: "host-gw"}})
	time.Sleep(200 * time.Millisecond)
	a.mu.Lock()
	key, lost := a.ownKey, a.ownLost
	a.mu.Unlock()
	if !strings.HasPrefix(key, "node/") || lost != "" {
		t.Fatalf("own key %q, lost %q", key, lost)
	}
	if n := testutilCount(t, a, `weft_syncs_total{kind="incremental",result="ok"}`); n > 5 {
		t.Errorf("%v incremental syncs for two changes: re-acquiring in a loop?", n)
	}
}

func testutilCount(t *testing.T, a *Agent, series string) float64 {
	t.Helper()
	_, body := get(t, a, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, _ = fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// A route the kernel will not let weft take over (a conflict) is reported
// in /readyz and the metrics, and neither retried nor made a reason to be
// unready: retrying cannot resolve it.
func TestRouteConflictIsReportedNotRetried(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	c := &kernel.ConflictError{Want: kernel.Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Gw: netip.MustParseAddr("192.0.2.9"), Dev: "eth0"},
		Have: kernel.Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Dev: "cni0", Protocol: kernel.ProtoKernel}}
	p := &fakePlatform{applyErr: errors.Join(c)}
	a, _, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	s := a.Status()
	if len(s.Conflicts) != 1 || !strings.Contains(s.Conflicts[0], "10.244.9.0/24 is routed by dev cni0") || s.SyncErr != "" {
		t.Fatalf("status %+v", s)
	}
	if n := testutilCount(t, a, "weft_route_conflicts"); n != 1 {
		t.Errorf("weft_route_conflicts %v", n)
	}
	time.Sleep(300 * time.Millisecond)
	if _, n := p.lastState(); n > 2 {
		t.Errorf("%d applies: the conflict was retried", n)
	}
}

// releasing is a memory store that can delete a lease as etcd's can.
type releasing struct{ *leasetest.Memory }

func (s releasing) Delete(_ context.Context, key string) (bool, error) {
	s.Memory.Delete(key)
	return true, nil
}

// A node whose subnet changes at restart (a reservation now names its
// address) says so in one line naming both subnets, releases its old
// lease, and never makes its old subnet a peer (routing it away from its
// bridge).
func TestSubnetChangeAtRestart(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	store := releasing{m}
	file := filepath.Join(t.TempDir(), "subnet.env")
	a := New(Options{Store: store, SubnetFile: file, Resync: time.Hour, Log: quiet()}, &fakePlatform{})
	actx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	eventually(t, "ready", func() bool { return a.Status().Ready })
	old := netip.MustParsePrefix(a.Status().Subnet)
	stop()
	<-done
	reserved := netip.MustParsePrefix("10.244.250.0/24")
	m.Reserve(lease.Lease{Subnet: reserved, Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"}})

	var logs syncBuffer
	p := &fakePlatform{}
	b := New(Options{Store: store, SubnetFile: file, Resync: time.Hour, Log: slog.New(slog.NewTextHandler(&logs, nil))}, p)
	ctx, cancel := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-bdone })
	eventually(t, "ready on the reserved subnet", func() bool { s := b.Status(); return s.Ready && s.Subnet == reserved.String() })
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "subnet changed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], old.String()) || !strings.Contains(lines[0], reserved.String()) || !strings.Contains(lines[0], "pods") {
		t.Fatalf("want one line naming %s, %s and the pods; got %q", old, reserved, lines)
	}
	ls, _ := m.List(context.Background())
	for _, l := range ls {
		if l.Subnet == old {
			t.Errorf("the old lease %s is left behind", old)
		}
	}
	// Even were the old lease still there, it is no peer.
	m.Put(lease.Record{Key: lease.Key(old, netip.Prefix{}), Lease: lease.Lease{Subnet: old, Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"}}})
	time.Sleep(200 * time.Millisecond)
	if st, _ := p.lastState(); slices.ContainsFunc(st.Peers, func(l lease.Lease) bool { return l.Subnet == old }) {
		t.Errorf("the node's old subnet %s became a peer: %+v", old, st.Peers)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A forged key megabytes long is shown by its first bytes only, in the log
// and in /readyz.
func TestLongKeyIsShownShort(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	var logs syncBuffer
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Resync: time.Hour, Log: slog.New(slog.NewTextHandler(&logs, nil))}, &fakePlatform{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "ready", func() bool { return a.Status().Ready })
	long := strings.Repeat("k", 1<<20)
	m.Put(lease.Record{Key: long, Err: errors.New("lease key: not ADDR-LEN")})
	eventually(t, "rejected", func() bool { return len(a.Status().Rejected) == 1 })
	for k := range a.Status().Rejected {
		if len(k) > 100 {
			t.Errorf("/readyz shows a key of %d bytes", len(k))
		}
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if len(l) > 1000 {
			t.Errorf("a log line of %d bytes", len(l))
		}
	}
}
