package wireguard

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// KindWireGuard is the kernel's link kind of a WireGuard device (`ip link
// add flannel-wg type wireguard`). Plan's devices have it; on the
// userspace path Apply puts a TUN device (kernel.KindTUN) in its place.
const KindWireGuard = "wireguard"

// wgDevice is one wireguard device as Plan wants it: the kernel device, its
// listen port and its peers (sorted by key).
type wgDevice struct {
	kernel.Device
	port  int
	peers []Peer
}

// Plan implements backend.Backend: the devices of Mode (flannel-wg for
// IPv4, flannel-wg-v6 for IPv6 in Mode separate; flannel-wg for both in the
// other modes), each holding the network address of this node's subnet of
// its families (/32, /128), a route of each cluster network to its device
// (`ip route replace 10.244.0.0/16 dev flannel-wg`), and no other kernel
// entries: WireGuard picks the peer by the packet's destination among the
// peers' allowed IPs. Apply reads the peers (Peers) from d.Node.
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	d := backend.Desired{Node: st}
	for _, dev := range b.devices(st, &d.Skipped) {
		d.Devices = append(d.Devices, dev.Device)
		d.Scope.RouteDevs = append(d.Scope.RouteDevs, dev.Name)
	}
	for _, f := range b.fams {
		net, own := f.Network(st), f.Subnet(st.Own)
		if !own.IsValid() {
			continue
		}
		d.Scope.Networks = append(d.Scope.Networks, net)
		d.Scope.Own = append(d.Scope.Own, own)
		d.Entries.Routes = append(d.Entries.Routes, kernel.Route{Dst: net, Dev: b.deviceOf(f)})
	}
	return d
}

// deviceOf is the device that carries family f.
func (b *Backend) deviceOf(f backend.Family) string {
	if f.Is6 && b.cfg.Mode == Separate {
		return DeviceName6
	}
	return DeviceName
}

// Peers returns, per device, the WireGuard peers st asks for (the devices'
// peer sets that Apply makes the devices hold), and the peers skipped,
// with the reason. It is pure.
func (b *Backend) Peers(st backend.NodeState) (map[string][]Peer, []string) {
	var skipped []string
	out := map[string][]Peer{}
	for _, dev := range b.devices(st, &skipped) {
		out[dev.Name] = dev.peers
	}
	return out, skipped
}

// devices are the devices st asks for with their peers. A family whose
// subnet this node's lease lacks has no device (nor a place in a shared
// one).
func (b *Backend) devices(st backend.NodeState, skipped *[]string) []wgDevice {
	var fams []backend.Family // the families this node has a subnet of
	for _, f := range b.fams {
		if f.Subnet(st.Own).IsValid() {
			fams = append(fams, f)
		} else {
			*skipped = append(*skipped, fmt.Sprintf("%s: this node's lease %s has no %s subnet; %s carries no %s", b.deviceOf(f), st.Own.Key(), f, b.deviceOf(f), f))
		}
	}
	var devs []wgDevice
	if b.cfg.Mode == Separate {
		for _, f := range fams {
			dev := b.newDevice(b.deviceOf(f), st, []backend.Family{f})
			dev.peers = b.separatePeers(st, f, dev.port, skipped)
			devs = append(devs, dev)
		}
	} else if len(fams) > 0 {
		dev := b.newDevice(DeviceName, st, fams)
		dev.peers = b.sharedPeers(st, fams, skipped)
		devs = append(devs, dev)
	}
	return devs
}

// newDevice is the device name carrying fams.
func (b *Backend) newDevice(name string, st backend.NodeState, fams []backend.Family) wgDevice {
	dev := wgDevice{port: b.cfg.ListenPort}
	if name == DeviceName6 {
		dev.port = b.cfg.ListenPortV6
	}
	dev.Device = kernel.Device{Name: name, Kind: KindWireGuard, MTU: b.MTU(), NoIPv6AddrGen: true}
	for _, f := range fams {
		own := f.Subnet(st.Own)
		dev.Addrs = append(dev.Addrs, netip.PrefixFrom(own.Addr(), own.Addr().BitLen()))
	}
	return dev
}

// separatePeers are the peers of f's device in Mode separate: each
// wireguard peer with a subnet of f, at its public address of f and the
// port of its data of f (0: this device's own, as flannel), allowed its
// subnet of f.
func (b *Backend) separatePeers(st backend.NodeState, f backend.Family, port int, skipped *[]string) []Peer {
	var peers []Peer
	for l := range st.FamilyPeers(f, skipped, Type) {
		subnet := f.Subnet(l)
		data, key, err := ParseData(f.Data(l.Attrs))
		if err != nil {
			*skipped = append(*skipped, fmt.Sprintf("%s (%s): %s: %v", subnet, f.PublicIP(l.Attrs), f.DataKey(), err))
			continue
		}
		p := b.peer(key, f.PublicIP(l.Attrs), data.Port, port)
		p.AllowedIPs = []netip.Prefix{subnet}
		peers = b.addPeer(peers, p, subnet, skipped)
	}
	return sortPeers(peers)
}

// sharedPeers are the peers of flannel-wg in the single-device modes:
// each wireguard peer, allowed its subnets of fams, at the endpoint Mode
// selects (selectFamily), with the key of its IPv6 data when it has an
// IPv6 subnet (flannel reads that one last) and else of its IPv4 data.
func (b *Backend) sharedPeers(st backend.NodeState, fams []backend.Family, skipped *[]string) []Peer {
	var peers []Peer
	for l := range st.PeersOf(Type) {
		var allowed []netip.Prefix
		var keyFam backend.Family
		for _, f := range fams {
			if s := f.Subnet(l); s.IsValid() {
				allowed = append(allowed, s)
				keyFam = f
			}
		}
		if len(allowed) == 0 {
			continue // no subnet of a family this node carries
		}
		name := allowed[0]
		data, key, err := ParseData(keyFam.Data(l.Attrs))
		if err != nil {
			*skipped = append(*skipped, fmt.Sprintf("%s: %s: %v", name, keyFam.DataKey(), err))
			continue
		}
		ep := b.selectFamily(l)
		pub := ep.PublicIP(l.Attrs)
		if !pub.IsValid() || pub.IsUnspecified() {
			*skipped = append(*skipped, fmt.Sprintf("%s: no %s public address in its lease for Mode %s", name, ep, b.cfg.Mode))
			continue
		}
		port := data.Port
		if ep != keyFam {
			// the port of the endpoint's family: flannel reads each
			// family's data for its own endpoint
			if d, _, err := ParseData(ep.Data(l.Attrs)); err == nil {
				port = d.Port
			} else {
				port = 0
			}
		}
		p := b.peer(key, pub, port, b.cfg.ListenPort)
		slices.SortFunc(allowed, comparePrefix)
		p.AllowedIPs = allowed
		peers = b.addPeer(peers, p, name, skipped)
	}
	return sortPeers(peers)
}

// selectFamily is the family of the address flannel-wg reaches peer l at,
// in the single-device modes: IPv4 or IPv6 as Mode says, and in Mode auto
// flannel's rule (its selectMode): IPv4 when the peer has no IPv6 address,
// or has a public (not RFC 1918) IPv4 address and this node an IPv4 one;
// else IPv6 when both the peer's and this node's IPv6 addresses are
// public (not ULA); else IPv4. Unlike flannel, Mode auto then takes the
// other family when the chosen one lacks an address on this node's
// underlay or in the peer's lease and the other has both: on an IPv6-only
// cluster over a ULA underlay flannel's rule picks IPv4, which neither
// node has.
func (b *Backend) selectFamily(l lease.Lease) backend.Family {
	v4, v6 := backend.Family{}, backend.Family{Is6: true}
	switch b.cfg.Mode {
	case IPv4:
		return v4
	case IPv6:
		return v6
	}
	f := v4
	ip4, ip6 := l.Attrs.PublicIP, l.Attrs.PublicIPv6
	switch {
	case !ip6.IsValid() || ip6.IsUnspecified():
	case ip4.IsValid() && !ip4.IsUnspecified() && !ip4.IsPrivate() && b.u.Addr.IsValid():
	case !ip6.IsPrivate() && b.u.Addr6.IsValid() && !b.u.Addr6.IsPrivate():
		f = v6
	}
	if other := (backend.Family{Is6: !f.Is6}); !b.reaches(l, f) && b.reaches(l, other) {
		return other
	}
	return f
}

// reaches reports whether both this node's underlay and peer l's lease
// have an address of family f.
func (b *Backend) reaches(l lease.Lease, f backend.Family) bool {
	if _, err := f.Local(b.u); err != nil {
		return false
	}
	pub := f.PublicIP(l.Attrs)
	return pub.IsValid() && !pub.IsUnspecified()
}

// peer is a peer with key at addr and port (0: ownPort, as flannel reads
// a Port of 0), with this backend's PSK and keepalive.
func (b *Backend) peer(key [KeyLen]byte, addr netip.Addr, port uint16, ownPort int) Peer {
	if port == 0 {
		port = uint16(ownPort)
	}
	p := Peer{Key: key, Endpoint: netip.AddrPortFrom(addr, port), Keepalive: b.cfg.Keepalive}
	if b.cfg.HasPSK {
		p.PSK = b.cfg.PSK
	}
	return p
}

// addPeer appends p unless its key is this node's own or another peer's
// already (a device holds a key once: the first lease keeps it).
func (b *Backend) addPeer(peers []Peer, p Peer, name netip.Prefix, skipped *[]string) []Peer {
	switch {
	case p.Key == b.pub:
		*skipped = append(*skipped, fmt.Sprintf("%s (%s): its public key is this node's own", name, p.Endpoint.Addr()))
		return peers
	case slices.ContainsFunc(peers, func(q Peer) bool { return q.Key == p.Key }):
		*skipped = append(*skipped, fmt.Sprintf("%s (%s): public key %s is another lease's too", name, p.Endpoint.Addr(), p))
		return peers
	}
	return append(peers, p)
}

// sortPeers orders peers by key: a device's set has no order.
func sortPeers(peers []Peer) []Peer {
	slices.SortFunc(peers, func(a, b Peer) int { return slices.Compare(a.Key[:], b.Key[:]) })
	return peers
}

// CheckPeer implements backend.PeerChecker: a wireguard lease needs a
// public key in the backend data of each enabled family it has a subnet
// of (BackendData, BackendV6Data). Leases of other types are not this
// backend's to judge.
func (b *Backend) CheckPeer(l lease.Lease) error {
	if l.Attrs.BackendType != Type {
		return nil
	}
	for _, f := range b.fams {
		if f.Subnet(l).IsValid() {
			if _, _, err := ParseData(f.Data(l.Attrs)); err != nil {
				return fmt.Errorf("%s: %w", f.DataKey(), err)
			}
		}
	}
	return nil
}
