// Package kernel is weft's seam to the kernel's network configuration: the
// link, address, route, neighbour and FDB calls the backends make, behind a
// small interface (Kernel) with a netlink implementation (NewNetlink) and a
// recording fake (package kerneltest) that prints `ip`-style transcripts.
//
// Above the interface sit the level-triggered helpers every backend shares:
// Apply makes the routes, neighbour and FDB entries within a Scope match a
// Plan; EnsureLink sets a backend's device (kind, MTU, MAC, addresses, up);
// FindUnderlay picks the interface node-to-node traffic uses. They are
// plain functions over the interface, so their order of writes and their
// scope are tested on the fake without root.
//
// Cached wraps a Kernel with an in-memory mirror of its routes, neighbour
// and FDB entries that a subscription (Watcher: `ip monitor`) keeps
// current, so that a sync diffs two in-memory sets and writes only the
// difference; weft's routes carry its own protocol (ProtoWeft), so that
// the scope finds every route weft ever wrote.
package kernel

import (
	"errors"
	"fmt"
	"net/netip"
)

// Kinds of links that EnsureLink manages. Link.Kind holds the kernel's kind
// name for the others ("veth", "bridge", "dummy"; "device" for hardware and
// loopback).
const (
	KindVXLAN = "vxlan"
	KindTUN   = "tun" // a tuntap device in tun mode
)

// Link is a network interface as the kernel reports it.
type Link struct {
	Index int
	Name  string
	Kind  string
	MTU   int
	MAC   string // canonical lower case; "" for links without one (tun)
	Up    bool   // administratively up (IFF_UP), as set by `ip link set NAME up`
	VXLAN VXLAN  // the vxlan attributes, for KindVXLAN; zero otherwise
}

// VXLAN is what makes a vxlan device: `type vxlan id VNI local LOCAL dev
// DEV dstport PORT [no]learning [gbp]`.
type VXLAN struct {
	VNI      int
	Local    netip.Addr // source address of encapsulated packets
	Dev      int        // index of the link encapsulated packets leave by
	Port     int        // UDP destination port
	Learning bool       // learn remote MACs from received packets
	GBP      bool       // Group Based Policy extension
}

// Addr is an address on a link: `ADDR/LEN dev DEV`.
type Addr struct {
	Dev    string       // the link's name
	Prefix netip.Prefix // the address with its prefix length (10.244.3.0/32)
	// Dynamic and Deprecated are read, never written: an address with a
	// lifetime (DHCP, SLAAC; `ip addr` says "dynamic": no IFA_F_PERMANENT),
	// and one whose preferred lifetime is over ("deprecated"). Weft's own
	// addresses have neither; only the underlay's choice looks at them.
	Dynamic, Deprecated bool
}

// RouteGetter is a Kernel that can say how the node would reach an
// address, as `ip route get ADDR` does (policy rules, metrics and source
// selection included): the route's device and source address. Kernels
// that cannot (the fake) leave it out, and callers fall back to the
// main table.
type RouteGetter interface {
	RouteGet(dst netip.Addr) (dev string, src netip.Addr, err error)
}

// Same reports whether a and b are the same address on the same link,
// whatever their flags.
func (a Addr) Same(b Addr) bool { return a.Dev == b.Dev && a.Prefix == b.Prefix }

// Kernel is the part of one network namespace's configuration that weft
// reads and writes. Addresses, routes, neighbour and FDB entries name their
// link by name (Dev), as iproute2 does, so that a plan stays valid when a
// device is deleted and created again under the same name (with another
// index): implementations look the index up at each write and name the
// links of what they read. Each call is one or two netlink requests or
// dumps and returns quickly, so calls take no context; the helpers check
// theirs between calls.
//
// Errors name the operation and its object as the equivalent iproute2
// command ("ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1
// onlink: network is down"). Looking up, changing or writing through a link
// that does not exist returns an error for which IsNotFound is true.
// Deleting something that does not exist (a link, an address, a route, an
// entry, or anything on a link that is gone) is success. Implementations are
// safe for concurrent use.
type Kernel interface {
	// LinkByName returns the link called name (`ip link show NAME`).
	LinkByName(name string) (Link, error)
	// LinkByIndex returns the link with that index.
	LinkByIndex(index int) (Link, error)
	// AddLink creates a link of l.Kind with l's name, MTU and MAC (the
	// kernel picks those left zero) and its kind's attributes, down, and
	// returns it as the kernel reports it: `ip link add NAME address MAC mtu
	// MTU type vxlan id VNI local LOCAL dev DEV dstport PORT nolearning`.
	// Only KindVXLAN links can be added; a TUN device exists only while a
	// process holds it open. A link of that name must not exist.
	AddLink(l Link) (Link, error)
	// DeleteLink removes a link and with it its addresses, the routes
	// through it and its neighbour and FDB entries (`ip link del NAME`).
	DeleteLink(name string) error
	// SetLinkMTU is `ip link set NAME mtu MTU`.
	SetLinkMTU(name string, mtu int) error
	// SetLinkMAC is `ip link set NAME address MAC`.
	SetLinkMAC(name, mac string) error
	// SetLinkUp is `ip link set NAME up`.
	SetLinkUp(name string) error
	// SetIPv6AddrGen turns the generation of IPv6 link-local addresses on
	// or off for the next time the link comes up: `ip link set NAME
	// addrgenmode eui64|none`. It succeeds on a kernel without IPv6.
	SetIPv6AddrGen(name string, on bool) error

	// Addrs lists the addresses of every link, both families (`ip addr show`).
	Addrs() ([]Addr, error)
	// ReplaceAddr adds an address, or updates it if the link has it
	// (`ip addr replace PREFIX dev DEV`).
	ReplaceAddr(a Addr) error
	// DeleteAddr is `ip addr del PREFIX dev DEV`.
	DeleteAddr(a Addr) error

	// Routes lists the unicast routes of the main table, both families,
	// with their protocol; a default route has the destination 0.0.0.0/0
	// or ::/0.
	Routes() ([]Route, error)
	// ReplaceRoute adds or replaces the main-table route to r.Dst, with
	// protocol r.Protocol or, when that is 0, weft's (ProtoWeft):
	// `ip route replace DST via GW dev DEV [onlink] proto 87`.
	ReplaceRoute(r Route) error
	// DeleteRoute is `ip route del DST via GW dev DEV [proto P]`; a
	// protocol of 0 matches any.
	DeleteRoute(r Route) error

	// Neighs lists the permanent neighbour (ARP and NDP) entries of the
	// link called dev (`ip neigh show dev DEV nud permanent`); entries the
	// kernel learnt itself are not weft's and are left out.
	Neighs(dev string) ([]Neigh, error)
	// ReplaceNeigh is `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
	ReplaceNeigh(n Neigh) error
	// DeleteNeigh is `ip neigh del IP dev DEV`.
	DeleteNeigh(n Neigh) error

	// FDB lists the permanent forwarding entries of the vxlan link called
	// dev that have a destination address (`bridge fdb show dev DEV`).
	FDB(dev string) ([]FDB, error)
	// ReplaceFDB is `bridge fdb replace MAC dev DEV dst IP self permanent`.
	ReplaceFDB(f FDB) error
	// DeleteFDB is `bridge fdb del MAC dev DEV dst IP self`.
	DeleteFDB(f FDB) error
}

// ErrNotFound is matched, through errors.Is, by every error whose object
// does not exist; test for it with IsNotFound.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err says that its object (most often a link)
// does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// NotFound marks cause (the kernel's own error, such as ENODEV) as a
// not-found error, for implementations of Kernel.
func NotFound(cause error) error { return notFound{cause} }

type notFound struct{ cause error }

func (e notFound) Error() string        { return e.cause.Error() }
func (e notFound) Unwrap() error        { return e.cause }
func (e notFound) Is(target error) bool { return target == ErrNotFound }

// Failed names a failed call by its iproute2 command, for implementations
// of Kernel: "ip link set flannel.1 up: operation not permitted".
func Failed(cmd string, err error) error { return fmt.Errorf("%s: %w", cmd, err) }
