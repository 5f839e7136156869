package lease

import (
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/config"
)

// Choose decides which lease a node gets, given all current leases: the one
// its PublicIP already holds (a reservation first), else new subnets
// picked with Pick. Pure; shared
// by every Store so they decide alike.
func Choose(cfg *config.Config, leases []Lease, req Request, rnd *rand.Rand) (held *Lease, v4, v6 netip.Prefix, err error) {
	// Of several leases held by this node's address, a reservation wins
	// (an operator's choice), then one the node asks for (its old
	// subnet.env), then the first: the same answer whatever the order.
	best, rank := -1, 0
	for i := range leases {
		l := &leases[i]
		if !ownedBy(l.Attrs, req.Attrs) {
			continue
		}
		if cfg.EnableIPv4 && !InRange(cfg.IPv4, l.Subnet) || cfg.EnableIPv6 && !InRange(cfg.IPv6, l.IPv6Subnet) {
			continue // left over from another config; do not reuse
		}
		r := 1
		switch {
		case l.Reservation():
			r = 3
		case slices.Contains(req.Prefer, l.Subnet) || slices.Contains(req.Prefer, l.IPv6Subnet):
			r = 2
		}
		if r > rank || r == rank && l.Key() < leases[best].Key() {
			best, rank = i, r
		}
	}
	if best >= 0 {
		l := &leases[best]
		return l, l.Subnet, l.IPv6Subnet, nil
	}
	taken4 := map[netip.Prefix]bool{}
	taken6 := map[netip.Prefix]bool{}
	for _, l := range leases {
		if l.Subnet.IsValid() {
			taken4[l.Subnet] = true
		}
		if l.IPv6Subnet.IsValid() {
			taken6[l.IPv6Subnet] = true
		}
	}
	if cfg.EnableIPv4 {
		if v4, err = Pick(cfg.IPv4, taken4, req.Prefer, rnd); err != nil {
			return nil, v4, v6, err
		}
	}
	if cfg.EnableIPv6 {
		if v6, err = Pick(cfg.IPv6, taken6, req.Prefer, rnd); err != nil {
			return nil, v4, v6, err
		}
	}
	return nil, v4, v6, nil
}

// ownedBy reports whether a stored lease belongs to the node asking with want.
func ownedBy(have, want Attrs) bool {
	if want.PublicIP.IsValid() && !want.PublicIP.IsUnspecified() {
		return have.PublicIP == want.PublicIP
	}
	return want.PublicIPv6.IsValid() && have.PublicIPv6 == want.PublicIPv6
}
