package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// baseCluster: namespaces x, y, z over nodes n1 and n2; every pod serves
// 80/TCP ("serve-80-tcp") and 81/UDP ("serve-81-udp"), and "http" is
// 8080/TCP on x/a but 9090/TCP on x/b.
func baseCluster(pols ...*networkingv1.NetworkPolicy) *Cluster {
	std := []ContainerPort{{Name: "serve-80-tcp", Protocol: TCP, Port: 80}, {Name: "serve-81-udp", Protocol: UDP, Port: 81}}
	with := func(extra ContainerPort) []ContainerPort { return append(slices.Clone(std), extra) }
	return &Cluster{
		Namespaces: []*Namespace{mkNS("x", "ns=x,team=a"), mkNS("y", "ns=y,team=b"), mkNS("z", "ns=z")},
		Pods: []*Pod{
			mkPod("x/a", "n1", "10.244.1.10", "pod=a", with(ContainerPort{Name: "http", Protocol: TCP, Port: 8080})...),
			mkPod("x/b", "n2", "10.244.2.10", "pod=b", with(ContainerPort{Name: "http", Port: 9090})...),
			mkPod("y/a", "n1", "10.244.1.20", "pod=a", std...),
			mkPod("y/b", "n2", "10.244.2.20", "pod=b", std...),
			mkPod("z/c", "n2", "10.244.2.30", "pod=c", std...),
		},
		Policies: pols,
	}
}

type check struct {
	from, to string
	proto    Protocol
	port     uint16
	want     bool
}

func (c check) String() string {
	return fmt.Sprintf("%s->%s %d/%s", c.from, c.to, c.port, c.proto)
}

func TestCompileSemantics(t *testing.T) {
	hostPod := mkPod("x/h", "n1", "192.0.2.10", "pod=h")
	hostPod.HostNetwork = true
	noIP := mkPod("y/pending", "n1", "", "pod=pending")

	tests := []struct {
		name   string
		pols   []*networkingv1.NetworkPolicy
		extra  []*Pod
		checks []check
	}{
		{
			name: "no policy allows all",
			checks: []check{
				{"x/a", "y/b", TCP, 80, true}, {"z/c", "x/a", UDP, 81, true}, {"192.0.2.1", "x/a", TCP, 1, true},
			},
		},
		{
			name: "default deny ingress",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/deny", "")},
			checks: []check{
				{"y/a", "x/a", TCP, 80, false}, {"x/b", "x/a", TCP, 80, false}, {"192.0.2.1", "x/b", UDP, 81, false},
				{"x/a", "y/a", TCP, 80, true}, // egress not isolated
				{"y/a", "y/b", TCP, 80, true}, // other namespace untouched
			},
		},
		{
			name: "allow all ingress",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/deny", ""), mkPol("x/all", "", ingress(nil))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, true}, {"192.0.2.1", "x/b", UDP, 5, true}, {"z/c", "x/a", "ICMP", 0, true},
			},
		},
		{
			name: "default deny egress",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/deny-eg", "", types(tEg))},
			checks: []check{
				{"x/a", "y/a", TCP, 80, false}, {"x/a", "x/b", TCP, 80, false}, {"x/b", "192.0.2.1", TCP, 443, false},
				{"y/a", "x/a", TCP, 80, true},
			},
		},
		{
			name: "allow all egress",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/deny-eg", "", types(tEg)), mkPol("x/all-eg", "", types(tEg), egress(nil))},
			checks: []check{
				{"x/a", "y/a", TCP, 80, true}, {"x/b", "192.0.2.1", UDP, 53, true},
			},
		},
		{
			name: "podSelector alone means the policy's namespace",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, podPeer("pod=b")))},
			checks: []check{
				{"x/b", "x/a", TCP, 80, true}, {"y/b", "x/a", TCP, 80, false}, {"y/a", "x/a", TCP, 80, false},
				{"y/a", "x/b", TCP, 80, true}, // x/b not selected
			},
		},
		{
			name: "namespaceSelector alone means every pod there",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, nsPeer("team=b")))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, true}, {"y/b", "x/a", UDP, 81, true}, {"x/b", "x/a", TCP, 80, false}, {"z/c", "x/a", TCP, 80, false},
			},
		},
		{
			name: "namespaceSelector and podSelector in one peer: AND",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, bothPeer("ns=y", "pod=b")))},
			checks: []check{
				{"y/b", "x/a", TCP, 80, true}, {"y/a", "x/a", TCP, 80, false}, {"x/b", "x/a", TCP, 80, false},
			},
		},
		{
			name: "two peers: OR",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, nsPeer("ns=y"), podPeer("pod=b")))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, true}, {"x/b", "x/a", TCP, 80, true}, {"z/c", "x/a", TCP, 80, false},
			},
		},
		{
			name: "empty namespaceSelector: every namespace",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a",
				ingress(nil, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("pod=b")}))},
			checks: []check{
				{"x/b", "x/a", TCP, 80, true}, {"y/b", "x/a", TCP, 80, true}, {"y/a", "x/a", TCP, 80, false}, {"z/c", "x/a", TCP, 80, false},
			},
		},
		{
			name: "empty podSelector peer: every pod of the namespace",
			pols: []*networkingv1.NetworkPolicy{mkPol("y/p", "",
				ingress(nil, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{}}))},
			checks: []check{
				{"y/a", "y/b", TCP, 80, true}, {"x/a", "y/b", TCP, 80, false},
			},
		},
		{
			name: "ipBlock with except matches pods and outside addresses",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, ipPeer("10.244.2.0/24", "10.244.2.20/32")))},
			checks: []check{
				{"x/b", "x/a", TCP, 80, true}, {"z/c", "x/a", TCP, 80, true}, {"10.244.2.99", "x/a", TCP, 80, true},
				{"y/b", "x/a", TCP, 80, false}, {"y/a", "x/a", TCP, 80, false}, {"192.0.2.1", "x/a", TCP, 80, false},
			},
		},
		{
			name: "ipBlock egress",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", types(tEg), egress(nil, ipPeer("192.0.2.0/24", "192.0.2.128/25")))},
			checks: []check{
				{"x/a", "192.0.2.1", TCP, 443, true}, {"x/a", "192.0.2.200", TCP, 443, false}, {"x/a", "y/a", TCP, 80, false},
				{"x/b", "192.0.2.200", TCP, 443, true},
			},
		},
		{
			name: "numbered port",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(ports(port("", 80, 0))))},
			checks: []check{
				{"x/b", "x/a", TCP, 80, true}, {"x/b", "x/a", TCP, 81, false}, {"x/b", "x/a", UDP, 80, false}, {"x/b", "x/a", "ICMP", 0, false},
			},
		},
		{
			name: "protocol without port: all its ports",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(ports(port("UDP", nil, 0))))},
			checks: []check{
				{"y/b", "x/a", UDP, 81, true}, {"y/b", "x/a", UDP, 65535, true}, {"y/b", "x/a", TCP, 80, false},
			},
		},
		{
			name: "endPort range",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(ports(port("TCP", 80, 82), port("UDP", 81, 0))))},
			checks: []check{
				{"y/b", "x/a", TCP, 80, true}, {"y/b", "x/a", TCP, 82, true}, {"y/b", "x/a", TCP, 83, false}, {"y/b", "x/a", TCP, 79, false},
				{"y/b", "x/a", UDP, 81, true}, {"y/b", "x/a", UDP, 82, false},
			},
		},
		{
			name: "named port on ingress resolves on each selected pod",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "", ingress(ports(port("", "http", 0))))},
			checks: []check{
				{"y/a", "x/a", TCP, 8080, true}, {"y/a", "x/a", TCP, 9090, false},
				{"y/a", "x/b", TCP, 9090, true}, {"y/a", "x/b", TCP, 8080, false},
				{"y/a", "x/b", UDP, 9090, false},
			},
		},
		{
			name: "named port with the wrong protocol matches nothing",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "", ingress(ports(port("UDP", "serve-80-tcp", 0))))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, false}, {"y/a", "x/a", UDP, 80, false},
			},
		},
		{
			name: "named port on egress resolves on each destination pod",
			pols: []*networkingv1.NetworkPolicy{mkPol("y/p", "pod=a", types(tEg), egress(ports(port("", "http", 0), port("UDP", "serve-81-udp", 0))))},
			checks: []check{
				{"y/a", "x/a", TCP, 8080, true}, {"y/a", "x/a", TCP, 9090, false},
				{"y/a", "x/b", TCP, 9090, true}, {"y/a", "x/b", TCP, 8080, false},
				{"y/a", "z/c", UDP, 81, true}, {"y/a", "z/c", TCP, 81, false},
				{"y/a", "192.0.2.1", TCP, 8080, false}, // an outside address has no named ports
			},
		},
		{
			name: "named port on egress within the rule's peers only",
			pols: []*networkingv1.NetworkPolicy{mkPol("y/p", "pod=a", types(tEg), egress(ports(port("", "http", 0)), podPeer("pod=b"), ipPeer("10.244.1.0/24")))},
			checks: []check{
				{"y/a", "x/a", TCP, 8080, true},  // x/a via the ipBlock
				{"y/a", "x/b", TCP, 9090, false}, // x/b is not in the peers (podSelector is y's)
				{"y/a", "y/b", TCP, 80, false},
			},
		},
		{
			name: "empty policyTypes: Ingress, and Egress when egress rules exist",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", egress(nil, nsPeer("ns=y")))},
			checks: []check{
				{"x/a", "y/a", TCP, 80, true}, {"x/a", "z/c", TCP, 80, false}, // egress isolated
				{"y/a", "x/a", TCP, 80, false}, // ingress isolated, no rules
			},
		},
		{
			name: "policyTypes Ingress only: egress rules ignored",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", types(tIn), ingress(nil), egress(nil, nsPeer("ns=y")))},
			checks: []check{
				{"x/a", "z/c", TCP, 80, true}, {"y/a", "x/a", TCP, 80, true},
			},
		},
		{
			name: "policyTypes Egress only: ingress not isolated",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", types(tEg))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, true}, {"x/a", "y/a", TCP, 80, false},
			},
		},
		{
			name: "union of policies",
			pols: []*networkingv1.NetworkPolicy{
				mkPol("x/p1", "pod=a", ingress(ports(port("", 80, 0)), podPeer("pod=b"))),
				mkPol("x/p2", "", ingress(ports(port("UDP", 81, 0)), nsPeer("ns=y"))),
			},
			checks: []check{
				{"x/b", "x/a", TCP, 80, true}, {"y/a", "x/a", UDP, 81, true}, {"y/a", "x/a", TCP, 80, false}, {"x/b", "x/a", UDP, 81, false},
				{"y/a", "x/b", UDP, 81, true}, {"x/a", "x/b", TCP, 80, false},
			},
		},
		{
			name:  "host-network pods are neither policed nor pod peers",
			extra: []*Pod{hostPod},
			pols: []*networkingv1.NetworkPolicy{
				mkPol("x/deny", "", types(tIn, tEg)),
				mkPol("y/from-h", "", ingress(nil, bothPeer("ns=x", "pod=h"))),
			},
			checks: []check{
				{"y/a", "x/h", TCP, 80, true},  // x/deny does not isolate x/h's ingress
				{"x/h", "z/c", TCP, 80, true},  // nor its egress
				{"x/h", "y/a", TCP, 80, false}, // y/from-h does not admit it: it is no pod peer
				{"x/a", "z/c", TCP, 80, false},
			},
		},
		{
			name:  "pods without an address are in no set",
			extra: []*Pod{noIP},
			pols: []*networkingv1.NetworkPolicy{
				mkPol("x/p", "pod=a", ingress(nil, bothPeer("ns=y", "pod=pending"))),
			},
			checks: []check{{"y/a", "x/a", TCP, 80, false}},
		},
		{
			name: "IPv6 ipBlock does not match IPv4 pods",
			pols: []*networkingv1.NetworkPolicy{mkPol("x/p", "pod=a", ingress(nil, ipPeer("::/0")))},
			checks: []check{
				{"y/a", "x/a", TCP, 80, false}, {"2001:db8::1", "x/a", TCP, 80, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster(tt.pols...)
			c.Pods = append(c.Pods, tt.extra...)
			for _, n := range []string{"n1", "n2"} {
				if rs := Compile(c, n); len(rs.Problems) > 0 {
					t.Fatalf("node %s: problems %v", n, rs.Problems)
				}
			}
			for _, ch := range tt.checks {
				if got := connAllowed(t, c, ch.from, ch.to, ch.proto, ch.port); got != ch.want {
					t.Errorf("%v: allowed=%v, want %v", ch, got, ch.want)
				}
			}
		})
	}
}

// The host-network case above checks that x/h, isolated by nothing, can
// reach y/a, and reading the host pod's own peer: the peer policy on y
// must not admit the host pod's address.
func TestHostNetworkPodIsNoPeer(t *testing.T) {
	h := mkPod("x/h", "n1", "192.0.2.10", "pod=h")
	h.HostNetwork = true
	c := baseCluster(mkPol("y/from-h", "", ingress(nil, bothPeer("ns=x", "pod=h"))))
	c.Pods = append(c.Pods, h)
	if connAllowed(t, c, "192.0.2.10", "y/a", TCP, 80) {
		t.Error("a host-network pod's address was admitted as a pod peer")
	}
	rs := Compile(c, "n1")
	for _, pe := range rs.Pods {
		if pe.Pod == "x/h" {
			t.Errorf("host-network pod has an entry: %+v", pe)
		}
	}
}

func TestCompileOnlyLocalPods(t *testing.T) {
	c := baseCluster(mkPol("x/deny", ""), mkPol("z/deny", ""))
	rs := Compile(c, "n1")
	var pods []string
	for _, pe := range rs.Pods {
		pods = append(pods, pe.Pod)
	}
	if want := []string{"x/a"}; !slices.Equal(pods, want) {
		t.Errorf("n1 entries %v, want %v", pods, want)
	}
	// z/deny selects only z/c on n2: no chain on n1.
	var chains []string
	for _, ch := range rs.Chains {
		chains = append(chains, ch.Name)
	}
	if want := []string{"in_x_deny"}; !slices.Equal(chains, want) {
		t.Errorf("n1 chains %v, want %v", chains, want)
	}
	// From n1's point of view the remote x/b is not isolated.
	if v := rs.Evaluate(Ingress, Packet{Src: netip.MustParseAddr("10.244.1.10"), Dst: netip.MustParseAddr("10.244.2.10"), Protocol: TCP, Port: 80}); v.Isolated {
		t.Errorf("remote pod isolated on n1: %+v", v)
	}
	rs2 := Compile(c, "n2")
	if len(rs2.Pods) != 2 || rs2.Pods[0].Pod != "x/b" || rs2.Pods[1].Pod != "z/c" {
		t.Errorf("n2 entries %+v", rs2.Pods)
	}
	if rs2.Pods[0].Ingress == rs2.Pods[1].Ingress {
		t.Errorf("x/b and z/c share group %s though their policies differ", rs2.Pods[0].Ingress)
	}
}

func TestGroupsShared(t *testing.T) {
	c := baseCluster(mkPol("x/deny", ""), mkPol("y/deny", ""), mkPol("y/eg", "", types(tEg)))
	c.Pods = append(c.Pods, mkPod("x/a2", "n1", "10.244.1.11", "pod=a2"))
	rs := Compile(c, "n1")
	if len(rs.Pods) != 3 {
		t.Fatalf("entries %+v", rs.Pods)
	}
	byPod := map[string]PodEntry{}
	for _, pe := range rs.Pods {
		byPod[pe.Pod] = pe
	}
	if byPod["x/a"].Ingress != byPod["x/a2"].Ingress || byPod["x/a"].Ingress == "" {
		t.Errorf("pods with the same policies in different groups: %+v", rs.Pods)
	}
	if byPod["x/a"].Egress != "" || byPod["y/a"].Egress == "" {
		t.Errorf("egress groups wrong: %+v", rs.Pods)
	}
	if len(rs.Groups) != 3 { // gin(x/deny), gin(y/deny), geg(y/eg)
		t.Errorf("groups %+v, want 3", rs.Groups)
	}
	for _, g := range rs.Groups {
		if !strings.HasPrefix(g.Name, map[Direction]string{Ingress: "gin-", Egress: "geg-"}[g.Dir]) {
			t.Errorf("group %s of direction %v", g.Name, g.Dir)
		}
	}
}

func TestVerdictPolicies(t *testing.T) {
	c := baseCluster(
		mkPol("x/p1", "pod=a", ingress(nil, podPeer("pod=b"))),
		mkPol("x/p2", "", ingress(nil, nsPeer("ns=x"))),
		mkPol("x/p3", "", ingress(nil, nsPeer("ns=z"))),
	)
	rs := Compile(c, "n1")
	v := rs.Evaluate(Ingress, Packet{Src: netip.MustParseAddr("10.244.2.10"), Dst: netip.MustParseAddr("10.244.1.10"), Protocol: TCP, Port: 80})
	if !v.Isolated || !v.Allowed || !slices.Equal(v.Policies, []string{"x/p1", "x/p2"}) {
		t.Errorf("verdict %+v, want allowed by x/p1, x/p2", v)
	}
	v = rs.Evaluate(Ingress, Packet{Src: netip.MustParseAddr("10.244.1.20"), Dst: netip.MustParseAddr("10.244.1.10"), Protocol: TCP, Port: 80})
	if !v.Isolated || v.Allowed || len(v.Policies) != 0 {
		t.Errorf("verdict %+v, want denied", v)
	}
}

func TestProblemsFailClosed(t *testing.T) {
	badOp := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: "Bogus"}}}
	tests := []struct {
		name    string
		pol     *networkingv1.NetworkPolicy
		problem string
		checks  []check
	}{
		{
			name: "bad CIDR leaves its rule out, the policy still isolates",
			pol: mkPol("x/p", "pod=a",
				ingress(nil, ipPeer("10.244.300.0/24")),
				ingress(nil, nsPeer("ns=y"))),
			problem: "ingress rule 0: peer 0: ipBlock cidr",
			checks:  []check{{"y/a", "x/a", TCP, 80, true}, {"x/b", "x/a", TCP, 80, false}, {"10.244.3.1", "x/a", TCP, 80, false}},
		},
		{
			name:    "bad except",
			pol:     mkPol("x/p", "pod=a", ingress(nil, ipPeer("10.0.0.0/8", "nonsense"))),
			problem: "ipBlock except",
			checks:  []check{{"x/b", "x/a", TCP, 80, false}},
		},
		{
			name:    "unknown protocol does not become any port",
			pol:     mkPol("x/p", "pod=a", ingress(ports(port("ICMP", 80, 0)), nsPeer("ns=y"))),
			problem: `unknown protocol "ICMP"`,
			checks:  []check{{"y/a", "x/a", TCP, 80, false}, {"y/a", "x/a", "ICMP", 0, false}},
		},
		{
			name:    "bad peer selector leaves the rule out, not the peer",
			pol:     mkPol("x/p", "pod=a", ingress(nil, networkingv1.NetworkPolicyPeer{PodSelector: badOp})),
			problem: "podSelector",
			checks:  []check{{"x/b", "x/a", TCP, 80, false}},
		},
		{
			name:    "empty peer",
			pol:     mkPol("x/p", "pod=a", ingress(nil, networkingv1.NetworkPolicyPeer{})),
			problem: "empty peer",
			checks:  []check{{"x/b", "x/a", TCP, 80, false}},
		},
		{
			name:    "endPort below port",
			pol:     mkPol("x/p", "pod=a", ingress(ports(port("TCP", 90, 80)))),
			problem: "endPort 80",
			checks:  []check{{"x/b", "x/a", TCP, 85, false}},
		},
		{
			name: "bad podSelector isolates the whole namespace with no rules",
			pol: func() *networkingv1.NetworkPolicy {
				p := mkPol("x/p", "", ingress(nil))
				p.Spec.PodSelector = *badOp
				return p
			}(),
			problem: "podSelector",
			checks:  []check{{"y/a", "x/a", TCP, 80, false}, {"y/a", "x/b", TCP, 80, false}, {"y/a", "y/b", TCP, 80, true}},
		},
		{
			name:    "unknown policy type isolates both directions",
			pol:     mkPol("x/p", "pod=a", types(tIn, "Sideways"), ingress(nil)),
			problem: "unknown policy type",
			checks:  []check{{"y/a", "x/a", TCP, 80, true}, {"x/a", "y/a", TCP, 80, false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster(tt.pol, mkPol("y/fine", "pod=b", ingress(nil, podPeer("pod=a"))))
			for _, n := range []string{"n1", "n2", "elsewhere"} {
				rs := Compile(c, n)
				if len(rs.Problems) != 1 || rs.Problems[0].Policy != "x/p" || !strings.Contains(rs.Problems[0].Err.Error(), tt.problem) {
					t.Fatalf("node %s: problems %v, want one for x/p containing %q", n, rs.Problems, tt.problem)
				}
			}
			for _, ch := range append(tt.checks, check{"y/a", "y/b", TCP, 80, true}, check{"x/a", "y/b", TCP, 80, false}) {
				if got := connAllowed(t, c, ch.from, ch.to, ch.proto, ch.port); got != ch.want {
					t.Errorf("%v: allowed=%v, want %v", ch, got, ch.want)
				}
			}
		})
	}
}

func TestCompileOutputShape(t *testing.T) {
	c := baseCluster(
		mkPol("x/p", "", ingress(ports(port("TCP", 80, 90), port("TCP", 85, 100), port("TCP", 101, 0), port("UDP", 5, 0)),
			ipPeer("10.0.0.0/8", "10.244.0.0/16"), podPeer("pod=b"), nsPeer("ns=y"))),
	)
	rs := Compile(c, "n1")
	if len(rs.Chains) != 1 || len(rs.Chains[0].Rules) != 1 {
		t.Fatalf("chains %+v", rs.Chains)
	}
	r := rs.Chains[0].Rules[0]
	wantPorts := []PortRange{{TCP, 80, 101}, {UDP, 5, 5}}
	if !slices.Equal(r.Ports, wantPorts) {
		t.Errorf("ports %v, want %v", r.Ports, wantPorts)
	}
	a := netip.MustParseAddr
	wantPeers := []Range{
		{a("10.0.0.0"), a("10.243.255.255")},
		{a("10.244.1.20"), a("10.244.1.20")},
		{a("10.244.2.10"), a("10.244.2.10")},
		{a("10.244.2.20"), a("10.244.2.20")},
		{a("10.245.0.0"), a("10.255.255.255")},
	}
	if !slices.Equal(r.Peers, wantPeers) {
		t.Errorf("peers %v, want %v", r.Peers, wantPeers)
	}
}

func TestChainNames(t *testing.T) {
	long := strings.Repeat("n", 253)
	tests := []struct {
		dir  Direction
		key  string
		want string
	}{
		{Ingress, "x/allow-web", "in_x_allow-web"},
		{Egress, "kube-system/a.b", "eg_kube-system_a.b"},
		{Ingress, "a-b/c", "in_a-b_c"},
		{Ingress, "a/b-c", "in_a_b-c"},
	}
	for _, tt := range tests {
		if got := chainName(tt.dir, tt.key); got != tt.want {
			t.Errorf("chainName(%v, %q) = %q, want %q", tt.dir, tt.key, got, tt.want)
		}
	}
	seen := map[string]string{}
	for _, key := range []string{"x/" + long, "x/" + long + "x", "x/a_b", "x/a b", "x/a/b", "x/a-b", strings.Repeat("y", 63) + "/" + long} {
		n := chainName(Ingress, key)
		if len(n) > MaxNameLen {
			t.Errorf("%q: name %d bytes long", key, len(n))
		}
		for i := 0; i < len(n); i++ {
			if !safeByte(n[i]) && n[i] != '_' {
				t.Errorf("%q: name %q has %q", key, n, n[i])
			}
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("%q and %q share the name %q", prev, key, n)
		}
		seen[n] = key
	}
}
