package leasetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
}

// backendType is the BackendType of the suite's leases. A store keeps it
// as it is given, whatever it names; that it is no backend of weft's shows
// that none is interpreted here.
const backendType = "conformance"

func attrs(ip string) lease.Attrs {
	return lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: backendType}
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
	t.Run("Watch", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch := make(chan struct{}, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = h.Store.Watch(wctx, func(lease.Event) { ch <- struct{}{} })
		}()
		waitSignal(t, ch, "the watch going live")
		l, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		waitSignal(t, ch, "acquire")
		h.Delete(t, l.Key())
		waitSignal(t, ch, "delete")
		cancel()
		<-done
	})
	t.Run("Expiry", func(t *testing.T) {
		h := newHarness(t)
		h.PutConfig(t, `{"Network":"10.244.0.0/16"}`)
		if _, err := h.Store.Acquire(ctx, lease.Request{Attrs: attrs("192.0.2.1"), TTL: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			ls, err := h.Store.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) == 0 {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("a lease with a 2s TTL was still there after 15s")
	})
}

func waitSignal(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no watch signal after %s", what)
	}
}

func mustFamily(t *testing.T, h Harness) config.Family {
	t.Helper()
	doc, err := h.Store.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return c.IPv4
}
