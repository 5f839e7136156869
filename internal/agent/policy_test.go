package agent

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/lease/leasetest"
	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/nflog"
)

// fakeSource is a PolicySource whose cluster the test sets.
type fakeSource struct {
	synced  atomic.Bool
	changed chan struct{}

	mu      sync.Mutex // guards cluster
	cluster *policy.Cluster
}

func newFakeSource(c *policy.Cluster) *fakeSource {
	return &fakeSource{changed: make(chan struct{}, 1), cluster: c}
}

func (s *fakeSource) Run(ctx context.Context)  { <-ctx.Done() }
func (s *fakeSource) Synced() bool             { return s.synced.Load() }
func (s *fakeSource) Changed() <-chan struct{} { return s.changed }
func (s *fakeSource) Err() error               { return nil }
func (s *fakeSource) Snapshot() *policy.Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster
}

// set replaces the cluster and says so.
func (s *fakeSource) set(c *policy.Cluster) {
	s.mu.Lock()
	s.cluster = c
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// fakeEnforcer records what the agent asks of the policy table.
type fakeEnforcer struct {
	mu       sync.Mutex // guards the fields below
	applied  []*policy.Ruleset
	calls    []string // "apply", "resync", "remove"
	failNext int
	denied   map[netip.Addr]DeniedCounts
	// replaced: the last Apply replaced the table; the next one does
	// unless an Apply succeeded since the last Resync (as nft.Applier).
	trusted bool
}

// setDenied sets the kernel's counters.
func (e *fakeEnforcer) setDenied(m map[netip.Addr]DeniedCounts) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.denied = m
}

func (e *fakeEnforcer) Apply(_ context.Context, rs *policy.Ruleset) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "apply")
	if e.failNext > 0 {
		e.failNext--
		e.trusted = false
		return errors.New("injected nft failure")
	}
	if !e.trusted { // a new table: its counters start at 0
		for a := range e.denied {
			e.denied[a] = DeniedCounts{}
		}
	}
	e.trusted = true
	e.applied = append(e.applied, rs)
	return nil
}

func (e *fakeEnforcer) Resync() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "resync")
	e.trusted = false
}

func (e *fakeEnforcer) Remove(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "remove")
	return nil
}

func (e *fakeEnforcer) Denied(context.Context) (map[netip.Addr]DeniedCounts, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.denied), nil
}

func (e *fakeEnforcer) last() (*policy.Ruleset, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var rs *policy.Ruleset
	if len(e.applied) > 0 {
		rs = e.applied[len(e.applied)-1]
	}
	return rs, append([]string(nil), e.calls...)
}

// bridgePlatform is a fakePlatform with br_netfilter's sysctls.
type bridgePlatform struct {
	*fakePlatform
	err error
}

func (p bridgePlatform) BridgeNetfilter() ([]string, error) { return nil, p.err }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// denyAll is a cluster with a default-deny ingress policy in namespace
// shop: its pods on node n1 are isolated, the one on n2 is not this node's.
func denyAll(types ...networkingv1.PolicyType) *policy.Cluster {
	if types == nil {
		types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	}
	return &policy.Cluster{
		Namespaces: []*policy.Namespace{{Name: "shop"}},
		Pods: []*policy.Pod{
			{Namespace: "shop", Name: "web", Node: "n1", IPs: []netip.Addr{addr("10.244.1.2"), addr("fd00::2")}},
			{Namespace: "shop", Name: "far", Node: "n2", IPs: []netip.Addr{addr("10.244.2.2")}},
		},
		Policies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: types}}},
	}
}

func startPolicy(t *testing.T, p Platform, po *PolicyOptions, log *slog.Logger) *Agent {
	t.Helper()
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if log == nil {
		log = quiet()
	}
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Resync: time.Hour, Log: log, Policy: po}, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return a
}

// TestPolicyWaitsForTheFirstList: nothing is applied before the source
// has listed the whole cluster (a restart keeps the table in force until
// then); the node is not ready meanwhile; then the compiled rule set of
// this node is applied.
func TestPolicyWaitsForTheFirstList(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{}
	a := startPolicy(t, &fakePlatform{}, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}, nil)
	eventually(t, "the lease synced", func() bool { return a.Status().Synced })
	time.Sleep(300 * time.Millisecond)
	if _, calls := enf.last(); len(calls) > 0 {
		t.Fatalf("the enforcer was called before the first list: %v", calls)
	}
	st := a.Status()
	if st.Ready || st.Policy == nil || !st.Policy.Enabled || st.Policy.Listed || !strings.Contains(st.Policy.Error, "waiting for the first list") {
		t.Fatalf("status before the list: ready %t, policy %+v", st.Ready, st.Policy)
	}
	src.synced.Store(true)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	rs, calls := enf.last()
	if len(calls) != 1 || rs == nil || rs.Node != "n1" {
		t.Fatalf("calls %v, rule set %+v", calls, rs)
	}
	var pods []string
	for _, e := range rs.Pods {
		pods = append(pods, e.Pod+" "+e.Addr.String())
	}
	if strings.Join(pods, ",") != "shop/web 10.244.1.2,shop/web fd00::2" {
		t.Errorf("isolated pods %q", pods)
	}
	if st := a.Status(); st.Policy.IsolatedPods != 1 || st.Policy.LastSync == "" || st.Policy.Error != "" {
		t.Errorf("policy status %+v", st.Policy)
	}
}

// TestPolicyFollowsChanges: each change is compiled and applied; the
// metrics follow, the denied counters per pod among them: a dual-stack
// pod's addresses added up, monotonic across a full apply that starts the
// kernel's counters again.
func TestPolicyFollowsChanges(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{}
	src.synced.Store(true)
	enf.denied = map[netip.Addr]DeniedCounts{addr("10.244.1.2"): {Ingress: 50}}
	a := startPolicy(t, &fakePlatform{}, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}, nil)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	denied := func(dir string) float64 {
		return testutilCount(t, a, `weft_policy_denied_packets_total{direction="`+dir+`",namespace="shop",pod="web"}`)
	}
	if n := denied("ingress"); n != 0 {
		t.Errorf("%v denied before any packet (the first apply replaced the table)", n)
	}
	enf.setDenied(map[netip.Addr]DeniedCounts{addr("10.244.1.2"): {Ingress: 3}, addr("fd00::2"): {Ingress: 4, Egress: 1}, addr("10.244.9.9"): {Ingress: 100}})
	_, body := get(t, a, "/metrics")
	for _, want := range []string{
		`weft_policy_denied_packets_total{direction="ingress",namespace="shop",pod="web"} 7`,
		`weft_policy_denied_packets_total{direction="egress",namespace="shop",pod="web"} 1`,
		"weft_policy_isolated_pods 1", `weft_policy_syncs_total{result="ok"} 1`, "weft_policy_chains 2", "weft_policy_set_elements 2",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "10.244.9.9") || strings.Count(body, "weft_policy_denied_packets_total{") != 2 {
		t.Errorf("denied counters of addresses that are no local isolated pod:\n%s", body)
	}
	enf.setDenied(map[netip.Addr]DeniedCounts{addr("10.244.1.2"): {Ingress: 5}, addr("fd00::2"): {Ingress: 4, Egress: 1}})
	if n := denied("ingress"); n != 9 {
		t.Errorf("ingress %v, want 9", n)
	}
	// A full apply (the resync's) starts the kernel's counters again.
	enf.Resync()
	if err := a.policySync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	enf.setDenied(map[netip.Addr]DeniedCounts{addr("10.244.1.2"): {Ingress: 2}})
	if in, out := denied("ingress"), denied("egress"); in != 11 || out != 1 {
		t.Errorf("after a full apply: ingress %v, egress %v; want 11, 1", in, out)
	}

	// The policy goes both ways, then away.
	src.set(denyAll(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress))
	eventually(t, "egress isolated", func() bool {
		rs, _ := enf.last()
		return len(rs.Pods) == 2 && rs.Pods[0].Egress != ""
	})
	c := denyAll()
	c.Policies = nil
	src.set(c)
	eventually(t, "nothing isolated", func() bool { rs, _ := enf.last(); return len(rs.Pods) == 0 })
	eventually(t, "status", func() bool { return a.Status().Policy.IsolatedPods == 0 })
	if n := testutilCount(t, a, `weft_policy_syncs_total{result="ok"}`); n != 4 {
		t.Errorf("%v ok syncs, want 4", n)
	}
	if strings.Contains(func() string { _, b := get(t, a, "/metrics"); return b }(), "weft_policy_denied_packets_total{") {
		t.Error("denied counters of a pod no longer isolated")
	}
}

// TestPolicyErrorRetried: a failed apply is reported (status, metrics),
// the node is not ready, and it is retried as a full apply until it works.
func TestPolicyErrorRetried(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{failNext: 2}
	src.synced.Store(true)
	a := startPolicy(t, &fakePlatform{}, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}, nil)
	eventually(t, "the first failure reported", func() bool {
		st := a.Status()
		return strings.Contains(st.Policy.Error, "apply the NetworkPolicy rule set: injected nft failure") && !st.Ready
	})
	eventually(t, "ready", func() bool { return a.Status().Ready })
	_, calls := enf.last()
	if strings.Join(calls, ",") != "apply,resync,apply,resync,apply" {
		t.Errorf("calls %v: want each retry after a resync", calls)
	}
	if n := testutilCount(t, a, `weft_policy_syncs_total{result="error"}`); n != 2 {
		t.Errorf("%v failed syncs, want 2", n)
	}
}

// TestPolicyResync: every resync interval the rule set is compiled and
// applied (the difference: usually nothing), and every refreshEvery-th one
// replaces the table whole.
func TestPolicyResync(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{}
	src.synced.Store(true)
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Resync: 100 * time.Millisecond, Log: quiet(),
		Policy: &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}}, &fakePlatform{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "two full resyncs", func() bool {
		_, calls := enf.last()
		return strings.Count(strings.Join(calls, ","), "resync,apply") >= 2
	})
	_, calls := enf.last()
	// The first apply, then per full resync refreshEvery applies.
	if n, full := strings.Count(strings.Join(calls, ","), "apply"), strings.Count(strings.Join(calls, ","), "resync"); n < full*refreshEvery {
		t.Errorf("%d applies for %d full replacements: want an apply every resync interval, a full one every %d (calls %v)", n, full, refreshEvery, calls)
	}
}

// TestPolicyProblemsLoggedOnce: a policy the engine cannot render in full
// is logged once with its name, however often it is compiled, and shown
// in the status; the rest applies.
func TestPolicyProblemsLoggedOnce(t *testing.T) {
	c := denyAll("Sideways")
	src, enf := newFakeSource(c), &fakeEnforcer{}
	src.synced.Store(true)
	logs := &syncBuffer{}
	a := startPolicy(t, &fakePlatform{}, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}, slog.New(slog.NewTextHandler(logs, nil)))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	for range 3 {
		src.set(denyAll("Sideways"))
	}
	eventually(t, "several syncs", func() bool { _, calls := enf.last(); return len(calls) >= 2 })
	if n := strings.Count(logs.String(), "NetworkPolicy not enforced in full"); n != 1 || !strings.Contains(logs.String(), "policy=shop/deny") {
		t.Errorf("problem logged %d times, want once with the policy's name:\n%s", n, logs.String())
	}
	if st := a.Status(); len(st.Policy.Problems) != 1 || !strings.Contains(st.Policy.Problems[0], `shop/deny: unknown policy type "Sideways"`) {
		t.Errorf("problems %q", st.Policy.Problems)
	}
	if rs, _ := enf.last(); len(rs.Pods) != 2 {
		t.Errorf("the pod is not isolated: %+v", rs.Pods)
	}
	if n := testutilCount(t, a, "weft_policy_problems"); n != 1 {
		t.Errorf("weft_policy_problems %v", n)
	}
}

// TestPolicyOff: with enforcement off the agent removes the table a
// previous run left, says so once, applies nothing, and is ready.
func TestPolicyOff(t *testing.T) {
	enf := &fakeEnforcer{}
	logs := &syncBuffer{}
	a := startPolicy(t, &fakePlatform{}, &PolicyOptions{Enabled: false, Enforcer: enf}, slog.New(slog.NewTextHandler(logs, nil)))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	eventually(t, "removed", func() bool { _, calls := enf.last(); return len(calls) == 1 })
	time.Sleep(100 * time.Millisecond)
	if _, calls := enf.last(); strings.Join(calls, ",") != "remove" {
		t.Errorf("calls %v", calls)
	}
	if n := strings.Count(logs.String(), "NetworkPolicy enforcement is off"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs.String())
	}
	if st := a.Status(); st.Policy == nil || st.Policy.Enabled {
		t.Errorf("policy status %+v", st.Policy)
	}
	if _, body := get(t, a, "/metrics"); strings.Contains(body, "weft_policy_") {
		t.Error("policy metrics while enforcement is off")
	}
}

// TestNoBridgeNetfilter: without br_netfilter the agent still enforces
// (cross-node traffic is routed through the forward hook) and says once,
// in one line, that same-node pods are not policed.
func TestNoBridgeNetfilter(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{}
	src.synced.Store(true)
	logs := &syncBuffer{}
	p := bridgePlatform{fakePlatform: &fakePlatform{}, err: errors.Join(errors.New("/proc/sys/net/bridge/bridge-nf-call-iptables is missing"), ErrNoBridgeNetfilter)}
	a := startPolicy(t, p, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf}, slog.New(slog.NewTextHandler(logs, nil)))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	a.checkBridge() // as at a resync
	if n := strings.Count(logs.String(), "br_netfilter is not loaded: pods on the same node are not policed between themselves until it is (modprobe br_netfilter)"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs.String())
	}
	if st := a.Status(); !strings.Contains(st.Policy.Warning, "br_netfilter is not loaded") {
		t.Errorf("warning %q", st.Policy.Warning)
	}
}

// TestPolicyNeedsItsParts: enforcement without a source is refused before
// anything is leased.
func TestPolicyNeedsItsParts(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Log: quiet(),
		Policy: &PolicyOptions{Enabled: true, Node: "n1", Enforcer: &fakeEnforcer{}}}, &fakePlatform{})
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "NetworkPolicy: a source") {
		t.Errorf("run: %v", err)
	}
	if ls, _ := m.List(context.Background()); len(ls) > 0 {
		t.Errorf("leased %v", ls)
	}
}

// TestPolicyDenialsLogged: a denied packet read from the log group is
// logged once with the pods' names (the local one and the peer), and with
// the bare address and port of what is no pod.
func TestPolicyDenialsLogged(t *testing.T) {
	src, enf := newFakeSource(denyAll()), &fakeEnforcer{}
	src.synced.Store(true)
	logs := &syncBuffer{}
	packets := make(chan nflog.Packet)
	po := &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: enf,
		Denials: func(ctx context.Context, fn func(nflog.Packet)) error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case pk := <-packets:
					fn(pk)
				}
			}
		}}
	a := startPolicy(t, &fakePlatform{}, po, slog.New(slog.NewTextHandler(logs, nil)))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	packets <- nflog.Packet{Prefix: "weft-deny-in ", Src: addr("10.244.2.2"), Dst: addr("10.244.1.2"), Protocol: "TCP", SrcPort: 40000, DstPort: 80}
	packets <- nflog.Packet{Prefix: "weft-deny-out ", Src: addr("10.244.1.2"), Dst: addr("192.0.2.9"), Protocol: "ICMP"}
	eventually(t, "two lines", func() bool { return strings.Count(logs.String(), "NetworkPolicy denied") == 2 })
	for _, want := range []string{
		`msg="NetworkPolicy denied" direction=ingress protocol=TCP from="shop/far (10.244.2.2:40000)" to="shop/web (10.244.1.2:80)"`,
		`msg="NetworkPolicy denied" direction=egress protocol=ICMP from="shop/web (10.244.1.2)" to=192.0.2.9`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no line %s in:\n%s", want, logs.String())
		}
	}
}
