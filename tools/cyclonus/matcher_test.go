package cyclonus

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/connectivity/probe"
	"github.com/mattfenwick/cyclonus/pkg/generator"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/internal/policy"
)

// These tests check weft's compiler against cyclonus's matcher without a
// kernel: for a cluster and its policies, the matcher says whether each
// connection is allowed, and weft says it by compiling the Ruleset of the
// source pod's node (egress) and of the destination pod's node (ingress)
// and evaluating them as the nftables rules would.

// nodes the simulated pods are spread over.
var nodes = []string{"n1", "n2", "n3"}

// defaultNodes places cyclonus's nine pods so that every namespace has
// pods on one node and on different nodes, and every node holds pods of
// several namespaces.
var defaultNodes = map[string]string{
	"x/a": "n1", "x/b": "n1", "x/c": "n2",
	"y/a": "n2", "y/b": "n3", "y/c": "n1",
	"z/a": "n3", "z/b": "n2", "z/c": "n3",
}

// externalIPs are addresses outside the pods: in z/c's /24 but outside
// its /28 (cyclonus's ipBlock cases are built around z/c's address), in
// that /28, in cyclonus's "deny all by IP" 0.0.0.0/31, and elsewhere.
var externalIPs = []string{"10.244.3.200", "10.244.3.40", "0.0.0.1", "192.0.2.1", "203.0.113.9"}

// world is a simulated cluster: cyclonus's own model of it (Resources) and
// where each pod runs.
type world struct {
	res    *probe.Resources
	node   map[string]string // pod key -> node
	seq    map[string]int    // addresses handed out per node
	count  int               // pods placed round-robin so far
	policy []*networkingv1.NetworkPolicy
}

// newWorld returns cyclonus's default cluster: namespaces x, y, z with
// label ns=NAME, pods a, b, c with label pod=NAME, each serving 80 and 81
// over TCP and UDP (named serve-80-tcp and so on).
func newWorld() *world {
	w := &world{res: &probe.Resources{Namespaces: map[string]map[string]string{}}, node: map[string]string{}, seq: map[string]int{}}
	for _, ns := range []string{"x", "y", "z"} {
		w.res.Namespaces[ns] = map[string]string{"ns": ns}
		for _, name := range []string{"a", "b", "c"} {
			p := probe.NewDefaultPod(ns, name, []int{80, 81}, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}, false, "registry.k8s.io")
			w.res.Pods = append(w.res.Pods, p)
			w.place(p, defaultNodes[ns+"/"+name])
		}
	}
	return w
}

// place puts pod p on node ("" = round-robin) and gives it an address:
// node k's pods are 10.244.k.5, .21, .37, ... (16 apart, so that each has
// a /28 of its own).
func (w *world) place(p *probe.Pod, node string) {
	if node == "" {
		node = nodes[w.count%len(nodes)]
	}
	w.count++
	k := slices.Index(nodes, node) + 1
	s := w.seq[node]
	w.seq[node]++
	if s > 15 {
		panic("more than 16 pods on one node")
	}
	p.IP = netip.AddrFrom4([4]byte{10, 244, byte(k), byte(16*s + 5)}).String()
	w.node[p.Namespace+"/"+p.Name] = node
}

// apply runs one of cyclonus's actions, as its TestCaseState does against
// a real cluster.
func (w *world) apply(a *generator.Action) error {
	var err error
	res := w.res
	switch {
	case a.CreatePolicy != nil:
		p := a.CreatePolicy.Policy
		if w.findPolicy(p.Namespace, p.Name) >= 0 {
			return fmt.Errorf("create policy %s/%s: exists", p.Namespace, p.Name)
		}
		w.policy = append(w.policy, p)
	case a.UpdatePolicy != nil:
		p := a.UpdatePolicy.Policy
		i := w.findPolicy(p.Namespace, p.Name)
		if i < 0 {
			return fmt.Errorf("update policy %s/%s: not found", p.Namespace, p.Name)
		}
		w.policy[i] = p
	case a.DeletePolicy != nil:
		i := w.findPolicy(a.DeletePolicy.Namespace, a.DeletePolicy.Name)
		if i < 0 {
			return fmt.Errorf("delete policy %s/%s: not found", a.DeletePolicy.Namespace, a.DeletePolicy.Name)
		}
		w.policy = slices.Delete(w.policy, i, i+1)
	case a.CreateNamespace != nil:
		res, err = w.res.CreateNamespace(a.CreateNamespace.Namespace, a.CreateNamespace.Labels)
	case a.SetNamespaceLabels != nil:
		res, err = w.res.UpdateNamespaceLabels(a.SetNamespaceLabels.Namespace, a.SetNamespaceLabels.Labels)
	case a.DeleteNamespace != nil:
		res, err = w.res.DeleteNamespace(a.DeleteNamespace.Namespace)
	case a.CreatePod != nil:
		c := a.CreatePod
		if res, err = w.res.CreatePod(c.Namespace, c.Pod, c.Labels); err == nil {
			var p *probe.Pod
			if p, err = res.GetPod(c.Namespace, c.Pod); err == nil {
				w.place(p, "")
			}
		}
	case a.SetPodLabels != nil:
		res, err = w.res.SetPodLabels(a.SetPodLabels.Namespace, a.SetPodLabels.Pod, a.SetPodLabels.Labels)
	case a.DeletePod != nil:
		res, err = w.res.DeletePod(a.DeletePod.Namespace, a.DeletePod.Pod)
	default:
		return fmt.Errorf("action %+v not simulated", a)
	}
	if err != nil {
		return err
	}
	w.res = res
	return nil
}

func (w *world) findPolicy(ns, name string) int {
	return slices.IndexFunc(w.policy, func(p *networkingv1.NetworkPolicy) bool { return p.Namespace == ns && p.Name == name })
}

// cluster is weft's view of the world.
func (w *world) cluster(pols []*networkingv1.NetworkPolicy) *policy.Cluster {
	c := &policy.Cluster{Policies: pols}
	for ns, l := range w.res.Namespaces {
		c.Namespaces = append(c.Namespaces, &policy.Namespace{Name: ns, Labels: l})
	}
	for _, p := range w.res.Pods {
		wp := &policy.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: w.node[p.Namespace+"/"+p.Name],
			IPs: []netip.Addr{netip.MustParseAddr(p.IP)}}
		for _, ct := range p.Containers {
			wp.Ports = append(wp.Ports, policy.ContainerPort{Name: ct.PortName, Protocol: policy.Protocol(ct.Protocol), Port: uint16(ct.Port)})
		}
		c.Pods = append(c.Pods, wp)
	}
	return c
}

// defaulted returns p with the policyTypes the API server would give it
// (the matcher panics without them).
func defaulted(p *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	if len(p.Spec.PolicyTypes) > 0 {
		return p
	}
	p = p.DeepCopy()
	p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(p.Spec.Egress) > 0 {
		p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
	}
	return p
}

// undefaulted returns p without policyTypes when the API server's defaults
// would give it the same ones, so that weft's defaulting is exercised too.
func undefaulted(p *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	if len(p.Spec.PolicyTypes) == 0 {
		return p
	}
	bare := p.DeepCopy()
	bare.Spec.PolicyTypes = nil
	got := defaulted(bare).Spec.PolicyTypes
	if slices.Equal(got, p.Spec.PolicyTypes) || len(got) == 2 && len(p.Spec.PolicyTypes) == 2 && p.Spec.PolicyTypes[0] != p.Spec.PolicyTypes[1] {
		return bare
	}
	return p
}

// outcome counts one comparison.
type outcome struct {
	checks, allowed, mismatches int
	failures                    []string // the first few mismatches, in detail
}

// compare checks every connection of the world: every pod pair over every
// port each destination serves (TCP and UDP), port 82 (served by none
// unless a pod declares it), and to and from the external addresses.
func (w *world) compare(label string, o *outcome) {
	var mpols, wpols []*networkingv1.NetworkPolicy
	for _, p := range w.policy {
		mpols = append(mpols, defaulted(p))
		wpols = append(wpols, undefaulted(p))
	}
	truth := matcher.BuildNetworkPolicies(true, mpols)
	c := w.cluster(wpols)
	rulesets := map[string]*policy.Ruleset{}
	for _, n := range nodes {
		rulesets[n] = policy.Compile(c, n)
		if len(rulesets[n].Problems) > 0 {
			o.failures = append(o.failures, fmt.Sprintf("%s: node %s: problems %v", label, n, rulesets[n].Problems))
			return
		}
	}

	var traffic []*matcher.Traffic
	jobs := (&probe.JobBuilder{TimeoutSeconds: 1}).GetJobsAllAvailableServers(w.res, generator.ProbeModePodIP)
	for _, j := range jobs.Valid {
		if j.Protocol == corev1.ProtocolSCTP {
			continue
		}
		traffic = append(traffic, j.Traffic())
	}
	internal := func(p *probe.Pod) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: p.IP, Internal: &matcher.InternalPeer{
			PodLabels: p.Labels, NamespaceLabels: w.res.Namespaces[p.Namespace], Namespace: p.Namespace}}
	}
	for _, from := range w.res.Pods {
		for _, to := range w.res.Pods {
			for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
				if to.IsServingPortProtocol(82, proto) {
					continue // among the jobs already
				}
				traffic = append(traffic, &matcher.Traffic{Source: internal(from), Destination: internal(to), ResolvedPort: 82, Protocol: proto})
			}
		}
		for _, ip := range externalIPs {
			ext := &matcher.TrafficPeer{IP: ip}
			for _, ct := range from.Containers {
				if ct.Protocol == corev1.ProtocolSCTP {
					continue
				}
				// Outside: no named ports.
				traffic = append(traffic, &matcher.Traffic{Source: internal(from), Destination: ext, ResolvedPort: ct.Port, Protocol: ct.Protocol})
				// Inside: the destination pod's container names its port.
				traffic = append(traffic, &matcher.Traffic{Source: ext, Destination: internal(from), ResolvedPort: ct.Port, ResolvedPortName: ct.PortName, Protocol: ct.Protocol})
			}
		}
	}

	for _, tr := range traffic {
		want := truth.IsTrafficAllowed(tr).IsAllowed()
		pkt := policy.Packet{Src: netip.MustParseAddr(tr.Source.IP), Dst: netip.MustParseAddr(tr.Destination.IP),
			Protocol: policy.Protocol(tr.Protocol), Port: uint16(tr.ResolvedPort)}
		eg, in := policy.Verdict{Allowed: true}, policy.Verdict{Allowed: true}
		if !tr.Source.IsExternal() {
			eg = rulesets[w.nodeOf(tr.Source.IP)].Evaluate(policy.Egress, pkt)
		}
		if !tr.Destination.IsExternal() {
			in = rulesets[w.nodeOf(tr.Destination.IP)].Evaluate(policy.Ingress, pkt)
		}
		got := eg.Allowed && in.Allowed
		o.checks++
		if want {
			o.allowed++
		}
		if got != want {
			o.mismatches++
		}
		if got != want && len(o.failures) < 5 {
			o.failures = append(o.failures, fmt.Sprintf("%s: %s -> %s %d/%s (%s): weft %v (egress %+v, ingress %+v), cyclonus %v\n%s\npolicies:\n%s",
				label, w.name(tr.Source), w.name(tr.Destination), tr.ResolvedPort, tr.Protocol, tr.ResolvedPortName,
				got, eg, in, want, truth.IsTrafficAllowed(tr).Table(), policyYAML(mpols)))
		}
	}
}

func (w *world) nodeOf(ip string) string {
	for _, p := range w.res.Pods {
		if p.IP == ip {
			return w.node[p.Namespace+"/"+p.Name]
		}
	}
	panic("no pod has " + ip)
}

func (w *world) name(p *matcher.TrafficPeer) string {
	if p.IsExternal() {
		return p.IP
	}
	for _, pod := range w.res.Pods {
		if pod.IP == p.IP {
			return fmt.Sprintf("%s/%s(%s,%s)", pod.Namespace, pod.Name, p.IP, w.node[pod.Namespace+"/"+pod.Name])
		}
	}
	return p.IP
}

func policyYAML(pols []*networkingv1.NetworkPolicy) string {
	var b strings.Builder
	for _, p := range pols {
		fmt.Fprintf(&b, "  %s/%s: %+v\n", p.Namespace, p.Name, p.Spec)
	}
	return b.String()
}

// TestGeneratedCases runs every case cyclonus generates (all tags, SCTP
// included in the policies; the probes are TCP and UDP), step by step.
func TestGeneratedCases(t *testing.T) {
	zc := newWorld()
	zcPod, err := zc.res.GetPod("z", "c")
	if err != nil {
		t.Fatal(err)
	}
	cases := generator.NewTestCaseGenerator(true, zcPod.IP, []string{"x", "y", "z"}, nil, nil).GenerateTestCases()
	if len(cases) < 200 {
		t.Fatalf("cyclonus generated %d cases, expected about 230", len(cases))
	}
	var o outcome
	steps := 0
	for i, tc := range cases {
		w := newWorld()
		for s, step := range tc.Steps {
			for _, a := range step.Actions {
				if err := w.apply(a); err != nil {
					t.Fatalf("case %d %q step %d: %v", i, tc.Description, s, err)
				}
			}
			w.compare(fmt.Sprintf("case %d %q step %d", i, tc.Description, s), &o)
			steps++
		}
	}
	for _, f := range o.failures {
		t.Error(f)
	}
	t.Logf("%d cases, %d steps, %d checks (%d allowed, %d denied), %d mismatches", len(cases), steps, o.checks, o.allowed, o.checks-o.allowed, o.mismatches)
	if o.allowed == 0 || o.allowed == o.checks {
		t.Errorf("all %d checks had one answer: the comparison proves nothing", o.checks)
	}
}

// TestRandomClusters compares on random clusters and policies.
func TestRandomClusters(t *testing.T) {
	n := 400
	if testing.Short() {
		n = 50
	}
	var o outcome
	for seed := range n {
		ch := randChooser{rand.New(rand.NewPCG(uint64(seed), 11))}
		w := randomWorld(ch)
		w.compare(fmt.Sprintf("seed %d", seed), &o)
		if len(o.failures) > 0 {
			break
		}
	}
	for _, f := range o.failures {
		t.Error(f)
	}
	t.Logf("%d random clusters, %d checks (%d allowed), %d mismatches", n, o.checks, o.allowed, o.mismatches)
}

// chooser makes the random choices of randomWorld.
type chooser interface {
	Intn(n int) int
}

type randChooser struct{ r *rand.Rand }

func (c randChooser) Intn(n int) int { return c.r.IntN(n) }

// byteChooser takes its choices from fuzz input; past its end, 0.
type byteChooser struct {
	b []byte
	i int
}

func (c *byteChooser) Intn(n int) int {
	if c.i >= len(c.b) {
		return 0
	}
	c.i++
	return int(c.b[c.i-1]) % n
}

// randomWorld builds namespaces x, y, z (and w, without pods) with random
// team labels, one to three pods each with random app and tier labels,
// spread over the nodes, some also serving a "web" port on 82 or 83/TCP,
// and one to four valid random policies.
func randomWorld(ch chooser) *world {
	w := &world{res: &probe.Resources{Namespaces: map[string]map[string]string{}}, node: map[string]string{}, seq: map[string]int{}}
	pick := func(xs ...string) string { return xs[ch.Intn(len(xs))] }
	for _, ns := range []string{"x", "y", "z", "w"} {
		l := map[string]string{"ns": ns}
		if ch.Intn(2) == 0 {
			l["team"] = pick("a", "b")
		}
		w.res.Namespaces[ns] = l
		if ns == "w" {
			continue
		}
		for i := range 1 + ch.Intn(3) {
			name := string(rune('a' + i))
			p := probe.NewDefaultPod(ns, name, []int{80, 81}, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}, false, "registry.k8s.io")
			if ch.Intn(2) == 0 {
				p.Labels["app"] = pick("web", "db")
			}
			if ch.Intn(2) == 0 {
				p.Labels["tier"] = pick("1", "2")
			}
			if ch.Intn(2) == 0 {
				port := 82 + ch.Intn(2)
				p.Containers = append(p.Containers, &probe.Container{Name: fmt.Sprintf("cont-web-%d", port), Port: port, Protocol: corev1.ProtocolTCP, PortName: "web"})
			}
			w.res.Pods = append(w.res.Pods, p)
			w.place(p, nodes[ch.Intn(len(nodes))])
		}
	}
	podIPs := func() string {
		p := w.res.Pods[ch.Intn(len(w.res.Pods))]
		return p.IP
	}
	selector := func(kind string) *metav1.LabelSelector {
		s := &metav1.LabelSelector{}
		keys := map[string][]string{"pod": {"a", "b", "c"}, "app": {"web", "db"}, "tier": {"1", "2"}}
		if kind == "ns" {
			keys = map[string][]string{"ns": {"x", "y", "z", "w"}, "team": {"a", "b"}}
		}
		names := []string{"pod", "app", "tier"}
		if kind == "ns" {
			names = []string{"ns", "team"}
		}
		for range ch.Intn(3) {
			k := names[ch.Intn(len(names))]
			vals := keys[k]
			switch ch.Intn(5) {
			case 0, 1:
				if s.MatchLabels == nil {
					s.MatchLabels = map[string]string{}
				}
				s.MatchLabels[k] = vals[ch.Intn(len(vals))]
			case 2:
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn,
					Values: []string{vals[ch.Intn(len(vals))], vals[ch.Intn(len(vals))]}})
			case 3:
				// NotIn only on the key every object has: cyclonus's
				// matcher (kube.IsMatchExpressionMatchForLabels) says NotIn
				// fails on an object without the key, where Kubernetes
				// (labels.Requirement.Matches) says it matches.
				k = names[0]
				vals = keys[k]
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn,
					Values: []string{vals[ch.Intn(len(vals))]}})
			case 4:
				op := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}[ch.Intn(2)]
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: op})
			}
		}
		return s
	}
	optSelector := func(kind string) *metav1.LabelSelector {
		switch ch.Intn(3) {
		case 0:
			return nil
		case 1:
			return &metav1.LabelSelector{}
		}
		return selector(kind)
	}
	peers := func() []networkingv1.NetworkPolicyPeer {
		var out []networkingv1.NetworkPolicyPeer
		for range ch.Intn(3) {
			var p networkingv1.NetworkPolicyPeer
			switch ch.Intn(4) {
			case 0:
				ip := netip.MustParseAddr(podIPs())
				cidr := []string{netip.PrefixFrom(ip, 24).Masked().String(), netip.PrefixFrom(ip, 28).Masked().String(),
					"0.0.0.0/0", "192.0.2.0/24", "10.244.0.0/16"}[ch.Intn(5)]
				p.IPBlock = &networkingv1.IPBlock{CIDR: cidr}
				for range ch.Intn(3) {
					e := netip.MustParseAddr(podIPs())
					p.IPBlock.Except = append(p.IPBlock.Except, netip.PrefixFrom(e, []int{32, 30, 28}[ch.Intn(3)]).Masked().String())
				}
			default:
				p.PodSelector, p.NamespaceSelector = optSelector("pod"), optSelector("ns")
				if p.PodSelector == nil && p.NamespaceSelector == nil {
					p.PodSelector = selector("pod")
				}
			}
			out = append(out, p)
		}
		return out
	}
	ports := func() []networkingv1.NetworkPolicyPort {
		var out []networkingv1.NetworkPolicyPort
		for range ch.Intn(3) {
			var p networkingv1.NetworkPolicyPort
			if k := ch.Intn(3); k > 0 {
				proto := []corev1.Protocol{"", corev1.ProtocolTCP, corev1.ProtocolUDP}[k]
				p.Protocol = &proto
			}
			switch ch.Intn(4) {
			case 1:
				v := intOrString(80 + ch.Intn(4))
				p.Port = &v
			case 2:
				v := intOrString(80 + ch.Intn(2))
				p.Port = &v
				end := int32(81 + ch.Intn(3))
				p.EndPort = &end
			case 3:
				v := intOrString(pick("serve-80-tcp", "serve-81-udp", "serve-80-udp", "web", "nope"))
				p.Port = &v
			}
			out = append(out, p)
		}
		return out
	}
	for i := range 1 + ch.Intn(4) {
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pick("x", "y", "z"), Name: fmt.Sprintf("p%d", i)}}
		if ch.Intn(3) > 0 {
			p.Spec.PodSelector = *selector("pod")
		}
		for range ch.Intn(3) {
			p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers(), Ports: ports()})
		}
		for range ch.Intn(3) {
			p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers(), Ports: ports()})
		}
		switch ch.Intn(4) {
		case 1:
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		case 2:
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		case 3:
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		w.policy = append(w.policy, p)
	}
	return w
}

func intOrString(v any) intstr.IntOrString {
	if s, ok := v.(string); ok {
		return intstr.FromString(s)
	}
	return intstr.FromInt32(int32(v.(int)))
}
