package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
)

// applyNode is node() with flannel.1 up and the entries a node has when
// weft restarts after its peers changed, inside and outside the scope.
func applyNode(t *testing.T) (f *kerneltest.Fake, eth0, dev kernel.Link, scope kernel.Scope) {
	t.Helper()
	f, eth0 = node(t)
	dev, _ = f.LinkByIndex(ensure(t, f, vxlanDevice(eth0)))
	cni0 := f.AddDevice(kernel.Link{Name: "cni0", Kind: "bridge", MTU: 1450, MAC: "02:00:00:00:00:c0", Up: true})
	must(t, f.ReplaceAddr(kernel.Addr{Dev: cni0.Name, Prefix: p("10.244.3.1/24")}))
	vx := func(subnet, gw, mac, node string) {
		must(t, f.ReplaceFDB(kernel.FDB{MAC: mac, Dst: a(node), Dev: dev.Name}))
		must(t, f.ReplaceNeigh(kernel.Neigh{IP: a(gw), MAC: mac, Dev: dev.Name}))
		must(t, f.ReplaceRoute(kernel.Route{Dst: p(subnet), Gw: a(gw), Dev: dev.Name, OnLink: true}))
	}
	vx("10.244.4.0/24", "10.244.4.0", "0e:00:00:00:00:04", "192.0.2.12") // stays as it is
	vx("10.244.5.0/24", "10.244.5.0", "0e:00:00:00:00:15", "192.0.2.13") // its VTEP MAC changes
	vx("10.244.9.0/24", "10.244.9.0", "0e:00:00:00:00:09", "192.0.2.19") // its lease is gone
	// Out of scope, never touched: the own subnet (the CNI bridge's), the
	// cluster network itself, a network outside it, another link's route
	// into it, learnt neighbours, and entries on the underlay.
	f.AddRoute(kernel.Route{Dst: p("10.244.3.0/24"), Dev: cni0.Name, Protocol: kernel.ProtoKernel})
	f.AddRoute(kernel.Route{Dst: p("10.244.0.0/16"), Gw: a("10.244.0.0"), Dev: dev.Name, OnLink: true})
	f.AddRoute(kernel.Route{Dst: p("203.0.113.0/24"), Gw: a("192.0.2.254"), Dev: eth0.Name})
	f.AddRoute(kernel.Route{Dst: p("10.244.8.0/24"), Gw: a("10.244.3.8"), Dev: cni0.Name})
	f.AddLearnedNeigh(kernel.Neigh{IP: a("10.244.6.0"), MAC: "0e:00:00:00:00:06", Dev: dev.Name})
	must(t, f.ReplaceNeigh(kernel.Neigh{IP: a("192.0.2.99"), MAC: "02:00:00:00:00:99", Dev: eth0.Name}))
	f.Writes()
	scope = kernel.Scope{Networks: []netip.Prefix{p("10.244.0.0/16")}, Own: []netip.Prefix{p("10.244.3.0/24")}, RouteDevs: []string{dev.Name, eth0.Name}, NeighDevs: []string{dev.Name}}
	return f, eth0, dev, scope
}

// want is the plan after the change: 10.244.5.0 has a new MAC, 10.244.9.0
// is gone, and 10.244.6.0/24 is a new peer on the underlay's link
// (DirectRouting).
func want(eth0, dev kernel.Link) kernel.Plan {
	return kernel.Plan{
		FDB: []kernel.FDB{
			{MAC: "0e:00:00:00:00:04", Dst: a("192.0.2.12"), Dev: dev.Name},
			{MAC: "0e:00:00:00:00:05", Dst: a("192.0.2.13"), Dev: dev.Name},
		},
		Neighs: []kernel.Neigh{
			{IP: a("10.244.4.0"), MAC: "0e:00:00:00:00:04", Dev: dev.Name},
			{IP: a("10.244.5.0"), MAC: "0e:00:00:00:00:05", Dev: dev.Name},
		},
		Routes: []kernel.Route{
			{Dst: p("10.244.4.0/24"), Gw: a("10.244.4.0"), Dev: dev.Name, OnLink: true},
			{Dst: p("10.244.5.0/24"), Gw: a("10.244.5.0"), Dev: dev.Name, OnLink: true},
			{Dst: p("10.244.6.0/24"), Gw: a("192.0.2.14"), Dev: eth0.Name},
		},
	}
}

func TestApplyAddsFirstReplacesInPlaceAndStaysInScope(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	ctx := context.Background()
	added, removed, err := kernel.Apply(ctx, f, want(eth0, dev), scope)
	must(t, err)
	// The neighbour of 10.244.5.0 is replaced in place (its key is the
	// address); its FDB entry is keyed by MAC, so the new MAC is added
	// and the old one deleted, after every addition.
	golden(t, "apply", f.Writes(), `
		bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 192.0.2.13 self permanent
		ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
		ip route replace 10.244.6.0/24 via 192.0.2.14 dev eth0
		ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink
		ip neigh del 10.244.9.0 dev flannel.1
		bridge fdb del 0e:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self
		bridge fdb del 0e:00:00:00:00:15 dev flannel.1 dst 192.0.2.13 self
	`)
	if added != 3 || removed != 4 {
		t.Errorf("added %d, removed %d; want 3, 4", added, removed)
	}
	have, err := kernel.Read(f, scope)
	must(t, err)
	if add, del := kernel.Diff(want(eth0, dev), have); len(add.Routes)+len(add.Neighs)+len(add.FDB)+len(del.Routes)+len(del.Neighs)+len(del.FDB) != 0 {
		t.Errorf("after apply the kernel differs: add %+v del %+v", add, del)
	}
	// Idempotent: nothing to write.
	added, removed, err = kernel.Apply(ctx, f, want(eth0, dev), scope)
	must(t, err)
	golden(t, "second apply", f.Writes(), ``)
	if added+removed != 0 {
		t.Errorf("second apply added %d, removed %d", added, removed)
	}
	// The entries outside the scope are all still there.
	routes, _ := f.Routes()
	var got []string
	for _, r := range routes {
		got = append(got, r.String())
	}
	if g, w := strings.Join(got, "; "), "0.0.0.0/0 via 192.0.2.1 dev eth0 proto boot; 10.244.0.0/16 via 10.244.0.0 dev flannel.1 onlink proto boot; "+
		"10.244.3.0/24 dev cni0 proto kernel; 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink; 10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink; "+
		"10.244.6.0/24 via 192.0.2.14 dev eth0; 10.244.8.0/24 via 10.244.3.8 dev cni0 proto boot; 203.0.113.0/24 via 192.0.2.254 dev eth0 proto boot"; g != w {
		t.Errorf("routes\n%s\nwant\n%s", g, w)
	}
	if n, _ := f.Neighs(eth0.Name); len(n) != 1 {
		t.Errorf("the underlay's neighbour was touched: %v", n)
	}
}

func TestApplyEmptyPlanRemovesOnlyOwnedEntries(t *testing.T) {
	f, _, _, scope := applyNode(t)
	_, removed, err := kernel.Apply(context.Background(), f, kernel.Plan{}, scope)
	must(t, err)
	golden(t, "apply nothing", f.Writes(), `
		ip route del 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink
		ip route del 10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink
		ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink
		ip neigh del 10.244.4.0 dev flannel.1
		ip neigh del 10.244.5.0 dev flannel.1
		ip neigh del 10.244.9.0 dev flannel.1
		bridge fdb del 0e:00:00:00:00:04 dev flannel.1 dst 192.0.2.12 self
		bridge fdb del 0e:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self
		bridge fdb del 0e:00:00:00:00:15 dev flannel.1 dst 192.0.2.13 self
	`)
	if removed != 9 {
		t.Errorf("removed %d, want 9", removed)
	}
}

func TestApplyFailedWriteDoesNotStopTheOthers(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	f.Fail("ip route replace 10.244.6.0/24", syscall.ENETUNREACH)
	f.Fail("ip neigh del 10.244.9.0", syscall.EPERM)
	added, removed, err := kernel.Apply(context.Background(), f, want(eth0, dev), scope)
	golden(t, "apply with two failures", f.Writes(), `
		bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 192.0.2.13 self permanent
		ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
		ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink
		bridge fdb del 0e:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self
		bridge fdb del 0e:00:00:00:00:15 dev flannel.1 dst 192.0.2.13 self
	`)
	if added != 2 || removed != 3 {
		t.Errorf("added %d, removed %d; want 2, 3", added, removed)
	}
	wantErr := "ip route replace 10.244.6.0/24 via 192.0.2.14 dev eth0: network is unreachable\n" +
		"ip neigh del 10.244.9.0 dev flannel.1: operation not permitted"
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error %q, want %q", err, wantErr)
	}
	if !errors.Is(err, syscall.ENETUNREACH) || !errors.Is(err, syscall.EPERM) {
		t.Errorf("the causes are not wrapped: %v", err)
	}
	// A failed read stops before any write.
	f.Fail("bridge fdb show dev flannel.1", syscall.EIO)
	if _, _, err := kernel.Apply(context.Background(), f, want(eth0, dev), scope); err == nil || !strings.Contains(err.Error(), "bridge fdb show dev flannel.1: ") {
		t.Errorf("failed read: %v", err)
	}
	golden(t, "after a failed read", f.Writes(), ``)
}

// cancelAfter cancels a context after its first successful write.
type cancelAfter struct {
	kernel.Kernel
	cancel context.CancelFunc
}

func (c cancelAfter) ReplaceFDB(e kernel.FDB) error {
	defer c.cancel()
	return c.Kernel.ReplaceFDB(e)
}

func TestApplyStopsWhenTheContextEnds(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	added, removed, err := kernel.Apply(ctx, cancelAfter{f, cancel}, want(eth0, dev), scope)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	golden(t, "apply cancelled after its first write", f.Writes(), `
		bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 192.0.2.13 self permanent
	`)
	if added != 1 || removed != 0 {
		t.Errorf("added %d, removed %d; want 1, 0", added, removed)
	}
}

func TestApplyNeverTakesOverARouteItDoesNotOwn(t *testing.T) {
	f, eth0, dev, scope := applyNode(t)
	// The node's own old subnet after a Network change: its bridge still
	// routes it (proto kernel), and its old lease is now a peer's.
	scope.Own = []netip.Prefix{p("10.244.7.0/24")}
	f.AddRoute(kernel.Route{Dst: p("10.244.1.0/24"), Dev: "cni0", Protocol: kernel.ProtoKernel})
	// A route weft wrote for a lease outside the network, whose key is gone.
	must(t, f.ReplaceRoute(kernel.Route{Dst: p("192.0.2.0/30"), Gw: a("192.0.2.14"), Dev: eth0.Name}))
	f.Writes()
	w := want(eth0, dev)
	w.Routes = append(w.Routes,
		kernel.Route{Dst: p("10.244.1.0/24"), Gw: a("10.244.1.0"), Dev: dev.Name, OnLink: true},
		kernel.Route{Dst: p("203.0.113.0/24"), Gw: a("192.0.2.15"), Dev: eth0.Name}) // the administrator's (proto boot)
	added, removed, err := kernel.Apply(context.Background(), f, w, scope)
	golden(t, "apply with two conflicts", f.Writes(), `
		bridge fdb replace 0e:00:00:00:00:05 dev flannel.1 dst 192.0.2.13 self permanent
		ip neigh replace 10.244.5.0 lladdr 0e:00:00:00:00:05 dev flannel.1 nud permanent
		ip route replace 10.244.6.0/24 via 192.0.2.14 dev eth0
		ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink
		ip route del 192.0.2.0/30 via 192.0.2.14 dev eth0
		ip neigh del 10.244.9.0 dev flannel.1
		bridge fdb del 0e:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self
		bridge fdb del 0e:00:00:00:00:15 dev flannel.1 dst 192.0.2.13 self
	`)
	if added != 3 || removed != 5 {
		t.Errorf("added %d, removed %d; want 3, 5", added, removed)
	}
	wantErr := "10.244.1.0/24 is routed by dev cni0 (proto kernel), not weft's: not replaced\n" +
		"203.0.113.0/24 is routed via 192.0.2.254 dev eth0 (proto boot), not weft's: not replaced"
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error %q, want %q", err, wantErr)
	}
	if c := kernel.Conflicts(fmt.Errorf("sync: %w", err)); len(c) != 2 || c[0].Want.Dst != p("10.244.1.0/24") || c[1].Have.Protocol != kernel.ProtoBoot {
		t.Errorf("Conflicts = %+v", c)
	}
}

func TestWithoutConflicts(t *testing.T) {
	c := &kernel.ConflictError{Want: kernel.Route{Dst: netip.MustParsePrefix("10.244.1.0/24")}, Have: kernel.Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "cni0"}}
	other := errors.New("ip route replace 10.244.2.0/24: network is down")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{c, ""},
		{errors.Join(c, c), ""},
		{fmt.Errorf("vxlan: %w", errors.Join(c)), ""},
		{errors.Join(c, other), other.Error()},
		{other, other.Error()},
	} {
		got := kernel.WithoutConflicts(tc.err)
		if tc.want == "" && got != nil || tc.want != "" && (got == nil || got.Error() != tc.want) {
			t.Errorf("WithoutConflicts(%v) = %v, want %q", tc.err, got, tc.want)
		}
	}
}
