package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
)

// cachedNode is a Cached kernel over a fake, with its subscription running.
type cachedNode struct {
	*kernel.Cached
	f       *kerneltest.Fake
	changed atomic.Int64 // calls of Run's changed
	runErr  chan error   // what Run returned
}

// startCached wraps f in a Cached kernel and runs its subscription until
// the test ends; it returns once the subscription is live.
func startCached(t *testing.T, f *kerneltest.Fake) *cachedNode {
	t.Helper()
	n := &cachedNode{Cached: kernel.NewCached(f, f), f: f, runErr: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { n.runErr <- n.Run(ctx, func() { n.changed.Add(1) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-n.runErr; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !n.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the subscription did not become live")
		}
	}
	return n
}

// settle waits until the subscription has delivered every change so far
// and returns how many times changed was called since the last settle.
func (n *cachedNode) settle(last *int64) int64 {
	n.f.Flush()
	now := n.changed.Load()
	d := now - *last
	*last = now
	return d
}

// sameAsKernel checks that what the mirror answers is what the fake has.
func sameAsKernel(t *testing.T, n *cachedNode, scope kernel.Scope) {
	t.Helper()
	for _, k := range []kernel.Kernel{n, n.f} {
		if _, err := k.Routes(); err != nil {
			t.Fatal(err)
		}
	}
	mr, _ := n.Routes()
	fr, _ := n.f.Routes()
	if !reflect.DeepEqual(mr, fr) {
		t.Errorf("the mirror's routes\n%v\ndiffer from the kernel's\n%v", mr, fr)
	}
	mine, err := kernel.Read(n, scope)
	must(t, err)
	theirs, err := kernel.Read(n.f, scope)
	must(t, err)
	if !reflect.DeepEqual(mine, theirs) {
		t.Errorf("the mirror\n%+v\ndiffers from the kernel\n%+v", mine, theirs)
	}
}

func TestCachedEchoOfItsOwnWritesCallsNothing(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	n := startCached(t, f)
	var seen int64
	ctx := context.Background()
	_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	golden(t, "apply through the cache", f.Writes(), `
		bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 192.0.2.13 self permanent
		ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
		ip route replace 10.244.6.0/24 via 192.0.2.14 dev eth0
		ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink
		ip neigh del 10.244.9.0 dev flannel.1
		bridge fdb del 0e:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self
		bridge fdb del 0e:00:00:00:00:15 dev flannel.1 dst 192.0.2.13 self
	`)
	if d := n.settle(&seen); d != 0 {
		t.Errorf("the echo of weft's own writes called changed %d times", d)
	}
	if got := n.Dumps(); got != 3 {
		t.Errorf("%d dumps, want 3 (routes, flannel.1's neighbours and FDB)", got)
	}
	sameAsKernel(t, n, scope)
	dumps := n.Dumps()
	added, removed, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	golden(t, "second apply", f.Writes(), ``)
	if added+removed != 0 || n.Dumps() != dumps {
		t.Errorf("a sync with nothing to do wrote %d, dumped %d tables", added+removed, n.Dumps()-dumps)
	}
	// A link the mirror has nothing of comes and goes: nothing happens.
	f.AddDevice(kernel.Link{Name: "veth1", Kind: "veth", MTU: 1500, Up: true})
	f.RemoveDevice("veth1")
	if d := n.settle(&seen); d != 0 || n.Dumps() != dumps {
		t.Errorf("an unrelated link called changed %d times, dumped %d tables", d, n.Dumps()-dumps)
	}
}

func TestCachedHandDeletionIsReportedAndRestored(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	n := startCached(t, f)
	var seen int64
	ctx := context.Background()
	_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	f.Writes()
	n.settle(&seen)
	dumps := n.Dumps()
	for _, tc := range []struct {
		what    string
		by      func()
		restore string
	}{
		{"route", func() { f.RemoveRoute(p("10.244.4.0/24")) }, "ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink"},
		{"neighbour", func() { f.RemoveNeigh(dev.Name, a("10.244.5.0")) }, "ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent"},
		{"FDB entry", func() { f.RemoveFDB(dev.Name, "0e:00:00:00:00:04") }, "bridge fdb replace 0e:00:00:00:00:04 dev flannel.1 dst 192.0.2.12 self permanent"},
		{"route replaced by another's", func() {
			f.AddRoute(kernel.Route{Dst: p("10.244.6.0/24"), Gw: a("192.0.2.99"), Dev: eth0.Name, Protocol: kernel.ProtoWeft})
		}, "ip route replace 10.244.6.0/24 via 192.0.2.14 dev eth0"},
		{"neighbour learnt", func() {
			f.AddLearnedNeigh(kernel.Neigh{IP: a("10.244.4.0"), MAC: "0e:00:00:00:00:44", Dev: dev.Name})
		}, "ip neigh replace 10.244.4.0 lladdr 0e:00:00:00:00:04 dev flannel.1 nud permanent"},
	} {
		tc.by()
		if d := n.settle(&seen); d != 1 {
			t.Errorf("%s changed by hand: changed called %d times, want 1", tc.what, d)
		}
		added, removed, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
		must(t, err)
		golden(t, tc.what+" restored", f.Writes(), tc.restore)
		if added != 1 || removed != 0 {
			t.Errorf("%s: added %d, removed %d; want 1, 0", tc.what, added, removed)
		}
		if d := n.settle(&seen); d != 0 {
			t.Errorf("%s: the restoring write called changed %d times", tc.what, d)
		}
	}
	if n.Dumps() != dumps {
		t.Errorf("%d dumps while restoring, want none", n.Dumps()-dumps)
	}
	// A planted entry in scope is reported and removed; one out of scope
	// is reported and left alone.
	f.AddRoute(kernel.Route{Dst: p("10.244.77.0/24"), Gw: a("10.244.77.0"), Dev: dev.Name, OnLink: true})
	f.AddRoute(kernel.Route{Dst: p("198.51.100.0/24"), Gw: a("192.0.2.254"), Dev: eth0.Name})
	if d := n.settle(&seen); d != 2 {
		t.Errorf("two routes planted: changed called %d times, want 2", d)
	}
	_, _, err = kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	golden(t, "planted", f.Writes(), `ip route del 10.244.77.0/24 via 10.244.77.0 dev flannel.1 onlink proto boot`)
	sameAsKernel(t, n, scope)
	// Nothing changed since, the same plan: nothing is read or written.
	n.settle(&seen)
	dumps = n.Dumps()
	_, _, err = kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	if n.Dumps() != dumps {
		t.Errorf("an Apply with nothing changed dumped %d tables", n.Dumps()-dumps)
	}
	golden(t, "nothing changed", f.Writes(), ``)
}

func TestCachedDropsTheMirrorWhenItCannotBeTrusted(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	n := startCached(t, f)
	var seen int64
	ctx := context.Background()
	_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	f.Writes()
	n.settle(&seen)
	resync := func(what string, wantWrites string) {
		t.Helper()
		dumps := n.Dumps()
		must(t, kernel.EnsureLink(ctx, n, vxlanDevice(eth0)))
		_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
		must(t, err)
		if d := n.Dumps() - dumps; d != 3 {
			t.Errorf("%s: the next sync dumped %d tables, want 3", what, d)
		}
		golden(t, what, f.Writes(), wantWrites)
		sameAsKernel(t, n, scope)
		n.settle(&seen)
	}

	// Set down by hand: the kernel drops the link's routes and neighbours
	// and announces only the link.
	must(t, f.SetDown(dev.Name))
	if d := n.settle(&seen); d != 1 {
		t.Errorf("link down: changed called %d times, want 1", d)
	}
	resync("link down", `
		ip link set flannel.1 up
		ip neigh replace 10.244.4.0 lladdr 0e:00:00:00:00:04 dev flannel.1 nud permanent
		ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
		ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink
		ip route replace 10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink
	`)

	// The CNI bridge, whose route the mirror holds, deleted: its routes
	// leave the mirror, nothing is dumped (pods' veths come and go).
	f.RemoveDevice("cni0")
	if d := n.settle(&seen); d != 1 {
		t.Errorf("cni0 deleted: changed called %d times, want 1", d)
	}
	dumps := n.Dumps()
	_, _, err = kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	if d := n.Dumps() - dumps; d != 0 {
		t.Errorf("cni0 deleted: the next sync dumped %d tables, want none", d)
	}
	golden(t, "cni0 deleted", f.Writes(), ``)
	sameAsKernel(t, n, scope)
	n.settle(&seen)

	// Updates lost.
	f.Overflow()
	if d := n.settle(&seen); d != 1 {
		t.Errorf("overflow: changed called %d times, want 1", d)
	}
	resync("overflow", ``)

	// Invalidate: no call, the next read dumps.
	n.Invalidate()
	resync("invalidated", ``)
	if d := n.settle(&seen); d != 0 {
		t.Errorf("Invalidate called changed %d times", d)
	}
}

func TestCachedWithoutSubscriptionReadsTheKernel(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	c := kernel.NewCached(f, f)
	ctx := context.Background()
	for i := range 2 {
		_, _, err := kernel.Apply(ctx, c, want(eth0, dev), scope)
		must(t, err)
		if got := c.Dumps(); got != uint64(3*(i+1)) {
			t.Errorf("sync %d without a subscription: %d dumps, want %d", i, got, 3*(i+1))
		}
	}
	f.Writes()
	// The subscription fails: Run returns its error, says something may
	// have been missed, and the reads go to the kernel again.
	n := startCached(t, f)
	_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	f.FailWatch(errors.New("socket gone"))
	var runErr error
	select {
	case runErr = <-n.runErr:
		n.runErr <- context.Canceled // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its subscription failed")
	}
	if runErr == nil || runErr.Error() != "socket gone" || n.changed.Load() != 1 || n.Live() {
		t.Errorf("Run returned %v, called changed %d times, live %v; want the error, 1, false", runErr, n.changed.Load(), n.Live())
	}
	f.RemoveRoute(p("10.244.4.0/24"))
	dumps := n.Dumps()
	_, _, err = kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	if n.Dumps() != dumps+3 {
		t.Errorf("after the subscription ended: %d dumps, want 3", n.Dumps()-dumps)
	}
	if w := f.Writes(); w != "ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink\n" {
		t.Errorf("writes %q", w)
	}
}

// TestCachedConcurrentSyncsAndChanges runs syncs while routes, neighbours
// and FDB entries are deleted and planted by hand (go test -race), then
// checks that one more sync leaves the kernel as wanted and the mirror
// equal to it.
func TestCachedConcurrentSyncsAndChanges(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	n := startCached(t, f)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 6 {
			case 0:
				f.RemoveRoute(p("10.244.4.0/24"))
			case 1:
				f.RemoveNeigh(dev.Name, a("10.244.5.0"))
			case 2:
				f.RemoveFDB(dev.Name, "0e:00:00:00:00:04")
			case 3:
				f.AddRoute(kernel.Route{Dst: p(fmt.Sprintf("10.244.%d.0/24", 100+i%50)), Gw: a("192.0.2.77"), Dev: eth0.Name, Protocol: kernel.ProtoWeft})
			case 4:
				f.Overflow()
			case 5:
				n.Invalidate()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			if _, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	f.Flush()
	_, _, err := kernel.Apply(ctx, n, want(eth0, dev), scope)
	must(t, err)
	f.Flush()
	sameAsKernel(t, n, scope)
	have, err := kernel.Read(f, scope)
	must(t, err)
	if add, del := kernel.Diff(want(eth0, dev), have); len(add.Routes)+len(add.Neighs)+len(add.FDB)+len(del.Routes)+len(del.Neighs)+len(del.FDB) != 0 {
		t.Errorf("after the last sync the kernel differs from the plan: add %+v del %+v", add, del)
	}
}

// randomNode fills a fresh fake (eth0, flannel.1, cni0) with entries drawn
// from a small space by r: weft's, flanneld's, foreign routes, learnt and
// permanent neighbours, FDB entries.
func randomNode(t *testing.T, r *rand.Rand) (*kerneltest.Fake, kernel.Scope) {
	t.Helper()
	f, eth0, dev, scope := applyNode(t)
	sub := func() netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(12)), 0}), 24)
	}
	mac := func() string { return fmt.Sprintf("0e:00:00:00:00:%02x", r.IntN(12)) }
	for range r.IntN(20) {
		s := sub()
		switch r.IntN(6) {
		case 0:
			must(t, f.ReplaceRoute(kernel.Route{Dst: s, Gw: s.Addr(), Dev: dev.Name, OnLink: true}))
		case 1:
			f.AddRoute(kernel.Route{Dst: s, Gw: s.Addr(), Dev: dev.Name, OnLink: true})
		case 2:
			f.AddRoute(kernel.Route{Dst: s, Gw: a("192.0.2.77"), Dev: eth0.Name})
		case 3:
			f.AddRoute(kernel.Route{Dst: s, Dev: "cni0", Protocol: kernel.ProtoKernel})
		case 4:
			must(t, f.ReplaceNeigh(kernel.Neigh{IP: s.Addr(), MAC: mac(), Dev: dev.Name}))
		case 5:
			must(t, f.ReplaceFDB(kernel.FDB{MAC: mac(), Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + r.IntN(5))}), Dev: dev.Name}))
		}
	}
	f.Writes()
	return f, scope
}

func randomPlan(r *rand.Rand, dev string) kernel.Plan {
	var p kernel.Plan
	seen := map[int]bool{}
	for range r.IntN(10) {
		i := r.IntN(12)
		if seen[i] {
			continue
		}
		seen[i] = true
		gw := netip.AddrFrom4([4]byte{10, 244, byte(i), 0})
		m := fmt.Sprintf("0e:00:00:00:00:%02x", (i+r.IntN(2))%12)
		p.FDB = append(p.FDB, kernel.FDB{MAC: m, Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i%5)}), Dev: dev})
		p.Neighs = append(p.Neighs, kernel.Neigh{IP: gw, MAC: m, Dev: dev})
		p.Routes = append(p.Routes, kernel.Route{Dst: netip.PrefixFrom(gw, 24), Gw: gw, Dev: dev, OnLink: true})
	}
	return p
}

// Apply through Cached (the diff in the mirror, in place) writes exactly
// what Apply through the plain kernel (a dump and Diff) writes, and
// reports the same conflicts, over random kernels and plans.
func TestCachedDiffInPlaceEqualsDiff(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(200) {
		plain, scope := randomNode(t, rand.New(rand.NewPCG(seed, 1)))
		mirrored, _ := randomNode(t, rand.New(rand.NewPCG(seed, 1)))
		n := startCached(t, mirrored)
		_, err := kernel.Read(n, scope) // fill the mirror
		must(t, err)
		r := rand.New(rand.NewPCG(seed, 2))
		for step := range 3 {
			want := randomPlan(r, "flannel.1")
			a1, r1, e1 := kernel.Apply(ctx, plain, want, scope)
			a2, r2, e2 := kernel.Apply(ctx, n, want, scope)
			w1, w2 := strings.Split(plain.Writes(), "\n"), strings.Split(mirrored.Writes(), "\n")
			slices.Sort(w1)
			slices.Sort(w2)
			if a1 != a2 || r1 != r2 || len(kernel.Conflicts(e1)) != len(kernel.Conflicts(e2)) || !slices.Equal(w1, w2) {
				t.Fatalf("seed %d step %d: plain wrote %d/%d (%v)\n%s\ncached wrote %d/%d (%v)\n%s", seed, step,
					a1, r1, e1, strings.Join(w1, "\n"), a2, r2, e2, strings.Join(w2, "\n"))
			}
			n.f.Flush()
		}
	}
}
