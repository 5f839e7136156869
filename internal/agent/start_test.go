package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/agent"
	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// startPlatform is a node whose kernel is a fake with eth0 (192.0.2.11/24
// and 2001:db8:0:1::11/64, the default routes'). It counts what a start must not reach when it is
// refused: a backend built, forwarding turned on (both fail). Any other
// Platform method panics (the embedded interface is nil): a refused start
// must not get that far either.
type startPlatform struct {
	agent.Platform
	k                    *kerneltest.Fake
	backends, forwarding atomic.Int32
}

func newStartPlatform(t *testing.T) *startPlatform {
	t.Helper()
	f := kerneltest.New()
	eth0 := f.AddDevice(kernel.Link{Name: "eth0", Kind: "veth", MTU: 1500, Up: true})
	if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix("192.0.2.11/24")}); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceRoute(kernel.Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.1"), Dev: eth0.Name}); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: netip.MustParsePrefix("2001:db8:0:1::11/64")}); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceRoute(kernel.Route{Dst: netip.MustParsePrefix("::/0"), Gw: netip.MustParseAddr("2001:db8:0:1::1"), Dev: eth0.Name}); err != nil {
		t.Fatal(err)
	}
	return &startPlatform{k: f}
}

func (p *startPlatform) Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error) {
	return kernel.FindUnderlay(p.k, q)
}

func (p *startPlatform) Backend(context.Context, backend.Kind, backend.Options, backend.Env) (backend.Backend, error) {
	p.backends.Add(1)
	return nil, errors.New("startPlatform builds no backend")
}

func (p *startPlatform) EnableForwarding(bool, string) error {
	p.forwarding.Add(1)
	return errors.New("startPlatform turns no forwarding on")
}

// refused runs an agent with o that must refuse to start, and checks that
// it did so in one line containing want, before it leased anything, wrote
// subnet.env, built a backend or turned forwarding on.
func refused(t *testing.T, o agent.Options, want string) {
	t.Helper()
	refusedWith(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, o, want)
}

// refusedWith is refused with the network config conf.
func refusedWith(t *testing.T, conf string, o agent.Options, want string) {
	t.Helper()
	m := leasetest.NewMemory()
	m.PutConfig([]byte(conf))
	p := newStartPlatform(t)
	o.Store, o.Log = m, slog.New(slog.NewTextHandler(io.Discard, nil))
	o.SubnetFile = filepath.Join(t.TempDir(), "subnet.env")
	a := agent.New(o, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.Run(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run: %v; want a refusal containing %q", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the refusal is more than one line: %q", err)
	}
	if ls, _ := m.List(context.Background()); len(ls) > 0 {
		t.Errorf("a refused start leased %v", ls)
	}
	if _, err := os.Stat(o.SubnetFile); !os.IsNotExist(err) {
		t.Errorf("a refused start wrote subnet.env: %v", err)
	}
	if p.backends.Load() > 0 || p.forwarding.Load() > 0 {
		t.Errorf("a refused start built %d backends and turned forwarding on %d times", p.backends.Load(), p.forwarding.Load())
	}
	if s := a.Status(); s.Ready || s.Subnet != "" {
		t.Errorf("status after a refused start: %+v", s)
	}
}

// TestTakenHealthPortLeasesNothing: a health port another process holds
// fails the start before anything is leased or written.
func TestTakenHealthPortLeasesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	refused(t, agent.Options{HealthzAddr: ln.Addr().String()}, "listen on "+ln.Addr().String())
}

// TestForeignPublicIPLeasesNothing: a public IP on no interface of the
// node is refused, naming it and the node's addresses, before anything is
// leased or written.
func TestForeignPublicIPLeasesNothing(t *testing.T) {
	refused(t, agent.Options{Underlay: kernel.UnderlayQuery{PublicIP: netip.MustParseAddr("203.0.113.99")}},
		"no interface has address 203.0.113.99 (--public-ip): this node's addresses are eth0 192.0.2.11/24")
	refused(t, agent.Options{Underlay: kernel.UnderlayQuery{Ifaces: []string{"eth0"}, PublicIP: netip.MustParseAddr("203.0.113.99")}},
		"no interface has address 203.0.113.99 (--public-ip)")
}

// TestForeignPublicIPBehindNAT: where the node publishes a NAT address
// (public-ip-overwrite), a public IP on no interface is expected: the
// start goes on (here up to building the backend, which this platform
// refuses).
func TestForeignPublicIPBehindNAT(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := newStartPlatform(t)
	a := agent.New(agent.Options{Store: m, Underlay: kernel.UnderlayQuery{PublicIP: netip.MustParseAddr("203.0.113.99")}, PublicIPNAT: true,
		SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "startPlatform builds no backend") {
		t.Fatalf("Run: %v; want it past the underlay, at the backend", err)
	}
}

const dualConf = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"}}`

// TestForeignPublicIPv6: a --public-ipv6 on no interface is refused like
// --public-ip, unless the node publishes a NAT address of that family
// (public-ipv6-overwrite): the option of the other family does not do.
func TestForeignPublicIPv6(t *testing.T) {
	q := kernel.UnderlayQuery{PublicIPv6: netip.MustParseAddr("2001:db8:99::1")}
	refusedWith(t, dualConf, agent.Options{Underlay: q},
		"no interface has address 2001:db8:99::1 (--public-ipv6): this node's addresses are eth0 2001:db8:0:1::11/64")
	refusedWith(t, dualConf, agent.Options{Underlay: q, PublicIPNAT: true}, "no interface has address 2001:db8:99::1 (--public-ipv6)")
	refusedWith(t, dualConf, agent.Options{Underlay: kernel.UnderlayQuery{PublicIP: netip.MustParseAddr("203.0.113.99"), PublicIPv6: q.PublicIPv6}, PublicIPv6NAT: true},
		"no interface has address 203.0.113.99 (--public-ip)")

	m := leasetest.NewMemory()
	m.PutConfig([]byte(dualConf))
	p := newStartPlatform(t)
	a := agent.New(agent.Options{Store: m, Underlay: q, PublicIPv6NAT: true,
		SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "startPlatform builds no backend") {
		t.Fatalf("Run: %v; want it past the underlay, at the backend", err)
	}
}
