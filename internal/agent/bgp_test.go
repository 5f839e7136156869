package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
	"github.com/weftnet/weft/internal/subnetenv"
)

// fakeSpeaker records what the agent asks of its BGP speakers; their
// learned routes, peers and Synced are what the test sets. Each
// NewSpeaker (new) builds a fakeInstance that keeps the real speaker's
// contract: Run once; Withdraw ends Run, and Announce fails after it.
type fakeSpeaker struct {
	mu        sync.Mutex // guards the fields below and the instances'
	cfg       bgp.Config
	opts      bgp.Options   // the last instance's
	built     int           // instances built
	calls     []string      // "run", "announce", "withdraw", "stopped", "refused" (Announce after Withdraw)
	announced [][]bgp.Route // every Announce taken, in order
	learned   []bgp.Route
	synced    bool
	peers     []bgp.PeerStatus
	runErr    error // Run returns it at once
	up        prometheus.Gauge
}

// fakeInstance is one speaker the agent built.
type fakeInstance struct {
	f         *fakeSpeaker
	ran       bool
	withdrawn bool
	stop      chan struct{} // closed by Withdraw
}

var _ Speaker = (*fakeInstance)(nil)

func newFakeSpeaker() *fakeSpeaker {
	return &fakeSpeaker{up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_bgp_fake_up", Help: "The fake speaker's one series."})}
}

func (f *fakeSpeaker) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (i *fakeInstance) Run(ctx context.Context) error {
	f := i.f
	f.mu.Lock()
	if i.ran {
		f.mu.Unlock()
		return errors.New("fake speaker: Run called twice")
	}
	i.ran = true
	f.calls = append(f.calls, "run")
	err := f.runErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		f.record("stopped")
	case <-i.stop:
	}
	return nil
}

func (i *fakeInstance) Announce(_ context.Context, routes []bgp.Route) error {
	f := i.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if i.withdrawn {
		f.calls = append(f.calls, "refused")
		return bgp.ErrWithdrawn
	}
	f.calls = append(f.calls, "announce")
	f.announced = append(f.announced, slices.Clone(routes))
	return nil
}

func (i *fakeInstance) Withdraw(context.Context) error {
	f := i.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "withdraw")
	if !i.withdrawn {
		i.withdrawn = true
		close(i.stop)
	}
	return nil
}

func (i *fakeInstance) Learned() []bgp.Route {
	f := i.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if i.withdrawn {
		return nil
	}
	return slices.Clone(f.learned)
}

func (i *fakeInstance) Synced() bool {
	f := i.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return i.ran && !i.withdrawn && f.synced
}

func (i *fakeInstance) Status() []bgp.PeerStatus {
	f := i.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

func (i *fakeInstance) Describe(ch chan<- *prometheus.Desc) { i.f.up.Describe(ch) }
func (i *fakeInstance) Collect(ch chan<- prometheus.Metric) { i.f.up.Collect(ch) }

// new is Options.NewSpeaker.
func (f *fakeSpeaker) new(c bgp.Config, o bgp.Options) (Speaker, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.opts = c, o
	f.built++
	return &fakeInstance{f: f, stop: make(chan struct{})}, nil
}

func (f *fakeSpeaker) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeSpeaker) lastAnnounce() ([]bgp.Route, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.announced) == 0 {
		return nil, 0
	}
	return f.announced[len(f.announced)-1], len(f.announced)
}

// kubeLike is the memory store as Kubernetes mode's: the Node's
// annotations, and records that are Nodes.
type kubeLike struct {
	*leasetest.Memory
	ann    map[string]string
	annErr error
}

func (k *kubeLike) NodeAnnotations(context.Context) (map[string]string, error) {
	return k.ann, k.annErr
}

const bgpDual = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"},
	"BGP":{"LocalAS":64512,"Peers":[{"Address":"192.0.2.254","AS":64500}],"Import":%s,"RoutableNetworks":["203.0.113.0/24","2001:db8:0:f::/64"]}}`

// startBGPAgent runs an agent with the fake speaker over store, with the
// flags' settings node.
func startBGPAgent(t *testing.T, store lease.Store, sp *fakeSpeaker, node bgp.NodeSettings) (*Agent, *fakePlatform, context.CancelFunc, chan error) {
	t.Helper()
	p := &fakePlatform{}
	a := New(Options{Store: store, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), IPMasq: true, ForwardRules: true, Resync: time.Hour,
		Log: quiet(), BGPNode: node, NewSpeaker: sp.new}, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a, p, cancel, done
}

func conf(format string, args ...any) []byte {
	return []byte(strings.NewReplacer("\n", "", "\t", "").Replace(fmt.Sprintf(format, args...)))
}

// TestBGPAnnouncesAndStops: with BGP on, the speaker is built with the
// merged config and the underlay's addresses, runs, and is handed this
// node's subnets of each family with its underlay address of that family,
// once (a change of the peers re-announces nothing); the masquerade
// leaves the routable networks alone; the speaker's series are on
// /metrics and its peers in /readyz. A normal stop ends Run and withdraws
// nothing (graceful restart).
func TestBGPAnnouncesAndStops(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig(conf(bgpDual, "false"))
	sp := newFakeSpeaker()
	sp.peers = []bgp.PeerStatus{{Address: netip.MustParseAddr("192.0.2.254"), AS: 64500, State: "established", Sent: 2}}
	a, p, cancel, done := startBGPAgent(t, m, sp, bgp.NodeSettings{})
	eventually(t, "ready", func() bool { return a.Status().Ready })
	st := a.Status()
	sub4, sub6 := netip.MustParsePrefix(st.Subnet), netip.MustParsePrefix(st.IPv6Subnet)
	want := []bgp.Route{{Prefix: sub4, NextHop: netip.MustParseAddr(underlay4)}, {Prefix: sub6, NextHop: netip.MustParseAddr(underlay6)}}
	eventually(t, "the announcement", func() bool { _, n := sp.lastAnnounce(); return n > 0 })
	got, n := sp.lastAnnounce()
	if !reflect.DeepEqual(got, want) || n != 1 {
		t.Errorf("announced %v (%d times), want %v once", got, n, want)
	}
	sp.mu.Lock()
	cfg, opts := sp.cfg, sp.opts
	sp.mu.Unlock()
	if cfg.LocalAS != 64512 || len(cfg.Peers) != 1 || cfg.Import || opts.Underlay4.String() != underlay4 || opts.Underlay6.String() != underlay6 || opts.Changed == nil || opts.Log == nil {
		t.Errorf("speaker built with %+v, %+v", cfg, opts)
	}
	if calls := sp.callList(); len(calls) == 0 || !slices.Contains(calls, "run") {
		t.Errorf("speaker calls %v: never run", calls)
	}
	// A peer comes: a sync, and the same routes are not announced again.
	m.Reserve(hostGW("10.244.200.0/24", "192.0.2.20", "", ""))
	eventually(t, "the peer", func() bool { st, _ := p.lastState(); return len(st.Peers) == 1 })
	if _, n := sp.lastAnnounce(); n != 1 {
		t.Errorf("announced %d times after a peer came, want 1", n)
	}
	// Pods' traffic to the routable networks keeps its source.
	txs := p.fw.Transactions()
	for _, rule := range []string{"ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return", "ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:0:f::/64 return"} {
		if len(txs) == 0 || !strings.Contains(txs[0], rule) {
			t.Errorf("the firewall transaction lacks %q:\n%s", rule, txs)
		}
	}
	st = a.Status()
	if !reflect.DeepEqual(st.BGP, sp.peers) || !reflect.DeepEqual(st.BGPAnnounced, want) || st.BGPLearned != nil || st.BGPErr != "" {
		t.Errorf("status: bgp %+v, announced %v, learned %v, error %q", st.BGP, st.BGPAnnounced, st.BGPLearned, st.BGPErr)
	}
	if code, body := get(t, a, "/readyz"); code != 200 || !strings.Contains(body, `"bgp":[{"address":"192.0.2.254","as":64500,"state":"established"`) {
		t.Errorf("/readyz: %d %s", code, body)
	}
	if _, metrics := get(t, a, "/metrics"); !strings.Contains(metrics, "weft_bgp_fake_up 0") {
		t.Errorf("/metrics lacks the speaker's series:\n%s", metrics)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup
	calls := sp.callList()
	if slices.Contains(calls, "withdraw") || calls[len(calls)-1] != "stopped" {
		t.Errorf("speaker calls on a normal stop: %v; want Run ended and no withdrawal", calls)
	}
}

// TestBGPImport: the speaker's Changed asks for a sync, which puts the
// routes learned then into the node state handed to the backend; with
// import off the node state has none.
func TestBGPImport(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig(conf(bgpDual, "true"))
	sp := newFakeSpeaker()
	a, p, _, _ := startBGPAgent(t, m, sp, bgp.NodeSettings{})
	eventually(t, "ready", func() bool { return a.Status().Ready })
	if st, _ := p.lastState(); st.Learned == nil || len(st.Learned) != 0 || !st.LearnedPending {
		t.Errorf("import on, nothing learned, speaker not synced: node state's Learned %v pending %v, want empty and pending", st.Learned, st.LearnedPending)
	}
	learned := []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.244.200.0/24"), NextHop: netip.MustParseAddr("192.0.2.254"), Peer: netip.MustParseAddr("192.0.2.254")},
		{Prefix: netip.MustParsePrefix("2001:db8:244:200::/64"), NextHop: netip.MustParseAddr("2001:db8:0:1::fe"), Peer: netip.MustParseAddr("2001:db8:0:1::fe")},
	}
	sp.mu.Lock()
	sp.learned = learned
	changed := sp.opts.Changed
	sp.mu.Unlock()
	changed()
	eventually(t, "the learned routes in the node state, still pending", func() bool {
		st, _ := p.lastState()
		return len(st.Learned) == 2 && st.Learned[learned[0].Prefix] == learned[0].NextHop && st.Learned[learned[1].Prefix] == learned[1].NextHop && st.LearnedPending
	})
	// The speaker has every peer's routes: no longer pending.
	sp.mu.Lock()
	sp.synced = true
	sp.mu.Unlock()
	changed()
	eventually(t, "the learned routes complete", func() bool { st, _ := p.lastState(); return len(st.Learned) == 2 && !st.LearnedPending })
	if st := a.Status(); !reflect.DeepEqual(st.BGPLearned, learned) {
		t.Errorf("status learned %v", st.BGPLearned)
	}
	// Withdrawn by the router: gone from the node state at the next sync.
	sp.mu.Lock()
	sp.learned = nil
	sp.mu.Unlock()
	changed()
	eventually(t, "the learned routes gone", func() bool { st, _ := p.lastState(); return st.Learned != nil && len(st.Learned) == 0 })

	// Import off: no learned routes reach the node state.
	m2 := leasetest.NewMemory()
	m2.PutConfig(conf(bgpDual, "false"))
	sp2 := newFakeSpeaker()
	sp2.learned = learned
	a2, p2, _, _ := startBGPAgent(t, m2, sp2, bgp.NodeSettings{})
	eventually(t, "ready", func() bool { return a2.Status().Ready })
	if st, _ := p2.lastState(); st.Learned != nil || st.LearnedPending {
		t.Errorf("import off: node state's Learned %v, pending %v", st.Learned, st.LearnedPending)
	}
}

// TestBGPDoesNotMakeUnready: every peer down, and even a speaker that
// cannot start, leave /readyz at 200: pod networking does not depend on
// BGP; the trouble shows in the status.
func TestBGPDoesNotMakeUnready(t *testing.T) {
	for _, tc := range []struct {
		name   string
		runErr error
		peers  []bgp.PeerStatus
		want   []string
	}{
		{"peers down", nil, []bgp.PeerStatus{
			{Address: netip.MustParseAddr("192.0.2.253"), AS: 64500, State: "active", LastError: "connect: connection refused"},
			{Address: netip.MustParseAddr("192.0.2.254"), AS: 64501, State: "idle", LastError: "the peer says bad peer AS", Flaps: 3},
		}, []string{`"state":"active"`, `"lastError":"connect: connection refused"`, `"flaps":3`}},
		{"speaker cannot start", errors.New("listen on 192.0.2.1:179: address already in use"), nil, []string{`"bgpError":"listen on 192.0.2.1:179: address already in use"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := leasetest.NewMemory()
			m.PutConfig(conf(bgpDual, "false"))
			sp := newFakeSpeaker()
			sp.peers, sp.runErr = tc.peers, tc.runErr
			a, _, _, done := startBGPAgent(t, m, sp, bgp.NodeSettings{})
			eventually(t, "ready", func() bool { return a.Status().Ready })
			if tc.runErr != nil {
				eventually(t, "the speaker's error in the status", func() bool { return a.Status().BGPErr != "" })
			}
			code, body := get(t, a, "/readyz")
			if code != 200 || !strings.Contains(body, `"ready":true`) {
				t.Errorf("/readyz: %d %s", code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("/readyz lacks %s: %s", w, body)
				}
			}
			var st Status
			if err := json.Unmarshal([]byte(body), &st); err != nil || !reflect.DeepEqual(st.BGP, tc.peers) {
				t.Errorf("/readyz bgp %+v (%v), want %+v", st.BGP, err, tc.peers)
			}
			select {
			case err := <-done:
				t.Fatalf("the agent ended: %v", err)
			default:
			}
		})
	}
}

// TestBGPStartRefused: a bad BGP config, in any layer, fails the start in
// one line naming the key, the annotation or the flag, before anything is
// leased; the layers override each other net-conf.json < annotations <
// flags; BGP off builds no speaker whatever the flags say.
func TestBGPStartRefused(t *testing.T) {
	const base = `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":%s}`
	for _, tc := range []struct {
		name    string
		bgp     string
		ann     map[string]string
		annErr  error
		flags   bgp.NodeSettings
		wantErr string // "": starts; then the speaker's LocalAS and peers
		wantAS  uint32
		peers   int
	}{
		{name: "bad peer AS", bgp: `{"LocalAS":64512,"Peers":[{"Address":"192.0.2.254","AS":0}]}`, wantErr: "BGP.Peers[0].AS"},
		{name: "bad routable network", bgp: `{"LocalAS":64512,"RoutableNetworks":["203.0.113.0/33"]}`, wantErr: "BGP.RoutableNetworks"},
		{name: "no local AS anywhere", bgp: `{"Peers":[{"Address":"192.0.2.254","AS":64500}]}`, wantErr: "no local AS"},
		{name: "bad annotation", bgp: `{"LocalAS":64512}`, ann: map[string]string{bgp.AnnotationLocalAS: "AS64513"}, wantErr: "annotation " + bgp.AnnotationLocalAS},
		{name: "bad peers annotation", bgp: `{"LocalAS":64512}`, ann: map[string]string{bgp.AnnotationPeers: `[{"Address":"192.0.2.300","AS":64500}]`}, wantErr: "annotation " + bgp.AnnotationPeers},
		{name: "annotation over net-conf.json", bgp: `{"Peers":[{"Address":"192.0.2.254","AS":64500}]}`, ann: map[string]string{bgp.AnnotationLocalAS: "64513"}, wantAS: 64513, peers: 1},
		{name: "flags over annotations", bgp: `{}`, ann: map[string]string{bgp.AnnotationLocalAS: "64513", bgp.AnnotationPeers: `[{"Address":"192.0.2.254","AS":64500}]`},
			flags: bgp.NodeSettings{LocalAS: 64514, PeersSet: true}, wantAS: 64514, peers: 0},
		{name: "off: flags ignored", bgp: `{"Enabled":false}`, flags: bgp.NodeSettings{LocalAS: 64514}},
		{name: "absent: flags ignored", bgp: `null`, flags: bgp.NodeSettings{LocalAS: 64514}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := leasetest.NewMemory()
			m.PutConfig(conf(base, tc.bgp))
			var store lease.Store = m
			if tc.ann != nil || tc.annErr != nil {
				store = &kubeLike{Memory: m, ann: tc.ann, annErr: tc.annErr}
			}
			sp := newFakeSpeaker()
			a, p, _, done := startBGPAgent(t, store, sp, tc.flags)
			if tc.wantErr != "" {
				var err error
				select {
				case err = <-done:
					done <- err
				case <-time.After(5 * time.Second):
					t.Fatal("the agent started")
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("start: %v, want one line with %q", err, tc.wantErr)
				}
				var cerr *config.Error
				if strings.HasPrefix(tc.wantErr, "BGP.") && !errors.As(err, &cerr) {
					t.Errorf("start: %T, want a *config.Error", err)
				}
				ls, _ := m.List(context.Background())
				p.mu.Lock()
				calls := p.calls
				p.mu.Unlock()
				if len(ls) != 0 || len(calls) != 0 || len(sp.callList()) != 0 {
					t.Errorf("a refused start leased %v, asked the platform %v and the speaker %v", ls, calls, sp.callList())
				}
				return
			}
			eventually(t, "ready", func() bool { return a.Status().Ready })
			sp.mu.Lock()
			cfg := sp.cfg
			sp.mu.Unlock()
			if cfg.LocalAS != tc.wantAS || len(cfg.Peers) != tc.peers {
				t.Errorf("speaker built with local AS %d and %d peers, want %d and %d", cfg.LocalAS, len(cfg.Peers), tc.wantAS, tc.peers)
			}
			if tc.wantAS == 0 && (len(sp.callList()) != 0 || a.Status().BGP != nil) {
				t.Errorf("BGP off: speaker calls %v", sp.callList())
			}
		})
	}
}

// TestBGPWithdrawWhenNodeDeleted: in Kubernetes mode, this node's Node
// deleted while the agent runs withdraws its routes before the agent
// tries to take its lease back; once it has it again, it announces again.
// In etcd mode a deleted lease is taken back and nothing is withdrawn.
func TestBGPWithdrawWhenNodeDeleted(t *testing.T) {
	for _, kube := range []bool{true, false} {
		name := map[bool]string{true: "kubernetes", false: "etcd"}[kube]
		t.Run(name, func(t *testing.T) {
			m := leasetest.NewMemory()
			m.PutConfig(conf(bgpDual, "false"))
			var store lease.Store = m
			if kube {
				store = &kubeLike{Memory: m, ann: map[string]string{}}
			}
			sp := newFakeSpeaker()
			a, _, _, _ := startBGPAgent(t, store, sp, bgp.NodeSettings{})
			eventually(t, "announced", func() bool { _, n := sp.lastAnnounce(); return n == 1 })
			key := ownRecord(t, m, a).Key()
			m.Delete(key)
			eventually(t, "the deletion seen", func() bool {
				_, metrics := get(t, a, "/metrics")
				return strings.Contains(metrics, `weft_lease_events_total{op="delete"} 1`)
			})
			eventually(t, "the lease back", func() bool {
				a.mu.Lock()
				defer a.mu.Unlock()
				_, ok := a.set.Record(a.ownKey)
				return ok && a.ownLost == ""
			})
			calls := sp.callList()
			if !kube {
				if slices.Contains(calls, "withdraw") {
					t.Errorf("etcd mode withdrew: %v", calls)
				}
				return
			}
			// A new speaker (the withdrawn one refuses to announce, as the
			// real one does) runs and announces the same routes again.
			eventually(t, "announced again", func() bool { _, n := sp.lastAnnounce(); return n == 2 })
			calls = sp.callList()
			w := slices.Index(calls, "withdraw")
			if w < 0 || slices.Index(calls[w+1:], "withdraw") >= 0 || !slices.Contains(calls[w+1:], "run") || !slices.Contains(calls[w+1:], "announce") || slices.Contains(calls, "refused") {
				t.Errorf("speaker calls %v: want one withdrawal, then a new speaker run and announcing, never an Announce to the withdrawn one", calls)
			}
			sp.mu.Lock()
			built, announced, restarting := sp.built, sp.announced, sp.opts.Restarting
			sp.mu.Unlock()
			if built != 2 || !reflect.DeepEqual(announced[0], announced[1]) || restarting {
				t.Errorf("%d speakers built (want 2), announced %v, the new one restarting %v (want the same routes again, not restarting)", built, announced, restarting)
			}
			// The status takes the routes once Announce has returned:
			// after the fake counted them.
			var st Status
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if st = a.Status(); reflect.DeepEqual(st.BGPAnnounced, announced[1]) {
					break
				}
			}
			if !reflect.DeepEqual(st.BGPAnnounced, announced[1]) || st.BGPErr != "" {
				t.Errorf("status after the Node came back: announced %v, error %q", st.BGPAnnounced, st.BGPErr)
			}
			if _, metrics := get(t, a, "/metrics"); !strings.Contains(metrics, "weft_bgp_fake_up 0") {
				t.Errorf("/metrics lacks the new speaker's series:\n%s", metrics)
			}
		})
	}
}

// TestBGPRestarting: an agent that starts over the subnet.env of its
// previous run, with the same subnet, builds a restarting speaker
// (routers keep its routes until its End-of-RIB); one that starts afresh
// does not, nor one whose old subnet.env names a subnet it does not get.
func TestBGPRestarting(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig(conf(bgpDual, "false"))
	file := filepath.Join(t.TempDir(), "subnet.env")
	run := func(sp *fakeSpeaker) {
		t.Helper()
		a := New(Options{Store: m, SubnetFile: file, IPMasq: true, Resync: time.Hour, Log: quiet(), NewSpeaker: sp.new}, &fakePlatform{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		eventually(t, "announced", func() bool { _, n := sp.lastAnnounce(); return n > 0 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	restarting := func(sp *fakeSpeaker) (bool, int) {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.opts.Restarting, sp.built
	}
	first := newFakeSpeaker()
	run(first)
	if r, n := restarting(first); r || n != 1 {
		t.Errorf("first start: restarting %v (%d speakers built), want a speaker not restarting", r, n)
	}
	again := newFakeSpeaker()
	run(again)
	if r, n := restarting(again); !r || n != 1 {
		t.Errorf("restart over the same subnet: restarting %v (%d speakers built), want one restarting speaker", r, n)
	}
	// subnet.env names a subnet this node does not get.
	env := subnetenv.Env{MTU: 1500}
	env.SetFamily(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.99.1.0/24"))
	if err := subnetenv.Write(file, env); err != nil {
		t.Fatal(err)
	}
	other := newFakeSpeaker()
	run(other)
	if r, n := restarting(other); r || n != 2 {
		t.Errorf("restart with another subnet: restarting %v (%d speakers built), want the speaker rebuilt not restarting", r, n)
	}
}
