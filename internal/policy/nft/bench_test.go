package nft

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/internal/policy"
)

// large returns a synthetic Ruleset of the given size: chains of two rules
// each (pod peers and ports; an ipBlock with excepts and named ports),
// groups of one to four chains, and pods spread over the groups, half of
// them isolated for egress too.
func large(chains, pods int) *policy.Ruleset {
	rs := &policy.Ruleset{Node: "n0"}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}) }
	for i := range chains {
		dir := policy.Ingress
		name := fmt.Sprintf("in_ns%d_p%d", i/10, i)
		if i%4 == 3 {
			dir, name = policy.Egress, fmt.Sprintf("eg_ns%d_p%d", i/10, i)
		}
		var peers []policy.Range
		for j := range 8 {
			a := addr((i*7 + j*13) % 60000)
			peers = append(peers, policy.Range{From: a, To: a})
		}
		peers = normalizeRanges(peers)
		var named []policy.NamedPort
		for j := range 4 {
			named = append(named, policy.NamedPort{Addr: addr((i*5 + j*17) % 60000), Protocol: policy.TCP, Port: 9090})
		}
		rs.Chains = append(rs.Chains, policy.Chain{Name: name, Dir: dir, Policy: fmt.Sprintf("ns%d/p%d", i/10, i), Rules: []policy.Rule{
			{Peers: peers, Ports: []policy.PortRange{{Protocol: policy.TCP, First: 8080, Last: 8080}, {Protocol: policy.UDP, First: 53, Last: 53}, {Protocol: policy.TCP, First: 9000, Last: 9100}}},
			{Peers: []policy.Range{rng("0.0.0.0", "9.255.255.255"), rng("11.0.0.0", "172.15.255.255"), rng("172.32.0.0", "192.167.255.255"), rng("192.169.0.0", "255.255.255.255")},
				Ports: []policy.PortRange{{Protocol: policy.TCP, First: 443, Last: 443}}, Named: named},
		}})
	}
	byDir := map[policy.Direction][]string{}
	for _, c := range rs.Chains {
		byDir[c.Dir] = append(byDir[c.Dir], c.Name)
	}
	groups := map[policy.Direction][]string{}
	for _, dir := range []policy.Direction{policy.Egress, policy.Ingress} {
		cs := byDir[dir]
		for g := 0; g < len(cs); g += 4 {
			grp := policy.Group{Name: fmt.Sprintf("g%s-%08x", dir.String()[:2], g), Dir: dir, Chains: cs[g:min(g+1+g%4, len(cs))]}
			rs.Groups = append(rs.Groups, grp)
			groups[dir] = append(groups[dir], grp.Name)
		}
	}
	for i := range pods {
		p := policy.PodEntry{Addr: addr(i), Pod: fmt.Sprintf("ns%d/pod%d", i/50, i), Ingress: groups[policy.Ingress][i%len(groups[policy.Ingress])]}
		if i%2 == 0 {
			p.Egress = groups[policy.Egress][i%len(groups[policy.Egress])]
		}
		rs.Pods = append(rs.Pods, p)
	}
	return rs
}

// normalizeRanges sorts single-address ranges and drops duplicates.
func normalizeRanges(rs []policy.Range) []policy.Range {
	seen := map[netip.Addr]bool{}
	var out []policy.Range
	for _, r := range rs {
		if !seen[r.From] {
			seen[r.From] = true
			out = append(out, r)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].From.Less(out[i].From) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// withPod returns rs with one more pod, in the first ingress group.
func withPod(rs *policy.Ruleset) *policy.Ruleset {
	c := *rs
	c.Pods = append(rs.Pods[:len(rs.Pods):len(rs.Pods)], policy.PodEntry{Addr: netip.MustParseAddr("10.244.250.250"), Pod: "new/pod", Ingress: rs.Pods[1].Ingress})
	return &c
}

func BenchmarkRender(b *testing.B) {
	rs := large(1000, 5000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(rs, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDiffOnePod(b *testing.B) {
	rs, more := large(1000, 5000), withPod(large(1000, 5000))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Diff(rs, more, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
