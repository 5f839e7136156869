package lease

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/config"
)

var (
	testNet  = netip.MustParsePrefix("10.244.0.0/16")
	testNet6 = netip.MustParsePrefix("2001:db8:244::/48")
)

func mkLease(subnet, ip string, created int64) Lease {
	return Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan"}, Created: created}
}

func put(l Lease) Event    { return Event{Record: Record{Key: l.Key(), Lease: l}} }
func del(key string) Event { return Event{Record: Record{Key: key}, Deleted: true} }

func keys(ls []Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return out
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		l    Lease
		want string
	}{
		{mkLease("10.244.1.0/24", "192.0.2.11", 1), ""},
		{mkLease("10.99.0.0/24", "192.0.2.11", 1), "outside the network"},
		{mkLease("192.0.2.0/30", "192.0.2.11", 1), "outside the network"},
		{mkLease("10.244.0.0/16", "192.0.2.11", 1), "outside the network"},
		{mkLease("10.244.1.0/24", "0.0.0.0", 1), "not a unicast address"},
		{mkLease("10.244.1.0/24", "127.0.0.1", 1), "not a unicast address"},
		{mkLease("10.244.1.0/24", "224.0.0.1", 1), "not a unicast address"},
		{mkLease("10.244.1.0/24", "255.255.255.255", 1), "not a unicast address"},
		{mkLease("10.244.1.0/24", "10.244.9.1", 1), "inside the cluster network"},
		{Lease{Attrs: Attrs{PublicIP: netip.MustParseAddr("192.0.2.11")}}, "no IPv4 subnet"},
	} {
		err := Check(testNet, netip.Prefix{}, tc.l)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%s %s) = %v, want %q", tc.l.Subnet, tc.l.Attrs.PublicIP, err, tc.want)
		}
	}
}

// dualLease is a dual-stack lease; "" leaves a family out (an IPv6-only
// lease has PublicIP 0.0.0.0, as flannel writes it).
func dualLease(v4, ip4, v6, ip6 string, created int64) Lease {
	l := Lease{Attrs: Attrs{PublicIP: netip.IPv4Unspecified(), BackendType: "vxlan"}, Created: created}
	if v4 != "" {
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(v4), netip.MustParseAddr(ip4)
	}
	if v6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(v6)
	}
	if ip6 != "" {
		l.Attrs.PublicIPv6 = netip.MustParseAddr(ip6)
	}
	return l
}

func TestCheckIPv6(t *testing.T) {
	const sub6, pub6 = "2001:db8:244:3::/64", "2001:db8:1::13"
	for _, tc := range []struct {
		v4, v6 netip.Prefix
		l      Lease
		want   string
	}{
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, pub6, 1), ""},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", "", "", 1), ""}, // an IPv4 node of a cluster going dual
		{testNet, testNet6, dualLease("", "", sub6, pub6, 1), ""},
		{testNet, testNet6, dualLease("", "", "", "", 1), "no IPv4 or IPv6 subnet"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", "2001:db8:999:3::/64", pub6, 1), "subnet 2001:db8:999:3::/64 is outside the network 2001:db8:244::/48"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", "2001:db8:244::/48", pub6, 1), "outside the network"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "", 1), "PublicIPv6 invalid IP is not a unicast address"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "::", 1), "PublicIPv6 :: is not a unicast address"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "::1", 1), "not a unicast address"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "ff02::1", 1), "not a unicast address"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "::ffff:192.0.2.13", 1), "not a unicast address"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", sub6, "2001:db8:244:9::1", 1), "PublicIPv6 2001:db8:244:9::1 is inside the cluster network"},
		{testNet, testNet6, dualLease("10.244.3.0/24", "0.0.0.0", sub6, pub6, 1), "PublicIP 0.0.0.0 is not a unicast address"},
		{netip.Prefix{}, testNet6, dualLease("", "", sub6, pub6, 1), ""},
		{netip.Prefix{}, testNet6, dualLease("10.244.3.0/24", "192.0.2.13", "", "", 1), "no IPv6 subnet"},
		{netip.Prefix{}, testNet6, dualLease("10.99.3.0/24", "0.0.0.0", sub6, pub6, 1), ""}, // IPv4 is not looked at
		{testNet, netip.Prefix{}, dualLease("10.244.3.0/24", "192.0.2.13", "2001:db8:999:3::/64", "", 1), ""},
	} {
		err := Check(tc.v4, tc.v6, tc.l)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%s, %s, %s %s %s) = %v, want %q", tc.v4, tc.v6, tc.l.Key(), tc.l.Attrs.PublicIP, tc.l.Attrs.PublicIPv6, err, tc.want)
		}
	}
}

// In a dual-stack cluster each family is decided on its own: a lease that
// takes an older lease's IPv6 subnet is rejected though its IPv4 subnet is
// free, and comes in when the older one goes; IPv6-only leases are listed
// after those with an IPv4 subnet.
func TestSetDualStack(t *testing.T) {
	s := NewSet(testNet, testNet6, nil)
	a := dualLease("10.244.1.0/24", "192.0.2.11", "2001:db8:244:1::/64", "2001:db8:1::11", 1)
	b := dualLease("10.244.2.0/24", "192.0.2.12", "2001:db8:244:1::/64", "2001:db8:1::12", 2)
	c := dualLease("", "", "2001:db8:244::/64", "2001:db8:1::13", 3)
	d := dualLease("10.244.1.0/25", "192.0.2.14", "2001:db8:244:4::/64", "2001:db8:1::14", 4)
	s.Apply(Event{Reset: true, Leases: []Record{{Key: a.Key(), Lease: a}, {Key: c.Key(), Lease: c}}})
	v := s.Apply(put(b))
	if len(v) != 1 || v[0].Key != b.Key() || v[0].Reason != "overlaps the older lease "+a.Key() {
		t.Fatalf("put %s: verdicts %+v", b.Key(), v)
	}
	v = s.Apply(put(d))
	if len(v) != 1 || v[0].Key != d.Key() || v[0].Reason != "overlaps the older lease "+a.Key() {
		t.Fatalf("put %s: verdicts %+v", d.Key(), v)
	}
	if got, want := keys(s.Leases()), []string{a.Key(), c.Key()}; !slices.Equal(got, want) {
		t.Fatalf("accepted %v, want %v", got, want)
	}
	v = s.Apply(del(a.Key()))
	if got, want := keys(s.Leases()), []string{d.Key(), b.Key(), c.Key()}; !slices.Equal(got, want) {
		t.Fatalf("after deleting %s, accepted %v, want %v (verdicts %+v)", a.Key(), got, want, v)
	}
	if len(v) != 2 || v[0].Key != d.Key() || v[0].Reason != "" || v[1].Key != b.Key() || v[1].Reason != "" {
		t.Fatalf("verdicts %+v", v)
	}
	// An IPv6-only cluster: the same IPv4 subnet twice is no overlap.
	s6 := NewSet(netip.Prefix{}, testNet6, nil)
	e := dualLease("10.244.1.0/24", "192.0.2.15", "2001:db8:244:5::/64", "2001:db8:1::15", 5)
	f := dualLease("10.244.1.0/24", "192.0.2.16", "2001:db8:244:6::/64", "2001:db8:1::16", 6)
	s6.Apply(put(e))
	if v := s6.Apply(put(f)); len(v) != 0 {
		t.Fatalf("IPv6-only: verdicts %+v", v)
	}
	if got, want := keys(s6.Leases()), []string{e.Key(), f.Key()}; !slices.Equal(got, want) {
		t.Fatalf("IPv6-only: accepted %v, want %v", got, want)
	}
}

// The section 2 cases of the issue, as a table: each forged record is
// rejected, once, and the owner's lease stays.
func TestSetRejectsForgedLeases(t *testing.T) {
	n2 := mkLease("10.244.2.0/24", "192.0.2.12", 10)
	for _, tc := range []struct {
		name  string
		forge Record
		want  string
	}{
		{"a /25 inside another's /24", Record{Key: "10.244.2.0-25", Lease: mkLease("10.244.2.0/25", "192.0.2.66", 20)}, "overlaps the older lease 10.244.2.0-24"},
		{"a second key for the same /24", Record{Key: "10.244.2.0-24&2001:db8::-64", Lease: mkLease("10.244.2.0/24", "192.0.2.66", 20)}, "overlaps the older lease 10.244.2.0-24"},
		{"a lease holding the whole network", Record{Key: "10.244.0.0-17", Lease: mkLease("10.244.0.0/17", "192.0.2.66", 20)}, "overlaps the older lease 10.244.2.0-24"},
		{"outside the network", Record{Key: "192.0.2.0-30", Lease: mkLease("192.0.2.0/30", "192.0.2.66", 20)}, "outside the network"},
		{"PublicIP 0.0.0.0", Record{Key: "10.244.7.0-24", Lease: mkLease("10.244.7.0/24", "0.0.0.0", 20)}, "not a unicast address"},
		{"a value that does not decode", Record{Key: "10.244.8.0-24", Err: errors.New("decode lease value: " + strings.Repeat("x", 1000))}, "decode lease value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSet(testNet, netip.Prefix{}, nil)
			s.Apply(Event{Reset: true, Leases: []Record{{Key: n2.Key(), Lease: n2}}})
			v := s.Apply(Event{Record: tc.forge})
			if len(v) != 1 || v[0].Key != tc.forge.Key || !strings.Contains(v[0].Reason, tc.want) || len(v[0].Reason) > reasonLimit+3 {
				t.Fatalf("verdicts %+v, want one rejecting %s: %q", v, tc.forge.Key, tc.want)
			}
			if got := keys(s.Leases()); !slices.Equal(got, []string{n2.Key()}) {
				t.Fatalf("accepted %v, want only the owner's", got)
			}
			// The same record again (a resync, a re-put) says nothing new.
			if v := s.Apply(Event{Record: tc.forge}); len(v) != 0 {
				t.Fatalf("second time: verdicts %+v, want none", v)
			}
			// Deleted: its rejection is withdrawn, the owner stays.
			if v := s.Apply(del(tc.forge.Key)); len(v) != 1 || !v[0].Deleted {
				t.Fatalf("delete: verdicts %+v", v)
			}
			if got := keys(s.Leases()); !slices.Equal(got, []string{n2.Key()}) {
				t.Fatalf("after delete, accepted %v", got)
			}
		})
	}
}

func TestSetBackendCheck(t *testing.T) {
	s := NewSet(testNet, netip.Prefix{}, func(l Lease) error {
		if l.Attrs.BackendType == "vxlan" && string(l.Attrs.BackendData) == `{"VtepMAC":"00:00:00:00:00:00"}` {
			return errors.New("VtepMAC 00:00:00:00:00:00 is not a unicast MAC")
		}
		return nil
	})
	bad := mkLease("10.244.3.0/24", "192.0.2.13", 1)
	bad.Attrs.BackendData = []byte(`{"VtepMAC":"00:00:00:00:00:00"}`)
	v := s.Apply(put(bad))
	if len(v) != 1 || !strings.Contains(v[0].Reason, "not a unicast MAC") {
		t.Fatalf("verdicts %+v", v)
	}
	if len(s.Leases()) != 0 {
		t.Fatal("a lease the backend refuses was accepted")
	}
}

// An older lease that is deleted lets the younger one it shadowed in; a
// chain of overlaps is decided from the oldest down.
func TestSetOverlapChain(t *testing.T) {
	s := NewSet(testNet, netip.Prefix{}, nil)
	a := mkLease("10.244.0.0/22", "192.0.2.1", 1) // oldest, holds b's subnet
	b := mkLease("10.244.2.0/23", "192.0.2.2", 2) // inside a, holds c
	c := mkLease("10.244.3.0/24", "192.0.2.3", 3) // inside b and a
	d := mkLease("10.244.8.0/24", "192.0.2.4", 4) // apart
	for _, l := range []Lease{c, b, a, d} {
		s.Apply(put(l))
	}
	if got := keys(s.Leases()); !slices.Equal(got, []string{a.Key(), d.Key()}) {
		t.Fatalf("accepted %v", got)
	}
	v := s.Apply(del(a.Key()))
	if got := keys(s.Leases()); !slices.Equal(got, []string{b.Key(), d.Key()}) {
		t.Fatalf("after deleting the oldest, accepted %v", got)
	}
	if len(v) != 2 || v[0].Key != b.Key() || v[0].Reason != "" || v[1].Key != c.Key() || !strings.Contains(v[1].Reason, b.Key()) {
		t.Fatalf("verdicts %+v", v)
	}
}

// OlderOverlaps decides as a Set does (without a backend check, with keys
// as Key writes them): the same leases lose, each to the same older key;
// Overlapped names it, and only for a loss to an overlap.
func TestOlderOverlapsAgreesWithSet(t *testing.T) {
	for _, nets := range [][2]netip.Prefix{{testNet, {}}, {testNet, testNet6}, {{}, testNet6}} {
		losers := 0
		for seed := range uint64(200) {
			r := rand.New(rand.NewPCG(seed, 11))
			byKey := map[string]Lease{}
			for range 12 {
				if ev := randomEvent(r, nil); !ev.Reset && ev.Record.Err == nil && ev.Record.Key == ev.Record.Lease.Key() {
					byKey[ev.Record.Key] = ev.Record.Lease
				}
			}
			ls := slices.Collect(maps.Values(byKey))
			s := NewSet(nets[0], nets[1], nil)
			var recs []Record
			for _, l := range ls {
				recs = append(recs, Record{Key: l.Key(), Lease: l})
			}
			s.Apply(Event{Reset: true, Leases: recs})
			over := OlderOverlaps(nets[0], nets[1], ls)
			losers += len(over)
			for i, l := range ls {
				want := ""
				if j, ok := over[i]; ok {
					want = ls[j].Key()
				}
				if got := s.Overlapped(l.Key()); got != want {
					t.Fatalf("nets %v seed %d: %s: Set says it overlaps the older %q, OlderOverlaps %q", nets, seed, l.Key(), got, want)
				}
				if reason := s.Rejected()[l.Key()]; want != "" && reason != "overlaps the older lease "+want {
					t.Fatalf("nets %v seed %d: %s rejected for %q, want an overlap with %s", nets, seed, l.Key(), reason, want)
				}
			}
		}
		if losers < 100 {
			t.Errorf("nets %v: only %d leases lost to an older one in 200 sets; the test hardly tests", nets, losers)
		}
	}
}

// randomEvent makes events over a small space of subnets, so that overlaps,
// equal ages and replaced keys are frequent. Leases get an IPv4 subnet, an
// IPv6 subnet or both.
func randomEvent(r *rand.Rand, live []string) Event {
	if len(live) > 0 && r.IntN(4) == 0 {
		return del(live[r.IntN(len(live))])
	}
	if r.IntN(40) == 0 {
		var recs []Record
		for range r.IntN(8) {
			recs = append(recs, randomEvent(r, nil).Record)
		}
		return Event{Reset: true, Leases: recs}
	}
	l := Lease{Attrs: Attrs{PublicIP: netip.IPv4Unspecified(), BackendType: []string{"vxlan", "refused"}[r.IntN(2)]}, Created: int64(r.IntN(30))}
	fams := r.IntN(4) // 0: IPv4, 1: IPv6, else both
	if fams != 1 {
		addr := netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(8)), 0})
		if r.IntN(20) == 0 {
			addr = netip.AddrFrom4([4]byte{10, 99, 0, 0})
		}
		l.Subnet = netip.PrefixFrom(addr, 18+r.IntN(7)).Masked()
		l.Attrs.PublicIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(250) + 1)})
		if r.IntN(20) == 0 {
			l.Attrs.PublicIP = netip.IPv4Unspecified()
		}
	}
	if fams != 0 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0x02, 0x44, byte(r.IntN(8))}
		if r.IntN(20) == 0 {
			a[4] = 0x09
		}
		l.IPv6Subnet = netip.PrefixFrom(netip.AddrFrom16(a), 50+r.IntN(7)).Masked()
		l.Attrs.PublicIPv6 = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(r.IntN(250) + 1)})
		if r.IntN(20) == 0 {
			l.Attrs.PublicIPv6 = netip.IPv6Unspecified()
		}
	}
	key := l.Key()
	switch r.IntN(10) {
	case 0:
		key = fmt.Sprintf("node/n%d", r.IntN(6))
	case 1:
		return Event{Record: Record{Key: fmt.Sprintf("bad-%d", r.IntN(4)), Err: errors.New("decode lease value: bad")}}
	}
	return Event{Record: Record{Key: key, Lease: l}}
}

// Any sequence of events applied one by one gives the same accepted leases
// and rejections as the final records given at once (what a node that
// starts now, or relists, computes), and so the same on every node: in an
// IPv4, a dual-stack and an IPv6-only cluster.
func TestSetIncrementalEqualsFull(t *testing.T) {
	check := func(l Lease) error {
		if l.Attrs.BackendType == "refused" && (l.Attrs.PublicIP.As4()[3]+l.Attrs.PublicIPv6.As16()[15])%3 == 0 {
			return errors.New("refused by the backend")
		}
		return nil
	}
	for _, nets := range [][2]netip.Prefix{{testNet, {}}, {testNet, testNet6}, {{}, testNet6}} {
		t.Run(fmt.Sprintf("%s,%s", nets[0], nets[1]), func(t *testing.T) {
			accepted := 0
			for seed := range uint64(100) {
				r := rand.New(rand.NewPCG(seed, 7))
				s := NewSet(nets[0], nets[1], check)
				final := map[string]Record{}
				for step := range 150 {
					ev := randomEvent(r, slices.Sorted(maps.Keys(final)))
					s.Apply(ev)
					switch {
					case ev.Reset:
						final = map[string]Record{}
						for _, rec := range ev.Leases {
							final[rec.Key] = rec
						}
					case ev.Deleted:
						delete(final, ev.Record.Key)
					default:
						final[ev.Record.Key] = ev.Record
					}
					full := NewSet(nets[0], nets[1], check)
					full.Apply(Event{Reset: true, Leases: slices.Collect(maps.Values(final))})
					if got, want := keys(s.Leases()), keys(full.Leases()); !slices.Equal(got, want) {
						t.Fatalf("seed %d step %d (%+v): incremental accepts %v, full %v", seed, step, ev, got, want)
					}
					if got, want := s.Rejected(), full.Rejected(); !maps.Equal(got, want) || s.RejectedCount() != len(want) {
						t.Fatalf("seed %d step %d: incremental rejects %v (count %d), full %v", seed, step, got, s.RejectedCount(), want)
					}
					// No two accepted leases overlap in a family the
					// cluster runs, and each has a subnet of one.
					ls := s.Leases()
					accepted += len(ls)
					for i := range ls {
						if !(nets[0].IsValid() && ls[i].Subnet.IsValid() || nets[1].IsValid() && ls[i].IPv6Subnet.IsValid()) {
							t.Fatalf("seed %d step %d: %s accepted without a subnet of the cluster's families", seed, step, ls[i].Key())
						}
						for j := i + 1; j < len(ls); j++ {
							if nets[0].IsValid() && ls[i].Subnet.IsValid() && ls[i].Subnet.Overlaps(ls[j].Subnet) ||
								nets[1].IsValid() && ls[i].IPv6Subnet.IsValid() && ls[i].IPv6Subnet.Overlaps(ls[j].IPv6Subnet) {
								t.Fatalf("seed %d step %d: %s and %s both accepted", seed, step, ls[i].Key(), ls[j].Key())
							}
						}
					}
				}
			}
			if accepted == 0 {
				t.Fatal("no lease was ever accepted: the test tests nothing")
			}
		})
	}
}

func BenchmarkSetPut(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := NewSet(netip.MustParsePrefix("10.0.0.0/8"), netip.Prefix{}, nil)
			var recs []Record
			for i := range n {
				l := Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Attrs: Attrs{PublicIP: netip.MustParseAddr("192.0.2.1")}, Created: int64(i)}
				recs = append(recs, Record{Key: l.Key(), Lease: l})
			}
			s.Apply(Event{Reset: true, Leases: recs})
			extra := Lease{Subnet: netip.MustParsePrefix("10.200.0.0/24"), Attrs: Attrs{PublicIP: netip.MustParseAddr("192.0.2.2")}, Created: int64(n)}
			b.ResetTimer()
			for range b.N {
				s.Apply(put(extra))
				s.Apply(del(extra.Key()))
			}
		})
	}
}

// Of several leases a node's address holds, a reservation wins, then the
// subnet the node asks for, then the lowest key: the same whatever the
// store's order.
func TestChooseAmongOwnLeases(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	own := Attrs{PublicIP: netip.MustParseAddr("192.0.2.1")}
	dyn := func(s string) Lease { return Lease{Subnet: netip.MustParsePrefix(s), Attrs: own, StoreID: 7} }
	res := Lease{Subnet: netip.MustParsePrefix("10.244.250.0/24"), Attrs: own}
	for _, tc := range []struct {
		leases []Lease
		prefer string
		want   string
	}{
		{[]Lease{dyn("10.244.3.0/24"), res}, "10.244.3.0/24", "10.244.250.0/24"},
		{[]Lease{res, dyn("10.244.3.0/24")}, "10.244.3.0/24", "10.244.250.0/24"},
		{[]Lease{dyn("10.244.3.0/24"), dyn("10.244.9.0/24")}, "10.244.9.0/24", "10.244.9.0/24"},
		{[]Lease{dyn("10.244.9.0/24"), dyn("10.244.3.0/24")}, "", "10.244.3.0/24"},
	} {
		req := Request{Attrs: own}
		if tc.prefer != "" {
			req.Prefer = []netip.Prefix{netip.MustParsePrefix(tc.prefer)}
		}
		c, err := Choose(cfg, tc.leases, req, nil)
		if err != nil || c.Held == nil || c.Subnet.String() != tc.want {
			t.Errorf("Choose(%v, prefer %s) = %v, %v; want %s", tc.leases, tc.prefer, c.Subnet, err, tc.want)
		}
	}
}
