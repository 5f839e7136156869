package policy

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Cluster is the input of Compile: everything the engine knows of the
// cluster. Terminated pods (phase Succeeded or Failed) are the caller's to
// leave out. Compile does not modify it.
type Cluster struct {
	Pods       []*Pod
	Namespaces []*Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Compile returns the Ruleset that node enforces for the cluster c, with
// the networking.k8s.io/v1 semantics:
//
//   - a policy selects the pods of its namespace that match its
//     podSelector (empty: all of them), for the directions of its
//     policyTypes; empty policyTypes default as the API server does
//     (Ingress, plus Egress when the policy has egress rules);
//   - a pod is isolated in a direction when some policy selects it for
//     that direction, and then only what some rule of those policies
//     allows passes (the union of the policies);
//   - a rule with no from/to admits every peer, one with no ports every
//     protocol and port; a peer's podSelector alone means pods of the
//     policy's namespace, namespaceSelector alone all pods of the matching
//     namespaces, both the pods matching both (AND); an ipBlock is its
//     CIDR minus its excepts and matches any address, pods' included;
//   - a port is a protocol (default TCP) with a number, a range
//     (port..endPort), no number (every port), or a name resolved on the
//     destination pod's container ports (ingress: the selected pod;
//     egress: each pod the rule's peers contain); an address that is no
//     pod's never matches a named port;
//   - host-network pods are never policed nor pod peers; pods without an
//     address are in no set.
//
// Only the node's own pods get PodEntries, and only policies that select
// one of them get chains.
//
// Bad input fails closed. A policy the engine cannot read completely is a
// Problem, and:
//   - a rule with a bad peer or port (a CIDR that does not parse, an
//     unknown protocol, a bad selector, an empty peer) is left out, so it
//     allows nothing, while the policy still isolates the pods it selects;
//   - a policy whose podSelector does not parse isolates every pod of its
//     namespace, with no rules, for its policy types;
//   - an unknown policy type isolates the selected pods in both
//     directions, with no rules for a direction the policy did not name.
//
// So an error can deny traffic the policy meant to allow, never allow
// traffic it did not.
func Compile(c *Cluster, node string) *Ruleset {
	cp := newCompiler(c, node)
	return cp.compile()
}

// compiler holds the indexes and caches of one Compile call.
type compiler struct {
	node string
	pols []*networkingv1.NetworkPolicy // sorted by namespace/name

	nsLabels map[string]map[string]string // namespace -> labels (nil: no object)
	nsNames  []string                     // every namespace with an object or a pod, sorted
	// peerPods are the pods that can be pod peers (an address, not host
	// network), per namespace, sorted by key.
	peerPods map[string][]*Pod
	// local are this node's policed pods per namespace, sorted by key.
	local map[string][]*Pod
	// named indexes the container ports of peer pods by name and
	// protocol: every (address, protocol, port) a named port resolves to.
	named map[namedKey][]NamedPort

	nsCache   map[string][]string // namespaceSelector string -> namespaces
	peerCache map[string][]Range  // peer key -> addresses of the pods

	problems []Problem
}

type namedKey struct {
	name  string
	proto Protocol
}

func newCompiler(c *Cluster, node string) *compiler {
	cp := &compiler{
		node:      node,
		nsLabels:  make(map[string]map[string]string),
		peerPods:  make(map[string][]*Pod),
		local:     make(map[string][]*Pod),
		named:     make(map[namedKey][]NamedPort),
		nsCache:   make(map[string][]string),
		peerCache: make(map[string][]Range),
	}
	if c == nil {
		return cp
	}
	for _, ns := range c.Namespaces {
		if ns != nil {
			cp.nsLabels[ns.Name] = ns.Labels
		}
	}
	seen := make(map[string]bool)
	for name := range cp.nsLabels {
		seen[name] = true
		cp.nsNames = append(cp.nsNames, name)
	}
	for _, p := range c.Pods {
		if p == nil || p.HostNetwork || len(p.IPs) == 0 {
			continue
		}
		if !seen[p.Namespace] {
			seen[p.Namespace] = true
			cp.nsNames = append(cp.nsNames, p.Namespace)
		}
		cp.peerPods[p.Namespace] = append(cp.peerPods[p.Namespace], p)
		if p.Node == node {
			cp.local[p.Namespace] = append(cp.local[p.Namespace], p)
		}
		for _, port := range p.Ports {
			if port.Name == "" {
				continue
			}
			k := namedKey{port.Name, orTCP(port.Protocol)}
			for _, a := range p.IPs {
				cp.named[k] = append(cp.named[k], NamedPort{Addr: a.Unmap(), Protocol: k.proto, Port: port.Port})
			}
		}
	}
	slices.Sort(cp.nsNames)
	byKey := func(a, b *Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	}
	for _, ps := range cp.peerPods {
		slices.SortFunc(ps, byKey)
	}
	for _, ps := range cp.local {
		slices.SortFunc(ps, byKey)
	}
	for k, nps := range cp.named {
		slices.SortFunc(nps, compareNamed)
		cp.named[k] = slices.Compact(nps)
	}
	cp.pols = make([]*networkingv1.NetworkPolicy, 0, len(c.Policies))
	for _, p := range c.Policies {
		if p != nil {
			cp.pols = append(cp.pols, p)
		}
	}
	slices.SortStableFunc(cp.pols, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return cp
}

func orTCP(p Protocol) Protocol {
	if p == "" {
		return TCP
	}
	return p
}

func compareNamed(a, b NamedPort) int {
	return cmp.Or(a.Addr.Compare(b.Addr), strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.Port, b.Port))
}

func policyKey(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name }

func (cp *compiler) problem(pol string, format string, args ...any) {
	cp.problems = append(cp.problems, Problem{Policy: pol, Err: fmt.Errorf(format, args...)})
}

// podState collects, per local pod, the chains that police it.
type podState struct {
	pod             *Pod
	ingress, egress []string
}

func (cp *compiler) compile() *Ruleset {
	rs := &Ruleset{Node: cp.node}
	states := make(map[*Pod]*podState)
	seenKey := make(map[string]bool)
	for _, pol := range cp.pols {
		key := policyKey(pol)
		if seenKey[key] {
			cp.problem(key, "policy %s given more than once: the later copies are ignored", key)
			continue
		}
		seenKey[key] = true
		ingress, egress := cp.policyTypes(key, pol)

		// The pods the policy selects.
		var selected []*Pod
		denyAll := false
		sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
		if err != nil {
			cp.problem(key, "podSelector: %w; isolating every pod of namespace %s with no rules instead", err, pol.Namespace)
			selected = cp.local[pol.Namespace]
			denyAll = true
		} else {
			for _, p := range cp.local[pol.Namespace] {
				if sel.Matches(labels.Set(p.Labels)) {
					selected = append(selected, p)
				}
			}
		}

		for _, d := range []struct {
			dir  Direction
			on   policyDir
			list func(*podState) *[]string
		}{
			{Ingress, ingress, func(s *podState) *[]string { return &s.ingress }},
			{Egress, egress, func(s *podState) *[]string { return &s.egress }},
		} {
			if d.on == dirOff {
				continue
			}
			// The rules are read even when no local pod is selected, so
			// that every node reports the same Problems.
			var rules []Rule
			if !denyAll && d.on == dirRules {
				rules = cp.rules(key, pol, d.dir, selected, len(selected) > 0)
			}
			if len(selected) == 0 {
				continue
			}
			ch := Chain{Name: chainName(d.dir, key), Dir: d.dir, Policy: key, Rules: rules}
			rs.Chains = append(rs.Chains, ch)
			for _, p := range selected {
				st := states[p]
				if st == nil {
					st = &podState{pod: p}
					states[p] = st
				}
				l := d.list(st)
				*l = append(*l, ch.Name)
			}
		}
	}

	groups := make(map[string]Group)
	groupOf := func(dir Direction, chains []string) string {
		if len(chains) == 0 {
			return ""
		}
		slices.Sort(chains)
		name := groupName(dir, chains)
		if g, ok := groups[name]; ok && !slices.Equal(g.Chains, chains) {
			// A hash collision between two lists: number the later one.
			for i := 2; ; i++ {
				alt := fmt.Sprintf("%s-%d", name, i)
				if g, ok := groups[alt]; !ok || slices.Equal(g.Chains, chains) {
					name = alt
					break
				}
			}
		}
		if _, ok := groups[name]; !ok {
			groups[name] = Group{Name: name, Dir: dir, Chains: chains}
		}
		return name
	}
	// Visit pods in key order so that group names (even after a hash
	// collision) do not depend on map order.
	sts := make([]*podState, 0, len(states))
	for _, st := range states {
		sts = append(sts, st)
	}
	slices.SortFunc(sts, func(a, b *podState) int { return strings.Compare(a.pod.Key(), b.pod.Key()) })
	for _, st := range sts {
		in := groupOf(Ingress, st.ingress)
		eg := groupOf(Egress, st.egress)
		for _, a := range st.pod.IPs {
			rs.Pods = append(rs.Pods, PodEntry{Addr: a.Unmap(), Pod: st.pod.Key(), Ingress: in, Egress: eg})
		}
	}
	// One entry per address: two pods claiming one address (a stale
	// object) keep the entry of the pod whose key sorts first.
	slices.SortStableFunc(rs.Pods, func(a, b PodEntry) int { return a.Addr.Compare(b.Addr) })
	rs.Pods = slices.CompactFunc(rs.Pods, func(a, b PodEntry) bool { return a.Addr == b.Addr })

	for _, g := range groups {
		rs.Groups = append(rs.Groups, g)
	}
	slices.SortFunc(rs.Groups, func(a, b Group) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.Chains, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	rs.Problems = cp.problems
	slices.SortStableFunc(rs.Problems, func(a, b Problem) int { return strings.Compare(a.Policy, b.Policy) })
	return rs
}

// policyDir says how a policy treats one direction.
type policyDir uint8

const (
	dirOff   policyDir = iota // the policy does not police this direction
	dirRules                  // isolates, its rules allow
	dirDeny                   // isolates with no rules (fail closed)
)

// policyTypes returns how pol treats each direction: its policyTypes, or
// when it has none, the API server's defaults.
func (cp *compiler) policyTypes(key string, pol *networkingv1.NetworkPolicy) (ingress, egress policyDir) {
	if len(pol.Spec.PolicyTypes) == 0 {
		ingress = dirRules
		if len(pol.Spec.Egress) > 0 {
			egress = dirRules
		}
		return ingress, egress
	}
	bad := false
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = dirRules
		case networkingv1.PolicyTypeEgress:
			egress = dirRules
		default:
			cp.problem(key, "unknown policy type %q (want Ingress or Egress); isolating in both directions", t)
			bad = true
		}
	}
	if bad {
		if ingress == dirOff {
			ingress = dirDeny
		}
		if egress == dirOff {
			egress = dirDeny
		}
	}
	return ingress, egress
}

// rules compiles pol's rules for dir; selected are the local pods the
// policy selects (the destinations of its ingress named ports). resolve
// false only checks the rules for Problems, without resolving peers.
func (cp *compiler) rules(key string, pol *networkingv1.NetworkPolicy, dir Direction, selected []*Pod, resolve bool) []Rule {
	var out []Rule
	if dir == Ingress {
		for i, r := range pol.Spec.Ingress {
			rule, err := cp.rule(pol.Namespace, r.From, r.Ports, dir, selected, resolve)
			if err != nil {
				cp.problem(key, "ingress rule %d: %w; the rule is left out", i, err)
				continue
			}
			out = append(out, rule)
		}
		return out
	}
	for i, r := range pol.Spec.Egress {
		rule, err := cp.rule(pol.Namespace, r.To, r.Ports, dir, selected, resolve)
		if err != nil {
			cp.problem(key, "egress rule %d: %w; the rule is left out", i, err)
			continue
		}
		out = append(out, rule)
	}
	return out
}

// rule compiles one rule; any error leaves the whole rule out.
func (cp *compiler) rule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort,
	dir Direction, selected []*Pod, resolve bool) (Rule, error) {
	var r Rule
	var names []namedKey
	if len(ports) == 0 {
		r.AnyPort = true
	}
	for i, p := range ports {
		pr, name, err := parsePort(p)
		if err != nil {
			return Rule{}, fmt.Errorf("port %d: %w", i, err)
		}
		if name.name != "" {
			names = append(names, name)
		} else {
			r.Ports = append(r.Ports, pr)
		}
	}
	r.Ports = normalizePorts(r.Ports)

	if len(peers) == 0 {
		r.AnyPeer = true
	}
	var peerSets [][]Range
	for i, peer := range peers {
		set, err := cp.peer(ns, peer, resolve)
		if err != nil {
			return Rule{}, fmt.Errorf("peer %d: %w", i, err)
		}
		peerSets = append(peerSets, set)
	}
	if !resolve {
		return r, nil
	}
	var all []Range
	for _, s := range peerSets {
		all = append(all, s...)
	}
	r.Peers = normalize(all)

	// Named ports resolve on the destination: for ingress the selected
	// local pod, for egress every pod among the peers.
	for _, k := range names {
		if dir == Ingress {
			for _, p := range selected {
				for _, cport := range p.Ports {
					if cport.Name == k.name && orTCP(cport.Protocol) == k.proto {
						for _, a := range p.IPs {
							r.Named = append(r.Named, NamedPort{Addr: a.Unmap(), Protocol: k.proto, Port: cport.Port})
						}
					}
				}
			}
			continue
		}
		for _, np := range cp.named[k] {
			if r.AnyPeer || contains(r.Peers, np.Addr) {
				r.Named = append(r.Named, np)
			}
		}
	}
	slices.SortFunc(r.Named, compareNamed)
	r.Named = slices.Compact(r.Named)
	return r, nil
}

// parsePort reads one NetworkPolicyPort: a numbered port or range (pr), or
// a named port (name).
func parsePort(p networkingv1.NetworkPolicyPort) (pr PortRange, name namedKey, err error) {
	proto := TCP
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			proto = Protocol(*p.Protocol)
		default:
			return pr, name, fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", *p.Protocol)
		}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			return pr, name, errors.New("endPort without port")
		}
		return PortRange{Protocol: proto, First: 0, Last: 65535}, name, nil
	}
	if p.Port.Type == intstr.String {
		if p.Port.StrVal == "" {
			return pr, name, errors.New("empty port name")
		}
		if p.EndPort != nil {
			return pr, name, fmt.Errorf("endPort with the named port %q", p.Port.StrVal)
		}
		return pr, namedKey{p.Port.StrVal, proto}, nil
	}
	first := p.Port.IntVal
	if first < 1 || first > 65535 {
		return pr, name, fmt.Errorf("port %d out of range 1-65535", first)
	}
	last := first
	if p.EndPort != nil {
		last = *p.EndPort
		if last < first || last > 65535 {
			return pr, name, fmt.Errorf("endPort %d not in %d-65535", last, first)
		}
	}
	return PortRange{Protocol: proto, First: uint16(first), Last: uint16(last)}, name, nil
}

// normalizePorts sorts port ranges by protocol and first port and merges
// the overlapping and adjacent ones.
func normalizePorts(ps []PortRange) []PortRange {
	if len(ps) < 2 {
		return ps
	}
	slices.SortFunc(ps, func(a, b PortRange) int {
		return cmp.Or(strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	out := ps[:1]
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if last.Protocol == p.Protocol && uint32(p.First) <= uint32(last.Last)+1 {
			last.Last = max(last.Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}

// peer returns the addresses one NetworkPolicyPeer admits, normalized.
func (cp *compiler) peer(ns string, peer networkingv1.NetworkPolicyPeer, resolve bool) ([]Range, error) {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			return nil, errors.New("ipBlock together with a pod or namespace selector")
		}
		return ipBlock(peer.IPBlock)
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return nil, errors.New("empty peer (no podSelector, namespaceSelector or ipBlock)")
	}
	var podSel labels.Selector // nil: every pod
	podKey := "*"
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			return nil, fmt.Errorf("podSelector: %w", err)
		}
		if !s.Empty() {
			podSel = s
			podKey = s.String()
		}
	}
	nsKey := "=" + ns
	var nsSel labels.Selector // nil: ns only
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("namespaceSelector: %w", err)
		}
		nsSel = s
		nsKey = "~" + s.String()
	}
	if !resolve {
		return nil, nil
	}
	key := nsKey + "\x00" + podKey
	if rs, ok := cp.peerCache[key]; ok {
		return rs, nil
	}
	var namespaces []string
	if nsSel == nil {
		namespaces = []string{ns}
	} else {
		namespaces = cp.namespaces(nsKey, nsSel)
	}
	var rs []Range
	for _, n := range namespaces {
		for _, p := range cp.peerPods[n] {
			if podSel == nil || podSel.Matches(labels.Set(p.Labels)) {
				for _, a := range p.IPs {
					rs = append(rs, addrRange(a.Unmap()))
				}
			}
		}
	}
	rs = normalize(rs)
	cp.peerCache[key] = rs
	return rs, nil
}

// namespaces returns the namespaces sel matches, cached under key.
func (cp *compiler) namespaces(key string, sel labels.Selector) []string {
	if ns, ok := cp.nsCache[key]; ok {
		return ns
	}
	var out []string
	for _, n := range cp.nsNames {
		if sel.Matches(labels.Set(cp.nsLabels[n])) {
			out = append(out, n)
		}
	}
	cp.nsCache[key] = out
	return out
}

// ipBlock returns the addresses of b: its CIDR minus its excepts.
func ipBlock(b *networkingv1.IPBlock) ([]Range, error) {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr: %w", err)
	}
	set := []Range{prefixRange(p)}
	var ex []Range
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except: %w", err)
		}
		ex = append(ex, prefixRange(ep))
	}
	return subtract(set, normalize(ex)), nil
}
