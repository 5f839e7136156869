// Package vxlan is the kernel VXLAN overlay backend, wire-compatible with
// flannel: device flannel.<VNI>, UDP 8472, per-peer neighbour, FDB entry and
// onlink route; DirectRouting uses plain routes to on-link peers.
package vxlan

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// Overhead is what VXLAN encapsulation adds to a packet (outer IPv4, UDP,
// VXLAN header, inner Ethernet).
const Overhead = 50

// Data is the vxlan BackendData of a lease: {"VNI":1,"VtepMAC":"..."}.
type Data struct {
	VNI     int
	VtepMAC string
}

// DeviceName is flannel's name for the device of a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

// Mode selects how peers are reached.
type Mode struct {
	// DirectRouting uses plain routes to peers on the underlay's link.
	DirectRouting bool
	// DerivedMAC derives every VTEP MAC from its node's address (MACFor)
	// instead of reading it from the lease: for stores that publish nothing,
	// such as read-only Kubernetes mode.
	DerivedMAC bool
}

// MACFor is the VTEP MAC of a node in DerivedMAC mode: locally
// administered, unicast, 0e:77 followed by the IPv4 address.
func MACFor(ip netip.Addr) string {
	a := ip.As4()
	return net.HardwareAddr{0x0e, 0x77, a[0], a[1], a[2], a[3]}.String()
}

// Plan computes the kernel entries for the peers in st. dev is the vxlan
// device's name. Peers of another backend type, or with unusable
// backend data, are skipped and named in the second result.
func Plan(st backend.NodeState, dev string, u kernel.Underlay, m Mode) (kernel.Plan, []string) {
	var p kernel.Plan
	var skipped []string
	for _, peer := range st.PeersOf(Type) {
		if m.DirectRouting && u.IsOnLink(peer.Attrs.PublicIP) {
			p.Routes = append(p.Routes, kernel.Route{Dst: peer.Subnet, Gw: peer.Attrs.PublicIP, Dev: u.Name})
			continue
		}
		mac, err := peerMAC(peer)
		if m.DerivedMAC {
			mac, err = MACFor(peer.Attrs.PublicIP), nil
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s (%s): %v", peer.Subnet, peer.Attrs.PublicIP, err))
			continue
		}
		gw := peer.Subnet.Addr() // the peer's device holds its subnet's network address
		p.Neighs = append(p.Neighs, kernel.Neigh{IP: gw, MAC: mac, Dev: dev})
		p.FDB = append(p.FDB, kernel.FDB{MAC: mac, Dst: peer.Attrs.PublicIP, Dev: dev})
		p.Routes = append(p.Routes, kernel.Route{Dst: peer.Subnet, Gw: gw, Dev: dev, OnLink: true})
	}
	return p, skipped
}

func peerMAC(l lease.Lease) (string, error) {
	var d Data
	if err := json.Unmarshal(l.Attrs.BackendData, &d); err != nil {
		return "", fmt.Errorf("bad vxlan BackendData: %w", err)
	}
	mac := kernel.CanonicalMAC(d.VtepMAC)
	if mac == "" {
		return "", fmt.Errorf("bad VtepMAC %q", d.VtepMAC)
	}
	return mac, nil
}

// Scope is what the vxlan backend owns: routes into the cluster network on
// the device and (for DirectRouting) on the underlay, and all permanent
// neighbour and FDB entries on the device.
func Scope(network, own netip.Prefix, dev string, u kernel.Underlay) kernel.Scope {
	return kernel.Scope{Network: network, Own: own, RouteDevs: []string{dev, u.Name}, NeighDevs: []string{dev}}
}
