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

var testNet = netip.MustParsePrefix("10.244.0.0/16")

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
		err := Check(testNet, tc.l)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%s %s) = %v, want %q", tc.l.Subnet, tc.l.Attrs.PublicIP, err, tc.want)
		}
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
			s := NewSet(testNet, nil)
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
	s := NewSet(testNet, func(l Lease) error {
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
	s := NewSet(testNet, nil)
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

// randomEvent makes events over a small space of subnets, so that overlaps,
// equal ages and replaced keys are frequent.
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
	bits := 18 + r.IntN(7)
	addr := netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(8)), 0})
	if r.IntN(20) == 0 {
		addr = netip.AddrFrom4([4]byte{10, 99, 0, 0})
	}
	p := netip.PrefixFrom(addr, bits).Masked()
	ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(250) + 1)})
	if r.IntN(20) == 0 {
		ip = netip.IPv4Unspecified()
	}
	l := Lease{Subnet: p, Attrs: Attrs{PublicIP: ip, BackendType: []string{"vxlan", "refused"}[r.IntN(2)]}, Created: int64(r.IntN(30))}
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
// starts now, or relists, computes), and so the same on every node.
func TestSetIncrementalEqualsFull(t *testing.T) {
	check := func(l Lease) error {
		if l.Attrs.BackendType == "refused" && l.Attrs.PublicIP.As4()[3]%3 == 0 {
			return errors.New("refused by the backend")
		}
		return nil
	}
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		s := NewSet(testNet, check)
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
			full := NewSet(testNet, check)
			full.Apply(Event{Reset: true, Leases: slices.Collect(maps.Values(final))})
			if got, want := keys(s.Leases()), keys(full.Leases()); !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d (%+v): incremental accepts %v, full %v", seed, step, ev, got, want)
			}
			if got, want := s.Rejected(), full.Rejected(); !maps.Equal(got, want) || s.RejectedCount() != len(want) {
				t.Fatalf("seed %d step %d: incremental rejects %v (count %d), full %v", seed, step, got, s.RejectedCount(), want)
			}
			// No two accepted leases overlap.
			ls := s.Leases()
			for i := range ls {
				for j := i + 1; j < len(ls); j++ {
					if ls[i].Subnet.Overlaps(ls[j].Subnet) {
						t.Fatalf("seed %d step %d: %s and %s both accepted", seed, step, ls[i].Subnet, ls[j].Subnet)
					}
				}
			}
		}
	}
}

func BenchmarkSetPut(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := NewSet(netip.MustParsePrefix("10.0.0.0/8"), nil)
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
		held, v4, _, err := Choose(cfg, tc.leases, req, nil)
		if err != nil || held == nil || v4.String() != tc.want {
			t.Errorf("Choose(%v, prefer %s) = %v, %v; want %s", tc.leases, tc.prefer, v4, err, tc.want)
		}
	}
}
