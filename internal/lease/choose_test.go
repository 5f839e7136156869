package lease

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/config"
)

func mustConfig(t *testing.T, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// TestPickOverlap: a subnet that overlaps a held one of another length is
// taken, whether the held one contains it or lies inside it; only the
// others are ever picked, preferred or random.
func TestPickOverlap(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.5.0"}`)
	held := []netip.Prefix{
		pfx("10.244.0.0/23"),   // an old /23 lease covers 10.244.1.0/24
		pfx("10.244.4.128/25"), // an old /25 lease lies inside 10.244.4.0/24
	}
	free := map[netip.Prefix]bool{pfx("10.244.2.0/24"): true, pfx("10.244.3.0/24"): true, pfx("10.244.5.0/24"): true}
	rnd := rand.New(rand.NewPCG(1, 2))
	seen := map[netip.Prefix]bool{}
	for range 200 {
		p, err := Pick(cfg.IPv4, held, nil, rnd)
		if err != nil || !free[p] {
			t.Fatalf("Pick = %v %v, want one of %v", p, err, free)
		}
		seen[p] = true
	}
	if len(seen) != len(free) {
		t.Errorf("200 random picks gave %v, want every free subnet of %v", seen, free)
	}
	p, err := Pick(cfg.IPv4, held, []netip.Prefix{pfx("10.244.1.0/24"), pfx("10.244.4.0/24"), pfx("10.244.3.0/24")}, nil)
	if err != nil || p != pfx("10.244.3.0/24") {
		t.Errorf("Pick with overlapping preferences = %v %v, want 10.244.3.0/24", p, err)
	}
	held = append(held, pfx("10.244.2.0/23"), pfx("10.244.5.0/24"))
	if p, err := Pick(cfg.IPv4, held, nil, nil); !errors.Is(err, ErrNoFreeSubnet) {
		t.Errorf("Pick in a covered range = %v %v, want ErrNoFreeSubnet", p, err)
	}
}

// TestPickSkipsCoveredRange: a held IPv6 prefix covering 2^31 candidate
// /64s is jumped over, not walked.
func TestPickSkipsCoveredRange(t *testing.T) {
	cfg := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/32","IPv6SubnetMin":"2001:db8::"}`)
	held := []netip.Prefix{pfx("2001:db8::/33"), pfx("2001:db8:8000::/64")}
	start := time.Now()
	for range 50 {
		p, err := Pick(cfg.IPv6, held, nil, nil)
		if err != nil || !pfx("2001:db8:8000::/33").Contains(p.Addr()) || p == pfx("2001:db8:8000::/64") || p.Bits() != 64 {
			t.Fatalf("Pick = %v %v, want a free /64 in 2001:db8:8000::/33", p, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("50 picks took %s", d)
	}
	held = []netip.Prefix{pfx("2001:db8::/32")}
	if _, err := Pick(cfg.IPv6, held, nil, nil); !errors.Is(err, ErrNoFreeSubnet) {
		t.Errorf("Pick under a lease of the whole network: %v, want ErrNoFreeSubnet", err)
	}
}

func own(ip string, subnets ...string) Lease {
	l := Lease{Attrs: Attrs{PublicIP: addr(ip), BackendType: "vxlan"}, StoreID: 7}
	for _, s := range subnets {
		p := pfx(s)
		if p.Addr().Is4() {
			l.Subnet = p
		} else {
			l.IPv6Subnet = p
		}
	}
	return l
}

// TestChooseStale: a lease of this node's public IP that the config does
// not allow (another SubnetLen, outside the range, missing or extra
// family) is stale and to be deleted, a reservation such is kept and
// reported, and both stay taken; a compatible lease is reused.
func TestChooseStale(t *testing.T) {
	v4 := mustConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.4.0"}`)
	dual := mustConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.4.0","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"}`)
	req := Request{Attrs: Attrs{PublicIP: addr("192.0.2.1"), PublicIPv6: addr("2001:db8:1::1")}}
	reservation := own("192.0.2.1", "10.99.0.0/24")
	reservation.StoreID = 0
	for _, tc := range []struct {
		name       string
		cfg        *config.Config
		leases     []Lease
		held       string // key of the lease reused, "" for a new one
		stale      []string
		unusable   []string
		notOverlap []string
	}{
		{name: "another SubnetLen", cfg: v4,
			leases: []Lease{own("192.0.2.1", "10.244.0.0/23"), own("192.0.2.2", "10.244.3.0/24")},
			stale:  []string{"10.244.0.0-23"}, notOverlap: []string{"10.244.0.0/23", "10.244.3.0/24"}},
		{name: "outside the range, and a reservation", cfg: v4,
			leases: []Lease{own("192.0.2.1", "10.244.9.0/24"), reservation, own("192.0.2.2", "10.244.1.0/24")},
			stale:  []string{"10.244.9.0-24"}, unusable: []string{"10.99.0.0-24"}, notOverlap: []string{"10.244.1.0/24"}},
		{name: "IPv6 enabled since", cfg: dual,
			leases: []Lease{own("192.0.2.1", "10.244.2.0/24")},
			stale:  []string{"10.244.2.0-24"}, notOverlap: []string{"10.244.2.0/24"}},
		{name: "IPv6 disabled since", cfg: v4,
			leases: []Lease{own("192.0.2.1", "10.244.2.0/24", "2001:db8:244:1::/64")},
			stale:  []string{"10.244.2.0-24&2001:db8:244:1::-64"}, notOverlap: []string{"10.244.2.0/24"}},
		{name: "compatible dual lease reused, stale one deleted", cfg: dual,
			leases: []Lease{own("192.0.2.1", "10.244.2.0/24", "2001:db8:244:1::/64"), own("192.0.2.1", "10.244.0.0/22", "2001:db8:244:2::/64")},
			held:   "10.244.2.0-24&2001:db8:244:1::-64", stale: []string{"10.244.0.0-22&2001:db8:244:2::-64"}},
		{name: "other nodes' incompatible leases are not ours", cfg: v4,
			leases:     []Lease{own("192.0.2.2", "10.244.0.0/23"), own("192.0.2.3", "10.244.9.0/24")},
			notOverlap: []string{"10.244.0.0/23"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Choose(tc.cfg, tc.leases, req, rand.New(rand.NewPCG(3, 4)))
			if err != nil {
				t.Fatal(err)
			}
			if got := keyOf(c.Held); got != tc.held {
				t.Errorf("Held = %q, want %q", got, tc.held)
			}
			if got := leaseKeys(c.Stale); !slices.Equal(got, tc.stale) {
				t.Errorf("Stale = %v, want %v", got, tc.stale)
			}
			if got := leaseKeys(c.Unusable); !slices.Equal(got, tc.unusable) {
				t.Errorf("Unusable = %v, want %v", got, tc.unusable)
			}
			chosen := Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet}
			if !Compatible(tc.cfg, chosen) {
				t.Errorf("chose %s, which the config does not allow", chosen.Key())
			}
			for _, s := range tc.notOverlap {
				if p := pfx(s); c.Held == nil && p.Overlaps(c.Subnet) {
					t.Errorf("chose %s, which overlaps the live lease %s", c.Subnet, p)
				}
			}
		})
	}
}

// TestChooseIPv6Only: with IPv4 disabled a node is known by PublicIPv6;
// an unspecified or absent PublicIP owns nothing.
func TestChooseIPv6Only(t *testing.T) {
	cfg := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"}`)
	mine := Lease{IPv6Subnet: pfx("2001:db8:244:5::/64"), StoreID: 1,
		Attrs: Attrs{PublicIP: addr("0.0.0.0"), PublicIPv6: addr("2001:db8:1::1")}}
	other := Lease{IPv6Subnet: pfx("2001:db8:244:6::/64"), StoreID: 2,
		Attrs: Attrs{PublicIP: addr("0.0.0.0"), PublicIPv6: addr("2001:db8:1::2")}}
	req := Request{Attrs: Attrs{PublicIPv6: addr("2001:db8:1::1")}}
	c, err := Choose(cfg, []Lease{other, mine}, req, nil)
	if err != nil || keyOf(c.Held) != "0.0.0.0-0&2001:db8:244:5::-64" {
		t.Fatalf("Choose = %+v %v, want the lease of 2001:db8:1::1", c, err)
	}
	req.Attrs.PublicIPv6 = addr("2001:db8:1::3")
	req.Attrs.PublicIP = addr("0.0.0.0")
	c, err = Choose(cfg, []Lease{other, mine}, req, nil)
	if err != nil || c.Held != nil || c.Subnet.IsValid() || !InRange(cfg.IPv6, c.IPv6Subnet) ||
		c.IPv6Subnet == mine.IPv6Subnet || c.IPv6Subnet == other.IPv6Subnet {
		t.Fatalf("a new IPv6-only node: %+v %v, want a new free IPv6 subnet and no IPv4 one", c, err)
	}
}

// TestChooseDual: a new dual-stack lease has a free subnet of each family,
// each picked apart from the other family's leases.
func TestChooseDual(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.244.0.0/24","SubnetLen":26,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/62","IPv6SubnetLen":64}`)
	// IPv4 subnets: .64 .128 .192; IPv6: :1 :2 :3.
	leases := []Lease{own("192.0.2.2", "10.244.0.64/26", "2001:db8:244:1::/64"), own("192.0.2.3", "10.244.0.128/26", "2001:db8:244:2::/63")}
	c, err := Choose(cfg, leases, Request{Attrs: Attrs{PublicIP: addr("192.0.2.1"), PublicIPv6: addr("2001:db8:1::1")}}, nil)
	// 2001:db8:244:2::/63 covers :2 and :3, :1 is held: no IPv6 subnet is free.
	if !errors.Is(err, ErrNoFreeSubnet) || c.Held != nil || c.Subnet.IsValid() {
		t.Fatalf("Choose = %+v %v, want out of IPv6 subnets", c, err)
	}
	leases[1].IPv6Subnet = pfx("2001:db8:244:2::/64")
	c, err = Choose(cfg, leases, Request{Attrs: Attrs{PublicIP: addr("192.0.2.1"), PublicIPv6: addr("2001:db8:1::1")}}, nil)
	if err != nil || c.Subnet != pfx("10.244.0.192/26") || c.IPv6Subnet != pfx("2001:db8:244:3::/64") {
		t.Fatalf("Choose = %+v %v, want 10.244.0.192/26 and 2001:db8:244:3::/64", c, err)
	}
}

func keyOf(l *Lease) string {
	if l == nil {
		return ""
	}
	return l.Key()
}

func leaseKeys(ls []Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return out
}

// TestChooseOverlapping: a node whose lease overlaps an older one (the
// lease every node's Set rejects) does not get it back: it is stale, with
// the older key named, and the new lease keeps the subnet of the family
// that did not overlap. Older is lower Created, then lower key, as in Set;
// a reservation is kept, and a lease that is the older one is kept.
func TestChooseOverlapping(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"}`)
	node := func(n int, v4, v6 string, created int64) Lease {
		return Lease{Subnet: pfx(v4), IPv6Subnet: pfx(v6), StoreID: int64(n), Created: created,
			Attrs: Attrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(n)}), PublicIPv6: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(n)})}}
	}
	x6 := "2001:db8:244:61::/64"
	req := Request{Attrs: node(2, "10.244.2.0/24", x6, 0).Attrs, Prefer: []netip.Prefix{pfx("10.244.2.0/24"), pfx(x6)}}
	for _, tc := range []struct {
		name        string
		peer, mine  Lease
		reservation bool
		gives       bool // the node's lease is stale
	}{
		{name: "newer", peer: node(1, "10.244.1.0/24", x6, 5), mine: node(2, "10.244.2.0/24", x6, 9), gives: true},
		{name: "as old, greater key", peer: node(1, "10.244.1.0/24", x6, 5), mine: node(2, "10.244.2.0/24", x6, 5), gives: true},
		{name: "as old, smaller key", peer: node(1, "10.244.3.0/24", x6, 5), mine: node(2, "10.244.2.0/24", x6, 5)},
		{name: "older", peer: node(1, "10.244.1.0/24", x6, 9), mine: node(2, "10.244.2.0/24", x6, 5)},
		{name: "newer reservation", peer: node(1, "10.244.1.0/24", x6, 5), mine: node(2, "10.244.2.0/24", x6, 9), reservation: true},
		{name: "a subnet inside the older one's", peer: node(1, "10.244.1.0/24", "2001:db8:244:60::/62", 5), mine: node(2, "10.244.2.0/24", x6, 9), gives: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.reservation {
				tc.mine.StoreID = 0
			}
			c, err := Choose(cfg, []Lease{tc.mine, tc.peer}, req, rand.New(rand.NewPCG(1, 2)))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.gives {
				if keyOf(c.Held) != tc.mine.Key() || len(c.Stale) != 0 || c.Overlapping != nil {
					t.Fatalf("Choose = %+v, want the node's lease %s held", c, tc.mine.Key())
				}
				return
			}
			if c.Held != nil || !slices.Equal(leaseKeys(c.Stale), []string{tc.mine.Key()}) || c.Overlapping[tc.mine.Key()] != tc.peer.Key() || len(c.Overlapping) != 1 {
				t.Fatalf("Choose = held %q, stale %v, overlapping %v; want %s stale, overlapping %s", keyOf(c.Held), leaseKeys(c.Stale), c.Overlapping, tc.mine.Key(), tc.peer.Key())
			}
			chosen := Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet}
			if chosen.Overlaps(tc.peer) || c.Subnet != tc.mine.Subnet || !Compatible(cfg, chosen) {
				t.Fatalf("chose %s beside %s, want %s kept and an IPv6 subnet apart", chosen.Key(), tc.peer.Key(), tc.mine.Subnet)
			}
		})
	}
}
