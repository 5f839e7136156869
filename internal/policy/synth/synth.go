// Package synth builds synthetic clusters for the NetworkPolicy benchmarks:
// pods, namespaces and policies in the shapes real clusters use, so that
// the compiler and the rule set are measured on the selectors they meet in
// practice rather than on the worst or the easiest case.
//
// The shapes, per namespace (a team's application):
//   - namespace isolation: a default deny of ingress, and an allow from
//     the same namespace;
//   - application tiers: frontend -> backend on a named port, backend ->
//     db on a numbered port, with an endPort range for the backend's
//     admin ports;
//   - monitoring: the monitoring namespace (by namespace label) scrapes
//     every pod's named metrics port;
//   - ipBlock egress: the backend may reach the internet on 443 except the
//     private ranges and the metadata address, and DNS in kube-system
//     (namespace and pod selector in one peer).
//
// Further policies per namespace repeat the tier rules for extra
// applications, so that any number of policies keeps these proportions.
package synth

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/internal/policy"
)

// Shape sizes a synthetic cluster.
type Shape struct {
	Pods     int // all pods of the cluster
	Policies int // all NetworkPolicies
	// PodsPerNode places pods on nodes n0, n1, ... in turn of this many
	// (kubelet's default limit is 110); the benchmarks measure node n0.
	PodsPerNode int
	// PodsPerNamespace sizes the applications (default 50).
	PodsPerNamespace int
}

// DefaultPodsPerNode is kubelet's default limit of pods per node.
const DefaultPodsPerNode = 110

// Node is the name of the node the benchmarks measure.
const Node = "n0"

var tiers = []string{"frontend", "backend", "db"}

// Cluster returns a synthetic cluster of the given shape. Pod addresses are
// in 10.244.0.0/16: node i's pods are in 10.244.i.0/24 from .2 (so at most
// 256 nodes of at most 250 pods).
func Cluster(s Shape) *policy.Cluster {
	if s.PodsPerNode <= 0 {
		s.PodsPerNode = DefaultPodsPerNode
	}
	if s.PodsPerNamespace <= 0 {
		s.PodsPerNamespace = 50
	}
	nsCount := max(1, (s.Pods+s.PodsPerNamespace-1)/s.PodsPerNamespace)
	c := &policy.Cluster{}
	c.Namespaces = append(c.Namespaces,
		&policy.Namespace{Name: "kube-system", Labels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
		&policy.Namespace{Name: "monitoring", Labels: map[string]string{"kubernetes.io/metadata.name": "monitoring", "team": "monitoring"}})
	for i := range nsCount {
		name := fmt.Sprintf("team-%d", i)
		c.Namespaces = append(c.Namespaces, &policy.Namespace{Name: name, Labels: map[string]string{
			"kubernetes.io/metadata.name": name, "team": name, "env": []string{"prod", "staging"}[i%2]}})
	}
	// Pods go round the nodes, as a scheduler spreads an application's
	// replicas: every node has pods of every namespace, so every policy
	// matters on the measured node.
	nodes := max(1, (s.Pods+s.PodsPerNode-1)/s.PodsPerNode)
	for i := range s.Pods {
		node, j := i%nodes, i/nodes
		ns := fmt.Sprintf("team-%d", i/s.PodsPerNamespace)
		tier := tiers[i%len(tiers)]
		app := fmt.Sprintf("app-%d", (i%s.PodsPerNamespace)/6)
		c.Pods = append(c.Pods, &policy.Pod{
			Namespace: ns, Name: fmt.Sprintf("%s-%s-%d", app, tier, i),
			Labels: map[string]string{"app": app, "tier": tier, "pod-template-hash": fmt.Sprintf("%08x", i*2654435761)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(node), byte(j + 2)})},
			Node:   fmt.Sprintf("n%d", node),
			Ports: []policy.ContainerPort{{Name: "http", Protocol: policy.TCP, Port: 8080},
				{Name: "metrics", Protocol: policy.TCP, Port: 9090}},
		})
	}
	for i := range s.Policies {
		c.Policies = append(c.Policies, Policy(i, nsCount))
	}
	return c
}

// Policy returns the i-th synthetic policy of a cluster of nsCount team
// namespaces: policies go round the namespaces, each namespace's k-th
// policy taking the k-th shape.
func Policy(i, nsCount int) *networkingv1.NetworkPolicy {
	ns := fmt.Sprintf("team-%d", i%nsCount)
	k := i / nsCount
	meta := metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", k)}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(p intstr.IntOrString, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: &p, Protocol: proto}
	}
	sel := func(kv ...string) *metav1.LabelSelector {
		m := map[string]string{}
		for j := 0; j+1 < len(kv); j += 2 {
			m[kv[j]] = kv[j+1]
		}
		return &metav1.LabelSelector{MatchLabels: m}
	}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	app := fmt.Sprintf("app-%d", k/6)
	var spec networkingv1.NetworkPolicySpec
	switch k % 6 {
	case 0: // default deny ingress
		spec = networkingv1.NetworkPolicySpec{PolicyTypes: ingress}
	case 1: // allow from the same namespace
		spec = networkingv1.NetworkPolicySpec{PolicyTypes: ingress, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}}
	case 2: // frontend -> backend on the named port, admin port range
		end := int32(8099)
		p := port(intstr.FromInt32(8090), &tcp)
		p.EndPort = &end
		spec = networkingv1.NetworkPolicySpec{PodSelector: *sel("app", app, "tier", "backend"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", app, "tier", "frontend")}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), &tcp), p}}}}
	case 3: // backend -> db on a numbered port
		spec = networkingv1.NetworkPolicySpec{PodSelector: *sel("app", app, "tier", "db"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", app, "tier", "backend")}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5432), &tcp)}}}}
	case 4: // monitoring scrapes the named metrics port
		spec = networkingv1.NetworkPolicySpec{PolicyTypes: ingress, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "monitoring")}},
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("metrics"), &tcp)}}}}
	default: // backend egress: internet on 443 but private ranges, and DNS
		spec = networkingv1.NetworkPolicySpec{PodSelector: *sel("tier", "backend"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0",
					Except: []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.169.254/32"}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(443), &tcp)}},
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("kubernetes.io/metadata.name", "kube-system"),
					PodSelector: sel("k8s-app", "kube-dns")}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), &udp), port(intstr.FromInt32(53), &tcp)}},
			}}
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: meta, Spec: spec}
}
