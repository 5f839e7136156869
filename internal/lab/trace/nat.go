package trace

import (
	"fmt"
	"net/netip"
	"strings"
)

// natRule is a rule of weft's postrouting chain, as nft prints it: address
// matches, an optional mark match, and a verdict.
type natRule struct {
	text    string
	matches []addrMatch
	mark    bool // meta mark & M == M: kube-proxy's mark, which a traced packet does not carry
	verdict string
}

type addrMatch struct {
	dst bool // daddr, else saddr
	not bool
	p   netip.Prefix
}

// parseNAT reads the rules of `nft list chain ip weft postrouting` (the
// whole output, or its rule lines). A line it does not understand is an
// error: the trace then says it cannot tell what the chain does.
func parseNAT(lines []string) ([]natRule, error) {
	var out []natRule
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || line == "}" || strings.HasPrefix(line, "table ") || strings.HasPrefix(line, "chain ") || strings.HasPrefix(line, "type ") {
			continue
		}
		r, err := parseNATRule(line)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseNATRule(line string) (natRule, error) {
	r := natRule{text: line}
	f := strings.Fields(line)
	for i := 0; i < len(f); {
		switch {
		case (f[i] == "ip" || f[i] == "ip6") && i+2 < len(f) && (f[i+1] == "saddr" || f[i+1] == "daddr"):
			m := addrMatch{dst: f[i+1] == "daddr"}
			j := i + 2
			if f[j] == "!=" {
				m.not = true
				j++
				if j >= len(f) {
					return natRule{}, fmt.Errorf("nat rule %q: no address after !=", line)
				}
			}
			p, err := netip.ParsePrefix(f[j])
			if err != nil {
				a, aerr := netip.ParseAddr(f[j])
				if aerr != nil {
					return natRule{}, fmt.Errorf("nat rule %q: %w", line, err)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			m.p = p.Masked()
			r.matches = append(r.matches, m)
			i = j + 1
		case f[i] == "meta" && i+5 < len(f) && f[i+1] == "mark" && f[i+2] == "&" && f[i+4] == "==":
			r.mark = true
			i += 6
		case f[i] == "counter":
			// counter [name X | packets N bytes M]
			i++
			for i+1 < len(f) && (f[i] == "packets" || f[i] == "bytes" || f[i] == "name") {
				i += 2
			}
		case f[i] == "return" || f[i] == "accept" || f[i] == "drop" || f[i] == "masquerade":
			r.verdict = f[i]
			i = len(f) // options after the verdict (fully-random, to ...) are not needed
		case f[i] == "#":
			i = len(f) // nft -a's handle comment
		default:
			return natRule{}, fmt.Errorf("nat rule %q: %q not understood", line, f[i])
		}
	}
	if r.verdict == "" {
		return natRule{}, fmt.Errorf("nat rule %q: no verdict", line)
	}
	return r, nil
}

// match tells whether r matches a packet from src to dst without a mark.
func (r natRule) match(src, dst netip.Addr) bool {
	if r.mark {
		return false
	}
	for _, m := range r.matches {
		a := src
		if m.dst {
			a = dst
		}
		if m.p.Addr().Is4() != a.Is4() {
			return false
		}
		if m.p.Contains(a) == m.not {
			return false
		}
	}
	return true
}

// masquerade is the step the node's postrouting chain adds to a packet
// from src to dst leaving by out: the rule that matched and what the
// source becomes (the address the kernel picks for out's route: r.Src, or
// out's first of dst's family).
func (t *tracer) masquerade(s *Snapshot, src, dst netip.Addr, out *Link, r Route) (Step, netip.Addr, bool) {
	if s.NATErr != "" {
		return Step{"nat", "weft's postrouting chain could not be read: " + s.NATErr}, src, true
	}
	lines := s.NAT
	if dst.Is6() {
		lines = s.NAT6
	}
	if len(lines) == 0 {
		return Step{}, src, false
	}
	rules, err := parseNAT(lines)
	if err != nil {
		return Step{"nat", "weft's postrouting chain: " + err.Error()}, src, true
	}
	table := "ip weft"
	if dst.Is6() {
		table = "ip6 weft"
	}
	for _, rule := range rules {
		if !rule.match(src, dst) {
			continue
		}
		if rule.verdict != "masquerade" {
			return Step{"nat", fmt.Sprintf("nat: `%s` (%s postrouting) matched: the source stays %s", rule.text, table, src)}, src, true
		}
		to := r.Src
		if !to.IsValid() || to.Is4() != dst.Is4() {
			to = netip.Addr{}
			for _, p := range out.Addrs {
				if p.Addr().Is4() == dst.Is4() && !p.Addr().IsLinkLocalUnicast() {
					to = p.Addr()
					break
				}
			}
		}
		if !to.IsValid() {
			return Step{"masquerade", fmt.Sprintf("masquerade: `%s` (%s postrouting) matched, but %s has no address of the family to give the packet", rule.text, table, out.Name)}, src, true
		}
		return Step{"masquerade", fmt.Sprintf("masquerade: `%s` (%s postrouting) matched: the source %s becomes %s, %s's address", rule.text, table, src, to, out.Name)}, to, true
	}
	return Step{"nat", fmt.Sprintf("nat: no rule of %s postrouting matches: the source stays %s", table, src)}, src, true
}
