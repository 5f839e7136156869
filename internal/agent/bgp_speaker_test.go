package agent

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// loopPlatform is fakePlatform with the underlay on the loopback
// (127.0.0.1), where a real speaker can listen without touching the host.
type loopPlatform struct{ *fakePlatform }

func (l loopPlatform) Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error) {
	return kernel.Underlay{Name: "lo", LinkIndex: 1, MTU: 1500, Addr: netip.MustParseAddr("127.0.0.1"),
		OnLink: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil
}

// TestBGPRealSpeaker: the agent with the real speaker (GoBGP) on
// 127.0.0.1 peers with another real speaker on 127.0.0.2 standing for the
// router: the router learns this node's subnet with the node's address as
// next hop, and the route the router announces reaches the node state
// handed to the backend (import on). Not under the race detector (see
// the skip).
func TestBGPRealSpeaker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two BGP speakers")
	}
	if raceEnabled {
		// GoBGP's StartBgp writes package globals (table.SelectionOptions)
		// that every server's route propagation reads: one speaker per
		// process, as the agent runs it, is fine; two in one test race.
		t.Skip("two GoBGP servers in one process race on GoBGP's package globals")
	}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on the loopback: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	router, err := bgp.New(bgp.Config{Enabled: true, LocalAS: 64500, ListenPort: port, HoldTime: 9 * time.Second,
		Peers: []bgp.Peer{{Address: netip.MustParseAddr("127.0.0.1"), AS: 64512, Port: uint16(port)}}},
		bgp.Options{Log: quiet(), Underlay4: netip.MustParseAddr("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	behind := bgp.Route{Prefix: netip.MustParsePrefix("10.244.200.0/24"), NextHop: netip.MustParseAddr("127.0.0.2")}
	ctx, cancel := context.WithCancel(context.Background())
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-routerDone; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	if err := router.Announce(ctx, []bgp.Route{behind}); err != nil {
		t.Fatal(err)
	}

	m := leasetest.NewMemory()
	m.PutConfig(conf(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"LocalAS":64512,"ListenPort":%d,"HoldTime":9,"Import":true,
		"Peers":[{"Address":"127.0.0.2","AS":64500,"Port":%d}]}}`, port, port))
	p := &fakePlatform{}
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Resync: time.Hour, Log: quiet()}, loopPlatform{p})
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	t.Cleanup(func() {
		acancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s; agent status %+v; router %+v", what, a.Status(), router.Status())
	}
	waitFor("ready", func() bool { return a.Status().Ready })
	own := netip.MustParsePrefix(a.Status().Subnet)
	waitFor("the router learns the node's subnet", func() bool {
		return slices.ContainsFunc(router.Learned(), func(r bgp.Route) bool {
			return r.Prefix == own && r.NextHop == netip.MustParseAddr("127.0.0.1")
		})
	})
	waitFor("the router's route in the node state", func() bool {
		st, _ := p.lastState()
		return st.Learned[behind.Prefix] == behind.NextHop
	})
	if st := a.Status(); len(st.BGP) != 1 || st.BGP[0].State != "established" || !st.Ready {
		t.Errorf("status %+v", st)
	}
}
