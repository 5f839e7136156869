// Package firewall builds weft's nftables rules (masquerade and forward
// accept, with flannel's semantics) as pure data, and applies them as one
// atomic transaction on weft's own table.
package firewall

import (
	"fmt"
	"net/netip"
	"strings"
)

// Table is the name of weft's nftables table (one per family).
const Table = "weft"

// KubeProxyMark is the mark kube-proxy sets on packets it has already
// masqueraded (0x4000/0x4000).
const KubeProxyMark = 0x4000

// Chains of weft's table.
const (
	ChainPostrouting = "postrouting" // nat, hook postrouting, priority srcnat
	ChainForward     = "forward"     // filter, hook forward, priority filter
)

// Verdicts.
const (
	Return     = "return"
	Masquerade = "masquerade"
	Accept     = "accept"
)

// Match is an address match; Not negates it. An invalid Prefix matches all.
type Match struct {
	Prefix netip.Prefix
	Not    bool
}

// Rule is one rule of weft's table.
type Rule struct {
	Chain   string
	Mark    uint32 // if non-zero: meta mark & Mark == Mark
	Src     Match
	Dst     Match
	Verdict string // Return, Masquerade (always fully random) or Accept
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
		parts = append(parts, fmt.Sprintf("%s %s %s%s", fam, m.field, op, m.m.Prefix))
	}
	v := r.Verdict
	if v == Masquerade {
		v = "masquerade fully-random"
	}
	parts = append(parts, v)
	return strings.Join(parts, " ")
}

// multicast returns the multicast range of p's family.
func multicast(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

// Rules returns the masquerade and forward rules for cluster network n and
// this node's subnet s (COMPAT.md, "Masquerade semantics"), in order.
func Rules(n, s netip.Prefix) []Rule {
	in := func(p netip.Prefix) Match { return Match{Prefix: p} }
	notIn := func(p netip.Prefix) Match { return Match{Prefix: p, Not: true} }
	return []Rule{
		// Already masqueraded by kube-proxy: leave alone.
		{Chain: ChainPostrouting, Mark: KubeProxyMark, Verdict: Return},
		// Pod to pod keeps its source.
		{Chain: ChainPostrouting, Src: in(s), Dst: in(n), Verdict: Return},
		{Chain: ChainPostrouting, Src: in(n), Dst: in(s), Verdict: Return},
		// The outside reaching a local pod keeps its source.
		{Chain: ChainPostrouting, Src: notIn(n), Dst: in(s), Verdict: Return},
		// Pods to the outside (not multicast): the node's address.
		{Chain: ChainPostrouting, Src: in(n), Dst: notIn(multicast(n)), Verdict: Masquerade},
		// The host to remote pods: the node's address.
		{Chain: ChainPostrouting, Src: notIn(n), Dst: in(n), Verdict: Masquerade},
		// Forwarding to and from pods is allowed even under a DROP policy.
		{Chain: ChainForward, Src: in(n), Verdict: Accept},
		{Chain: ChainForward, Dst: in(n), Verdict: Accept},
	}
}
