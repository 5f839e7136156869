package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/nflog"
)

// PolicyOptions configure NetworkPolicy enforcement, a Kubernetes mode
// feature: nil Options.Policy (etcd mode) leaves the policy table alone.
type PolicyOptions struct {
	// Enabled enforces the cluster's NetworkPolicies on this node's pods.
	// Off, the agent removes the table a previous run may have left, so
	// that another policy engine can take over.
	Enabled bool
	// Node is this node's name, as its pods' spec.nodeName has it.
	Node string
	// Source is the cluster as policies see it; needed when Enabled.
	Source PolicySource
	// Enforcer writes the rule set into the kernel.
	Enforcer PolicyEnforcer
	// Denials, when set, reads the packets the rule set logs as denied
	// (an NFLOG group, package policy/nflog) until ctx ends, calling fn
	// for each; the agent logs them with the pods' names.
	Denials func(ctx context.Context, fn func(nflog.Packet)) error
}

// PolicySource is the cluster's Pods, Namespaces and NetworkPolicies as
// watched (package policy/source).
type PolicySource interface {
	// Run watches until ctx ends.
	Run(ctx context.Context)
	// Synced reports whether the first full list of every kind has
	// arrived: only then is a snapshot the whole cluster.
	Synced() bool
	// Changed receives a value after something changed; a burst of
	// changes sends one.
	Changed() <-chan struct{}
	// Snapshot returns the cluster now. It is read only.
	Snapshot() *policy.Cluster
	// Err is the last list or watch error, nil if none.
	Err() error
}

// PolicyEnforcer is the node's NetworkPolicy table (package policy/nft:
// `table inet weft-policy`).
type PolicyEnforcer interface {
	// Apply makes the table enforce rs in one atomic transaction: after
	// it, all of rs is in force, or, on error, what was before. It may
	// write only the difference from the last successful Apply.
	Apply(ctx context.Context, rs *policy.Ruleset) error
	// Resync makes the next Apply read or replace the whole table.
	Resync()
	// Remove deletes the table; none is success.
	Remove(ctx context.Context) error
	// Denied returns the packets dropped so far per local pod address.
	Denied(ctx context.Context) (map[netip.Addr]DeniedCounts, error)
}

// DeniedCounts are the packets a pod address was denied, by direction.
type DeniedCounts struct{ Ingress, Egress uint64 }

// bridgeNetfilter is a Platform that can make bridged traffic pass the IP
// hooks (Linux: br_netfilter's sysctls).
type bridgeNetfilter interface {
	// BridgeNetfilter sets net.bridge.bridge-nf-call-iptables and
	// -ip6tables to 1 in the agent's namespace where they are 0, and
	// returns the ones it set. The error wraps ErrNoBridgeNetfilter when
	// br_netfilter is not loaded.
	BridgeNetfilter() (set []string, err error)
}

// ErrNoBridgeNetfilter: the kernel has no br_netfilter (the module is not
// loaded), so traffic between pods on one bridge skips the IP hooks.
var ErrNoBridgeNetfilter = errors.New("br_netfilter is not loaded")

// policyState is what /readyz and the metrics report of enforcement.
// Guarded by Agent.mu.
type policyState struct {
	listed   bool
	lastSync time.Time
	err      error
	isolated int
	problems []string // "namespace/name: why", logged once each
	warning  string   // br_netfilter missing or not settable
	pods     map[netip.Addr]string
	// names are every pod's address to namespace/name, for the log of
	// denied packets.
	names map[netip.Addr]string
}

// PolicyStatus is the NetworkPolicy part of /readyz.
type PolicyStatus struct {
	Enabled bool `json:"enabled"`
	// Listed: the pods, namespaces and policies have been listed; no rule
	// set is applied before.
	Listed   bool   `json:"listed"`
	LastSync string `json:"lastSync,omitempty"`
	Error    string `json:"error,omitempty"`
	// IsolatedPods are this node's pods that some policy isolates.
	IsolatedPods int `json:"isolatedPods"`
	// Problems are the policies, or parts of them, that are not enforced.
	Problems []string `json:"problems,omitempty"`
	Warning  string   `json:"warning,omitempty"`
}

// policyMetrics are the NetworkPolicy series.
type policyMetrics struct {
	syncs    *prometheus.CounterVec
	duration prometheus.Histogram
	chains   prometheus.Gauge
	rules    prometheus.Gauge
	elements prometheus.Gauge
	problems prometheus.Gauge
	isolated prometheus.Gauge
	ops      prometheus.Gauge
	denied   *prometheus.Desc
}

func (a *Agent) registerPolicyMetrics() {
	m := &policyMetrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_policy_syncs_total", Help: "NetworkPolicy syncs (compile and apply), by result.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_policy_sync_duration_seconds", Help: "Duration of a NetworkPolicy sync: snapshot, compile and apply.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		chains: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_chains", Help: "Chains of the applied NetworkPolicy rule set: a group chain per distinct list of policies, a chain per policy and direction.",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_rules", Help: "Policy rules in the applied NetworkPolicy rule set.",
		}),
		elements: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_set_elements", Help: "Set and map elements of the applied NetworkPolicy rule set: isolated pod addresses per direction, peer ranges, ports and named ports.",
		}),
		problems: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_problems", Help: "Policies, or parts of them, that could not be rendered (see /readyz networkPolicy.problems).",
		}),
		isolated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_isolated_pods", Help: "This node's pods that some NetworkPolicy isolates.",
		}),
		ops: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_last_apply_ops", Help: "nftables commands in the last NetworkPolicy transaction (0: nothing to change).",
		}),
		denied: prometheus.NewDesc("weft_policy_denied_packets_total",
			"Packets NetworkPolicy dropped, per local pod and direction (read from the kernel's counters at scrape).",
			[]string{"namespace", "pod", "direction"}, nil),
	}
	for _, r := range []string{"ok", "error"} {
		m.syncs.WithLabelValues(r)
	}
	a.pm = m
	a.m.reg.MustRegister(m.syncs, m.duration, m.chains, m.rules, m.elements, m.problems, m.isolated, m.ops, deniedCollector{a})
}

// deniedCollector reads the denied counters at scrape.
type deniedCollector struct{ a *Agent }

func (c deniedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.a.pm.denied }

func (c deniedCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.enfMu.Lock()
	err := a.denied.fold(ctx, a, false)
	totals := make(map[string][2]uint64, len(a.denied.total))
	for pod, n := range a.denied.total {
		totals[pod] = *n
	}
	a.enfMu.Unlock()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(a.pm.denied, err)
		return
	}
	for pod, n := range totals {
		ns, name := splitKey(pod)
		ch <- prometheus.MustNewConstMetric(a.pm.denied, prometheus.CounterValue, float64(n[0]), ns, name, "ingress")
		ch <- prometheus.MustNewConstMetric(a.pm.denied, prometheus.CounterValue, float64(n[1]), ns, name, "egress")
	}
}

// deniedTotals keep the denied packets per pod monotonic: the kernel's
// counters are per address and start again at 0 when the table is
// replaced (a full apply) or an element re-added. Guarded by Agent.enfMu.
type deniedTotals struct {
	last  map[netip.Addr]DeniedCounts // the kernel's counters at the last read
	total map[string]*[2]uint64       // by pod: ingress, egress
}

// fold reads the kernel's counters and adds what they gained since the
// last read to the pods' totals, attributing addresses by the rule set in
// force; with baseline, it only takes them as the new starting point (just
// after a full apply). Pods no longer isolated are dropped. a.enfMu must
// be held.
func (d *deniedTotals) fold(ctx context.Context, a *Agent, baseline bool) error {
	counts, err := a.o.Policy.Enforcer.Denied(ctx)
	if err != nil {
		return fmt.Errorf("read the denied counters: %w", err)
	}
	a.mu.Lock()
	pods := a.pol.pods
	a.mu.Unlock()
	if d.total == nil {
		d.total = map[string]*[2]uint64{}
	}
	isolated := make(map[string]bool, len(pods))
	for _, pod := range pods {
		isolated[pod] = true
	}
	for pod := range d.total {
		if !isolated[pod] {
			delete(d.total, pod)
		}
	}
	for addr, pod := range pods {
		if d.total[pod] == nil {
			d.total[pod] = &[2]uint64{}
		}
		if baseline {
			continue
		}
		cur, was := counts[addr], d.last[addr]
		gain := func(cur, was uint64) uint64 {
			if cur < was { // the counter started again
				return cur
			}
			return cur - was
		}
		d.total[pod][0] += gain(cur.Ingress, was.Ingress)
		d.total[pod][1] += gain(cur.Egress, was.Egress)
	}
	d.last = counts
	return nil
}

func splitKey(key string) (ns, name string) {
	for i := range len(key) {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// policyLoop enforces NetworkPolicy until ctx ends: it waits for the
// first full list of pods, namespaces and policies (until then, a table a
// previous run left stays in force: a restart never applies a partial or
// empty rule set), then compiles and applies on every change and every
// resync interval (the table replaced whole every refreshEvery-th), and
// retries a failed apply with backoff.
// On return the table stays, like the rest of the data plane.
func (a *Agent) policyLoop(ctx context.Context) error {
	p := a.o.Policy
	if !p.Enabled {
		return a.policyOff(ctx)
	}
	a.checkBridge()
	if p.Denials != nil {
		go a.logDenials(ctx)
	}
	if err := a.waitListed(ctx); err != nil {
		return nil // ctx ended
	}
	tick := time.NewTicker(a.o.Resync)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := 200 * time.Millisecond
	ticks := 0
	for first := true; ; first = false {
		full := first // a new enforcer replaces the whole table
		if !first {
			select {
			case <-ctx.Done():
				return nil
			case <-p.Source.Changed():
			case <-tick.C:
				// Every resync compares the whole desired rule set with
				// the table as last written and sends the difference
				// (usually nothing); every refreshEvery-th one replaces
				// the table whole, the safety net under hand changes to
				// it, as the routes' full syncs re-read the kernel.
				a.checkBridge()
				ticks++
				if ticks%refreshEvery == 0 {
					p.Enforcer.Resync()
					full = true
				}
			case <-retry.C:
				p.Enforcer.Resync()
				full = true
			}
		}
		err := a.policySync(ctx, full)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			a.log.Error("NetworkPolicy sync failed; the rules in force stay until it succeeds; retrying", "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		retry.Stop()
		backoff = 200 * time.Millisecond
	}
}

// waitListed blocks until the source has listed everything, saying so
// when that takes a while.
func (a *Agent) waitListed(ctx context.Context) error {
	src := a.o.Policy.Source
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	warned := false
	for !src.Synced() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if !warned && time.Since(start) > 10*time.Second {
			warned = true
			a.log.Warn("NetworkPolicy: still waiting for the first list of pods, namespaces and networkpolicies; the rules in force stay as they are", "err", src.Err())
		}
	}
	c := src.Snapshot()
	a.log.Info("NetworkPolicy: listed the cluster; enforcing", "pods", len(c.Pods), "namespaces", len(c.Namespaces), "policies", len(c.Policies), "after", time.Since(start).Round(time.Millisecond))
	a.mu.Lock()
	a.pol.listed = true
	a.mu.Unlock()
	return nil
}

// policyOff removes the table a previous run may have left, retrying
// until that works or ctx ends.
func (a *Agent) policyOff(ctx context.Context) error {
	err := a.retry(ctx, "remove table inet weft-policy", func(ctx context.Context) (bool, error) {
		if err := a.o.Policy.Enforcer.Remove(ctx); err != nil {
			return false, err
		}
		a.log.Info("NetworkPolicy enforcement is off (--network-policy=false): table inet weft-policy is removed if a previous run left one")
		return true, nil
	})
	if ctx.Err() != nil {
		return nil // stopping
	}
	return err
}

// checkBridge makes same-node pod traffic pass the forward hook, and says
// so when it changed something or cannot.
func (a *Agent) checkBridge() {
	b, ok := a.p.(bridgeNetfilter)
	if !ok {
		return
	}
	set, err := b.BridgeNetfilter()
	for _, s := range set {
		a.log.Info("NetworkPolicy: set " + s + "=1 so that traffic between pods on this node's bridge passes the policy rules")
	}
	warning := ""
	switch {
	case errors.Is(err, ErrNoBridgeNetfilter):
		warning = "br_netfilter is not loaded: pods on the same node are not policed between themselves until it is (modprobe br_netfilter)"
	case err != nil:
		warning = "pods on the same node may not be policed between themselves: " + err.Error()
	}
	a.mu.Lock()
	was := a.pol.warning
	a.pol.warning = warning
	a.mu.Unlock()
	if warning != "" && warning != was {
		a.log.Warn("NetworkPolicy: " + warning)
	}
}

// policySync compiles the cluster for this node and applies it. A full
// apply replaces the table, and with it the denied counters: they are
// folded into the pods' totals before, and read as the new start after.
func (a *Agent) policySync(ctx context.Context, full bool) (err error) {
	p := a.o.Policy
	start := time.Now()
	defer func() {
		a.pm.duration.Observe(time.Since(start).Seconds())
		res := "ok"
		if err != nil {
			res = "error"
		}
		a.pm.syncs.WithLabelValues(res).Inc()
		a.mu.Lock()
		a.pol.err = err
		if err == nil {
			a.pol.lastSync = time.Now()
		}
		a.mu.Unlock()
	}()
	c := p.Source.Snapshot()
	rs := policy.Compile(c, p.Node)
	var names map[netip.Addr]string
	if p.Denials != nil {
		names = make(map[netip.Addr]string, len(c.Pods))
		for _, pod := range c.Pods {
			for _, ip := range pod.IPs {
				names[ip] = pod.Key()
			}
		}
	}
	pods := make(map[netip.Addr]string, len(rs.Pods))
	isolated := map[string]bool{}
	for _, e := range rs.Pods {
		pods[e.Addr] = e.Pod
		isolated[e.Pod] = true
	}
	a.enfMu.Lock()
	if full {
		// No table yet (the first start) is no error worth a word.
		_ = a.denied.fold(ctx, a, false)
	}
	err = p.Enforcer.Apply(ctx, rs)
	ops := -1
	if o, ok := p.Enforcer.(interface{ LastOps() int }); ok {
		ops = o.LastOps()
	}
	if err == nil {
		a.mu.Lock()
		a.pol.pods, a.pol.isolated, a.pol.names = pods, len(isolated), names
		a.mu.Unlock()
		if full {
			_ = a.denied.fold(ctx, a, true)
		}
	}
	a.enfMu.Unlock()
	a.reportProblems(rs.Problems)
	if err != nil {
		return fmt.Errorf("apply the NetworkPolicy rule set: %w", err)
	}
	if ops >= 0 {
		a.pm.ops.Set(float64(ops))
	}
	chains, rules, elems := rulesetSize(rs)
	a.pm.chains.Set(float64(chains))
	a.pm.rules.Set(float64(rules))
	a.pm.elements.Set(float64(elems))
	a.pm.isolated.Set(float64(len(isolated)))
	return nil
}

// reportProblems logs each problem once, while it lasts.
func (a *Agent) reportProblems(ps []policy.Problem) {
	cur := make([]string, 0, len(ps))
	policyOf := map[string]string{}
	for _, p := range ps {
		s := p.Policy + ": " + p.Err.Error()
		cur = append(cur, s)
		policyOf[s] = p.Policy
	}
	slices.Sort(cur)
	cur = slices.Compact(cur)
	a.mu.Lock()
	was := a.pol.problems
	a.pol.problems = cur
	a.mu.Unlock()
	for _, s := range cur {
		if !slices.Contains(was, s) {
			a.log.Warn("NetworkPolicy not enforced in full; the other policies apply: "+s, "policy", policyOf[s])
		}
	}
	a.pm.problems.Set(float64(len(cur)))
}

// rulesetSize counts a rule set's chains, rules and set elements.
func rulesetSize(rs *policy.Ruleset) (chains, rules, elems int) {
	chains = len(rs.Groups) + len(rs.Chains)
	for _, e := range rs.Pods {
		if e.Ingress != "" {
			elems++
		}
		if e.Egress != "" {
			elems++
		}
	}
	for _, c := range rs.Chains {
		rules += len(c.Rules)
		for _, r := range c.Rules {
			elems += len(r.Peers) + len(r.Ports) + len(r.Named)
		}
	}
	return chains, rules, elems
}

// policyStatus reports enforcement; a.mu must be held.
func (a *Agent) policyStatus() *PolicyStatus {
	if a.o.Policy == nil {
		return nil
	}
	s := &PolicyStatus{Enabled: a.o.Policy.Enabled}
	if !s.Enabled {
		return s
	}
	s.Listed, s.IsolatedPods, s.Problems, s.Warning = a.pol.listed, a.pol.isolated, a.pol.problems, a.pol.warning
	if !a.pol.lastSync.IsZero() {
		s.LastSync = a.pol.lastSync.Format(time.RFC3339Nano)
	}
	switch {
	case a.pol.err != nil:
		s.Error = a.pol.err.Error()
	case !s.Listed:
		s.Error = "waiting for the first list of pods, namespaces and networkpolicies"
		if err := a.o.Policy.Source.Err(); err != nil {
			s.Error += ": " + err.Error()
		}
	}
	return s
}

// logDenials logs each packet the rule set reports as denied (NFLOG,
// rate-limited in the rule) with the pods' names, until ctx ends. Reading
// them is best effort: a failure is said once and enforcement goes on.
func (a *Agent) logDenials(ctx context.Context) {
	name := func(ip netip.Addr, port uint16) string {
		a.mu.Lock()
		n := a.pol.names[ip]
		a.mu.Unlock()
		ap := ip.String()
		if port != 0 {
			ap = netip.AddrPortFrom(ip, port).String()
		}
		if n == "" {
			return ap
		}
		return n + " (" + ap + ")"
	}
	err := a.o.Policy.Denials(ctx, func(pk nflog.Packet) {
		dir := "ingress"
		if strings.Contains(pk.Prefix, "-out") {
			dir = "egress"
		}
		a.log.Info("NetworkPolicy denied", "direction", dir, "protocol", pk.Protocol,
			"from", name(pk.Src, pk.SrcPort), "to", name(pk.Dst, pk.DstPort))
	})
	if err != nil && ctx.Err() == nil {
		a.log.Error("NetworkPolicy: cannot read the log of denied packets; they are still dropped and counted", "err", err)
	}
}
