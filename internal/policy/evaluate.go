package policy

import (
	"net/netip"
	"slices"
)

// Verdict is what the rules of one direction do with a packet.
type Verdict struct {
	// Isolated: some policy selects the pod in this direction; if not,
	// the packet passes.
	Isolated bool
	// Allowed: the packet passes this direction.
	Allowed bool
	// Policies are the policies (namespace/name, sorted) whose rules
	// allowed the packet.
	Policies []string
}

// Evaluate returns what the rules this Ruleset renders do with the first
// packet of a connection in direction dir, exactly as the nftables rules
// decide it: the pod entry of the packet's destination (ingress) or source
// (egress) address leads to a group; the packet passes if a rule of one of
// the group's chains matches: its peer (the source for ingress, the
// destination for egress) is among the rule's peers and its protocol and
// destination port among its ports or, with its destination address, its
// named ports. An address without a pod entry, or whose entry has no group
// for dir, is not isolated.
func (r *Ruleset) Evaluate(dir Direction, p Packet) Verdict {
	local, peer := p.Dst.Unmap(), p.Src.Unmap()
	if dir == Egress {
		local, peer = peer, local
	}
	e, ok := r.pod(local)
	if !ok {
		return Verdict{Allowed: true}
	}
	group := e.Ingress
	if dir == Egress {
		group = e.Egress
	}
	if group == "" {
		return Verdict{Allowed: true}
	}
	v := Verdict{Isolated: true}
	g, ok := r.group(group)
	if !ok {
		// A dangling group name: Compile never makes one; nft would
		// refuse the jump. Deny, as a group with no chains.
		return v
	}
	for _, name := range g.Chains {
		ch, ok := r.chain(name)
		if !ok {
			continue
		}
		for i := range ch.Rules {
			if ch.Rules[i].matches(peer, p.Dst.Unmap(), p.Protocol, p.Port) {
				v.Allowed = true
				v.Policies = append(v.Policies, ch.Policy)
				break
			}
		}
	}
	slices.Sort(v.Policies)
	v.Policies = slices.Compact(v.Policies)
	return v
}

// matches reports whether the rule admits a packet from or to peer, sent
// to dst with proto and port.
func (ru *Rule) matches(peer, dst netip.Addr, proto Protocol, port uint16) bool {
	if !ru.AnyPeer && !contains(ru.Peers, peer) {
		return false
	}
	if ru.AnyPort {
		return true
	}
	for _, pr := range ru.Ports {
		if pr.Protocol == proto && pr.First <= port && port <= pr.Last {
			return true
		}
	}
	_, found := slices.BinarySearchFunc(ru.Named, NamedPort{Addr: dst, Protocol: proto, Port: port}, compareNamed)
	return found
}

// pod returns the entry of address a.
func (r *Ruleset) pod(a netip.Addr) (PodEntry, bool) {
	i, ok := slices.BinarySearchFunc(r.Pods, a, func(e PodEntry, a netip.Addr) int { return e.Addr.Compare(a) })
	if !ok {
		return PodEntry{}, false
	}
	return r.Pods[i], true
}

// group returns the group called name.
func (r *Ruleset) group(name string) (Group, bool) {
	i, ok := slices.BinarySearchFunc(r.Groups, name, func(g Group, n string) int { return cmpString(g.Name, n) })
	if !ok {
		return Group{}, false
	}
	return r.Groups[i], true
}

// chain returns the chain called name.
func (r *Ruleset) chain(name string) (*Chain, bool) {
	i, ok := slices.BinarySearchFunc(r.Chains, name, func(c Chain, n string) int { return cmpString(c.Name, n) })
	if !ok {
		return nil, false
	}
	return &r.Chains[i], true
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
