package lease

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/config"
)

// candidates is how many free subnets a new lease picks among at random,
// as flannel does, so racing nodes rarely collide.
const candidates = 100

// Pick chooses a free subnet of fam: the first free one of prefer, else a
// random one among the first free subnets between SubnetMin and SubnetMax.
// held are the subnets of fam's family that leases or reservations hold; a
// subnet is free when it overlaps none of them, so a lease made under
// another SubnetLen keeps every subnet it covers or falls in (flannel's
// allocateSubnet tests overlap too). Pure; rnd may be nil.
func Pick(fam config.Family, held []netip.Prefix, prefer []netip.Prefix, rnd *rand.Rand) (netip.Prefix, error) {
	t := newTaken(held)
	for _, p := range prefer {
		if InRange(fam, p) {
			if _, taken := t.overlap(p); !taken {
				return p, nil
			}
		}
	}
	total := config.SubnetIndex(fam.SubnetMin, fam.SubnetMax, fam.SubnetLen) + 1
	var free []netip.Prefix
	for i := uint64(0); i < total && len(free) < candidates; {
		p := netip.PrefixFrom(config.NthSubnet(fam.SubnetMin, fam.SubnetLen, i), fam.SubnetLen)
		skip, taken := t.overlap(p)
		if !taken {
			free = append(free, p)
			i++
			continue
		}
		if skip == 0 || i+skip < i {
			break // the rest of the range is covered
		}
		i += skip
	}
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("network %s is %w: all %d subnets from %s to %s (/%d) are leased or reserved, or overlap a lease; enlarge Network or SubnetMin/SubnetMax, or remove stale leases",
			fam.Network, ErrNoFreeSubnet, total, fam.SubnetMin, fam.SubnetMax, fam.SubnetLen)
	}
	if rnd == nil {
		return free[rand.IntN(len(free))], nil
	}
	return free[rnd.IntN(len(free))], nil
}

// taken answers whether a candidate subnet overlaps a held one, in a few
// map lookups and one binary search whatever the number of leases.
type taken struct {
	held  map[netip.Prefix]bool
	bits  []int        // the distinct lengths of the held subnets, ascending
	addrs []netip.Addr // the held subnets' addresses, sorted
}

func newTaken(held []netip.Prefix) *taken {
	t := &taken{held: make(map[netip.Prefix]bool, len(held))}
	for _, p := range held {
		p = p.Masked()
		t.held[p] = true
		t.addrs = append(t.addrs, p.Addr())
		if !slices.Contains(t.bits, p.Bits()) {
			t.bits = append(t.bits, p.Bits())
		}
	}
	slices.Sort(t.bits)
	slices.SortFunc(t.addrs, netip.Addr.Compare)
	return t
}

// overlap reports whether p overlaps a held subnet. skip is how many
// subnets of p's length, from p on, are covered by the held subnet that
// contains p (so the caller may jump past it); 1 when p only contains
// held subnets, 0 when the covering subnet reaches beyond 2^64 of them.
func (t *taken) overlap(p netip.Prefix) (skip uint64, ok bool) {
	// A held subnet that contains p: p itself, or an ancestor.
	for _, b := range t.bits {
		if b > p.Bits() {
			break
		}
		q := netip.PrefixFrom(p.Addr(), b).Masked()
		if !t.held[q] {
			continue
		}
		span := p.Bits() - b
		if span >= 64 {
			return 0, true
		}
		return uint64(1)<<span - config.SubnetIndex(q.Addr(), p.Addr(), p.Bits()), true
	}
	// A held subnet inside p: the first held address at or after p's.
	i, _ := slices.BinarySearchFunc(t.addrs, p.Addr(), netip.Addr.Compare)
	if i < len(t.addrs) && p.Contains(t.addrs[i]) {
		return 1, true
	}
	return 0, false
}

// InRange reports whether p is a subnet fam may lease.
func InRange(fam config.Family, p netip.Prefix) bool {
	return p.IsValid() && p.Bits() == fam.SubnetLen && p.Masked() == p &&
		fam.Network.Contains(p.Addr()) &&
		p.Addr().Compare(fam.SubnetMin) >= 0 && p.Addr().Compare(fam.SubnetMax) <= 0
}
