package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/subnetenv"
)

// Inputs are everything a node's desired state depends on. (NetworkPolicy
// has a loop of its own.)
type Inputs struct {
	// Network and IPv6Network are the cluster's networks of the families
	// the config enables; invalid when off.
	Network, IPv6Network netip.Prefix
	Own                  lease.Lease // this node's lease
	// Leases are every accepted lease; Own may be among them. Not
	// modified; when all are peers, the node state holds them as they are.
	Leases []lease.Lease
	MTU    int // the pod MTU over the backend
	// Backend plans the backend's part from the node state (pure).
	Backend backend.Planner
	// IPMasq: masquerade pods' traffic leaving the cluster network, in
	// each family; IPMasqNotRandom without fully-random source ports.
	IPMasq, IPMasqNotRandom bool
	// ForwardRules: accept forwarded traffic from and to the cluster
	// network, also where the host's firewall drops forwarding by default.
	ForwardRules bool
	// BGP is what BGP adds to the node's state; nil when BGP is off.
	BGP *BGPInputs
}

// BGPInputs are the node's BGP inputs: what to announce from, what was
// learned, and where the outside routes back to pods.
type BGPInputs struct {
	// NextHop4 and NextHop6 are the node's underlay addresses, the next
	// hops of the subnets it announces, of each family.
	NextHop4, NextHop6 netip.Addr
	// Learned are the best routes learned from the peers (Speaker.Learned)
	// when import is on; nil when it is off.
	Learned []bgp.Route
	// LearnedPending: Learned is not complete yet (!Speaker.Synced):
	// backend.NodeState.LearnedPending.
	LearnedPending bool
	// Routable are the networks that route back to pod addresses
	// (bgp.Config.RoutableNetworks): pods' traffic to them is not
	// masqueraded.
	Routable []netip.Prefix
}

// Desired is the whole desired state of a node: the backend's devices and
// kernel entries (with the node state they were planned from), weft's
// firewall, subnet.env for the CNI plugin, and the routes the node
// announces over BGP.
type Desired struct {
	Kernel   backend.Desired
	Firewall firewall.State
	Env      subnetenv.Env
	// Announce are this node's subnets with its underlay address of each
	// family as the next hop, IPv4 first: the complete set the speaker
	// announces (nil when BGP is off).
	Announce []bgp.Route
	// Skipped are the peers left out of the node state, with the reason:
	// those whose subnet overlaps this node's own (backend.Report.Skipped
	// adds those the backend leaves out).
	Skipped []string
}

// Desire computes the desired state. It is pure: the same inputs give the
// same state, and nothing is read from or written to the node. Each
// enabled family gets its subnet.env lines and its firewall parts, the
// same for both; with a backend.Tunnel (wireguard), each enabled family
// also gets firewall.TunnelGuard, so that traffic between this node and
// other nodes' pods of the family passes through the tunnel's devices
// only. A peer whose subnet overlaps this node's own is left out
// (Skipped): its subnet, or part of it, is this node's, which the node
// routes to its own bridge, never away (the kernel refuses a route
// through a gateway inside it, and the sync would fail until the leases
// change). Every node rejects the newer of two overlapping leases, so this
// is a node that holds the rejected one, until it leases again or an
// operator fixes its reservation or podCIDRs.
func Desire(in Inputs) Desired {
	st := backend.NodeState{Network: in.Network, IPv6Network: in.IPv6Network, Own: in.Own, Peers: in.Leases}
	var routable []netip.Prefix
	if in.BGP != nil {
		st.Learned = learned(in.BGP.Learned)
		st.LearnedPending = in.BGP.LearnedPending && st.Learned != nil
		routable = in.BGP.Routable
	}
	var skipped []string
	keep := func(l lease.Lease) bool {
		if !st.IsPeer(l) {
			return false
		}
		if why := overlapsOwn(l, in.Own); why != "" {
			skipped = append(skipped, why)
			return false
		}
		return true
	}
	if i := slices.IndexFunc(in.Leases, func(l lease.Lease) bool { return !keep(l) }); i >= 0 {
		st.Peers = slices.Clone(in.Leases[:i])
		for _, l := range in.Leases[i+1:] {
			if keep(l) {
				st.Peers = append(st.Peers, l)
			}
		}
	}
	d := Desired{
		Kernel:  in.Backend.Plan(st),
		Env:     subnetenv.Env{MTU: in.MTU, IPMasq: in.IPMasq},
		Skipped: skipped,
	}
	var parts []firewall.Part
	for _, f := range families {
		n, s := f.Network(st), f.Subnet(in.Own)
		if !n.IsValid() {
			continue
		}
		d.Env.SetFamily(n, s)
		if in.IPMasq && s.IsValid() {
			parts = append(parts, firewall.MasqueradeExcept(n, s, !in.IPMasqNotRandom, routable))
		}
		if hop := nextHop(in.BGP, f); s.IsValid() && hop.IsValid() {
			d.Announce = append(d.Announce, bgp.Route{Prefix: s, NextHop: hop})
		}
		if in.ForwardRules {
			parts = append(parts, firewall.Forward(n))
		}
		// A backend that authenticates pod traffic between nodes (wireguard)
		// gets the guard that keeps other nodes' pod addresses to its
		// devices, whatever the other options.
		if t, ok := in.Backend.(backend.Tunnel); ok {
			parts = append(parts, firewall.TunnelGuard(n, s, t.TunnelDevices(st, f)))
		}
	}
	d.Firewall = firewall.NewState(parts...)
	return d
}

// overlapsOwn says why peer l is not routed when one of its subnets
// overlaps own's of the same family, or is "".
func overlapsOwn(l, own lease.Lease) string {
	for _, f := range families {
		p, o := f.Subnet(l), f.Subnet(own)
		if p.IsValid() && o.IsValid() && p.Overlaps(o) {
			return fmt.Sprintf("%s (%s): its %s subnet %s overlaps this node's own %s; not routed",
				lease.ShortKey(l.Key()), f.PublicIP(l.Attrs), f, p, o)
		}
	}
	return ""
}

// families are both address families, IPv4 first.
var families = []backend.Family{{Is6: false}, {Is6: true}}

// nextHop is the next hop of f's announced subnet: the node's underlay
// address of f; invalid when BGP is off or the node has none of f.
func nextHop(b *BGPInputs, f backend.Family) netip.Addr {
	if b == nil {
		return netip.Addr{}
	}
	hop := b.NextHop4
	if f.Is6 {
		hop = b.NextHop6
	}
	if !hop.IsValid() || hop.IsUnspecified() || hop.Is4() == f.Is6 {
		return netip.Addr{}
	}
	return hop
}

// learned is the learned routes by prefix, for backend.NodeState.Learned:
// the first route of each prefix (the speaker reports one, its best); nil
// when import is off (routes nil).
func learned(routes []bgp.Route) map[netip.Prefix]netip.Addr {
	if routes == nil {
		return nil
	}
	m := make(map[netip.Prefix]netip.Addr, len(routes))
	for _, r := range routes {
		p := r.Prefix.Masked()
		if _, ok := m[p]; !ok && p.IsValid() && r.NextHop.IsValid() {
			m[p] = r.NextHop
		}
	}
	return m
}
