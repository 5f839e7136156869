package agent

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/subnetenv"
)

// Inputs are everything a node's desired state depends on. (Policies and
// BGP peers join them later.)
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
}

// Desired is the whole desired state of a node: the backend's devices and
// kernel entries (with the node state they were planned from), weft's
// firewall, and subnet.env for the CNI plugin.
type Desired struct {
	Kernel   backend.Desired
	Firewall firewall.State
	Env      subnetenv.Env
}

// Desire computes the desired state. It is pure: the same inputs give the
// same state, and nothing is read from or written to the node. Each
// enabled family gets its subnet.env lines and its firewall parts, the
// same for both.
func Desire(in Inputs) Desired {
	st := backend.NodeState{Network: in.Network, IPv6Network: in.IPv6Network, Own: in.Own, Peers: in.Leases}
	if slices.ContainsFunc(in.Leases, func(l lease.Lease) bool { return !st.IsPeer(l) }) {
		st.Peers = make([]lease.Lease, 0, len(in.Leases))
		for _, l := range in.Leases {
			if st.IsPeer(l) {
				st.Peers = append(st.Peers, l)
			}
		}
	}
	d := Desired{
		Kernel: in.Backend.Plan(st),
		Env:    subnetenv.Env{MTU: in.MTU, IPMasq: in.IPMasq},
	}
	var parts []firewall.Part
	for _, f := range families {
		n, s := f.Network(st), f.Subnet(in.Own)
		if !n.IsValid() {
			continue
		}
		d.Env.SetFamily(n, s)
		if in.IPMasq && s.IsValid() {
			parts = append(parts, firewall.MasqueradeRandom(n, s, !in.IPMasqNotRandom))
		}
		if in.ForwardRules {
			parts = append(parts, firewall.Forward(n))
		}
	}
	d.Firewall = firewall.NewState(parts...)
	return d
}

// families are both address families, IPv4 first.
var families = []backend.Family{{Is6: false}, {Is6: true}}
