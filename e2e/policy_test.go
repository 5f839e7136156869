package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// policyLab is a kube lab of two nodes with two pods each, the pods
// labelled by the test through the API server as a user would.
type policyLab struct {
	*lab
	c    kubernetes.Interface
	pods map[string]podRef // by lab pod name: n1-p1, ...
}

type podRef struct {
	ns   string // the pod's network namespace
	addr netip.Addr
	obj  string // the Pod object's namespace/name
}

func newPolicyLab(t *testing.T, args ...string) *policyLab {
	l := kubeLab(t, append([]string{"--nodes", "2", "--pods-per-node", "2"}, args...)...)
	p := &policyLab{lab: l, c: l.admin(), pods: map[string]podRef{}}
	st := l.status()
	for _, pod := range st.Pods {
		p.pods[pod.Name] = podRef{ns: l.name + "-" + pod.Name, addr: netip.MustParseAddr(pod.Addr)}
	}
	// The lab registers each pod as a Pod object; find them by address.
	list, err := p.c.CoreV1().Pods("").List(reqCtx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Items {
		for name, r := range p.pods {
			if o.Status.PodIP == r.addr.String() {
				r.obj = o.Namespace + "/" + o.Name
				p.pods[name] = r
			}
		}
	}
	for name, r := range p.pods {
		if r.obj == "" {
			t.Fatalf("the lab registered no Pod object for %s (%s)", name, r.addr)
		}
		p.label(t, name, map[string]string{"lab-pod": name})
	}
	return p
}

// label sets labels on a lab pod's Pod object.
func (p *policyLab) label(t *testing.T, pod string, labels map[string]string) {
	t.Helper()
	ns, name, _ := strings.Cut(p.pods[pod].obj, "/")
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if _, err := p.c.CoreV1().Pods(ns).Patch(reqCtx(t), name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		t.Fatalf("label %s: %v", pod, err)
	}
}

// ingressPolicy is a policy in the namespace of lab pod dst that selects
// it for ingress and admits the peers (none: it denies all).
func (p *policyLab) ingressPolicy(name, dst string, peers ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	ns, _, _ := strings.Cut(p.pods[dst].obj, "/")
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"lab-pod": dst}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if len(peers) > 0 {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers}}
	}
	return np
}

// apply creates or updates a policy in the namespace of pod dst selecting
// it for ingress, allowing from the pods labelled lab-pod in from (no
// ports: every protocol). An empty from denies all.
func (p *policyLab) apply(t *testing.T, name, dst string, from ...string) {
	t.Helper()
	var peers []networkingv1.NetworkPolicyPeer
	if len(from) > 0 {
		peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "lab-pod", Operator: metav1.LabelSelectorOpIn, Values: from}}}})
	}
	np := p.ingressPolicy(name, dst, peers...)
	ns := np.Namespace
	api := p.c.NetworkingV1().NetworkPolicies(ns)
	old, err := api.Get(reqCtx(t), name, metav1.GetOptions{})
	if err == nil {
		np.ResourceVersion = old.ResourceVersion
		_, err = api.Update(reqCtx(t), np, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(reqCtx(t), np, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("apply policy %s: %v", name, err)
	}
}

// reaches reports whether a TCP SYN from pod src gets an answer from
// pod dst's stack within timeout: port 9 has no server, so a reset (or an
// accept) means the policy let the SYN through; a drop times out.
func (p *policyLab) reaches(src, dst string, timeout time.Duration) bool {
	err := netns.Do(p.pods[src].ns, func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(p.pods[dst].addr, 9).String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	return err == nil || errors.Is(err, syscall.ECONNREFUSED)
}

// listen starts a TCP server in pod dst on port: it accepts every
// connection and hands the connection to serve.
func (p *policyLab) listen(t *testing.T, dst string, port uint16, serve func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(p.pods[dst].ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
}

// arrivals records when data arrived, for a stream that must keep flowing
// or must stop.
type arrivals struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *arrivals) add(t time.Time) {
	a.mu.Lock()
	a.times = append(a.times, t)
	a.mu.Unlock()
}

// between returns the arrivals in [from, to) and the longest gap between
// consecutive arrivals in that window (from and to included as bounds).
func (a *arrivals) between(from, to time.Time) (n int, gap time.Duration, last time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := from
	for _, t := range a.times {
		if t.Before(from) || !t.Before(to) {
			continue
		}
		n++
		gap = max(gap, t.Sub(prev))
		prev, last = t, t
	}
	return n, max(gap, to.Sub(prev)), last
}

// traffic runs, until ctx ends, a TCP stream (a 1 KiB write every 10 ms)
// and 20 pings a second from src to dst, recording arrivals at dst.
func (p *policyLab) traffic(ctx context.Context, t *testing.T, src, dst string, port uint16) (tcp, ping *arrivals) {
	t.Helper()
	tcp, ping = &arrivals{}, &arrivals{}
	p.listen(t, dst, port, func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 64<<10)
		for {
			n, err := c.Read(b)
			if n > 0 {
				tcp.add(time.Now())
			}
			if err != nil {
				return
			}
		}
	})
	var conn net.Conn
	if err := netns.Do(p.pods[src].ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(p.pods[dst].addr, port).String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("stream %s -> %s: %v", src, dst, err)
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		chunk := make([]byte, 1024)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := conn.Write(chunk); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
	var pc *icmp.PacketConn
	if err := netns.Do(p.pods[src].ns, func() error {
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	id := int(time.Now().UnixNano() & 0xffff)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != p.pods[dst].addr.String() {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				ping.add(time.Now())
			}
		}
	}()
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("weft-e2e-policy")}}
			b, _ := msg.Marshal(nil)
			_, _ = pc.WriteTo(b, &net.IPAddr{IP: p.pods[dst].addr.AsSlice()})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return tcp, ping
}

// TestPolicyChangeUnderTraffic: a connection that a policy change leaves
// allowed keeps flowing (a TCP stream and 20 pings a second, no gap across
// the change); one that the next change denies stops within 1 s. Both for
// a pair across nodes and a pair on one node (across the bridge).
func TestPolicyChangeUnderTraffic(t *testing.T) {
	p := newPolicyLab(t)
	// n2-p1 is the server; n1-p1 talks to it across nodes, n2-p2 on its node.
	p.apply(t, "server", "n2-p1", "n1-p1", "n2-p2")
	if _, ok := poll(10*time.Second, 50*time.Millisecond, func() bool { return !p.reaches("n1-p2", "n2-p1", 100*time.Millisecond) }); !ok {
		t.Fatal("n1-p2 still reaches n2-p1 10 s after a policy that admits only n1-p1 and n2-p2")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type flow struct {
		src       string
		tcp, ping *arrivals
	}
	var flows []flow
	for i, src := range []string{"n1-p1", "n2-p2"} {
		tcp, ping := p.traffic(ctx, t, src, "n2-p1", uint16(7000+i))
		flows = append(flows, flow{src, tcp, ping})
	}
	time.Sleep(2 * time.Second)

	// A change that leaves both allowed: the policy's rules are rewritten
	// (one more peer), and its chain with them.
	changed := time.Now()
	p.apply(t, "server", "n2-p1", "n1-p1", "n2-p2", "n1-p2")
	if _, ok := poll(10*time.Second, 50*time.Millisecond, func() bool { return p.reaches("n1-p2", "n2-p1", 100*time.Millisecond) }); !ok {
		t.Error("n1-p2 does not reach n2-p1 10 s after the policy admitted it")
	}
	time.Sleep(2 * time.Second)
	after := time.Now()
	for _, f := range flows {
		n, gap, _ := f.tcp.between(changed.Add(-time.Second), after)
		pn, pgap, _ := f.ping.between(changed.Add(-time.Second), after)
		t.Logf("%s -> n2-p1 across an allowed change: %d TCP reads (longest gap %s), %d ping replies (longest gap %s)", f.src, n, gap.Round(time.Millisecond), pn, pgap.Round(time.Millisecond))
		if gap > 300*time.Millisecond || pgap > 300*time.Millisecond {
			t.Errorf("%s -> n2-p1: the allowed traffic paused across the change: TCP gap %s, ping gap %s", f.src, gap, pgap)
		}
	}

	// A change that denies both: they stop within 1 s.
	denied := time.Now()
	p.apply(t, "server", "n2-p1", "n1-p2")
	time.Sleep(3 * time.Second)
	end := time.Now()
	for _, f := range flows {
		_, _, lastTCP := f.tcp.between(denied.Add(-time.Second), end)
		_, _, lastPing := f.ping.between(denied.Add(-time.Second), end)
		for what, last := range map[string]time.Time{"TCP": lastTCP, "ping": lastPing} {
			if last.IsZero() {
				t.Errorf("%s -> n2-p1 %s: nothing arrived in the second before the change", f.src, what)
				continue
			}
			stop := last.Sub(denied)
			t.Logf("%s -> n2-p1 %s: last arrival %s after the denying change", f.src, what, stop.Round(time.Millisecond))
			if stop > time.Second {
				t.Errorf("%s -> n2-p1 %s: still flowing %s after the change that denies it", f.src, what, stop.Round(time.Millisecond))
			}
		}
	}
}

// TestPolicyIsolationAcrossRestartAndOutage: a pod under default deny stays
// isolated the whole time its node's agent restarts, is stopped and started
// again, and is cut off the API server; a policy created during the cut
// applies after it. (An agent cannot start while the API server is away:
// it needs its Node; the rules it left stay meanwhile.)
func TestPolicyIsolationAcrossRestartAndOutage(t *testing.T) {
	p := newPolicyLab(t)
	p.apply(t, "deny-all", "n2-p1")
	isolated := func() bool {
		return !p.reaches("n1-p1", "n2-p1", 100*time.Millisecond) && !p.reaches("n2-p2", "n2-p1", 100*time.Millisecond)
	}
	if took, ok := poll(10*time.Second, 50*time.Millisecond, isolated); !ok {
		t.Fatal("n2-p1 reachable 10 s after a default deny")
	} else {
		t.Logf("default deny in force %s after the policy was created", took.Round(time.Millisecond))
	}
	// A prober: any connection to n2-p1 that opens (or is refused by its
	// stack: a reset means the SYN got through) is a breach.
	ctx, cancel := context.WithCancel(context.Background())
	var breaches, probes int
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, src := range []string{"n1-p1", "n2-p2"} {
				open := p.reaches(src, "n2-p1", 50*time.Millisecond)
				mu.Lock()
				probes++
				if open {
					breaches++
				}
				mu.Unlock()
			}
		}
	}()
	stopProbing := func() (int, int) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return probes, breaches
	}
	defer stopProbing()

	p.must("agent", "restart", "n2")
	time.Sleep(2 * time.Second)
	// The agent down for a while: the rules stay in the kernel.
	p.must("agent", "stop", "n2")
	time.Sleep(2 * time.Second)
	p.must("agent", "start", "n2")
	time.Sleep(2 * time.Second)

	// Cut n2's agent off the API server: its connections are reset and new
	// ones refused, inside n2's namespace.
	node := p.nodeNetns(t, "n2")
	apiAddr := p.apiAddr(t)
	for _, argv := range [][]string{
		{"nft", "add", "table", "inet", "e2ecut"},
		{"nft", "add", "chain", "inet", "e2ecut", "out", "{ type filter hook output priority 0 ; }"},
		{"nft", "add", "rule", "inet", "e2ecut", "out", "ip", "daddr", apiAddr.Addr().String(), "tcp", "dport", fmt.Sprint(apiAddr.Port()), "reject", "with", "tcp", "reset"},
	} {
		if _, err := process.Run(node, argv...); err != nil {
			t.Fatal(err)
		}
	}
	cut := true
	uncut := func() {
		if cut {
			if _, err := process.Run(node, "nft", "delete", "table", "inet", "e2ecut"); err != nil {
				t.Error(err)
			}
			cut = false
		}
	}
	t.Cleanup(uncut)
	_, _ = process.Run(node, "ss", "-K", "-t", "dst", apiAddr.Addr().String(), "dport", "=", fmt.Sprint(apiAddr.Port()))
	// During the cut, a policy that would open n2-p1 to n1-p1: the agent
	// cannot see it yet.
	p.apply(t, "allow-n1-p1", "n2-p1", "n1-p1")
	time.Sleep(4 * time.Second)
	n, b := stopProbing()
	t.Logf("%d probes to n2-p1 during the restarts and the cut, %d got through", n, b)
	if b != 0 || n == 0 {
		t.Fatalf("n2-p1 under default deny was reachable %d times out of %d probes during restarts and the cut", b, n)
	}
	if p.reaches("n1-p1", "n2-p1", 200*time.Millisecond) {
		t.Fatal("the policy created during the cut applied before the agent could see it: the cut did not take")
	}
	uncut()
	healed := time.Now()
	if took, ok := poll(60*time.Second, 100*time.Millisecond, func() bool { return p.reaches("n1-p1", "n2-p1", 200*time.Millisecond) }); !ok {
		t.Fatalf("the policy created during the cut did not apply within 60 s after it (%s)", time.Since(healed))
	} else {
		t.Logf("the policy created during the cut applied %s after the agent could reach the API server again", took.Round(time.Millisecond))
	}
	if p.reaches("n2-p2", "n2-p1", 200*time.Millisecond) {
		t.Error("n2-p2 reaches n2-p1: the new policy admits only n1-p1")
	}
}

func (p *policyLab) nodeNetns(t *testing.T, node string) string {
	for _, n := range p.status().Nodes {
		if n.Name == node {
			return n.Netns
		}
	}
	t.Fatalf("no node %s", node)
	return ""
}

// apiAddr is the lab's API server address, from the lab's state.
func (p *policyLab) apiAddr(t *testing.T) netip.AddrPort {
	b, err := os.ReadFile("/run/weft-lab/" + p.name + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Kube struct{ URL string } }
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(st.Kube.URL, "https://")
	ap, err := netip.ParseAddrPort(host)
	if err != nil {
		t.Fatalf("API server URL %q: %v", st.Kube.URL, err)
	}
	return ap
}

// TestPolicyAgentMemory measures the agents' RSS in a 2-node lab before
// and after 5000 Pod objects (shaped as a kubelet reports them) appear in
// the API server, which the agents' informers watch. A policy admits the
// new pods as peers of a lab pod, so their addresses end up in every
// agent's rule set: the agents have seen them all when the metric of set
// elements has grown by 5000. A benchmark, not a check: it prints the
// figures (docs/benchmarks.md) and runs only with WEFT_POLICY_MEMORY=1.
func TestPolicyAgentMemory(t *testing.T) {
	if os.Getenv("WEFT_POLICY_MEMORY") != "1" {
		t.Skip("a benchmark: set WEFT_POLICY_MEMORY=1")
	}
	const extra = 5000
	p := newPolicyLab(t)
	p.applyPeers(t, "bulk", "n1-p1", map[string]string{"bulk": "yes"})
	ctx := context.Background()
	pids := map[string]int{}
	before, beforeAnon := map[string]int{}, map[string]int{}
	elements := func(node string) float64 {
		v, _, err := p.metricValue(node, "weft_policy_set_elements")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	base := map[string]float64{}
	for _, n := range p.statusPIDs() {
		pids[n.Name] = n.AgentPID
		before[n.Name], beforeAnon[n.Name] = rss(t, n.AgentPID)
		base[n.Name] = elements(n.Name)
	}
	if _, err := p.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bulk"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The lab runs no controller manager, which would make it.
	if _, err := p.c.CoreV1().ServiceAccounts("bulk").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sem := make(chan struct{}, 16)
	errs := make(chan error, extra)
	for i := range extra {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			pod := kubeletPod(i)
			status := pod.Status
			created, err := p.c.CoreV1().Pods("bulk").Create(ctx, pod, metav1.CreateOptions{})
			if err == nil {
				created.Status = status
				_, err = p.c.CoreV1().Pods("bulk").UpdateStatus(ctx, created, metav1.UpdateOptions{})
			}
			errs <- err
		}()
	}
	for range extra {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("created %d Pod objects in %s", extra, time.Since(start).Round(time.Millisecond))
	for node := range pids {
		if took, ok := poll(120*time.Second, 500*time.Millisecond, func() bool { return elements(node) >= base[node]+extra }); !ok {
			t.Fatalf("%s: weft_policy_set_elements %v, want %v: the agent has not seen the pods", node, elements(node), base[node]+extra)
		} else {
			t.Logf("%s: all %d pods in its rule set %s after the last was created", node, extra, took.Round(time.Millisecond))
		}
	}
	time.Sleep(2 * time.Second) // let the informers' initial churn settle
	var b strings.Builder
	fmt.Fprintf(&b, "agent RSS in MiB, 2-node lab -> with %d more Pod objects watched (anonymous part: heap and stacks)\n", extra)
	for node, pid := range pids {
		after, anon := rss(t, pid)
		fmt.Fprintf(&b, "  %-3s RSS %6.1f -> %6.1f (%+.1f)   anon %6.1f -> %6.1f (%+.1f)\n", node,
			float64(before[node])/1024, float64(after)/1024, float64(after-before[node])/1024,
			float64(beforeAnon[node])/1024, float64(anon)/1024, float64(anon-beforeAnon[node])/1024)
	}
	t.Log(b.String())
}

// applyPeers creates a policy isolating pod dst for ingress and admitting
// every pod (of any namespace) with the given labels.
func (p *policyLab) applyPeers(t *testing.T, name, dst string, labels map[string]string) {
	t.Helper()
	np := p.ingressPolicy(name, dst, networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: labels}})
	ns := np.Namespace
	if _, err := p.c.NetworkingV1().NetworkPolicies(ns).Create(reqCtx(t), np, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy %s: %v", name, err)
	}
}

// kubeletPod is the i-th of many Pod objects as a Deployment and a kubelet
// leave them: owner reference, labels, annotations, a container with
// image, ports, env, resources, probes and mounts, and a status with
// conditions, container status and an address in 10.244.100.0 on (inside
// the lab's 10.244.0.0/16, on nodes that do not exist), every other one so
// that each is an element of its own in the rule set's interval sets.
func kubeletPod(i int) *corev1.Pod {
	ip := netip.AddrFrom4([4]byte{10, 244, byte(100 + i/125), byte(2 + 2*(i%125))})
	name := fmt.Sprintf("app-%03d-7d9f8b6c5d-%05d", i%100, i)
	ctrue := true
	now := metav1.Now()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bulk",
			Labels:      map[string]string{"app": fmt.Sprintf("app-%03d", i%100), "bulk": "yes", "pod-template-hash": "7d9f8b6c5d", "tier": []string{"frontend", "backend", "db"}[i%3]},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("app-%03d-7d9f8b6c5d", i%100),
				UID: types.UID(fmt.Sprintf("0f0e0d0c-0b0a-0908-0706-%012d", i%100)), Controller: &ctrue, BlockOwnerDeletion: &ctrue}}},
		Spec: corev1.PodSpec{
			NodeName: fmt.Sprintf("bulk-node-%02d", i%46),
			Containers: []corev1.Container{{
				Name: "app", Image: fmt.Sprintf("registry.example/team/app-%03d:v1.%d", i%100, i%7),
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
				Env: []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "POD_NAME", Value: name},
					{Name: "DATABASE_URL", Value: "postgres://db.bulk.svc:5432/app"}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
				VolumeMounts:   []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}, HostIP: "192.0.2.200", StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: fmt.Sprintf("registry.example/team/app-%03d:v1.%d", i%100, i%7),
				ImageID:     fmt.Sprintf("registry.example/team/app-%03d@sha256:%064x", i%100, i%100),
				ContainerID: fmt.Sprintf("containerd://%064x", i), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
		},
	}
}

// TestPolicyOnUDPKernelPath: on udp's kernel path a decapsulated packet
// enters the node by its underlay device and crosses its forward path, so
// NetworkPolicy applies as on every other backend: a policy admitting only
// n1-p1 to n2-p1 stops n1-p2's SYNs and lets n1-p1's through, both across
// the BPF tunnel.
func TestPolicyOnUDPKernelPath(t *testing.T) {
	p := newPolicyLab(t, "--backend", "udp", "--datapath", "bpf")
	if v := p.metric("n2", `weft_udp_datapath{datapath="bpf"}`); v != 1 {
		t.Fatalf("n2 does not run udp's kernel path")
	}
	if !p.reaches("n1-p2", "n2-p1", time.Second) {
		t.Fatal("n1-p2 does not reach n2-p1 before any policy")
	}
	rx0 := p.metric("n2", `weft_udp_packets_total{direction="rx"}`)
	writes0 := p.metric("n2", "weft_udp_tun_writes_total")
	p.apply(t, "server", "n2-p1", "n1-p1")
	if _, ok := poll(10*time.Second, 50*time.Millisecond, func() bool { return !p.reaches("n1-p2", "n2-p1", 100*time.Millisecond) }); !ok {
		t.Fatal("n1-p2 still reaches n2-p1 10 s after a policy that admits only n1-p1")
	}
	if !p.reaches("n1-p1", "n2-p1", time.Second) {
		t.Error("n1-p1 no longer reaches n2-p1, which the policy admits")
	}
	rx := p.metric("n2", `weft_udp_packets_total{direction="rx"}`) - rx0
	writes := p.metric("n2", "weft_udp_tun_writes_total") - writes0
	if rx == 0 || writes != 0 {
		t.Errorf("n2 received %.0f packets meanwhile, and its agent wrote %.0f times to flannel0: not the kernel path", rx, writes)
	}
	t.Logf("policy enforced on n2's forward path; n2's kernel path decapsulated %.0f packets meanwhile, its agent wrote none", rx)
}
