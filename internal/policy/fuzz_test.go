package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// byteSource reads choices from fuzz input; past its end every choice is 0.
type byteSource struct {
	b []byte
	i int
}

func (s *byteSource) next() byte {
	if s.i >= len(s.b) {
		return 0
	}
	s.i++
	return s.b[s.i-1]
}

func (s *byteSource) n(k int) int { return int(s.next()) % k }

// fuzzCluster builds a small cluster from data: namespaces x, y, z, pods
// over nodes n1 and n2 (some without an address, some sharing one, some
// host network, a few IPv6), and policies with random selectors, peers,
// ports and policy types, including invalid ones.
func fuzzCluster(data []byte) *Cluster {
	s := &byteSource{b: data}
	lbls := func() map[string]string {
		m := map[string]string{}
		for range s.n(3) {
			m[[]string{"a", "b", "c"}[s.n(3)]] = []string{"1", "2"}[s.n(2)]
		}
		return m
	}
	selector := func() *metav1.LabelSelector {
		ls := &metav1.LabelSelector{MatchLabels: lbls()}
		for range s.n(2) {
			op := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn,
				metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist, "Bogus"}[s.n(5)]
			req := metav1.LabelSelectorRequirement{Key: []string{"a", "b", "c"}[s.n(3)], Operator: op}
			if op == metav1.LabelSelectorOpIn || op == metav1.LabelSelectorOpNotIn || s.n(8) == 0 {
				req.Values = []string{[]string{"1", "2"}[s.n(2)]}
			}
			ls.MatchExpressions = append(ls.MatchExpressions, req)
		}
		return ls
	}
	addr := func() netip.Addr {
		if s.n(8) == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: s.next()})
		}
		return netip.AddrFrom4([4]byte{10, 244, byte(s.n(3)), s.next()})
	}
	c := &Cluster{}
	for _, n := range []string{"x", "y", "z"} {
		if s.n(4) != 0 {
			c.Namespaces = append(c.Namespaces, &Namespace{Name: n, Labels: lbls()})
		}
	}
	nss := []string{"x", "y", "z"}
	for i := range s.n(10) {
		p := &Pod{Namespace: nss[s.n(3)], Name: fmt.Sprintf("p%d", i), Labels: lbls(), Node: fmt.Sprintf("n%d", 1+s.n(2))}
		for range s.n(3) {
			p.IPs = append(p.IPs, addr())
		}
		p.HostNetwork = s.n(10) == 0
		for range s.n(3) {
			p.Ports = append(p.Ports, ContainerPort{Name: []string{"http", "dns", ""}[s.n(3)],
				Protocol: []Protocol{"", TCP, UDP}[s.n(3)], Port: uint16(78 + s.n(6))})
		}
		c.Pods = append(c.Pods, p)
	}
	peers := func() []networkingv1.NetworkPolicyPeer {
		var out []networkingv1.NetworkPolicyPeer
		for range s.n(3) {
			var p networkingv1.NetworkPolicyPeer
			switch s.n(6) {
			case 0:
				p.PodSelector = selector()
			case 1:
				p.NamespaceSelector = selector()
			case 2:
				p.PodSelector, p.NamespaceSelector = selector(), selector()
			case 3, 4:
				a := addr()
				cidr := netip.PrefixFrom(a, s.n(a.BitLen()+1)).String()
				if s.n(16) == 0 {
					cidr = "bogus"
				}
				p.IPBlock = &networkingv1.IPBlock{CIDR: cidr}
				for range s.n(3) {
					e := addr()
					p.IPBlock.Except = append(p.IPBlock.Except, netip.PrefixFrom(e, s.n(e.BitLen()+1)).String())
				}
			case 5: // empty: invalid
			}
			out = append(out, p)
		}
		return out
	}
	ports := func() []networkingv1.NetworkPolicyPort {
		var out []networkingv1.NetworkPolicyPort
		for range s.n(3) {
			var p networkingv1.NetworkPolicyPort
			if k := s.n(5); k > 0 {
				pr := []corev1.Protocol{"", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "ICMP"}[k]
				p.Protocol = &pr
			}
			switch s.n(4) {
			case 1:
				v := intstr.FromInt32(int32(78 + s.n(6)))
				if s.n(16) == 0 {
					v = intstr.FromInt32(70000)
				}
				p.Port = &v
				if s.n(3) == 0 {
					end := int32(76 + s.n(10))
					p.EndPort = &end
				}
			case 2, 3:
				v := intstr.FromString([]string{"http", "dns", "nope"}[s.n(3)])
				p.Port = &v
			}
			out = append(out, p)
		}
		return out
	}
	for i := range s.n(6) {
		pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nss[s.n(3)], Name: fmt.Sprintf("q%d", i)}}
		if s.n(16) == 0 {
			pol.Name = "odd_name " + strings.Repeat("n", s.n(256))
		}
		pol.Spec.PodSelector = *selector()
		switch s.n(5) {
		case 1:
			pol.Spec.PolicyTypes = []networkingv1.PolicyType{tIn}
		case 2:
			pol.Spec.PolicyTypes = []networkingv1.PolicyType{tEg}
		case 3:
			pol.Spec.PolicyTypes = []networkingv1.PolicyType{tIn, tEg}
		case 4:
			if s.n(4) == 0 {
				pol.Spec.PolicyTypes = []networkingv1.PolicyType{"Bogus"}
			}
		}
		for range s.n(3) {
			pol.Spec.Ingress = append(pol.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers(), Ports: ports()})
		}
		for range s.n(3) {
			pol.Spec.Egress = append(pol.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers(), Ports: ports()})
		}
		c.Policies = append(c.Policies, pol)
	}
	return c
}

// FuzzCompile: Compile never panics, its output is deterministic and does
// not depend on the order of its input, sorted, with disjoint normalized
// ranges, names within nft's rules, and every reference resolved.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x01\x02\x03\x07\x00\x01\x05\x09\x02\x04\x03\x01\x00\x02\x01\x03\x04\x05\x06\x07\x08\x09\x0a\x05\x01\x02\x03"))
	f.Add([]byte("some policy soup with more bytes than that one, to reach the rules and the ports: 0123456789abcdef"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fuzzCluster(data)
		for _, node := range []string{"n1", "n2"} {
			rs := Compile(c, node)
			checkRuleset(t, c, rs)
			if again := Compile(c, node); !sameRuleset(rs, again) {
				t.Fatalf("two compilations differ:\n%+v\n%+v", rs, again)
			}
			rev := &Cluster{Pods: slices.Clone(c.Pods), Namespaces: slices.Clone(c.Namespaces), Policies: slices.Clone(c.Policies)}
			slices.Reverse(rev.Pods)
			slices.Reverse(rev.Namespaces)
			slices.Reverse(rev.Policies)
			if other := Compile(rev, node); !sameRuleset(rs, other) && !hasDuplicates(c) {
				t.Fatalf("output depends on input order:\n%+v\n%+v", rs, other)
			}
		}
	})
}

// hasDuplicates reports whether two pods share an address or two policies a
// name: then which one wins depends on the input order by design.
func hasDuplicates(c *Cluster) bool {
	addrs := map[netip.Addr]bool{}
	for _, p := range c.Pods {
		for _, a := range p.IPs {
			if addrs[a] {
				return true
			}
			addrs[a] = true
		}
	}
	keys := map[string]bool{}
	for _, p := range c.Policies {
		if keys[policyKey(p)] {
			return true
		}
		keys[policyKey(p)] = true
	}
	return false
}

func sameRuleset(a, b *Ruleset) bool {
	pa, pb := a.Problems, b.Problems
	a2, b2 := *a, *b
	a2.Problems, b2.Problems = nil, nil
	if !reflect.DeepEqual(a2, b2) || len(pa) != len(pb) {
		return false
	}
	for i := range pa {
		if pa[i].Policy != pb[i].Policy || pa[i].Err.Error() != pb[i].Err.Error() {
			return false
		}
	}
	return true
}

func checkRuleset(t *testing.T, c *Cluster, rs *Ruleset) {
	t.Helper()
	name := func(n string) {
		if len(n) == 0 || len(n) > MaxNameLen {
			t.Fatalf("name %q: length %d", n, len(n))
		}
		for i := 0; i < len(n); i++ {
			if !safeByte(n[i]) && n[i] != '_' {
				t.Fatalf("name %q: byte %q", n, n[i])
			}
		}
	}
	local := map[string]*Pod{}
	for _, p := range c.Pods {
		if p.Node == rs.Node && !p.HostNetwork {
			local[p.Key()] = p
		}
	}
	for i, pe := range rs.Pods {
		if i > 0 && !rs.Pods[i-1].Addr.Less(pe.Addr) {
			t.Fatalf("pod entries not sorted or repeated: %v, %v", rs.Pods[i-1].Addr, pe.Addr)
		}
		if local[pe.Pod] == nil {
			t.Fatalf("entry %+v is not a policed pod of node %s", pe, rs.Node)
		}
		if pe.Ingress == "" && pe.Egress == "" {
			t.Fatalf("entry %+v isolated in no direction", pe)
		}
		for dir, g := range map[Direction]string{Ingress: pe.Ingress, Egress: pe.Egress} {
			if g == "" {
				continue
			}
			if grp, ok := rs.group(g); !ok || grp.Dir != dir {
				t.Fatalf("entry %+v: group %s missing or of the wrong direction", pe, g)
			}
		}
	}
	for i, g := range rs.Groups {
		name(g.Name)
		if i > 0 && rs.Groups[i-1].Name >= g.Name {
			t.Fatalf("groups not sorted: %s, %s", rs.Groups[i-1].Name, g.Name)
		}
		if len(g.Chains) == 0 || !slices.IsSorted(g.Chains) {
			t.Fatalf("group %+v: chains empty or unsorted", g)
		}
		for _, cn := range g.Chains {
			if ch, ok := rs.chain(cn); !ok || ch.Dir != g.Dir {
				t.Fatalf("group %s: chain %s missing or of the wrong direction", g.Name, cn)
			}
		}
	}
	for i, ch := range rs.Chains {
		name(ch.Name)
		if i > 0 && rs.Chains[i-1].Name >= ch.Name {
			t.Fatalf("chains not sorted or repeated: %s, %s", rs.Chains[i-1].Name, ch.Name)
		}
		for _, r := range ch.Rules {
			checkRanges(t, r.Peers)
			if r.AnyPeer && len(r.Peers) > 0 || r.AnyPort && (len(r.Ports) > 0 || len(r.Named) > 0) {
				t.Fatalf("rule %+v: Any and a set", r)
			}
			for j, p := range r.Ports {
				if p.First > p.Last {
					t.Fatalf("port range %+v", p)
				}
				if j > 0 {
					q := r.Ports[j-1]
					if q.Protocol > p.Protocol || q.Protocol == p.Protocol && uint32(q.Last)+1 >= uint32(p.First) {
						t.Fatalf("ports not sorted and merged: %+v", r.Ports)
					}
				}
			}
			for j := 1; j < len(r.Named); j++ {
				if compareNamed(r.Named[j-1], r.Named[j]) >= 0 {
					t.Fatalf("named ports not sorted or repeated: %+v", r.Named)
				}
			}
		}
	}
}

// checkRanges checks that rs is normalized, and contains agrees with a
// linear scan around every bound.
func checkRanges(t *testing.T, rs []Range) {
	t.Helper()
	for i, r := range rs {
		if !r.From.IsValid() || !sameFamily(r.From, r.To) || r.To.Less(r.From) {
			t.Fatalf("bad range %v", r)
		}
		if i > 0 {
			p := rs[i-1]
			if !p.To.Less(r.From) || sameFamily(p.To, r.From) && p.To.Next() == r.From {
				t.Fatalf("ranges overlap, touch or are unsorted: %v, %v", p, r)
			}
		}
	}
	linear := func(a netip.Addr) bool {
		for _, r := range rs {
			if !a.Less(r.From) && !r.To.Less(a) {
				return true
			}
		}
		return false
	}
	for _, r := range rs {
		for _, a := range []netip.Addr{r.From, r.To, r.From.Prev(), r.To.Next()} {
			if a.IsValid() && contains(rs, a) != linear(a) {
				t.Fatalf("contains(%v, %v) = %v", rs, a, contains(rs, a))
			}
		}
	}
}
