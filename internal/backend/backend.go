// Package backend defines the desired state of a node's data plane
// (NodeState, and what a backend plans from it: Desired) and the seam every
// backend implements: Kind (a row of the backend table: parse options,
// build), Options, Env and Backend (Plan, Apply, Close). The kernel writes
// themselves go through package kernel.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// NodeState is the whole desired state handed to a backend.
type NodeState struct {
	Network     netip.Prefix  // the cluster's IPv4 network; invalid when IPv4 is off
	IPv6Network netip.Prefix  // the cluster's IPv6 network; invalid when IPv6 is off
	Own         lease.Lease   // this node's lease
	Peers       []lease.Lease // every other lease, of any backend type
	// Learned are the routes this node learned over BGP (import on), by
	// prefix: the next hop each peer router announced. A backend that
	// cannot reach a peer directly (host-gw across an L3 hop) routes that
	// peer's subnet through the learned next hop instead of skipping it;
	// only subnets that peers' leases hold are used, so an announcement
	// can never take a route that no lease gives. nil when import is off.
	Learned map[netip.Prefix]netip.Addr
	// LearnedPending: Learned is not complete yet (import on, and the
	// speaker has not heard every peer's End-of-RIB since the agent
	// started: RFC 4724's restarting speaker keeps its forwarding state
	// until then). A backend leaves the kernel's routes to the subnets it
	// would route through a learned next hop but finds none for yet
	// (kernel.Scope.Hold) instead of deleting them; once false, what is
	// not learned goes.
	LearnedPending bool
}

// IsPeer reports whether l is another node's lease with a subnet of either
// family: not this node's own, and not another with one of this node's
// addresses (the same PublicIP, or the same PublicIPv6: an old lease of
// this node's, or a forgery: a node never routes to itself, least of all
// its own old subnet away from its bridge). An address that is invalid or
// unspecified (PublicIP 0.0.0.0 in flannel's IPv6-only leases) matches
// nothing.
func (s NodeState) IsPeer(l lease.Lease) bool {
	if l.SameSubnets(s.Own) || !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return false
	}
	same := func(a, b netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() && a == b }
	return !same(l.Attrs.PublicIP, s.Own.Attrs.PublicIP) && !same(l.Attrs.PublicIPv6, s.Own.Attrs.PublicIPv6)
}

// PeersOf yields the peers (IsPeer) a backend of one of types programs:
// the leases whose BackendType is one of types. A peer may have a subnet
// of one family only; the backend programs the families it has.
func (s NodeState) PeersOf(types ...string) iter.Seq[lease.Lease] {
	return func(yield func(lease.Lease) bool) {
		for _, l := range s.Peers {
			if s.IsPeer(l) && slices.Contains(types, l.Attrs.BackendType) && !yield(l) {
				return
			}
		}
	}
}

// Family is one address family of the cluster: a backend that programs
// each enabled family runs one code path over Env.Families, reading the
// family's side of leases, attributes, node state and underlay through it.
type Family struct {
	Is6 bool
}

// lease is the family as package lease names it, whose accessors read
// the family's side of leases and attributes.
func (f Family) lease() lease.Family { return pick(f.Is6, lease.IPv4, lease.IPv6) }

// String is "IPv4" or "IPv6".
func (f Family) String() string { return f.lease().String() }

// Subnet is l's subnet of the family (invalid when it has none).
func (f Family) Subnet(l lease.Lease) netip.Prefix { return *l.SubnetOf(f.lease()) }

// PublicIP is the node's public address of the family: PublicIP or
// PublicIPv6.
func (f Family) PublicIP(a lease.Attrs) netip.Addr { return *a.PublicIPOf(f.lease()) }

// DataKey names the attribute with the family's backend data.
func (f Family) DataKey() string { return pick(f.Is6, "BackendData", "BackendV6Data") }

// Data is the family's backend data: BackendData or BackendV6Data.
func (f Family) Data(a lease.Attrs) json.RawMessage { return *a.BackendDataOf(f.lease()) }

// SetData sets the family's backend data in a.
func (f Family) SetData(a *lease.Attrs, data json.RawMessage) { *a.BackendDataOf(f.lease()) = data }

// Network is the cluster's network of the family in st.
func (f Family) Network(st NodeState) netip.Prefix { return pick(f.Is6, st.Network, st.IPv6Network) }

// Local is the underlay's address of the family (Addr or Addr6), or an
// error saying what to set when it has none.
func (f Family) Local(u kernel.Underlay) (netip.Addr, error) {
	a := pick(f.Is6, u.Addr, u.Addr6)
	if !a.IsValid() {
		return a, fmt.Errorf("the underlay %s has no %s address; set %s or choose another --iface", u.Name, f, f.PublicIPFlag())
	}
	return a, nil
}

// PublicIPFlag is the agent's flag that sets the family's public address.
func (f Family) PublicIPFlag() string {
	return kernel.PublicIPFlag(pick(f.Is6, netip.IPv4Unspecified(), netip.IPv6Unspecified()))
}

// pick is v4 for IPv4, v6 for IPv6.
func pick[T any](is6 bool, v4, v6 T) T {
	if is6 {
		return v6
	}
	return v4
}

// Families are the families whose network e enables (Network,
// IPv6Network), IPv4 first.
func (e Env) Families() []Family {
	var out []Family
	for _, f := range []Family{{Is6: false}, {Is6: true}} {
		if pick(f.Is6, e.Network, e.IPv6Network).IsValid() {
			out = append(out, f)
		}
	}
	return out
}

// FamilyPeers yields the peers PeersOf(types...) yields that have a subnet
// of family f and a public address of it to reach them at. A peer with
// the subnet but no such address is not yielded: it is added to skipped,
// with the reason.
func (s NodeState) FamilyPeers(f Family, skipped *[]string, types ...string) iter.Seq[lease.Lease] {
	return func(yield func(lease.Lease) bool) {
		for peer := range s.PeersOf(types...) {
			subnet, pub := f.Subnet(peer), f.PublicIP(peer.Attrs)
			switch {
			case !subnet.IsValid():
				// a peer without this family (an IPv4-only node in a dual
				// cluster)
			case !pub.IsValid() || pub.IsUnspecified():
				*skipped = append(*skipped, fmt.Sprintf("%s: no %s public address in its lease", subnet, f))
			case !yield(peer):
				return
			}
		}
	}
}

// Desired is what a backend wants the node to have for one NodeState: its
// devices, and the routes, neighbour and FDB entries within the scope it
// owns. Every entry names its link by name, so a Desired is computed
// without reading the kernel and stays valid when a device is recreated.
type Desired struct {
	// Node is the state the plan was computed from (the udp backend's
	// data path takes its peers from it).
	Node NodeState
	// Devices are the backend's devices, in the order they are set up
	// (kernel.EnsureLink).
	Devices []kernel.Device
	// Entries are the routes, neighbour and FDB entries within Scope;
	// kernel.Apply removes the others.
	Entries kernel.Plan
	// Scope is what the backend owns in the kernel.
	Scope kernel.Scope
	// Skipped names peers that are not programmed, with the reason.
	Skipped []string
}

// Planner computes a backend's desired state.
type Planner interface {
	// Plan is pure: it reads nothing from the node and writes nothing, and
	// the same state gives the same Desired.
	Plan(st NodeState) Desired
}

// Report says what an Apply really changed.
type Report struct {
	Added, Removed int
	// Skipped names peers that were not programmed, with the reason.
	Skipped []string
}

// Backend programs the kernel for one backend type.
type Backend interface {
	// LeaseAttrs returns the backend part of this node's lease
	// (BackendType, BackendData).
	LeaseAttrs() lease.Attrs
	// MTU is the MTU pods must use.
	MTU() int
	// Planner computes the desired state that Apply applies.
	Planner
	// Apply makes the kernel match d, a Desired this backend's Plan
	// returned, and nothing else: it puts each of d.Devices right
	// (kernel.EnsureLink: created, or repaired when changed by hand), then
	// the entries within d.Scope (kernel.Apply: adds before deletes,
	// removing entries no peer wants, including ones it did not create).
	// It may be called again with the same d (idempotent). The report
	// counts the writes and carries d.Skipped. When ctx ends it stops
	// before its next kernel write and returns ctx's error.
	Apply(ctx context.Context, d Desired) (Report, error)
	// Close releases what the backend holds in this process (goroutines,
	// sockets, file descriptors). The kernel state stays, so that pod
	// traffic flows across an agent restart. Apply must not be called
	// after Close.
	Close() error
}

// PeerChecker is a Backend that can tell from a lease alone that it could
// never program it as a peer (e.g. a VTEP MAC that is not a unicast MAC).
// The agent rejects such a lease where it enters, on every node alike, so
// the check must not depend on this node.
type PeerChecker interface {
	CheckPeer(l lease.Lease) error
}

// Tunnel is a Backend whose devices authenticate and encrypt the pod
// traffic they carry between nodes (wireguard). For each enabled family
// the agent then lets traffic between this node and other nodes' pod
// addresses pass through those devices only, and drops the rest, so that
// neither a datagram forged in clear on the underlay nor a pod's packet
// that a missing route would send in clear gets through
// (firewall.TunnelGuard).
type Tunnel interface {
	// TunnelDevices returns the names of the devices that carry family
	// f's traffic to and from other nodes' pods in st. It is pure, like
	// Plan. None means that no traffic of f may cross to other nodes.
	TunnelDevices(st NodeState, f Family) []string
}

// Kind is one row of the backend table (internal/backend/table): a backend
// type and the functions of its package.
type Kind struct {
	// Type is Backend.Type in net-conf.json, in lower case.
	Type string
	// Parse reads the Backend object of net-conf.json (nil when the
	// document has none), fills in defaults and validates. Errors are
	// *config.Error values naming the key, e.g. "Backend.VNI".
	Parse func(raw json.RawMessage) (Options, error)
	// New builds the backend from options Parse returned. It touches
	// nothing in the kernel before the first Apply; goroutines it starts
	// end when ctx ends or on Close.
	New func(ctx context.Context, env Env, opts Options) (Backend, error)
}

// Options are a backend's resolved options.
type Options interface {
	// Type is the backend type the options are for.
	Type() string
	// Resolved renders the options with every default filled in, in the
	// net-conf.json schema, "Type" included (weft config check).
	Resolved() map[string]any
	// Path says in a few words how this node's packets reach a peer, e.g.
	// "vxlan VNI 1 udp/8472 via flannel.1"; onLink: the peer is on the
	// underlay's own segment.
	Path(onLink bool) string
}

// Env is what a backend is built with.
type Env struct {
	// Kernel is the node's kernel: kernel.NewNetlink(handle) on a node,
	// a kerneltest.Fake in tests.
	Kernel   kernel.Kernel
	Underlay kernel.Underlay
	// ReadOnly is set when the store publishes nothing of this node, so
	// peers' backend data must follow from their addresses.
	ReadOnly bool
	// Network and IPv6Network are the cluster's networks of the families
	// the config enables (invalid when off): a backend sets up its devices
	// and lease data for each enabled family.
	Network, IPv6Network netip.Prefix
	// Previous are the attributes this node published before, when the
	// store keeps them across a reboot (Kubernetes mode: the Node's
	// annotations; zero otherwise): vxlan recreates its devices with the
	// VTEP MACs peers already hold (flannel PR #1829).
	Previous lease.Attrs
	// WireGuardKeyFile is the wireguard backend's private key file
	// (weft-agent: WIREGUARD_KEY_FILE, flannel's; "": /run/flannel/wgkey).
	WireGuardKeyFile string
	// WireGuardSocketDir is where the wireguard backend's userspace
	// devices put their control sockets, <dir>/<device>.sock, for `wg`
	// (weft-agent: --wireguard-socket-dir; "": /var/run/wireguard).
	WireGuardSocketDir string
	Log                *slog.Logger
}

// Common are the options every backend reads, validated the same way.
type Common struct {
	MTU  int // 0 = derive from the underlay interface
	Port int // 0 = the backend's default
}

// RawCommon are the common options as written; a backend embeds it in the
// struct it decodes its Backend object into (config.DecodeBackend).
type RawCommon struct {
	MTU  *int
	Port *int
}

// DecodeOptions decodes a backend's Backend object (nil: none was given)
// into raw, a pointer to a struct of pointer fields that embeds RawCommon,
// and returns the validated common options.
func DecodeOptions(data json.RawMessage, raw interface{ Resolve() (Common, error) }) (Common, error) {
	if data != nil {
		if err := config.DecodeBackend(data, raw); err != nil {
			return Common{}, err
		}
	}
	return raw.Resolve()
}

// Resolve validates MTU and Port.
func (r RawCommon) Resolve() (Common, error) {
	var c Common
	if r.MTU != nil {
		if *r.MTU < 0 || *r.MTU > 65535 {
			return c, &config.Error{Key: "Backend.MTU", Msg: fmt.Sprintf("%d is out of range; use 0 (derive from the interface) or a value up to 65535", *r.MTU)}
		}
		c.MTU = *r.MTU
	}
	if r.Port != nil {
		if *r.Port < 0 || *r.Port > 65535 {
			return c, &config.Error{Key: "Backend.Port", Msg: fmt.Sprintf("%d is not a UDP port; use 1-65535 (or 0 for the default)", *r.Port)}
		}
		c.Port = *r.Port
	}
	return c, nil
}

// InnerMTU is the MTU pods get over a backend that adds overhead bytes to
// each packet: the configured MTU, else the underlay's, less the overhead.
func InnerMTU(u kernel.Underlay, configured, overhead int) int {
	mtu := u.MTU
	if configured > 0 {
		mtu = configured
	}
	return mtu - overhead
}
