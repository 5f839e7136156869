package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchCluster builds pods pods in namespaces of 100, spread round-robin
// over nodes of perNode pods (so that every node has pods of every
// namespace, as replicas spread by the scheduler do: the hard case for
// the compiler, since every policy then selects local pods), and pols
// policies in the shapes of real clusters, 20 per namespace:
// namespace isolation (default deny, allow from the namespace), app tiers
// (frontend -> backend on a named port plus an endPort range, backend ->
// db on a number), monitoring by namespace label on a named port, and
// egress to the internet by ipBlock with excepts plus DNS in kube-system
// (namespace AND pod selector).
func benchCluster(pods, pols, perNode int) *Cluster {
	nodes := max(1, pods/perNode)
	nsCount := max(1, pods/100)
	c := &Cluster{Namespaces: []*Namespace{
		{Name: "kube-system", Labels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
		{Name: "monitoring", Labels: map[string]string{"kubernetes.io/metadata.name": "monitoring", "team": "monitoring"}},
	}}
	for i := range nsCount {
		n := fmt.Sprintf("team-%d", i)
		c.Namespaces = append(c.Namespaces, &Namespace{Name: n, Labels: map[string]string{"kubernetes.io/metadata.name": n, "team": n}})
	}
	tiers := []string{"frontend", "backend", "db"}
	perNodeCount := make([]int, nodes)
	for i := range pods {
		node := (i / nsCount) % nodes
		idx := perNodeCount[node]
		perNodeCount[node]++
		c.Pods = append(c.Pods, &Pod{
			Namespace: fmt.Sprintf("team-%d", i%nsCount), Name: fmt.Sprintf("pod-%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", (i/nsCount)%8), "tier": tiers[i%3], "pod-template-hash": fmt.Sprintf("%x", i*2654435761)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(node), byte(idx + 2)})},
			Node:   fmt.Sprintf("n%d", node),
			Ports:  []ContainerPort{{Name: "http", Protocol: TCP, Port: 8080}, {Name: "metrics", Protocol: TCP, Port: 9090}},
		})
	}
	for i := range 3 {
		c.Pods = append(c.Pods, &Pod{Namespace: "kube-system", Name: fmt.Sprintf("coredns-%d", i),
			Labels: map[string]string{"k8s-app": "kube-dns"}, Node: fmt.Sprintf("n%d", i%nodes),
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i % nodes), byte(250 + i)})}})
	}
	for i := range pols {
		ns := fmt.Sprintf("team-%d", i%nsCount)
		k := i / nsCount
		app := fmt.Sprintf("app-%d", (k/5)%8)
		p := mkPol(ns+"/"+fmt.Sprintf("p%d", k), "")
		switch k % 5 {
		case 0:
			if k == 0 {
				types(tIn)(p) // default deny
			} else {
				ingress(nil, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{}})(p)
			}
		case 1:
			p.Spec.PodSelector = *sel("app=" + app + ",tier=backend")
			ingress(ports(port("TCP", "http", 0), port("TCP", 8090, 8099)), podPeer("app="+app+",tier=frontend"))(p)
		case 2:
			p.Spec.PodSelector = *sel("app=" + app + ",tier=db")
			ingress(ports(port("TCP", 5432, 0)), podPeer("app="+app+",tier=backend"))(p)
		case 3:
			ingress(ports(port("TCP", "metrics", 0)), nsPeer("team=monitoring"))(p)
		case 4:
			p.Spec.PodSelector = *sel("app=" + app + ",tier=backend")
			types(tEg)(p)
			egress(ports(port("TCP", 443, 0)), ipPeer("0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.169.254/32"))(p)
			egress(ports(port("UDP", 53, 0), port("TCP", 53, 0)), bothPeer("kubernetes.io/metadata.name=kube-system", "k8s-app=kube-dns"))(p)
			egress(ports(port("TCP", "http", 0)), bothPeer("team="+fmt.Sprintf("team-%d", (i+1)%nsCount), "tier=frontend"))(p)
		}
		c.Policies = append(c.Policies, p)
	}
	return c
}

func BenchmarkCompile(b *testing.B) {
	for _, sz := range []struct{ pols, pods int }{{100, 1000}, {1000, 1000}, {100, 5000}, {1000, 5000}} {
		b.Run(fmt.Sprintf("policies=%d/pods=%d", sz.pols, sz.pods), func(b *testing.B) {
			c := benchCluster(sz.pods, sz.pols, 100)
			var rs *Ruleset
			for b.Loop() {
				rs = Compile(c, "n0")
			}
			rules, peers, named := 0, 0, 0
			for _, ch := range rs.Chains {
				rules += len(ch.Rules)
				for _, r := range ch.Rules {
					peers += len(r.Peers)
					named += len(r.Named)
				}
			}
			b.ReportMetric(float64(len(rs.Pods)), "entries")
			b.ReportMetric(float64(len(rs.Chains)), "chains")
			b.ReportMetric(float64(len(rs.Groups)), "groups")
			b.ReportMetric(float64(rules), "rules")
			b.ReportMetric(float64(peers), "ranges")
			b.ReportMetric(float64(named), "named")
		})
	}
}

// TestCompileScale keeps the 1000 policies x 5000 pods compile well under
// its budget (0.5 s), with a margin for slow and busy machines.
func TestCompileScale(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	c := benchCluster(5000, 1000, 100)
	start := time.Now()
	rs := Compile(c, "n0")
	d := time.Since(start)
	if len(rs.Problems) > 0 {
		t.Fatalf("problems: %v", rs.Problems)
	}
	if len(rs.Pods) != 100 || len(rs.Chains) < 400 {
		t.Fatalf("%d entries, %d chains: the shape is not the intended one", len(rs.Pods), len(rs.Chains))
	}
	t.Logf("1000 policies x 5000 pods: %v, %d entries, %d chains, %d groups", d, len(rs.Pods), len(rs.Chains), len(rs.Groups))
	if d > 2*time.Second {
		t.Errorf("Compile took %v, budget 0.5 s", d)
	}
}
