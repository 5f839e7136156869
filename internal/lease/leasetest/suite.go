package leasetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// Harness is what the conformance suite needs from a Store under test:
// the store and the operator actions it cannot express itself.
type Harness struct {
	Store     lease.Store
	PutConfig func(t *testing.T, doc string)
	Reserve   func(t *testing.T, l lease.Lease)
	Delete    func(t *testing.T, key string)
	// Lease writes l with a TTL, as another writer (flanneld, whose
	// writes weft's checks do not cover) would, whatever it overlaps.
	Lease func(t *testing.T, l lease.Lease, ttl time.Duration)
}

// backendType is the BackendType of the suite's leases. A store keeps it
// as it is given, whatever it names; that it is no backend of weft's shows
// that none is interpreted here.
const backendType = "conformance"

func attrs(ip string) lease.Attrs {
	return lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: backendType}
}

// The suite's dual-stack and IPv6-only configs.
const (
	dualConfig   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"}`
	v6OnlyConfig = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"}`
)

// dualAttrs are a dual-stack node's attributes, with backend data of each
// family as vxlan publishes it.
func dualAttrs(ip, ip6 string) lease.Attrs {
	a := v6Attrs(ip6)
	a.PublicIP = netip.MustParseAddr(ip)
	a.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`)
	return a
}

// v6Attrs are an IPv6-only node's attributes: no PublicIP.
func v6Attrs(ip6 string) lease.Attrs {
	return lease.Attrs{PublicIPv6: netip.MustParseAddr(ip6), BackendType: backendType,
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}`)}
}

// Run runs the conformance suite. newHarness must return a harness over an
// empty store each time it is called.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	ctx := context.Background()
	t.Run("NoConfig", func(t *testing.T) {
		h := newHarness(t)
		_, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if !errors.Is(err, lease.ErrNoConfig) {
			t.Fatalf("Acquire without config: %v, want ErrNoConfig", err)
		}
	})
	t.Run("AcquireAgainKeepsSubnet", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		a, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if !lease.InRange(mustFamily(t, h), a.Subnet) {
			t.Fatalf("subnet %s out of range", a.Subnet)
		}
		b, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if a.Subnet != b.Subnet {
			t.Fatalf("restart changed the subnet: %s then %s", a.Subnet, b.Subnet)
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != 1 {
			t.Fatalf("List = %v, %v; want exactly one lease", ls, err)
		}
		if _, err := h.Store.Renew(ctx, b); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	})
	t.Run("Prefer", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		want := netip.MustParsePrefix("10.244.77.0/24")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour, Prefer: []netip.Prefix{want}})
		if err != nil || l.Subnet != want {
			t.Fatalf("Acquire with Prefer: %v %v, want %s", l.Subnet, err, want)
		}
		// Another node preferring the same subnet gets a different one.
		l2, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.2"), TTL: time.Hour, Prefer: []netip.Prefix{want}})
		if err != nil || l2.Subnet == want {
			t.Fatalf("second node took a held subnet: %v %v", l2.Subnet, err)
		}
	})
	t.Run("Reservation", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/28"}`) // /30 subnets: .4 .8 .12
		h.Reserve(t, lease.Lease{Subnet: netip.MustParsePrefix("10.244.0.4/30"), Attrs: attrs("192.0.2.9")})
		h.Reserve(t, lease.Lease{Subnet: netip.MustParsePrefix("10.244.0.8/30"), Attrs: attrs("192.0.2.10")})
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil || l.Subnet != netip.MustParsePrefix("10.244.0.12/30") {
			t.Fatalf("Acquire next to reservations: %v %v", l.Subnet, err)
		}
		// The reserved node gets its reservation, still permanent.
		r, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.9"), TTL: time.Hour})
		if err != nil || r.Subnet != netip.MustParsePrefix("10.244.0.4/30") || !r.Reservation() {
			t.Fatalf("reserved node: %v reservation=%v %v", r.Subnet, r.Reservation(), err)
		}
		_, err = h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.2"), TTL: time.Hour})
		if !errors.Is(err, lease.ErrNoFreeSubnet) {
			t.Fatalf("full network: %v, want ErrNoFreeSubnet", err)
		}
	})
	t.Run("Race", func(t *testing.T) {
		h := newHarness(t)
		// SubnetMin/Max leave exactly 16 subnets.
		h.PutConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.16.0"}`)
		const n = 30
		var wg sync.WaitGroup
		results := make([]lease.Lease, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = h.Store.Acquire(ctx, lease.Request{Attrs: attrs(fmt.Sprintf("192.0.2.%d", 10+i)), TTL: time.Hour})
			}()
		}
		wg.Wait()
		seen := map[netip.Prefix]int{}
		ok, full := 0, 0
		for i := range n {
			switch {
			case errs[i] == nil:
				ok++
				if j, dup := seen[results[i].Subnet]; dup {
					t.Errorf("agents %d and %d both hold %s", j, i, results[i].Subnet)
				}
				seen[results[i].Subnet] = i
			case errors.Is(errs[i], lease.ErrNoFreeSubnet):
				full++
			default:
				t.Errorf("agent %d: unexpected error %v", i, errs[i])
			}
		}
		if ok != 16 || full != 14 {
			t.Fatalf("%d leases and %d out-of-subnets errors, want 16 and 14", ok, full)
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != 16 {
			t.Fatalf("List: %d leases, %v", len(ls), err)
		}
	})
	t.Run("RaceDualStack", func(t *testing.T) {
		// Nodes that lease at once must not share a subnet of either
		// family. In dual stack a lease's key names both subnets, so a
		// store that only refuses an existing key lets two nodes that read
		// the same leases take the same IPv6 subnet beside different IPv4
		// ones (or the reverse): CI saw a node route its own IPv6 subnet
		// to a peer.
		h := newHarness(t)
		// 64 subnets of each family, so that random picks collide often.
		h.PutConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.64.0",`+
			`"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","IPv6SubnetMin":"2001:db8:244:1::","IPv6SubnetMax":"2001:db8:244:40::"}`)
		const agents, rounds = 8, 4
		var all []lease.Lease
		for round := range rounds {
			start := make(chan struct{})
			var wg sync.WaitGroup
			results := make([]lease.Lease, agents)
			errs := make([]error, agents)
			for i := range agents {
				n := round*agents + i + 1
				a := dualAttrs(fmt.Sprintf("192.0.2.%d", n), fmt.Sprintf("2001:db8:1::%x", n))
				wg.Go(func() {
					<-start
					results[i], errs[i] = h.Store.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("round %d, agent %d: %v", round, i, err)
				}
			}
			all = append(all, results...)
			if err := overlapping(all); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != agents*rounds {
			t.Fatalf("List: %d leases, %v; want %d", len(ls), err, agents*rounds)
		}
		if err := overlapping(ls); err != nil {
			t.Fatalf("List: %v", err)
		}
	})
	t.Run("WatchReset", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		r := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: attrs("192.0.2.9")}
		h.Reserve(t, r)
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		w := StartWatch(t, h.Store)
		e := w.Next(t)
		if !e.Reset || e.Cause != lease.CauseStart || len(e.Invalid) != 0 {
			t.Fatalf("first event %+v, want a Reset (cause %s) and no invalid record", e, lease.CauseStart)
		}
		got := map[string]lease.Lease{}
		for _, rec := range e.Leases {
			if rec.Err != nil {
				t.Errorf("record %s in Leases with Err %v", rec.Key, rec.Err)
			}
			got[rec.Key] = rec.Lease
		}
		if len(got) != 2 {
			t.Fatalf("Reset holds %d records, want 2: %+v", len(got), e.Leases)
		}
		if g := got[r.Key()]; g.Subnet != r.Subnet || g.Attrs.PublicIP != r.Attrs.PublicIP || !g.Reservation() {
			t.Errorf("reservation in the Reset: %+v", g)
		}
		if g := got[l.Key()]; g.Subnet != l.Subnet || g.Attrs.PublicIP != l.Attrs.PublicIP || g.StoreID != l.StoreID || g.Created != l.Created {
			t.Errorf("lease in the Reset: %+v, want %+v", g, l)
		}
		// The reservation was written first: it is older.
		if got[r.Key()].Created == 0 || got[r.Key()].Created >= got[l.Key()].Created {
			t.Errorf("Created: reservation %d, later lease %d; want 0 < older < newer", got[r.Key()].Created, got[l.Key()].Created)
		}
	})
	t.Run("WatchChanges", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		w := StartWatch(t, h.Store)
		if e := w.Next(t); !e.Reset || len(e.Leases) != 0 {
			t.Fatalf("first event %+v, want an empty Reset", e)
		}
		a, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		e := w.Next(t)
		if e.Reset || e.Deleted || e.Record.Key != a.Key() || e.Record.Err != nil || e.Record.Lease.Attrs.PublicIP != a.Attrs.PublicIP ||
			e.Record.Lease.StoreID != a.StoreID || e.Record.Lease.Created != a.Created {
			t.Fatalf("after Acquire: %+v, want the record of %+v", e, a)
		}
		b, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.2"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if e := w.Next(t); e.Record.Key != b.Key() || e.Record.Lease.Created <= a.Created {
			t.Fatalf("after a second Acquire: %+v, want %s created after %d", e, b.Key(), a.Created)
		}
		// A changed value keeps the record's age.
		h.Reserve(t, lease.Lease{Subnet: a.Subnet, Attrs: attrs("192.0.2.3")})
		if e := w.Next(t); e.Record.Key != a.Key() || e.Record.Lease.Attrs.PublicIP != netip.MustParseAddr("192.0.2.3") || e.Record.Lease.Created != a.Created {
			t.Fatalf("after overwriting %s: %+v, want PublicIP 192.0.2.3 and Created %d", a.Key(), e, a.Created)
		}
		h.Delete(t, a.Key())
		if e := w.Next(t); e.Reset || !e.Deleted || e.Record.Key != a.Key() {
			t.Fatalf("after Delete: %+v, want %s deleted", e, a.Key())
		}
		// Re-created, it is new.
		h.Reserve(t, lease.Lease{Subnet: a.Subnet, Attrs: attrs("192.0.2.1")})
		if e := w.Next(t); e.Deleted || e.Record.Key != a.Key() || e.Record.Lease.Created <= b.Created {
			t.Fatalf("after re-creating %s: %+v, want Created above %d", a.Key(), e, b.Created)
		}
		w.None(t, 200*time.Millisecond)
	})
	t.Run("Reclaim", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		own := attrs("192.0.2.1")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: own, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		w := StartWatch(t, h.Store)
		w.Next(t) // the Reset
		// Someone overwrites the record with another PublicIP.
		h.Reserve(t, lease.Lease{Subnet: l.Subnet, Attrs: attrs("192.0.2.66")})
		w.Next(t)
		req := lease.Request{Attrs: own, TTL: time.Hour, Prefer: []netip.Prefix{l.Subnet}, Reclaim: true}
		r, err := h.Store.Acquire(ctx, req)
		if err != nil {
			t.Fatalf("reclaim: %v", err)
		}
		if r.Subnet != l.Subnet || r.Attrs.PublicIP != own.PublicIP || r.Created != l.Created || r.Reservation() {
			t.Errorf("reclaimed %+v, want %s at %s created %d with a TTL (the forger's record had none)", r, l.Subnet, own.PublicIP, l.Created)
		}
		if e := w.Next(t); e.Record.Key != l.Key() || e.Record.Lease.Attrs.PublicIP != own.PublicIP {
			t.Errorf("watch after reclaim: %+v, want %s at %s", e, l.Key(), own.PublicIP)
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != 1 || ls[0].Attrs.PublicIP != own.PublicIP {
			t.Errorf("List after reclaim: %+v, %v", ls, err)
		}
		// Deleted by someone: written back with a TTL, as a new record.
		h.Delete(t, l.Key())
		w.Next(t)
		r, err = h.Store.Acquire(ctx, req)
		if err != nil {
			t.Fatalf("reclaim after delete: %v", err)
		}
		if r.Subnet != l.Subnet || r.Reservation() || r.Created <= l.Created {
			t.Errorf("reclaimed after delete: %+v, want %s with a TTL, newer than %d", r, l.Subnet, l.Created)
		}
		if e := w.Next(t); e.Record.Key != l.Key() || e.Record.Lease.StoreID != r.StoreID || e.Record.Lease.Created != r.Created {
			t.Errorf("watch after reclaim: %+v, want %+v", e, r)
		}
		if _, err := h.Store.Renew(ctx, r); err != nil {
			t.Errorf("renew the reclaimed lease: %v", err)
		}
		// A reservation stays one.
		res := lease.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Attrs: attrs("192.0.2.9")}
		h.Reserve(t, res)
		r, err = h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.9"), TTL: time.Hour, Prefer: []netip.Prefix{res.Subnet}, Reclaim: true, Reservation: true})
		if err != nil || !r.Reservation() || r.Subnet != res.Subnet {
			t.Errorf("reclaim a reservation: %+v %v, want it still a reservation", r, err)
		}
	})
	t.Run("ReclaimTaken", func(t *testing.T) {
		// A node's record is deleted, and another node takes its IPv6
		// subnet: reclaiming must not write the record back beside it,
		// but lease anew, keeping the IPv4 subnet that is still free.
		h := newHarness(t)
		h.PutConfig(t, dualConfig)
		v4, v6 := netip.MustParsePrefix("10.244.5.0/24"), netip.MustParsePrefix("2001:db8:244:5::/64")
		own := dualAttrs("192.0.2.1", "2001:db8:1::1")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: own, TTL: time.Hour, Prefer: []netip.Prefix{v4, v6}})
		if err != nil || l.Subnet != v4 || l.IPv6Subnet != v6 {
			t.Fatalf("Acquire with Prefer: %s %v, want %s", l.Key(), err, lease.Key(v4, v6))
		}
		h.Delete(t, l.Key())
		peer, err := h.Store.Acquire(ctx, lease.Request{Attrs: dualAttrs("192.0.2.2", "2001:db8:1::2"), TTL: time.Hour, Prefer: []netip.Prefix{v6}})
		if err != nil || peer.IPv6Subnet != v6 {
			t.Fatalf("peer: %s %v, want the IPv6 subnet %s", peer.Key(), err, v6)
		}
		r, err := h.Store.Acquire(ctx, lease.Request{Attrs: own, TTL: time.Hour, Prefer: []netip.Prefix{v4, v6}, Reclaim: true})
		if err != nil {
			t.Fatalf("reclaim: %v", err)
		}
		if r.Overlaps(peer) || r.Attrs.PublicIP != own.PublicIP || r.Reservation() {
			t.Fatalf("reclaimed %s at %s (reservation %v) beside the peer's %s", r.Key(), r.Attrs.PublicIP, r.Reservation(), peer.Key())
		}
		if peer.Subnet != v4 && r.Subnet != v4 {
			t.Errorf("reclaimed %s, want the free IPv4 subnet %s kept", r.Key(), v4)
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != 2 {
			t.Fatalf("List: %+v %v, want 2 leases", ls, err)
		}
		if err := overlapping(ls); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("OverlapGivenUp", func(t *testing.T) {
		// Two nodes hold one IPv6 subnet beside different IPv4 ones
		// (flanneld raced, or someone wrote a lease by hand). Every node
		// rejects the newer lease; its node leases again: a lease that
		// overlaps nothing, keeping its IPv4 subnet, the newer lease gone
		// in the same write, the older one untouched. A reservation that
		// overlaps is an operator's: kept.
		h := newHarness(t)
		h.PutConfig(t, dualConfig)
		a4, b4, c4 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("10.244.3.0/24")
		x6 := netip.MustParsePrefix("2001:db8:244:61::/64")
		older := lease.Lease{Subnet: a4, IPv6Subnet: x6, Attrs: dualAttrs("192.0.2.1", "2001:db8:1::1")}
		newer := lease.Lease{Subnet: b4, IPv6Subnet: x6, Attrs: dualAttrs("192.0.2.2", "2001:db8:1::2")}
		h.Lease(t, older, time.Hour)
		h.Lease(t, newer, time.Hour)
		before, err := h.Store.List(ctx)
		if err != nil || len(before) != 2 {
			t.Fatalf("List: %+v %v, want the 2 leases written", before, err)
		}
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: newer.Attrs, TTL: time.Hour, Prefer: []netip.Prefix{b4, x6}})
		if err != nil {
			t.Fatalf("Acquire by the newer lease's node: %v", err)
		}
		if l.Subnet != b4 || !l.IPv6Subnet.IsValid() || l.IPv6Subnet.Overlaps(x6) || l.Reservation() {
			t.Fatalf("the newer lease's node got %s (reservation %v), want %s beside an IPv6 subnet other than %s", l.Key(), l.Reservation(), b4, x6)
		}
		ls, err := h.Store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := overlapping(ls); err != nil {
			t.Fatal(err)
		}
		keys := map[string]lease.Lease{}
		for _, x := range ls {
			keys[x.Key()] = x
		}
		o, ok := keys[older.Key()]
		if _, still := keys[newer.Key()]; still || !ok || len(keys) != 2 {
			t.Fatalf("leases %v, want %s and %s only (%s deleted)", slices.Sorted(maps.Keys(keys)), older.Key(), l.Key(), newer.Key())
		}
		var was lease.Lease
		for _, x := range before {
			if x.Key() == older.Key() {
				was = x
			}
		}
		if o.Created != was.Created || o.StoreID != was.StoreID || o.Attrs.PublicIP != older.Attrs.PublicIP {
			t.Errorf("the older lease changed: %+v, was %+v", o, was)
		}
		// The older lease's node keeps its lease.
		k, err := h.Store.Acquire(ctx, lease.Request{Attrs: older.Attrs, TTL: time.Hour})
		if err != nil || !k.SameSubnets(older) {
			t.Errorf("the older lease's node got %s %v, want %s", k.Key(), err, older.Key())
		}
		// A reservation that overlaps the older lease is kept.
		res := lease.Lease{Subnet: c4, IPv6Subnet: x6, Attrs: dualAttrs("192.0.2.3", "2001:db8:1::3")}
		h.Reserve(t, res)
		r, err := h.Store.Acquire(ctx, lease.Request{Attrs: res.Attrs, TTL: time.Hour})
		if err != nil || !r.SameSubnets(res) || !r.Reservation() {
			t.Errorf("the reservation's node got %s (reservation %v) %v, want its reservation %s", r.Key(), r.Reservation(), err, res.Key())
		}
	})
	t.Run("DualStack", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, dualConfig)
		a := dualAttrs("192.0.2.1", "2001:db8:1::1")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cfg := mustConfig(t, h)
		if !lease.InRange(cfg.IPv4, l.Subnet) || !lease.InRange(cfg.IPv6, l.IPv6Subnet) {
			t.Fatalf("dual lease %s: a subnet of each family in range wanted", l.Key())
		}
		if want := lease.Key(l.Subnet, l.IPv6Subnet); l.Key() != want || !strings.Contains(want, "&2001:db8:244:") {
			t.Fatalf("key %q", l.Key())
		}
		// Restarted, the node keeps both subnets; another gets others.
		again, err := h.Store.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
		if err != nil || !again.SameSubnets(l) {
			t.Fatalf("restart: %s %v, want %s", again.Key(), err, l.Key())
		}
		b, err := h.Store.Acquire(ctx, lease.Request{Attrs: dualAttrs("192.0.2.2", "2001:db8:1::2"), TTL: time.Hour})
		if err != nil || b.Subnet == l.Subnet || b.IPv6Subnet == l.IPv6Subnet || !b.IPv6Subnet.IsValid() {
			t.Fatalf("second node: %s %v, want other subnets than %s", b.Key(), err, l.Key())
		}
		w := StartWatch(t, h.Store)
		e := w.Next(t)
		if !e.Reset || len(e.Leases) != 2 {
			t.Fatalf("first event %+v, want a Reset with 2 leases", e)
		}
		for _, r := range e.Leases {
			if r.Key != l.Key() {
				continue
			}
			if !r.Lease.SameSubnets(l) || r.Lease.Attrs.PublicIPv6 != a.PublicIPv6 ||
				string(r.Lease.Attrs.BackendV6Data) != string(a.BackendV6Data) || string(r.Lease.Attrs.BackendData) != string(a.BackendData) {
				t.Errorf("dual lease read back as %+v, want %+v", r.Lease, a)
			}
			return
		}
		t.Errorf("the Reset has no record %s: %+v", l.Key(), e.Leases)
	})
	t.Run("IPv6Only", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, v6OnlyConfig)
		a := v6Attrs("2001:db8:1::1")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet.IsValid() || !lease.InRange(mustConfig(t, h).IPv6, l.IPv6Subnet) || !strings.HasPrefix(l.Key(), "0.0.0.0-0&2001:db8:244:") {
			t.Fatalf("IPv6-only lease %q, want 0.0.0.0-0&<IPv6 subnet> (flannel's key)", l.Key())
		}
		// Known by PublicIPv6: restarted, it keeps its subnet.
		again, err := h.Store.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
		if err != nil || !again.SameSubnets(l) {
			t.Fatalf("restart: %s %v, want %s", again.Key(), err, l.Key())
		}
		b, err := h.Store.Acquire(ctx, lease.Request{Attrs: v6Attrs("2001:db8:1::2"), TTL: time.Hour})
		if err != nil || b.IPv6Subnet == l.IPv6Subnet || b.Subnet.IsValid() {
			t.Fatalf("second node: %s %v", b.Key(), err)
		}
		ls, err := h.Store.List(ctx)
		if err != nil || len(ls) != 2 {
			t.Fatalf("List = %+v %v, want 2 leases", ls, err)
		}
		for _, x := range ls {
			if x.SameSubnets(l) && (x.Attrs.PublicIPv6 != a.PublicIPv6 || string(x.Attrs.BackendV6Data) != string(a.BackendV6Data)) {
				t.Errorf("IPv6-only lease read back as %+v", x)
			}
		}
	})
	t.Run("Overlap", func(t *testing.T) {
		h := newHarness(t)
		// 16 subnets; a /20 left by an older config covers 15 of them.
		h.PutConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.16.0"}`)
		h.Reserve(t, lease.Lease{Subnet: netip.MustParsePrefix("10.244.0.0/20"), Attrs: attrs("192.0.2.9")})
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil || l.Subnet != netip.MustParsePrefix("10.244.16.0/24") {
			t.Fatalf("Acquire beside a /20: %s %v, want 10.244.16.0/24, the only subnet it does not overlap", l.Subnet, err)
		}
		if _, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.2"), TTL: time.Hour}); !errors.Is(err, lease.ErrNoFreeSubnet) {
			t.Fatalf("second Acquire: %v, want ErrNoFreeSubnet", err)
		}
	})
	t.Run("StaleOwnLease", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16","SubnetLen":23}`)
		old, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		peer, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.2"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		res := lease.Lease{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Attrs: attrs("192.0.2.1")}
		h.Reserve(t, res)
		w := StartWatch(t, h.Store)
		w.Next(t) // the Reset
		// SubnetLen changes: this node's /23 is deleted, as flannel does;
		// the new /24 overlaps neither it nor the peer's /23, which stays;
		// the operator's reservation stays too.
		h.PutConfig(t, `{"Network":"10.244.0.0/16","SubnetLen":24}`)
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour, Prefer: []netip.Prefix{old.Subnet}})
		if err != nil {
			t.Fatal(err)
		}
		if l.Subnet.Bits() != 24 || l.Subnet.Overlaps(old.Subnet) || l.Subnet.Overlaps(peer.Subnet) {
			t.Fatalf("new lease %s overlaps %s or %s", l.Subnet, old.Subnet, peer.Subnet)
		}
		got := map[string]bool{}
		ls, err := h.Store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ls {
			got[x.Key()] = true
		}
		if got[old.Key()] || !got[peer.Key()] || !got[res.Key()] || !got[l.Key()] || len(got) != 3 {
			t.Fatalf("leases after the change: %v, want %s deleted and %s, %s, %s kept", got, old.Key(), peer.Key(), res.Key(), l.Key())
		}
		deleted := false
		for range 2 {
			if e := w.Next(t); e.Deleted && e.Record.Key == old.Key() {
				deleted = true
			}
		}
		if !deleted {
			t.Errorf("no watch event deleting %s", old.Key())
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		w := StartWatch(t, h.Store)
		if e := w.Next(t); !e.Reset || len(e.Leases) != 1 {
			t.Fatalf("first event %+v, want a Reset with the lease", e)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			ls, err := h.Store.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a lease with a 2s TTL was still there after 15s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if e := w.Next(t); !e.Deleted || e.Record.Key != l.Key() {
			t.Fatalf("watch after the lease expired: %+v, want %s deleted", e, l.Key())
		}
	})
}

// Watcher collects the events of a Store's Watch, run until the test ends.
type Watcher struct {
	events chan lease.Event
	done   chan error
}

// StartWatch runs s.Watch in a goroutine until t ends.
func StartWatch(t *testing.T, s lease.Store) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{events: make(chan lease.Event, 1024), done: make(chan error, 1)}
	go func() { w.done <- s.Watch(ctx, func(e lease.Event) { w.events <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; err != nil {
			t.Errorf("Watch returned %v after its context was canceled, want nil", err)
		}
	})
	return w
}

// Next returns the next event, failing t if none comes within 10 s.
func (w *Watcher) Next(t *testing.T) lease.Event {
	t.Helper()
	select {
	case e := <-w.events:
		return e
	case err := <-w.done:
		t.Fatalf("Watch returned %v while waiting for an event", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return lease.Event{}
}

// None fails t if an event comes within d.
func (w *Watcher) None(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-w.events:
		t.Fatalf("unexpected watch event %+v", e)
	case <-time.After(d):
	}
}

func mustFamily(t *testing.T, h Harness) config.Family { return mustConfig(t, h).IPv4 }

func mustConfig(t *testing.T, h Harness) *config.Config {
	t.Helper()
	doc, err := h.Store.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// overlapping says which two of ls share addresses in a family, or nil.
func overlapping(ls []lease.Lease) error {
	for i := range ls {
		for j := range i {
			for _, f := range lease.Families {
				p, q := *ls[i].SubnetOf(f), *ls[j].SubnetOf(f)
				if p.IsValid() && q.IsValid() && p.Overlaps(q) {
					return fmt.Errorf("leases %s (%s) and %s (%s) overlap in %s",
						ls[j].Key(), ls[j].Attrs.PublicIP, ls[i].Key(), ls[i].Attrs.PublicIP, f)
				}
			}
		}
	}
	return nil
}
