package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netns"
)

// The tests below run Cached over netlink in a fresh namespace (as root)
// and change the kernel with ip and bridge by hand, as an administrator
// would.

// realCached is a Cached kernel over netlink in n's namespace, with its
// subscription running until the test ends.
type realCached struct {
	*kernel.Cached
	changed chan struct{} // one per call of Run's changed
}

func startRealCached(t testing.TB, n testNode) realCached {
	t.Helper()
	h, err := netns.Handle(n.ns)
	must(t, err)
	t.Cleanup(h.Close)
	fd, err := netns.Fd(n.ns)
	must(t, err)
	t.Cleanup(func() { _ = fd.Close() })
	nl := kernel.NewNetlinkAt(h, fd)
	c := realCached{Cached: kernel.NewCached(nl, nl), changed: make(chan struct{}, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func() {
			select {
			case c.changed <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !c.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the subscription did not become live")
		}
	}
	// The kernel adds routes of its own for a while after links come up
	// (IPv6 link-local ones): the mirror is filled and they are let in
	// before the test counts changes.
	_, err = c.Routes()
	must(t, err)
	for deadline := time.Now().Add(5 * time.Second); c.quiet(300*time.Millisecond) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the kernel's routes did not settle")
		}
	}
	return c
}

// quiet waits a while and returns how many times changed was called.
func (c realCached) quiet(d time.Duration) int {
	time.Sleep(d)
	return c.drain()
}

// drain returns how many calls of changed are pending, and forgets them.
func (c realCached) drain() int {
	for n := 0; ; n++ {
		select {
		case <-c.changed:
		default:
			return n
		}
	}
}

// within waits up to d for a call of changed and returns how long it took.
func (c realCached) within(t *testing.T, what string, d time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-c.changed:
		t.Logf("%s: reported after %v", what, time.Since(start).Round(time.Millisecond))
	case <-time.After(d):
		t.Errorf("%s: not reported within %v", what, d)
	}
}

// by runs an iproute2 command inside the test's namespace.
func by(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], append([]string{"-n", ns}, argv[1:]...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// cachedPlan is two peers over vxlan and one direct, for flannel.1 over
// eth0 of newTestNode.
func cachedPlan(eth0 kernel.Link) kernel.Plan {
	var pl kernel.Plan
	for i, peer := range []string{"10.244.4", "10.244.5"} {
		mac := fmt.Sprintf("0e:00:00:00:00:%02x", 4+i)
		pl.FDB = append(pl.FDB, kernel.FDB{MAC: mac, Dst: a(fmt.Sprintf("198.51.100.%d", 12+i)), Dev: "flannel.1"})
		pl.Neighs = append(pl.Neighs, kernel.Neigh{IP: a(peer + ".0"), MAC: mac, Dev: "flannel.1"})
		pl.Routes = append(pl.Routes, kernel.Route{Dst: p(peer + ".0/24"), Gw: a(peer + ".0"), Dev: "flannel.1", OnLink: true})
	}
	pl.Routes = append(pl.Routes, kernel.Route{Dst: p("10.244.6.0/24"), Gw: a("192.0.2.14"), Dev: eth0.Name})
	return pl
}

// inKernel checks that the namespace has exactly plan within scope, read
// by the plain netlink kernel.
func inKernel(t *testing.T, n testNode, scope kernel.Scope, plan kernel.Plan) {
	t.Helper()
	have, err := kernel.Read(n.k, scope)
	must(t, err)
	if add, del := kernel.Diff(plan, have); len(add.Routes)+len(add.Neighs)+len(add.FDB)+len(del.Routes)+len(del.Neighs)+len(del.FDB) != 0 {
		t.Errorf("the kernel differs from the plan: missing %+v, extra %+v", add, del)
	}
}

// sameSet reports whether two lists of entries hold the same ones, in any
// order.
func sameSet(a, b any) bool {
	set := func(x any) map[string]int {
		m := map[string]int{}
		v := reflect.ValueOf(x)
		for i := range v.Len() {
			m[fmt.Sprintf("%+v", v.Index(i).Interface())]++
		}
		return m
	}
	return reflect.DeepEqual(set(a), set(b))
}

func TestCachedNetlink(t *testing.T) {
	n := newTestNode(t, true) // skips unless root
	ctx := context.Background()
	d := vxlanDevice(n.eth0)
	must(t, kernel.EnsureLink(ctx, n.k, d))
	c := startRealCached(t, n)
	scope := pairScope(n, d.Name)
	plan := cachedPlan(n.eth0)

	added, removed, err := kernel.Apply(ctx, c, plan, scope)
	must(t, err)
	if added != 7 || removed != 0 {
		t.Errorf("first sync: added %d, removed %d; want 7, 0", added, removed)
	}
	if k := c.quiet(300 * time.Millisecond); k != 0 {
		t.Errorf("the announcements of weft's own writes called changed %d times", k)
	}
	inKernel(t, n, scope, plan)
	// What the mirror holds is what a dump reads.
	for _, read := range []func(k kernel.Kernel) (any, error){
		func(k kernel.Kernel) (any, error) { return k.Routes() },
		func(k kernel.Kernel) (any, error) { return k.Neighs(d.Name) },
		func(k kernel.Kernel) (any, error) { return k.FDB(d.Name) },
	} {
		mine, err := read(c)
		must(t, err)
		theirs, err := read(n.k)
		must(t, err)
		if !sameSet(mine, theirs) {
			t.Errorf("the mirror has\n%v\nthe kernel\n%v", mine, theirs)
		}
	}
	dumps := c.Dumps()
	added, removed, err = kernel.Apply(ctx, c, plan, scope)
	must(t, err)
	if added+removed != 0 || c.Dumps() != dumps {
		t.Errorf("a sync with nothing to do wrote %d entries and dumped %d tables", added+removed, c.Dumps()-dumps)
	}

	// weft's protocol, as ip shows it.
	if out := by(t, n.ns, "ip", "route", "show", "10.244.4.0/24"); !strings.Contains(out, "proto 87") {
		t.Errorf("ip route show 10.244.4.0/24: %q, want proto 87", out)
	}

	// Deleted by hand: reported within 1 s, and the next sync writes back
	// exactly that entry, without a dump.
	for _, hand := range [][]string{
		{"ip", "route", "del", "10.244.4.0/24"},
		{"ip", "neigh", "del", "10.244.5.0", "dev", "flannel.1"},
		{"bridge", "fdb", "del", "0e:00:00:00:00:04", "dev", "flannel.1", "dst", "198.51.100.12"},
		{"ip", "route", "replace", "10.244.6.0/24", "via", "192.0.2.99", "dev", "eth0"},
	} {
		what := strings.Join(hand, " ")
		by(t, n.ns, hand...)
		c.within(t, what, time.Second)
		added, removed, err := kernel.Apply(ctx, c, plan, scope)
		must(t, err)
		if added != 1 || removed != 0 {
			t.Errorf("after %s: added %d, removed %d; want 1, 0", what, added, removed)
		}
		inKernel(t, n, scope, plan)
		if k := c.quiet(100 * time.Millisecond); k != 0 {
			t.Errorf("after %s: the restoring write called changed %d times", what, k)
		}
	}
	if c.Dumps() != dumps {
		t.Errorf("%d dumps while restoring, want none", c.Dumps()-dumps)
	}

	// Set down, then deleted, by hand: the kernel takes the routes with
	// the link without a word; the mirror is dropped and the next sync
	// puts everything back.
	for _, hand := range [][]string{
		{"ip", "link", "set", "flannel.1", "down"},
		{"ip", "link", "del", "flannel.1"},
	} {
		what := strings.Join(hand, " ")
		by(t, n.ns, hand...)
		c.within(t, what, time.Second)
		c.quiet(100 * time.Millisecond)
		dumps := c.Dumps()
		must(t, kernel.EnsureLink(ctx, c, d))
		_, _, err := kernel.Apply(ctx, c, plan, scope)
		must(t, err)
		if c.Dumps() == dumps {
			t.Errorf("after %s the sync did not dump", what)
		}
		inKernel(t, n, scope, plan)
	}
}

func TestCachedNetlinkConflictGuard(t *testing.T) {
	n := newTestNode(t, true) // skips unless root
	ctx := context.Background()
	d := vxlanDevice(n.eth0)
	must(t, kernel.EnsureLink(ctx, n.k, d))
	c := startRealCached(t, n)
	scope := pairScope(n, d.Name)
	plan := cachedPlan(n.eth0)
	_, _, err := kernel.Apply(ctx, c, plan, scope)
	must(t, err)

	// The node's old subnet, on its bridge: the kernel routes it (proto
	// kernel). After a Network change the node has another subnet and its
	// old lease is a peer's.
	by(t, n.ns, "ip", "link", "add", "cni0", "type", "bridge")
	by(t, n.ns, "ip", "addr", "add", "10.244.1.1/24", "dev", "cni0")
	by(t, n.ns, "ip", "link", "set", "cni0", "up")
	c.within(t, "cni0's route", time.Second)
	scope.Own = []netip.Prefix{p("10.244.7.0/24")}
	old := kernel.Route{Dst: p("10.244.1.0/24"), Gw: a("10.244.1.0"), Dev: d.Name, OnLink: true}
	plan.Routes = append(plan.Routes, old)
	added, removed, err := kernel.Apply(ctx, c, plan, scope)
	const wantErr = "10.244.1.0/24 is routed by dev cni0 (proto kernel), not weft's: not replaced"
	if err == nil || err.Error() != wantErr || len(kernel.Conflicts(err)) != 1 {
		t.Errorf("error %v, want %q", err, wantErr)
	}
	if added+removed != 0 {
		t.Errorf("added %d, removed %d; want nothing", added, removed)
	}
	if out := by(t, n.ns, "ip", "route", "show", "10.244.1.0/24"); !strings.Contains(out, "dev cni0 proto kernel") {
		t.Errorf("ip route show 10.244.1.0/24: %q: cni0's route was replaced", out)
	}
	// The same through the plain netlink kernel.
	if _, _, err := kernel.Apply(ctx, n.k, plan, scope); err == nil || err.Error() != wantErr {
		t.Errorf("netlink: error %v, want %q", err, wantErr)
	}
	// A route weft wrote for a lease outside the network goes once no
	// lease wants it.
	outside := kernel.Route{Dst: p("203.0.113.0/24"), Gw: a("192.0.2.14"), Dev: n.eth0.Name}
	plan.Routes = append(plan.Routes[:len(plan.Routes)-1], outside)
	_, _, err = kernel.Apply(ctx, c, plan, scope)
	must(t, err)
	plan.Routes = plan.Routes[:len(plan.Routes)-1]
	_, removed, err = kernel.Apply(ctx, c, plan, scope)
	must(t, err)
	if out := by(t, n.ns, "ip", "route", "show", "203.0.113.0/24"); removed != 1 || out != "" {
		t.Errorf("removed %d; ip route show 203.0.113.0/24: %q", removed, out)
	}
}

// BenchmarkApplyNoop measures a sync that finds nothing to change, at 5000
// vxlan peers (a route, a neighbour and an FDB entry each), through the
// plain netlink kernel (three dumps) and through Cached (the mirror), and
// logs their ratio:
//
//	go test -run '^$' -bench ApplyNoop -benchtime 2s ./internal/kernel/
func BenchmarkApplyNoop(b *testing.B) {
	const peers = 5000
	n := newTestNode(b, true) // skips unless root
	ctx := context.Background()
	d := vxlanDevice(n.eth0)
	must(b, kernel.EnsureLink(ctx, n.k, d))
	var plan kernel.Plan
	for i := range peers {
		gw := netip.AddrFrom4([4]byte{10, 244, byte(8 + i/256), byte(i % 256)})
		mac := fmt.Sprintf("0e:00:00:00:%02x:%02x", i/256, i%256)
		pub := netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)})
		plan.FDB = append(plan.FDB, kernel.FDB{MAC: mac, Dst: pub, Dev: d.Name})
		plan.Neighs = append(plan.Neighs, kernel.Neigh{IP: gw, MAC: mac, Dev: d.Name})
		plan.Routes = append(plan.Routes, kernel.Route{Dst: netip.PrefixFrom(gw, 32), Gw: gw, Dev: d.Name, OnLink: true})
	}
	scope := pairScope(n, d.Name)
	if _, _, err := kernel.Apply(ctx, n.k, plan, scope); err != nil {
		b.Fatal(err)
	}
	c := startRealCached(b, n)
	perOp := map[string]time.Duration{}
	for _, k := range []struct {
		name string
		k    kernel.Kernel
	}{{"netlink", n.k}, {"cached", c}} {
		b.Run(k.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				added, removed, err := kernel.Apply(ctx, k.k, plan, scope)
				if err != nil || added+removed != 0 {
					b.Fatalf("a sync with nothing to do: added %d, removed %d, %v", added, removed, err)
				}
			}
			perOp[k.name] = time.Since(start) / time.Duration(b.N)
		})
	}
	if perOp["netlink"] > 0 && perOp["cached"] > 0 {
		b.Logf("no-op sync at %d peers: netlink %v, cached %v: cached/netlink = %.3f",
			peers, perOp["netlink"], perOp["cached"], float64(perOp["cached"])/float64(perOp["netlink"]))
	}
}

// BenchmarkApplyOnePeer is the sync after one lease came or went at 5000
// peers: through the plain netlink kernel (three dumps) and through Cached
// (the diff in the mirror), writing the one peer's three entries. Back to
// back, the announcement of a write may reach the mirror after the next
// write (it is put right by the sync the announcement triggers): the
// counts are checked on the plain kernel, and the end state on both.
func BenchmarkApplyOnePeer(b *testing.B) {
	const peers = 5000
	n := newTestNode(b, true) // skips unless root
	ctx := context.Background()
	d := vxlanDevice(n.eth0)
	must(b, kernel.EnsureLink(ctx, n.k, d))
	var plan kernel.Plan
	for i := range peers + 1 {
		gw := netip.AddrFrom4([4]byte{10, 244, byte(8 + i/256), byte(i % 256)})
		mac := fmt.Sprintf("0e:00:00:00:%02x:%02x", i/256, i%256)
		pub := netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)})
		plan.FDB = append(plan.FDB, kernel.FDB{MAC: mac, Dst: pub, Dev: d.Name})
		plan.Neighs = append(plan.Neighs, kernel.Neigh{IP: gw, MAC: mac, Dev: d.Name})
		plan.Routes = append(plan.Routes, kernel.Route{Dst: netip.PrefixFrom(gw, 32), Gw: gw, Dev: d.Name, OnLink: true})
	}
	without := kernel.Plan{Routes: plan.Routes[:peers], Neighs: plan.Neighs[:peers], FDB: plan.FDB[:peers]}
	scope := pairScope(n, d.Name)
	if _, _, err := kernel.Apply(ctx, n.k, without, scope); err != nil {
		b.Fatal(err)
	}
	c := startRealCached(b, n)
	perOp := map[string]time.Duration{}
	for _, k := range []struct {
		name string
		k    kernel.Kernel
	}{{"netlink", n.k}, {"cached", c}} {
		b.Run(k.name, func(b *testing.B) {
			i := 0
			start := time.Now()
			for b.Loop() {
				want := []kernel.Plan{plan, without}[i%2]
				i++
				added, removed, err := kernel.Apply(ctx, k.k, want, scope)
				if err != nil || k.name == "netlink" && added+removed != 3 {
					b.Fatalf("one peer: added %d, removed %d, %v", added, removed, err)
				}
			}
			perOp[k.name] = time.Since(start) / time.Duration(b.N)
			// Settle, and the kernel holds the last plan.
			last := []kernel.Plan{plan, without}[(i-1)%2]
			time.Sleep(200 * time.Millisecond)
			if _, _, err := kernel.Apply(ctx, k.k, last, scope); err != nil {
				b.Fatal(err)
			}
			got, err := kernel.Read(n.k, scope)
			must(b, err)
			if len(got.Routes) != len(last.Routes) || len(got.Neighs) != len(last.Neighs) || len(got.FDB) != len(last.FDB) {
				b.Fatalf("the kernel holds %d routes, %d neighbours, %d FDB entries; want %d each", len(got.Routes), len(got.Neighs), len(got.FDB), len(last.Routes))
			}
		})
	}
	if perOp["netlink"] > 0 && perOp["cached"] > 0 {
		b.Logf("one peer added or removed at %d peers: netlink %v, cached %v: cached/netlink = %.3f",
			peers, perOp["netlink"], perOp["cached"], float64(perOp["cached"])/float64(perOp["netlink"]))
	}
}
