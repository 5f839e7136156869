// Package policy is weft's NetworkPolicy engine as a pure function: from
// the cluster's pods, namespaces and NetworkPolicies, and the name of this
// node, Compile builds the Ruleset this node enforces. Nothing here touches
// the kernel: package policy/nft renders a Ruleset into one nftables
// transaction and applies it, and Ruleset.Evaluate answers, in Go, what the
// rendered rules do with a packet (for `weft policy explain` and for the
// tests that check the compiler against an independent matcher).
//
// The shape of a Ruleset, and so of the rules in the kernel, scales with
// the sum, not the product, of pods and policies:
//
//   - each local pod that some policy isolates is one element of a verdict
//     map per direction, keyed by its address, leading to its group;
//   - a group is the list of policies that select a pod in one direction:
//     pods with the same policies share it, so groups are few;
//   - a policy chain holds one rule per rule of the policy, whose peers and
//     ports are sets (address intervals, protocol and port intervals, and
//     the named ports resolved to destination address, protocol and port).
package policy

import (
	"net/netip"
)

// Protocol is a Kubernetes protocol name, as in corev1.Protocol.
type Protocol string

// Protocols a NetworkPolicy port can name.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// ContainerPort is a port a pod's container declares; only named ones
// matter to policies (a named port in a policy resolves to it).
type ContainerPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Pod is what the engine knows of a Pod: the fields policies select on and
// the addresses they render to. The agent's informer keeps only these.
type Pod struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	IPs         []netip.Addr // status.podIPs; none yet: the pod is in no set
	Node        string       // spec.nodeName
	HostNetwork bool         // never policed, never a pod peer
	Ports       []ContainerPort
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Namespace is what the engine knows of a Namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Direction is the side of a pod a policy rule guards.
type Direction uint8

// Directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Ruleset is what one node enforces: the result of Compile, the input of
// the nftables renderer and of Evaluate. All slices are sorted (by Name,
// by Addr) so that two compilations of the same cluster are equal.
type Ruleset struct {
	Node string
	// Pods are the node's own pods that some policy isolates in at least
	// one direction, one entry per address.
	Pods []PodEntry
	// Groups are the distinct lists of policy chains that isolated pods
	// are subject to, per direction.
	Groups []Group
	// Chains are the policy chains, one per policy and direction that
	// selects a local pod.
	Chains []Chain
	// Problems are the policies (or parts of them) that could not be
	// rendered; the rest of the Ruleset is still valid.
	Problems []Problem
}

// PodEntry is a local isolated pod address and the groups that police it.
type PodEntry struct {
	Addr    netip.Addr
	Pod     string // namespace/name
	Ingress string // name of its ingress group; "" = ingress not isolated
	Egress  string // name of its egress group; "" = egress not isolated
}

// Group is an ordered list of policy chains: a packet is allowed if any
// chain allows it, and dropped otherwise (a group with no chains denies
// all: policies that select the pod with no rules for the direction).
type Group struct {
	Name   string
	Dir    Direction
	Chains []string
}

// Chain holds the rules of one policy for one direction.
type Chain struct {
	Name   string
	Dir    Direction
	Policy string // namespace/name of the NetworkPolicy
	Rules  []Rule
}

// Rule admits a packet when its peer (the source address for ingress, the
// destination address for egress) is among Peers and its protocol and
// destination port are among Ports or Named. A rule whose Peers are empty
// without AnyPeer (its selectors match no pod yet), or whose Ports and
// Named are empty without AnyPort (its named ports resolve on no pod),
// matches nothing; a renderer may leave it out.
type Rule struct {
	// AnyPeer: every address (a rule with no from/to).
	AnyPeer bool
	// Peers: disjoint address intervals, sorted, IPv4 before IPv6: the
	// selected pods' addresses and the ipBlocks minus their excepts.
	Peers []Range
	// AnyPort: every protocol and port, ICMP included (a rule with no ports).
	AnyPort bool
	// Ports: protocol and destination port intervals, sorted.
	Ports []PortRange
	// Named: the rule's named ports resolved on each possible destination
	// pod (ingress: the pods the policy selects on this node; egress: the
	// pods among Peers, or every pod with AnyPeer): the packet's
	// destination address, protocol and port, sorted by address,
	// protocol, port. Addresses of no pod never match a named port.
	Named []NamedPort
}

// Range is the closed interval of addresses From..To, one family.
type Range struct {
	From, To netip.Addr
}

// PortRange is the closed interval of ports First..Last of one protocol.
type PortRange struct {
	Protocol    Protocol
	First, Last uint16
}

// NamedPort is a named port resolved on one destination pod address.
type NamedPort struct {
	Addr     netip.Addr
	Protocol Protocol
	Port     uint16
}

// Problem is a policy, or a part of one, the engine could not render:
// logged with the policy's name; the rest applies.
type Problem struct {
	Policy string // namespace/name
	Err    error
}

// Packet is the first packet of a connection, as far as policy cares.
// Protocol is TCP, UDP, SCTP or anything else (ICMP: "ICMP", no port).
type Packet struct {
	Src, Dst netip.Addr
	Protocol Protocol
	Port     uint16
}
