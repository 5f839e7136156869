package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
	"github.com/weftnet/weft/internal/subnetenv"
)

// startLogged runs an agent on p until the test ends, logging into the
// buffer it returns.
func startLogged(t *testing.T, store lease.Store, p *fakePlatform) (*Agent, *syncBuffer) {
	t.Helper()
	return startWith(t, store, p, filepath.Join(t.TempDir(), "subnet.env"))
}

// startWith is startLogged with the node's subnet.env at file.
func startWith(t *testing.T, store lease.Store, p *fakePlatform, file string) (*Agent, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	a := New(Options{Store: store, SubnetFile: file, Resync: time.Hour,
		Log: slog.New(slog.NewTextHandler(logs, nil))}, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, logs
}

// raced is a store whose first Acquire writes the lease overlap, as a
// node that lost the race with flanneld (or whose lease someone wrote by
// hand) holds it, and returns it; later ones are the store's own. With
// assigned, every Acquire returns that lease and the store does not
// choose subnets (lease.SubnetChooser), as in Kubernetes mode.
type raced struct {
	m        *leasetest.Memory
	overlap  lease.Lease
	mu       sync.Mutex // guards the fields below
	acquires int
	held     lease.Lease
}

func (r *raced) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acquires++
	if r.acquires == 1 {
		l := r.overlap
		l.Attrs = req.Attrs
		r.held = r.m.PutLease(l, req.TTL)
		return r.held, nil
	}
	return r.m.Acquire(ctx, req)
}

func (r *raced) Config(ctx context.Context) ([]byte, error) { return r.m.Config(ctx) }
func (r *raced) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	return r.m.Renew(ctx, l)
}
func (r *raced) List(ctx context.Context) ([]lease.Lease, error) { return r.m.List(ctx) }
func (r *raced) Watch(ctx context.Context, sink func(lease.Event)) error {
	return r.m.Watch(ctx, sink)
}

// chooser is a raced store that chooses subnets, as etcd does.
type chooser struct{ *raced }

func (chooser) ChoosesSubnets() {}

// assigned is a raced store whose node's subnets are assigned: every
// Acquire hands back the same lease.
type assigned struct{ *raced }

func (s assigned) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	if l, err := s.raced.Acquire(ctx, req); err != nil || s.acquireCount() == 1 {
		return l, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, nil
}

func (r *raced) acquireCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acquires
}

var _ lease.SubnetChooser = chooser{}

// overlapScene runs node 1 on a dual-stack memory store until it is ready,
// and returns the store, node 1, its lease, node 2's platform, and a lease
// for node 2 that holds node 1's IPv6 subnet beside another IPv4 one.
func overlapScene(t *testing.T) (*leasetest.Memory, *Agent, *fakePlatform, lease.Lease, lease.Lease) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(dualConf))
	p1 := &fakePlatform{refuseOwn: true}
	a1, _ := startLogged(t, m, p1)
	eventually(t, "node 1 ready", func() bool { return a1.Status().Ready })
	l1 := ownRecord(t, m, a1)
	b4 := netip.MustParsePrefix("10.244.250.0/24")
	if l1.Subnet == b4 {
		b4 = netip.MustParsePrefix("10.244.251.0/24")
	}
	p2 := &fakePlatform{addr: netip.MustParseAddr("192.0.2.2"), addr6: netip.MustParseAddr("2001:db8:0:1::2"), refuseOwn: true}
	l2 := lease.Lease{Subnet: b4, IPv6Subnet: l1.IPv6Subnet,
		Attrs: lease.Attrs{PublicIP: p2.addr, PublicIPv6: p2.addr6, BackendType: "host-gw"}}
	return m, a1, p2, l1, l2
}

// node1Untouched checks that node 1 kept its lease, as it was, and routes
// the leases want (keys) and nothing else.
func node1Untouched(t *testing.T, m *leasetest.Memory, a1 *Agent, l1 lease.Lease, want ...string) {
	t.Helper()
	if got := ownRecord(t, m, a1); got.Key() != l1.Key() || got.Created != l1.Created || got.StoreID != l1.StoreID {
		t.Errorf("node 1's lease is %+v, was %+v", got, l1)
	}
	st := a1.Status()
	if !st.Ready || st.Subnet != l1.Subnet.String() || st.IPv6Subnet != l1.IPv6Subnet.String() || len(st.Skipped) != 0 {
		t.Errorf("node 1: %+v", st)
	}
	p1 := a1.p.(*fakePlatform)
	eventually(t, fmt.Sprintf("node 1 routes %v", want), func() bool {
		s, _ := p1.lastState()
		return slices.Equal(keysOf(s.Peers), want)
	})
}

// TestOverlapGivenUp: a node whose lease holds the IPv6 subnet of an older
// lease beside another IPv4 one (every node rejects it) gives it up and
// leases again, automatically, with one warning naming both keys: it keeps
// its IPv4 subnet, takes another IPv6 one, becomes ready; the older node
// and its lease are untouched. Whether the node holds the lease when it
// starts (Choose) or gets it from a raced Acquire while running.
func TestOverlapGivenUp(t *testing.T) {
	for _, at := range []string{"start", "running"} {
		t.Run(at, func(t *testing.T) {
			m, a1, p2, l1, l2 := overlapScene(t)
			var store lease.Store = m
			file := filepath.Join(t.TempDir(), "subnet.env")
			if at == "start" {
				// a node that restarts holding it: its subnet.env names it
				l2 = m.PutLease(l2, time.Hour)
				env := subnetenv.Env{MTU: 1500}
				env.SetFamily(netip.MustParsePrefix("10.244.0.0/16"), l2.Subnet)
				env.SetFamily(netip.MustParsePrefix(network6), l2.IPv6Subnet)
				if err := subnetenv.Write(file, env); err != nil {
					t.Fatal(err)
				}
			} else {
				store = chooser{&raced{m: m, overlap: l2}}
			}
			a2, logs := startWith(t, store, p2, file)
			var own lease.Lease
			eventually(t, "node 2 ready with a lease that overlaps nothing", func() bool {
				st := a2.Status()
				if !st.Ready {
					return false
				}
				a2.mu.Lock()
				own = a2.own
				a2.mu.Unlock()
				return !own.Overlaps(l1) && st.IPv6Subnet == own.IPv6Subnet.String()
			})
			if own.Subnet != l2.Subnet || own.IPv6Subnet == l2.IPv6Subnet {
				t.Errorf("node 2 leased %s, want %s kept beside another IPv6 subnet", own.Key(), l2.Subnet)
			}
			ls, err := m.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := keysOf(ls); len(got) != 2 || !slices.Contains(got, l1.Key()) || !slices.Contains(got, own.Key()) {
				t.Errorf("the store holds %v, want %s and %s (%s gone)", got, l1.Key(), own.Key(), l2.Key())
			}
			node1Untouched(t, m, a1, l1, own.Key())
			if s, _ := p2.lastState(); !slices.Equal(keysOf(s.Peers), []string{l1.Key()}) || s.Own.Key() != own.Key() {
				t.Errorf("node 2 applied own %s, peers %v", s.Own.Key(), keysOf(s.Peers))
			}
			if at == "running" {
				var warns []string
				for _, line := range strings.Split(logs.String(), "\n") {
					if strings.Contains(line, "level=WARN") && strings.Contains(line, l2.Key()) && strings.Contains(line, l1.Key()) {
						warns = append(warns, line)
					}
				}
				if len(warns) != 1 || !strings.Contains(warns[0], "giving it up") {
					t.Errorf("warnings naming both keys: %q, want one that gives the lease up\n%s", warns, logs)
				}
			}
		})
	}
}

// TestOverlapKept: a reservation (an operator's) and subnets the store
// does not choose (Kubernetes' podCIDRs) are never given up: the node
// logs an error naming both keys and what to do, keeps its lease, leaves
// the older peer's subnet unrouted (skipped, with the reason) and becomes
// ready; nothing else is acquired. The older node is untouched and does
// not route the rejected lease.
func TestOverlapKept(t *testing.T) {
	for _, kind := range []string{"reservation", "assigned"} {
		t.Run(kind, func(t *testing.T) {
			m, a1, p2, l1, l2 := overlapScene(t)
			var store lease.Store = m
			var r *raced
			if kind == "reservation" {
				m.Reserve(l2)
			} else {
				r = &raced{m: m, overlap: l2}
				store = assigned{r}
			}
			a2, logs := startLogged(t, store, p2)
			eventually(t, "node 2 ready", func() bool { return a2.Status().Ready })
			st := a2.Status()
			if st.Subnet != l2.Subnet.String() || st.IPv6Subnet != l2.IPv6Subnet.String() {
				t.Errorf("node 2 has %s %s, want its lease %s kept", st.Subnet, st.IPv6Subnet, l2.Key())
			}
			if len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0], l1.Key()) || !strings.Contains(st.Skipped[0], "overlaps this node's own "+l2.IPv6Subnet.String()) {
				t.Errorf("node 2 skipped %q, want %s with the reason", st.Skipped, l1.Key())
			}
			if s, _ := p2.lastState(); len(s.Peers) != 0 {
				t.Errorf("node 2 routes %v", keysOf(s.Peers))
			}
			ls, _ := m.List(context.Background())
			if got := keysOf(ls); len(got) != 2 || !slices.Contains(got, l2.Key()) {
				t.Errorf("the store holds %v, want %s kept", got, l2.Key())
			}
			node1Untouched(t, m, a1, l1)
			if r != nil && r.acquireCount() != 1 {
				t.Errorf("%d Acquire calls, want 1", r.acquireCount())
			}
			want := map[string]string{"reservation": "a reservation is never given up", "assigned": "podCIDRs"}[kind]
			var errs []string
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, l1.Key()) && strings.Contains(line, l2.Key()) && !strings.Contains(line, "peer skipped") {
					errs = append(errs, line)
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0], "level=ERROR") || !strings.Contains(errs[0], want) {
				t.Errorf("lines naming both keys: %q, want one error saying %q\n%s", errs, want, logs)
			}
		})
	}
}
