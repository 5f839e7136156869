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

// MACFor is the VTEP MAC of a node when MACs are derived (a store that
// publishes nothing, such as read-only Kubernetes mode): locally
// administered, unicast, 0e:77 followed by the IPv4 address.
func MACFor(ip netip.Addr) string {
	a := ip.As4()
	return net.HardwareAddr{0x0e, 0x77, a[0], a[1], a[2], a[3]}.String()
}

// Plan implements backend.Backend: the device flannel.<VNI>, and for each
// vxlan peer its neighbour entry (its device's address to its VTEP MAC),
// its FDB entry (the MAC to its public address) and an onlink route to its
// subnet via its device's address; with DirectRouting, a plain route via
// the underlay to a peer on the underlay's link instead. Peers with
// unusable backend data are skipped. The VTEP MACs are read from the
// leases, or with DerivedMAC (read-only stores) derived from the peers'
// addresses (MACFor).
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	dev := b.device(st.Own.Subnet)
	d := backend.Desired{
		Node:    st,
		Devices: []kernel.Device{dev},
		// Routes into the cluster network on the device and (for
		// DirectRouting) on the underlay, and all permanent neighbour
		// and FDB entries on the device.
		Scope: kernel.Scope{Network: st.Network, Own: st.Own.Subnet,
			RouteDevs: []string{dev.Name, b.u.Name}, NeighDevs: []string{dev.Name}},
	}
	p := &d.Entries
	p.Routes = make([]kernel.Route, 0, len(st.Peers))
	p.Neighs = make([]kernel.Neigh, 0, len(st.Peers))
	p.FDB = make([]kernel.FDB, 0, len(st.Peers))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.macs == nil || len(b.macs) > 2*len(st.Peers)+64 {
		b.macs = make(map[string]macResult, len(st.Peers)) // drop the values of departed leases
	}
	for peer := range st.PeersOf(Type) {
		if b.cfg.DirectRouting && b.u.IsOnLink(peer.Attrs.PublicIP) {
			p.Routes = append(p.Routes, kernel.Route{Dst: peer.Subnet, Gw: peer.Attrs.PublicIP, Dev: b.u.Name})
			continue
		}
		var m macResult
		if b.derived {
			m.mac = MACFor(peer.Attrs.PublicIP)
		} else {
			// Decoding each peer's BackendData at every sync would cost
			// more than the rest of the plan: the result is kept per value.
			var ok bool
			if m, ok = b.macs[string(peer.Attrs.BackendData)]; !ok {
				m.mac, m.err = peerMAC(peer)
				b.macs[string(peer.Attrs.BackendData)] = m
			}
		}
		mac, err := m.mac, m.err
		if err != nil {
			d.Skipped = append(d.Skipped, fmt.Sprintf("%s (%s): %v", peer.Subnet, peer.Attrs.PublicIP, err))
			continue
		}
		gw := peer.Subnet.Addr() // the peer's device holds its subnet's network address
		p.Neighs = append(p.Neighs, kernel.Neigh{IP: gw, MAC: mac, Dev: dev.Name})
		p.FDB = append(p.FDB, kernel.FDB{MAC: mac, Dst: peer.Attrs.PublicIP, Dev: dev.Name})
		p.Routes = append(p.Routes, kernel.Route{Dst: peer.Subnet, Gw: gw, Dev: dev.Name, OnLink: true})
	}
	return d
}

// macResult is peerMAC's answer for one BackendData value.
type macResult struct {
	mac string
	err error
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
	if hw, _ := net.ParseMAC(mac); hw[0]&1 != 0 || mac == "00:00:00:00:00:00" {
		return "", fmt.Errorf("VtepMAC %s is not a unicast MAC", mac)
	}
	return mac, nil
}

// CheckPeer implements backend.PeerChecker: a vxlan lease needs a unicast
// VTEP MAC, unless MACs are derived from addresses. Leases of other types
// are not this backend's to judge.
func (b *Backend) CheckPeer(l lease.Lease) error {
	if b.derived || l.Attrs.BackendType != Type {
		return nil
	}
	_, err := peerMAC(l)
	return err
}
