// Package trace follows one packet through a lab, hop by hop, from the
// kernel state of each namespace on its way: the route the kernel picks
// (asked as `ip route get` does, and `ip route get fibmatch` for the
// prefix that matched), the neighbour and FDB entries that resolve the next
// hop, the encapsulation of a tunnel and its decapsulation on the other
// node, the bridge ports, and the masquerade rule that matches. When a
// piece is missing, the trace stops at that hop and names it.
//
// The walk (Run) is pure over a Kernel: the lab's is netlink in each
// namespace (Netlink), and tests give it a table of their own.
package trace

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/backend/udp"
)

// Link is a network device of a namespace, as `ip -d link` and `ip addr`
// show it.
type Link struct {
	Index  int
	Name   string
	Kind   string // veth, bridge, vxlan, tuntap, wireguard, ... ("" for lo)
	MAC    string // lower case, "" for none
	Up     bool
	Master int // index of the bridge it is a port of, or 0
	// Peer is a veth's other end: its index in namespace PeerNS ("" if
	// it could not be told: the same namespace, or none of the lab's).
	Peer   int
	PeerNS string
	// VNI, Port and Local are a vxlan device's (Port: its UDP port).
	VNI   int
	Port  int
	Local netip.Addr
	Addrs []netip.Prefix
	// TCXEgress are the names of the BPF programs at the device's tcx
	// egress hook (read for TUN devices only), XDP the name of its XDP
	// program: udp's kernel path (udp.EncapProgram, udp.DecapProgram).
	TCXEgress []string
	XDP       string
}

// encapsulates reports whether udp's kernel path encapsulates what is
// routed to l.
func (l *Link) encapsulates() bool { return l != nil && slices.Contains(l.TCXEgress, udp.EncapProgram) }

// Route is a route as the kernel reports it.
type Route struct {
	Dst    netip.Prefix // the prefix that matched (fibmatch)
	Gw     netip.Addr
	Dev    string
	Src    netip.Addr // the source the kernel would pick
	Table  int
	Type   string // unicast, local, unreachable, blackhole, ...
	OnLink bool
	Proto  string // kernel, boot, static, weft (proto 87), bird, ...
}

// Neigh is a neighbour entry (ip neigh) or an FDB entry (bridge fdb).
type Neigh struct {
	IP    netip.Addr // neighbours: the address; FDB of a vxlan device: the remote
	MAC   string
	Dev   string
	State string // PERMANENT, REACHABLE, STALE, ... (neighbours)
}

// Snapshot is what a namespace's kernel holds that a trace reads.
type Snapshot struct {
	Links  []Link
	Neighs []Neigh // ip neigh
	FDB    []Neigh // bridge fdb: Dev is the port (or the vxlan device), IP a vxlan entry's dst
	// NAT is the rules of weft's postrouting chain, as `nft list chain
	// ip weft postrouting` prints them ("" for none).
	NAT []string
	// NAT6 is the same of table ip6 weft.
	NAT6 []string
	// NATErr says why NAT could not be read (no nft).
	NATErr string
}

// link returns the link named name, or nil.
func (s *Snapshot) link(name string) *Link {
	for i := range s.Links {
		if s.Links[i].Name == name {
			return &s.Links[i]
		}
	}
	return nil
}

func (s *Snapshot) linkByIndex(i int) *Link {
	for j := range s.Links {
		if s.Links[j].Index == i {
			return &s.Links[j]
		}
	}
	return nil
}

// owner is the link that has address a, or nil.
func (s *Snapshot) owner(a netip.Addr) *Link {
	for i := range s.Links {
		for _, p := range s.Links[i].Addrs {
			if p.Addr() == a {
				return &s.Links[i]
			}
		}
	}
	return nil
}

// neigh is the neighbour entry of a on dev.
func (s *Snapshot) neigh(dev string, a netip.Addr) *Neigh {
	for i := range s.Neighs {
		if n := &s.Neighs[i]; n.Dev == dev && n.IP == a && n.MAC != "" && n.State != "FAILED" && n.State != "INCOMPLETE" {
			return n
		}
	}
	return nil
}

// fdb is the FDB entry for mac among the entries of devs (a bridge's
// ports, or a vxlan device).
func (s *Snapshot) fdb(mac string, devs ...string) *Neigh {
	for i := range s.FDB {
		if n := &s.FDB[i]; n.MAC == mac && slices.Contains(devs, n.Dev) {
			return n
		}
	}
	return nil
}

// ports are the names of the links whose master is the bridge br.
func (s *Snapshot) ports(br *Link) []string {
	var out []string
	for _, l := range s.Links {
		if l.Master == br.Index {
			out = append(out, l.Name)
		}
	}
	return out
}

// Kernel reads the kernel state of the namespaces a trace crosses.
type Kernel interface {
	// Snapshot reads namespace ns.
	Snapshot(ns string) (*Snapshot, error)
	// RouteGet asks ns's kernel for the route of a packet from src to
	// dst that came in on iif ("": sent by the namespace itself), as
	// `ip route get DST from SRC iif IIF` and its fibmatch.
	RouteGet(ns string, src, dst netip.Addr, iif string) (Route, error)
}

// Node is what the trace knows of a cluster node beyond its kernel: what
// its agent leased and whether it runs. The lab fills it from the node's
// subnet file and its agent's process and /readyz.
type Node struct {
	Name    string
	NS      string
	Public  netip.Addr     // its underlay address, as its lease gives it
	Subnets []netip.Prefix // its lease's subnets
	// Agent is the agent's state: "running", "stopped".
	Agent string
	// Skips are the peers its agent skips, by node name: why.
	Skips map[string]string
}

// Cluster is what the trace knows beyond the kernel.
type Cluster struct {
	Backend  string // vxlan, host-gw, udp, wireguard
	Networks []netip.Prefix
	Nodes    []Node
	// UDPPort is the udp backend's port (8285), WGPort wireguard's.
	UDPPort, WGPort int
	// Names are display names by namespace (n1, n1-p1, underlay, ext).
	Names map[string]string
	// Namespaces are every namespace of the lab, where veth peers are
	// looked for.
	Namespaces []string
	// Fix, if set, says how to restore what a problem found missing.
	Fix func(p Problem) string
}

// nodeOf is the node that namespace ns is, or nil.
func (c *Cluster) nodeOf(ns string) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].NS == ns {
			return &c.Nodes[i]
		}
	}
	return nil
}

// holder is the node whose lease holds a, or nil.
func (c *Cluster) holder(a netip.Addr) (*Node, netip.Prefix) {
	for i := range c.Nodes {
		for _, s := range c.Nodes[i].Subnets {
			if s.Contains(a) {
				return &c.Nodes[i], s
			}
		}
	}
	return nil, netip.Prefix{}
}

// inCluster tells whether a is in the cluster network.
func (c *Cluster) inCluster(a netip.Addr) bool {
	for _, n := range c.Networks {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func (c *Cluster) name(ns string) string {
	if n, ok := c.Names[ns]; ok {
		return n
	}
	return ns
}

// Problem is the first missing piece a trace met.
type Problem struct {
	Hop  int    // index in Result.Hops
	Kind string // one of the Missing* kinds
	// Node is the lab name of the namespace where the piece is missing
	// (its display name), Peer the node the packet was for, if known.
	Node, Peer string
	What       string // the missing entry, as ip would print it
	Why        string // what is known of the reason (the agent's word)
	Fix        string // what restores it
}

// Kinds of Problem.
const (
	MissingRoute   = "route"
	MissingNeigh   = "neighbour"
	MissingFDB     = "fdb"
	MissingAgent   = "agent"
	MissingPeer    = "peer" // the agent skips the peer
	Unreachable    = "unreachable"
	MissingDecap   = "decap" // no device takes the tunnel's packets
	MissingLink    = "link"  // a device down or gone
	TooManyHops    = "loop"
	DeniedByPolicy = "policy" // a NetworkPolicy drops it
)

// Step is one line of a hop: what the kernel did and the entry it used.
type Step struct {
	Kind string // route, neigh, fdb, bridge, encap, decap, masquerade, agent, deliver, veth
	Text string
}

// Hop is a namespace the packet crosses (or the same one again after
// decapsulation).
type Hop struct {
	NS   string
	Name string // display name
	// Underlay marks a hop of an encapsulated packet (the tunnel's
	// outer packet).
	Underlay bool
	In       string // the device the packet came in by ("" if sent here)
	Out      string // the device it leaves by ("" if delivered here)
	// InDev and OutDev are the devices whose counters see the packet
	// (a bridge's port, not the bridge).
	InDev, OutDev string
	Src, Dst      netip.Addr
	Steps         []Step
}

// Result is a trace.
type Result struct {
	From, To  string
	Src, Dst  netip.Addr
	Hops      []Hop
	Delivered bool
	Problem   *Problem
	// Probe is what real packets sent along the path counted, with
	// --probe.
	Probe *Probe `json:",omitempty"`
}

// Cached is k with each namespace's snapshot read once: for many traces
// over one state (a picture of every pair of nodes).
func Cached(k Kernel) Kernel { return &cached{Kernel: k, snaps: map[string]*Snapshot{}} }

type cached struct {
	Kernel
	snaps map[string]*Snapshot
}

func (c *cached) Snapshot(ns string) (*Snapshot, error) {
	if s, ok := c.snaps[ns]; ok {
		return s, nil
	}
	s, err := c.Kernel.Snapshot(ns)
	if err == nil {
		c.snaps[ns] = s
	}
	return s, err
}
