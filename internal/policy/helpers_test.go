package policy

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Builders for test clusters and policies.

// mkPod returns pod "ns/name" on node with address ip ("" for none) and
// labels "k=v,k2=v2".
func mkPod(key, node, ip, lbls string, ports ...ContainerPort) *Pod {
	ns, name, _ := strings.Cut(key, "/")
	p := &Pod{Namespace: ns, Name: name, Node: node, Labels: parseLabels(lbls), Ports: ports}
	if ip != "" {
		p.IPs = []netip.Addr{netip.MustParseAddr(ip)}
	}
	return p
}

func mkNS(name, lbls string) *Namespace { return &Namespace{Name: name, Labels: parseLabels(lbls)} }

func parseLabels(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func sel(lbls string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: parseLabels(lbls)}
}

type polOpt func(*networkingv1.NetworkPolicy)

// mkPol returns policy "ns/name" selecting podSel ("" = all pods).
func mkPol(key, podSel string, opts ...polOpt) *networkingv1.NetworkPolicy {
	ns, name, _ := strings.Cut(key, "/")
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *sel(podSel)},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func types(ts ...networkingv1.PolicyType) polOpt {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = ts }
}

const (
	tIn = networkingv1.PolicyTypeIngress
	tEg = networkingv1.PolicyTypeEgress
)

func ingress(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) polOpt {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
	}
}

func egress(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) polOpt {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
	}
}

func podPeer(lbls string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: sel(lbls)}
}

func nsPeer(lbls string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(lbls)}
}

func bothPeer(nsLbls, podLbls string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(nsLbls), PodSelector: sel(podLbls)}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// port returns a NetworkPolicyPort: proto "" = unset; port an int, a
// string (named) or nil; end 0 = no endPort.
func port(proto string, p any, end int32) networkingv1.NetworkPolicyPort {
	var np networkingv1.NetworkPolicyPort
	if proto != "" {
		pr := corev1.Protocol(proto)
		np.Protocol = &pr
	}
	switch v := p.(type) {
	case int:
		x := intstr.FromInt32(int32(v))
		np.Port = &x
	case string:
		x := intstr.FromString(v)
		np.Port = &x
	}
	if end != 0 {
		np.EndPort = &end
	}
	return np
}

func ports(ps ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return ps }

// connAllowed answers whether from may connect to to as the nodes would:
// egress on the source's node and ingress on the destination's. from and
// to are pod keys or addresses.
func connAllowed(t testing.TB, c *Cluster, from, to string, proto Protocol, p uint16) bool {
	t.Helper()
	src, srcNode := resolve(t, c, from)
	dst, dstNode := resolve(t, c, to)
	pkt := Packet{Src: src, Dst: dst, Protocol: proto, Port: p}
	eg := Compile(c, srcNode).Evaluate(Egress, pkt)
	in := Compile(c, dstNode).Evaluate(Ingress, pkt)
	return eg.Allowed && in.Allowed
}

func resolve(t testing.TB, c *Cluster, s string) (netip.Addr, string) {
	t.Helper()
	if a, err := netip.ParseAddr(s); err == nil {
		return a, "-no-node-"
	}
	for _, p := range c.Pods {
		if p.Key() == s {
			return p.IPs[0], p.Node
		}
	}
	t.Fatalf("no pod %s", s)
	return netip.Addr{}, ""
}
