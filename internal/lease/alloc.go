package lease

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/weftnet/weft/internal/config"
)

// candidates is how many free subnets a new lease picks among at random,
// as flannel does, so racing nodes rarely collide.
const candidates = 100

// Pick chooses a free subnet of fam: the first free one of prefer, else a
// random one among the first free subnets between SubnetMin and SubnetMax.
// taken holds subnets that are leased or reserved. Pure; rnd may be nil.
func Pick(fam config.Family, taken map[netip.Prefix]bool, prefer []netip.Prefix, rnd *rand.Rand) (netip.Prefix, error) {
	for _, p := range prefer {
		if InRange(fam, p) && !taken[p] {
			return p, nil
		}
	}
	total := config.SubnetIndex(fam.SubnetMin, fam.SubnetMax, fam.SubnetLen) + 1
	var free []netip.Prefix
	for i := uint64(0); i < total && len(free) < candidates; i++ {
		p := netip.PrefixFrom(config.NthSubnet(fam.SubnetMin, fam.SubnetLen, i), fam.SubnetLen)
		if !taken[p] {
			free = append(free, p)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("network %s is %w: all %d subnets from %s to %s (/%d) are leased or reserved; enlarge Network or SubnetMin/SubnetMax, or remove stale leases",
			fam.Network, ErrNoFreeSubnet, total, fam.SubnetMin, fam.SubnetMax, fam.SubnetLen)
	}
	if rnd == nil {
		return free[rand.IntN(len(free))], nil
	}
	return free[rnd.IntN(len(free))], nil
}

// InRange reports whether p is a subnet fam may lease.
func InRange(fam config.Family, p netip.Prefix) bool {
	return p.IsValid() && p.Bits() == fam.SubnetLen && p.Masked() == p &&
		fam.Network.Contains(p.Addr()) &&
		p.Addr().Compare(fam.SubnetMin) >= 0 && p.Addr().Compare(fam.SubnetMax) <= 0
}
