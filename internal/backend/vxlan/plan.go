// Package vxlan is the kernel VXLAN overlay backend, wire-compatible with
// flannel: a device per address family (flannel.<VNI> over the IPv4
// underlay, flannel-v6.<VNI> over the IPv6 one), UDP 8472, per-peer
// neighbour, FDB entry and onlink route; DirectRouting uses plain routes to
// on-link peers.
package vxlan

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// Overhead is what VXLAN encapsulation over IPv4 adds to a packet (outer
// IPv4, UDP, VXLAN header, inner Ethernet).
const Overhead = 50

// Overhead6 is what VXLAN encapsulation over IPv6 adds: the outer IPv6
// header is 20 bytes longer. The kernel holds a vxlan device over an IPv6
// underlay to at most the lower device's MTU less 70 (VXLAN6_HEADROOM): it
// clamps flannel's MTU-50 to that at creation and refuses it after.
const Overhead6 = 70

// Data is the vxlan BackendData (and BackendV6Data) of a lease:
// {"VNI":1,"VtepMAC":"..."}.
type Data struct {
	VNI     int
	VtepMAC string
}

// DeviceName is flannel's name for the IPv4 device of a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

// DeviceName6 is flannel's name for the IPv6 device of a VNI.
func DeviceName6(vni int) string { return fmt.Sprintf("flannel-v6.%d", vni) }

// MACFor is the VTEP MAC of a node when MACs are derived (a store that
// publishes nothing, such as read-only Kubernetes mode): locally
// administered, unicast; for an IPv4 address 0e:77 followed by the address,
// for an IPv6 address (the IPv6 device's MAC, from PublicIPv6) 0e:76
// followed by the FNV-1a hash of its 16 bytes, so that addresses in
// different networks that end alike do not share a MAC.
func MACFor(ip netip.Addr) string {
	if ip.Is4() {
		a := ip.As4()
		return net.HardwareAddr{0x0e, 0x77, a[0], a[1], a[2], a[3]}.String()
	}
	h := fnv.New32a()
	a := ip.As16()
	h.Write(a[:])
	s := h.Sum32()
	return net.HardwareAddr{0x0e, 0x76, byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}.String()
}

// Plan implements backend.Backend: for each enabled family, its device
// (flannel.<VNI>, flannel-v6.<VNI>) and for each vxlan peer with a subnet
// of that family its neighbour entry (its device's address to its VTEP
// MAC), its FDB entry (the MAC to its public address of that family) and an
// onlink route to its subnet via its device's address; with DirectRouting,
// a plain route via the underlay to a peer on the underlay's link instead.
// Peers with unusable backend data are skipped. The VTEP MACs are read from
// the leases (BackendData, BackendV6Data), or with DerivedMAC (read-only
// stores) derived from the peers' addresses (MACFor).
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	d := backend.Desired{Node: st}
	// Routes into the cluster networks on the devices and (for
	// DirectRouting) on the underlay, and all permanent neighbour and FDB
	// entries on the devices.
	p := &d.Entries
	p.Routes = make([]kernel.Route, 0, len(st.Peers))
	p.Neighs = make([]kernel.Neigh, 0, len(st.Peers))
	p.FDB = make([]kernel.FDB, 0, len(st.Peers))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.macs == nil || len(b.macs) > 2*len(b.fams)*len(st.Peers)+64 {
		b.macs = make(map[string]macResult, len(st.Peers)) // drop the values of departed leases
	}
	for _, f := range b.fams {
		own := f.Subnet(st.Own)
		if !own.IsValid() {
			d.Skipped = append(d.Skipped, fmt.Sprintf("%s: this node's lease %s has no %s subnet; %s is not set up", f.name, st.Own.Key(), f.Family, f.name))
			continue
		}
		dev := b.device(f, own)
		d.Devices = append(d.Devices, dev)
		d.Scope.Networks = append(d.Scope.Networks, f.Network(st))
		d.Scope.Own = append(d.Scope.Own, own)
		d.Scope.RouteDevs = append(d.Scope.RouteDevs, dev.Name)
		d.Scope.NeighDevs = append(d.Scope.NeighDevs, dev.Name)
		for peer := range st.FamilyPeers(f.Family, &d.Skipped, Type) {
			subnet, pub := f.Subnet(peer), f.PublicIP(peer.Attrs)
			if b.cfg.DirectRouting && b.u.IsOnLink(pub) {
				p.Routes = append(p.Routes, kernel.Route{Dst: subnet, Gw: pub, Dev: b.u.Name})
				continue
			}
			var m macResult
			if b.derived {
				m.mac = MACFor(pub)
			} else {
				// Decoding each peer's backend data at every sync would
				// cost more than the rest of the plan: the result is kept
				// per value.
				data := f.Data(peer.Attrs)
				var ok bool
				if m, ok = b.macs[string(data)]; !ok {
					m.mac, m.err = dataMAC(data, f.DataKey())
					b.macs[string(data)] = m
				}
			}
			if m.err != nil {
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s (%s): %v", subnet, pub, m.err))
				continue
			}
			gw := subnet.Addr() // the peer's device holds its subnet's network address
			p.Neighs = append(p.Neighs, kernel.Neigh{IP: gw, MAC: m.mac, Dev: dev.Name})
			p.FDB = append(p.FDB, kernel.FDB{MAC: m.mac, Dst: pub, Dev: dev.Name})
			p.Routes = append(p.Routes, kernel.Route{Dst: subnet, Gw: gw, Dev: dev.Name, OnLink: true})
		}
	}
	if len(d.Devices) > 0 {
		d.Scope.RouteDevs = append(d.Scope.RouteDevs, b.u.Name)
	}
	return d
}

// macResult is dataMAC's answer for one backend data value.
type macResult struct {
	mac string
	err error
}

// dataMAC returns the unicast VTEP MAC of a lease's backend data; key
// names the data in errors ("BackendData", "BackendV6Data").
func dataMAC(data json.RawMessage, key string) (string, error) {
	var d Data
	if err := json.Unmarshal(data, &d); err != nil {
		return "", fmt.Errorf("bad vxlan %s: %w", key, err)
	}
	mac, err := unicastMAC(d.VtepMAC)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return mac, nil
}

// unicastMAC returns s in canonical form if it is a unicast MAC.
func unicastMAC(s string) (string, error) {
	mac := kernel.CanonicalMAC(s)
	if mac == "" {
		return "", fmt.Errorf("bad VtepMAC %q", s)
	}
	if hw, _ := net.ParseMAC(mac); hw[0]&1 != 0 || mac == "00:00:00:00:00:00" {
		return "", fmt.Errorf("VtepMAC %s is not a unicast MAC", mac)
	}
	return mac, nil
}

// CheckPeer implements backend.PeerChecker: a vxlan lease needs a unicast
// VTEP MAC in the backend data of each enabled family it has a subnet of
// (BackendData for IPv4, BackendV6Data for IPv6), unless MACs are derived
// from addresses. Leases of other types are not this backend's to judge.
func (b *Backend) CheckPeer(l lease.Lease) error {
	if b.derived || l.Attrs.BackendType != Type {
		return nil
	}
	for _, f := range b.fams {
		if f.Subnet(l).IsValid() {
			if _, err := dataMAC(f.Data(l.Attrs), f.DataKey()); err != nil {
				return err
			}
		}
	}
	return nil
}
