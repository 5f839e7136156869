package lease

import (
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/config"
)

// Choice is what Choose decided for a node.
type Choice struct {
	// Held is the lease this node holds already and refreshes, or nil when
	// it creates a new one on Subnet and IPv6Subnet.
	Held               *Lease
	Subnet, IPv6Subnet netip.Prefix
	// Stale are leases of this node's public address that the config no
	// longer allows (outside SubnetMin..SubnetMax, another SubnetLen, a
	// subnet of a disabled family or none of an enabled one), and those
	// that overlap an older lease (Overlapping): the store deletes them,
	// as flannel deletes the former. Those the config no longer allows
	// still count as taken when new subnets are picked, since the deletion
	// may fail or race; those that overlap do not: a store deletes them in
	// the write that creates the new lease, so that the node keeps the
	// subnet of the family that did not overlap.
	Stale []Lease
	// Overlapping are the keys of the Stale leases that lose to an older
	// lease they overlap (OlderOverlaps, as every node's Set rejects
	// them), each with the key of that older lease. A node holding one
	// routes the older lease's subnet, which is also its own, to itself;
	// it gives it up and leases again. A reservation is never given up.
	Overlapping map[string]string
	// Unusable are reservations of this node's public address that the
	// config does not allow. A reservation is an operator's, so it is kept
	// (flannel never sees one: its etcd v3 store skips keys without TTL)
	// and only reported; it stays taken.
	Unusable []Lease
}

// Choose decides which lease a node gets, given all current leases: the one
// its public address already holds (a reservation first) unless it
// overlaps an older lease, else new subnets picked with Pick. The node is known by PublicIP, or by PublicIPv6 when
// IPv4 is disabled. Pure; shared by every Store so they decide alike.
func Choose(cfg *config.Config, leases []Lease, req Request, rnd *rand.Rand) (Choice, error) {
	var c Choice
	// Of several leases held by this node's address, a reservation wins
	// (an operator's choice), then one the node asks for (its old
	// subnet.env), then the first: the same answer whatever the order.
	best, rank := -1, 0
	var over map[int]int // computed only if the node holds a lease
	overlapping := map[int]bool{}
	for i := range leases {
		l := &leases[i]
		if !SameNode(l.Attrs, req.Attrs) {
			continue
		}
		if over == nil {
			v4, v6 := netip.Prefix{}, netip.Prefix{}
			if cfg.EnableIPv4 {
				v4 = cfg.IPv4.Network
			}
			if cfg.EnableIPv6 {
				v6 = cfg.IPv6.Network
			}
			over = OlderOverlaps(v4, v6, leases)
		}
		if j, ok := over[i]; ok && !l.Reservation() && Compatible(cfg, *l) {
			c.Stale = append(c.Stale, *l)
			if c.Overlapping == nil {
				c.Overlapping = map[string]string{}
			}
			c.Overlapping[l.Key()] = leases[j].Key()
			overlapping[i] = true
			continue
		}
		if !Compatible(cfg, *l) {
			if l.Reservation() {
				c.Unusable = append(c.Unusable, *l)
			} else {
				c.Stale = append(c.Stale, *l)
			}
			continue
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
		c.Held, c.Subnet, c.IPv6Subnet = l, l.Subnet, l.IPv6Subnet
		return c, nil
	}
	var chosen Lease
	for _, f := range Families {
		fam, on := f.Of(cfg)
		if !on {
			continue
		}
		var held []netip.Prefix
		for i := range leases {
			if p := *leases[i].SubnetOf(f); p.IsValid() && !overlapping[i] {
				held = append(held, p)
			}
		}
		p, err := Pick(fam, held, req.Prefer, rnd)
		if err != nil {
			return Choice{Stale: c.Stale, Overlapping: c.Overlapping, Unusable: c.Unusable}, err
		}
		*chosen.SubnetOf(f) = p
	}
	c.Subnet, c.IPv6Subnet = chosen.Subnet, chosen.IPv6Subnet
	return c, nil
}

// Compatible reports whether the config allows lease l as it is: a subnet
// of each enabled family that the family may lease, and none of a
// disabled family (flannel's isSubnetConfigCompat and
// isIPv6SubnetConfigCompat).
func Compatible(cfg *config.Config, l Lease) bool {
	for _, f := range Families {
		fam, on := f.Of(cfg)
		p := *l.SubnetOf(f)
		if on && !InRange(fam, p) || !on && p.IsValid() {
			return false
		}
	}
	return true
}

// SameNode reports whether have was published by the node that publishes
// want: the same PublicIP or, when want has none (IPv6-only: 0.0.0.0),
// the same PublicIPv6, as flannel tells its own leases. An absent or
// unspecified address owns nothing.
func SameNode(have, want Attrs) bool {
	if ip := want.PublicIP; ip.IsValid() && !ip.IsUnspecified() {
		return have.PublicIP == ip
	}
	ip := want.PublicIPv6
	return ip.IsValid() && !ip.IsUnspecified() && have.PublicIPv6 == ip
}
