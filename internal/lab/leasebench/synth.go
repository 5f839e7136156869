package leasebench

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// The cluster network of the bench: /29 subnets, so that 8190 of them fit
// in 10.244.0.0/16 (flannel and weft both accept SubnetLen up to 30).
const (
	network   = "10.244.0.0/16"
	subnetLen = 29
	vni       = 1 // flannel's default VXLAN ID
)

// publicIPs are the PublicIP of synthetic leases, in turn: two of the
// documentation ranges, none of them the lab's own underlay (192.0.2.0/24).
// No packet is ever sent to them: the lab has no pods and no traffic, and
// on the l2 underlay no node has a route to them.
var publicIPs = func() []netip.Addr {
	var out []netip.Addr
	for _, net := range [][3]byte{{198, 51, 100}, {203, 0, 113}} {
		for host := 1; host < 255; host++ {
			out = append(out, netip.AddrFrom4([4]byte{net[0], net[1], net[2], byte(host)}))
		}
	}
	return out
}()

// synth is a synthetic lease: its etcd key's name and its value, in
// flannel's format.
type synth struct {
	Subnet netip.Prefix
	Value  []byte
}

// Key is the lease's name under the subnets prefix, "10.244.3.8-29".
func (s synth) Key() string { return lease.Key(s.Subnet, netip.Prefix{}) }

// pool hands out synthetic leases whose subnets are free: inside the
// network, between flannel's SubnetMin and SubnetMax, and held by no real
// node. Subnets handed back are reused.
type pool struct {
	net   netip.Prefix
	bits  int
	next  uint64                // index of the next unused subnet
	taken map[netip.Prefix]bool // the real nodes' subnets
	free  []netip.Prefix        // handed back
	made  int                   // leases made: picks PublicIP and VtepMAC
}

func newPool(taken []netip.Prefix) *pool {
	p := &pool{net: netip.MustParsePrefix(network), bits: subnetLen, next: 1, taken: map[netip.Prefix]bool{}}
	for _, t := range taken {
		p.taken[t] = true
	}
	return p
}

// take makes n leases on free subnets.
func (p *pool) take(n int) ([]synth, error) {
	out := make([]synth, 0, n)
	last := uint64(1)<<(p.bits-p.net.Bits()) - 1 // flannel leaves the last subnet out (SubnetMax)
	for len(out) < n {
		var sn netip.Prefix
		switch {
		case len(p.free) > 0:
			sn, p.free = p.free[0], p.free[1:]
		case p.next < last:
			sn = netip.PrefixFrom(config.NthSubnet(p.net.Addr(), p.bits, p.next), p.bits)
			p.next++
			if p.taken[sn] {
				continue
			}
		default:
			return nil, fmt.Errorf("%s holds no more free /%d subnets after %d synthetic leases", p.net, p.bits, p.made)
		}
		s, err := p.make(sn)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// give hands leases back once deleted from the store.
func (p *pool) give(ls []synth) {
	for _, l := range ls {
		p.free = append(p.free, l.Subnet)
	}
}

// make builds the value of the next lease on sn: a vxlan lease whose
// PublicIP comes from publicIPs in turn and whose VtepMAC is unique,
// unicast and locally administered (0e:be:...).
func (p *pool) make(sn netip.Prefix) (synth, error) {
	i := p.made
	p.made++
	mac := fmt.Sprintf("0e:be:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	data, err := json.Marshal(struct {
		VNI     int
		VtepMAC string
	}{vni, mac})
	if err != nil {
		return synth{}, err
	}
	v, err := json.Marshal(lease.Attrs{PublicIP: publicIPs[i%len(publicIPs)], BackendType: "vxlan", BackendData: data})
	if err != nil {
		return synth{}, fmt.Errorf("encode lease %s: %w", sn, err)
	}
	return synth{Subnet: sn, Value: v}, nil
}
