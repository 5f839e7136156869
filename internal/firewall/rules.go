// Package firewall is weft's firewall as data: a State of named parts
// (masquerade, forward; NetworkPolicy next), each owning its chains in
// weft's nftables table, rendered by a pure function into one nftables
// transaction that touches only what weft created, and applied by an
// Applier (netlink here, a recording fake in firewalltest). Parts that must
// also count where iptables rules decide (a FORWARD DROP policy) carry
// iptables chains, which the netlink Applier keeps in iptables' filter
// table through the iptables binaries.
package firewall

import (
	"fmt"
	"net/netip"
	"strings"
)

// Table is the name of weft's nftables table (one per family).
const Table = "weft"

// Family is an nftables address family; weft's table exists once per family
// that has parts. An inet table would be one more Family (with an implicit
// "meta nfproto" before address matches).
type Family string

// Families of weft's tables.
const (
	IPv4 Family = "ip"
	IPv6 Family = "ip6"
)

// FamilyOf returns the family of p's addresses.
func FamilyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// KubeProxyMark is the mark kube-proxy sets on packets it has already
// masqueraded (0x4000/0x4000).
const KubeProxyMark = 0x4000

// Chains of weft's table.
const (
	ChainPostrouting = "postrouting" // nat, hook postrouting, priority srcnat (Masquerade)
	ChainForward     = "forward"     // filter, hook forward, priority filter (Forward)
)

// Verdict is what a rule does with a packet it matches.
type Verdict string

// Verdicts, as nft spells them.
const (
	VerdictReturn     Verdict = "return"
	VerdictMasquerade Verdict = "masquerade" // fully random
	// VerdictMasqueradeNotRandom is nft's plain "masquerade": the kernel
	// keeps a source port when it is free (flannel's
	// --ip-masq-fully-random-disable).
	VerdictMasqueradeNotRandom Verdict = "masquerade-not-random"
	VerdictAccept              Verdict = "accept"
	VerdictDrop                Verdict = "drop"
)

// Match is an address match; Not negates it. An invalid Prefix matches all.
type Match struct {
	Prefix netip.Prefix
	Not    bool
}

// Rule is one rule of a chain.
type Rule struct {
	Mark uint32 // if non-zero: meta mark & Mark == Mark
	// IIf and OIf, if set, match the name of the interface the packet
	// came in by or goes out by (iifname "flannel-wg"; at most 15 bytes).
	IIf, OIf string
	Src      Match
	Dst      Match
	// Counter, if set, names a counter of the rule's part that the
	// packets the rule matches are counted into (counter name "x").
	Counter string
	Verdict Verdict
}

// String renders the rule in nft syntax, for logs and golden tests.
func (r Rule) String() string {
	var parts []string
	fam := "ip"
	if r.Src.Prefix.Addr().Is6() || r.Dst.Prefix.Addr().Is6() {
		fam = "ip6"
	}
	if r.Mark != 0 {
		parts = append(parts, fmt.Sprintf("meta mark & 0x%08x == 0x%08x", r.Mark, r.Mark))
	}
	if r.IIf != "" {
		parts = append(parts, fmt.Sprintf("iifname %q", r.IIf))
	}
	if r.OIf != "" {
		parts = append(parts, fmt.Sprintf("oifname %q", r.OIf))
	}
	for _, m := range []struct {
		field string
		m     Match
	}{{"saddr", r.Src}, {"daddr", r.Dst}} {
		if !m.m.Prefix.IsValid() {
			continue
		}
		op := ""
		if m.m.Not {
			op = "!= "
		}
		parts = append(parts, fmt.Sprintf("%s %s %s%s", fam, m.field, op, prefixString(m.m.Prefix)))
	}
	if r.Counter != "" {
		parts = append(parts, fmt.Sprintf("counter name %q", r.Counter))
	}
	v := string(r.Verdict)
	switch r.Verdict {
	case VerdictMasquerade:
		v = "masquerade fully-random"
	case VerdictMasqueradeNotRandom:
		v = "masquerade"
	}
	parts = append(parts, v)
	return strings.Join(parts, " ")
}

// prefixString writes p as nft does: a single address without its length.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

// multicast returns the multicast range of p's family.
func multicast(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

func in(p netip.Prefix) Match    { return Match{Prefix: p} }
func notIn(p netip.Prefix) Match { return Match{Prefix: p, Not: true} }

// Names of the parts built here.
const (
	PartMasquerade = "masquerade"
	PartForward    = "forward"
)

// Masquerade is the part that masquerades pod traffic leaving the cluster
// network n and host traffic to remote pods, for this node's subnet s
// (COMPAT.md, "Masquerade semantics"): chain postrouting, as flannel's
// FLANNEL-POSTRTG, fully random. n and s are of one family, either: an
// IPv6 network gets the same rules with ff00::/8 for multicast, in table
// ip6 weft, as flannel's ip6tables rules.
func Masquerade(n, s netip.Prefix) Part { return MasqueradeRandom(n, s, true) }

// MasqueradeRandom is Masquerade with fully-random source ports on or off
// (off: flannel's --ip-masq-fully-random-disable).
func MasqueradeRandom(n, s netip.Prefix, fullyRandom bool) Part {
	return MasqueradeExcept(n, s, fullyRandom, nil)
}

// MasqueradeExcept is MasqueradeRandom that leaves pod traffic to the
// routable networks alone: destinations that route back to pod addresses
// (they learn the pod subnets over BGP), so that they see, and can call
// back, the pod's own address. Each gets
//
//	ip saddr N ip daddr R return
//
// before the rule that masquerades pods' traffic to the outside. Routable
// networks of the other family than n's are left out, so that one list
// serves both families' parts.
func MasqueradeExcept(n, s netip.Prefix, fullyRandom bool, routable []netip.Prefix) Part {
	n, s = n.Masked(), s.Masked()
	masq := VerdictMasquerade
	if !fullyRandom {
		masq = VerdictMasqueradeNotRandom
	}
	rules := []Rule{
		// Already masqueraded by kube-proxy: leave alone.
		{Mark: KubeProxyMark, Verdict: VerdictReturn},
		// Pod to pod keeps its source.
		{Src: in(s), Dst: in(n), Verdict: VerdictReturn},
		{Src: in(n), Dst: in(s), Verdict: VerdictReturn},
		// The outside reaching a local pod keeps its source.
		{Src: notIn(n), Dst: in(s), Verdict: VerdictReturn},
	}
	// Pods to a network that routes back to them keep their source.
	for _, r := range routable {
		if r.IsValid() && r.Addr().Is4() == n.Addr().Is4() {
			rules = append(rules, Rule{Src: in(n), Dst: in(r.Masked()), Verdict: VerdictReturn})
		}
	}
	rules = append(rules,
		// Pods to the outside (not multicast): the node's address.
		Rule{Src: in(n), Dst: notIn(multicast(n)), Verdict: masq},
		// The host to remote pods: the node's address.
		Rule{Src: notIn(n), Dst: in(n), Verdict: masq},
	)
	return Part{Name: PartMasquerade, Family: FamilyOf(n), Chains: []Chain{{
		Name:  ChainPostrouting,
		Base:  &Base{Type: TypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT},
		Rules: rules,
	}}}
}

// IPTablesForwardChain and IPTablesForwardComment name the iptables chain
// of the Forward part, as flannel's FLANNEL-FWD and "flanneld forward".
const (
	IPTablesForwardChain   = "WEFT-FWD"
	IPTablesForwardComment = "weft forward"
)

// Forward is the part that accepts forwarded traffic from and to the
// cluster network n: chain forward of weft's table and, because an accept
// there does not override a drop in another table (Docker sets
// `iptables -P FORWARD DROP`), the same two accepts in iptables' filter
// table, as flannel's --iptables-forward-rules:
//
//	-A FORWARD -m comment --comment "weft forward" -j WEFT-FWD
//	-A WEFT-FWD -s n -m comment --comment "weft forward" -j ACCEPT
//	-A WEFT-FWD -d n -m comment --comment "weft forward" -j ACCEPT
func Forward(n netip.Prefix) Part {
	n = n.Masked()
	rules := []Rule{{Src: in(n), Verdict: VerdictAccept}, {Dst: in(n), Verdict: VerdictAccept}}
	return Part{Name: PartForward, Family: FamilyOf(n),
		Chains: []Chain{{
			Name:  ChainForward,
			Base:  &Base{Type: TypeFilter, Hook: HookForward, Priority: PriorityFilter},
			Rules: rules,
		}},
		IPTables: []IPTablesChain{{
			Name: IPTablesForwardChain, From: "FORWARD", Comment: IPTablesForwardComment, Rules: rules,
		}},
	}
}

// Names of the tunnel guard's part, chains and counters.
const (
	PartTunnelGuard = "tunnel-guard"
	// ChainTunnelIn: filter, hook prerouting, priority raw (before
	// conntrack, so that a dropped packet leaves no connection behind).
	ChainTunnelIn = "tunnel-in"
	// ChainTunnelOut: filter, hook postrouting, priority filter (before
	// the masquerade chain, which changes no destination anyway).
	ChainTunnelOut = "tunnel-out"
	// CounterTunnelIn and CounterTunnelOut count the packets each chain
	// dropped: `nft list counter ip weft tunnel-in-dropped`. Named
	// counters, unlike a rule's own, survive the refill of the chain at
	// every sync.
	CounterTunnelIn  = "tunnel-in-dropped"
	CounterTunnelOut = "tunnel-out-dropped"
)

// PriorityRaw is nft's priority raw: before conntrack.
const PriorityRaw int32 = -300

// TunnelGuard is the part that lets traffic between this node and other
// nodes' pods of the cluster network n pass only through devs, the devices
// that authenticate and encrypt it (wireguard's flannel-wg), for this
// node's subnet s of n (invalid: the node has none, and every pod address
// of n is another node's):
//
//	chain tunnel-in {
//		type filter hook prerouting priority raw; policy accept;
//		iifname "flannel-wg" return
//		ip saddr 10.244.1.0/24 return
//		ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter name "tunnel-in-dropped" drop
//	}
//	chain tunnel-out {
//		type filter hook postrouting priority filter; policy accept;
//		oifname "flannel-wg" return
//		ip daddr 10.244.1.0/24 return
//		ip daddr 10.244.0.0/16 counter name "tunnel-out-dropped" drop
//	}
//
// tunnel-in drops a packet from another node's pod address to a pod
// address that did not come through a tunnel (a forgery sent in clear on
// the underlay, which loose or no rp_filter would let through); tunnel-out
// drops one to another node's pod address that would leave in clear (the
// route to the tunnel deleted, or skipped while its device is down). Both
// hooks see forwarded and the host's own traffic. A remote pod's packet to
// an address outside n (this node's own address, a NodePort, the API
// server behind the kubernetes Service) is not touched: without
// masquerade it crosses the underlay in clear with the pod's source, as
// the route to a node address is not through the tunnel. Destinations
// outside n (the outside, link-local, multicast, BGP's routable networks)
// are not touched either. With no devs, all such traffic is dropped.
func TunnelGuard(n, s netip.Prefix, devs []string) Part {
	n = n.Masked()
	chain := func(name, counter string, hook string, prio int32, dev func(string) Rule, addr func(netip.Prefix) Rule, drop Rule) Chain {
		var rules []Rule
		for _, d := range devs {
			rules = append(rules, dev(d))
		}
		if s.IsValid() {
			rules = append(rules, addr(s.Masked()))
		}
		drop.Counter, drop.Verdict = counter, VerdictDrop
		rules = append(rules, drop)
		return Chain{Name: name, Base: &Base{Type: TypeFilter, Hook: hook, Priority: prio}, Rules: rules}
	}
	return Part{Name: PartTunnelGuard, Family: FamilyOf(n),
		Counters: []string{CounterTunnelIn, CounterTunnelOut},
		Chains: []Chain{
			chain(ChainTunnelIn, CounterTunnelIn, HookPrerouting, PriorityRaw,
				func(d string) Rule { return Rule{IIf: d, Verdict: VerdictReturn} },
				func(p netip.Prefix) Rule { return Rule{Src: in(p), Verdict: VerdictReturn} },
				Rule{Src: in(n), Dst: in(n)}),
			chain(ChainTunnelOut, CounterTunnelOut, HookPostrouting, PriorityFilter,
				func(d string) Rule { return Rule{OIf: d, Verdict: VerdictReturn} },
				func(p netip.Prefix) Rule { return Rule{Dst: in(p), Verdict: VerdictReturn} },
				Rule{Dst: in(n)}),
		},
	}
}
