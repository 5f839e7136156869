package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// The tests in this file run one scenario twice, on the fake and on the
// netlink implementation in a fresh namespace (as root), and compare what
// each reads back after every step: the fake's model of the kernel is
// checked against the kernel (wireguard-go's genTestPair pattern).

// testNode is a kernel under test, fake or real, with the hand operations
// that no Kernel call does.
type testNode struct {
	k    kernel.Kernel
	eth0 kernel.Link
	ns   string // the namespace's name; "" for the fake
	// setDown is `ip link set NAME down` by hand.
	setDown func(name string) error
	// deleteLink is `ip link del NAME` by hand, behind the Kernel's back.
	deleteLink func(name string) error
	// openTUN opens a TUN device as the udp backend does (tun.CreateTUN)
	// and returns the function that closes it, which removes the device.
	openTUN func(name string) (close func())
}

// newTestNode returns lo and eth0 (a veth to eth0-peer, MTU 1500, up) with
// 192.0.2.11/24 and a default route via 192.0.2.1: node() of the fake
// tests, in a real namespace when real.
func newTestNode(t testing.TB, real bool) testNode {
	t.Helper()
	if !real {
		f, eth0 := node(t)
		f.AddDevice(kernel.Link{Name: "eth0-peer", Kind: "veth", MTU: 1500, MAC: "02:00:00:00:00:ee", Up: true})
		return testNode{
			k: f, eth0: eth0,
			setDown:    f.SetDown,
			deleteLink: f.DeleteLink,
			openTUN: func(name string) func() {
				f.AddDevice(kernel.Link{Name: name, Kind: kernel.KindTUN, MTU: 1500})
				return func() { _ = f.DeleteLink(name) }
			},
		}
	}
	ns := netnstest.New(t) // skips unless root
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	hw, _ := net.ParseMAC("02:00:c0:00:02:0b")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500, HardwareAddr: hw}, PeerName: "eth0-peer"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	k := kernel.NewNetlink(h)
	must(t, k.SetLinkUp("eth0-peer"))
	must(t, k.SetLinkUp("eth0"))
	eth0, err := k.LinkByName("eth0")
	must(t, err)
	must(t, k.ReplaceAddr(kernel.Addr{Dev: eth0.Name, Prefix: p("192.0.2.11/24")}))
	must(t, k.ReplaceRoute(kernel.Route{Dst: p("0.0.0.0/0"), Gw: a("192.0.2.1"), Dev: eth0.Name, Protocol: kernel.ProtoBoot}))
	eth0, _ = k.LinkByName("eth0")
	return testNode{
		k: k, eth0: eth0, ns: ns,
		setDown: func(name string) error {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			return h.LinkSetDown(l)
		},
		deleteLink: func(name string) error {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			return h.LinkDel(l)
		},
		openTUN: func(name string) func() {
			var dev tun.Device
			err := netns.Do(ns, func() error {
				var err error
				dev, err = tun.CreateTUN(name, 1500)
				return err
			})
			if err != nil {
				t.Fatalf("open TUN device %s: %v", name, err)
			}
			t.Cleanup(func() { _ = dev.Close() })
			return func() { _ = dev.Close() }
		},
	}
}

var pairScope = func(n testNode, dev string) kernel.Scope {
	return kernel.Scope{Networks: []netip.Prefix{p("10.244.0.0/16")}, Own: []netip.Prefix{p("10.244.3.0/24")}, RouteDevs: []string{dev, n.eth0.Name}, NeighDevs: []string{dev}}
}

// snapshot renders, by name, the links named, their addresses (but not
// the IPv6 link-local ones the real kernel generates) and the entries
// within the scope of the link named first, sorted.
func snapshot(t *testing.T, n testNode, links ...string) string {
	t.Helper()
	byIndex := map[int]string{}
	var lines []string
	for _, name := range links {
		l, err := n.k.LinkByName(name)
		if kernel.IsNotFound(err) {
			lines = append(lines, "link "+name+" absent")
			continue
		}
		must(t, err)
		byIndex[l.Index] = l.Name
		s := fmt.Sprintf("link %s %s mtu %d mac %q up %v", l.Name, l.Kind, l.MTU, l.MAC, l.Up)
		if l.Kind == kernel.KindVXLAN {
			v := l.VXLAN
			s += fmt.Sprintf(" vni %d local %s dev %s port %d learning %v gbp %v", v.VNI, v.Local, byIndex[v.Dev], v.Port, v.Learning, v.GBP)
		}
		lines = append(lines, s)
	}
	addrs, err := n.k.Addrs()
	must(t, err)
	for _, ad := range addrs {
		if slices.Contains(links, ad.Dev) && !(ad.Prefix.Addr().Is6() && ad.Prefix.Addr().IsLinkLocalUnicast()) {
			lines = append(lines, "addr "+ad.Prefix.String()+" dev "+ad.Dev)
		}
	}
	if dev, err := n.k.LinkByName(links[0]); err == nil {
		have, err := kernel.Read(n.k, pairScope(n, dev.Name))
		must(t, err)
		for _, r := range have.Routes {
			lines = append(lines, kernel.RouteCmd("", r))
		}
		for _, e := range have.Neighs {
			lines = append(lines, kernel.NeighCmd("", e))
		}
		for _, e := range have.FDB {
			lines = append(lines, kernel.FDBCmd("", e))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// outcome names what a call returned, in terms both kernels share.
func outcome(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case kernel.IsNotFound(err):
		return "not found"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return "error: " + err.Error()
}

type step struct{ what, state string }

// scenario runs on one testNode and returns its steps.
type scenario func(t *testing.T, n testNode) []step

// runPair runs sc on the fake, then (as root) on a real namespace, and
// compares the two step by step.
func runPair(t *testing.T, sc scenario) {
	fake := sc(t, newTestNode(t, false))
	t.Run("netlink", func(t *testing.T) {
		real := sc(t, newTestNode(t, true))
		if len(real) != len(fake) {
			t.Fatalf("%d steps on netlink, %d on the fake", len(real), len(fake))
		}
		for i := range real {
			if real[i] != fake[i] {
				t.Errorf("step %q:\nnetlink:\n%s\nfake (%q):\n%s", real[i].what, real[i].state, fake[i].what, fake[i].state)
			}
		}
	})
}

func TestPairVXLAN(t *testing.T) {
	runPair(t, func(t *testing.T, n testNode) []step {
		ctx := context.Background()
		var steps []step
		snap := func(what string) string {
			s := snapshot(t, n, "flannel.1", "eth0")
			steps = append(steps, step{what, s})
			return s
		}
		d := vxlanDevice(n.eth0)
		dev := ensure(t, n.k, d)
		snap("created")
		plan := func(peers ...string) kernel.Plan {
			var pl kernel.Plan
			for _, peer := range peers {
				switch peer {
				case "10.244.4.0/24": // over vxlan
					pl.FDB = append(pl.FDB, kernel.FDB{MAC: "0e:00:00:00:00:04", Dst: a("198.51.100.12"), Dev: d.Name})
					pl.Neighs = append(pl.Neighs, kernel.Neigh{IP: a("10.244.4.0"), MAC: "0e:00:00:00:00:04", Dev: d.Name})
					pl.Routes = append(pl.Routes, kernel.Route{Dst: p(peer), Gw: a("10.244.4.0"), Dev: d.Name, OnLink: true})
				case "10.244.6.0/24": // direct
					pl.Routes = append(pl.Routes, kernel.Route{Dst: p(peer), Gw: a("192.0.2.14"), Dev: n.eth0.Name})
				}
			}
			return pl
		}
		both := plan("10.244.4.0/24", "10.244.6.0/24")
		added, removed, err := kernel.Apply(ctx, n.k, both, pairScope(n, d.Name))
		must(t, err)
		applied := snap(fmt.Sprintf("applied: %d added, %d removed", added, removed))

		// By hand: down (the kernel drops the device's routes and
		// neighbours), MTU 1400, address removed.
		must(t, n.setDown("flannel.1"))
		must(t, n.k.SetLinkMTU("flannel.1", 1400))
		must(t, n.k.DeleteAddr(kernel.Addr{Dev: d.Name, Prefix: p("10.244.3.0/32")}))
		snap("changed by hand")
		again := ensure(t, n.k, d)
		if again != dev {
			t.Errorf("the device was recreated: index %d, was %d", again, dev)
		}
		added, removed, err = kernel.Apply(ctx, n.k, both, pairScope(n, d.Name))
		must(t, err)
		if s := snap(fmt.Sprintf("repaired: %d added, %d removed", added, removed)); s != applied {
			t.Errorf("repaired state\n%s\ndiffers from the applied one\n%s", s, applied)
		}

		// Another port: recreated with its MAC (and another index), its
		// FDB gone with it; the plan, which names it, still applies.
		d.VXLAN.Port = 4789
		dev = ensure(t, n.k, d)
		snap("recreated")
		added, removed, err = kernel.Apply(ctx, n.k, plan("10.244.4.0/24"), pairScope(n, d.Name))
		must(t, err)
		oneLeft := snap(fmt.Sprintf("one peer left: %d added, %d removed", added, removed))

		// Deleted by hand, behind the Kernel's back (the netlink Kernel
		// remembers indexes by name): the next sync makes it anew and
		// writes through the new index.
		must(t, n.deleteLink("flannel.1"))
		snap("deleted by hand")
		err = kernel.EnsureLink(ctx, n.k, d)
		must(t, err)
		added, removed, err = kernel.Apply(ctx, n.k, plan("10.244.4.0/24"), pairScope(n, d.Name))
		must(t, err)
		if s := snap(fmt.Sprintf("made anew: %d added, %d removed", added, removed)); s != oneLeft {
			t.Errorf("state after the device was made anew\n%s\ndiffers from before\n%s", s, oneLeft)
		}
		return steps
	})
}

func TestPairTUN(t *testing.T) {
	runPair(t, func(t *testing.T, n testNode) []step {
		ctx := context.Background()
		var steps []step
		snap := func(what string) {
			steps = append(steps, step{what, snapshot(t, n, "flannel0")})
		}
		err := kernel.EnsureLink(ctx, n.k, tunDevice("10.244.3.0/16"))
		steps = append(steps, step{"missing", outcome(err)})
		closeTUN := n.openTUN("flannel0")
		snap("opened")
		err = kernel.EnsureLink(ctx, n.k, tunDevice("10.244.3.0/16"))
		must(t, err)
		snap("ensured")
		// No IPv6 link-local address, not even on the real kernel.
		addrs, err := n.k.Addrs()
		must(t, err)
		l, _ := n.k.LinkByName("flannel0")
		for _, ad := range addrs {
			if ad.Dev == l.Name && ad.Prefix.Addr().Is6() {
				t.Errorf("flannel0 has %s with addrgenmode none", ad.Prefix)
			}
		}
		must(t, n.k.DeleteAddr(kernel.Addr{Dev: l.Name, Prefix: p("10.244.3.0/16")}))
		snap("address removed by hand")
		err = kernel.EnsureLink(ctx, n.k, tunDevice("10.244.3.0/16"))
		must(t, err)
		snap("repaired")
		err = kernel.EnsureLink(ctx, n.k, tunDevice("10.244.7.0/16"))
		must(t, err)
		snap("new own subnet")
		closeTUN()
		err = kernel.EnsureLink(ctx, n.k, tunDevice("10.244.7.0/16"))
		steps = append(steps, step{"closed", outcome(err)})
		return steps
	})
}

// TestPairContract checks the promises of the Kernel interface that the
// helpers rely on (idempotent deletes, not-found errors) and the kernel's
// refusals the fake models.
func TestPairContract(t *testing.T) {
	runPair(t, func(t *testing.T, n testNode) []step {
		ctx := context.Background()
		err := kernel.EnsureLink(ctx, n.k, vxlanDevice(n.eth0))
		must(t, err)
		var steps []step
		try := func(what string, err error) { steps = append(steps, step{what, outcome(err)}) }
		try("delete a missing link", n.k.DeleteLink("flannel.9"))
		try("delete a missing address", n.k.DeleteAddr(kernel.Addr{Dev: "flannel.1", Prefix: p("10.244.9.0/32")}))
		try("delete a missing route", n.k.DeleteRoute(kernel.Route{Dst: p("10.244.9.0/24"), Gw: a("10.244.9.0"), Dev: "flannel.1", OnLink: true}))
		try("delete a missing neighbour", n.k.DeleteNeigh(kernel.Neigh{IP: a("10.244.9.0"), MAC: "0e:00:00:00:00:09", Dev: "flannel.1"}))
		try("delete a missing FDB entry", n.k.DeleteFDB(kernel.FDB{MAC: "0e:00:00:00:00:09", Dst: a("192.0.2.19"), Dev: "flannel.1"}))
		try("delete a route on a missing link", n.k.DeleteRoute(kernel.Route{Dst: p("10.244.9.0/24"), Dev: "flannel.9"}))
		_, err = n.k.LinkByName("flannel.9")
		try("look up a missing link", err)
		_, err = n.k.LinkByIndex(999)
		try("look up a missing index", err)
		try("set a missing link up", n.k.SetLinkUp("flannel.9"))
		try("route through a missing link", n.k.ReplaceRoute(kernel.Route{Dst: p("10.244.9.0/24"), Dev: "flannel.9"}))
		try("address on a missing link", n.k.ReplaceAddr(kernel.Addr{Dev: "flannel.9", Prefix: p("10.244.9.0/32")}))
		try("neighbour on a missing link", n.k.ReplaceNeigh(kernel.Neigh{IP: a("10.244.9.0"), MAC: "0e:00:00:00:00:09", Dev: "flannel.9"}))
		try("gateway off the link", n.k.ReplaceRoute(kernel.Route{Dst: p("10.244.9.0/24"), Gw: a("198.51.100.9"), Dev: n.eth0.Name}))
		try("vxlan MTU above the underlay's less 50", n.k.SetLinkMTU("flannel.1", 1451))
		_, err = n.k.AddLink(kernel.Link{Name: "flannel.1", Kind: kernel.KindVXLAN, VXLAN: kernel.VXLAN{VNI: 2, Dev: n.eth0.Index, Port: 8472}})
		try("add a link that exists", err)
		try("FDB entry on the underlay", n.k.ReplaceFDB(kernel.FDB{MAC: "0e:00:00:00:00:09", Dst: a("192.0.2.19"), Dev: n.eth0.Name}))
		must(t, n.setDown("flannel.1"))
		try("route through a link that is down", n.k.ReplaceRoute(kernel.Route{Dst: p("10.244.9.0/24"), Gw: a("10.244.9.0"), Dev: "flannel.1", OnLink: true}))
		try("neighbour on a link that is down", n.k.ReplaceNeigh(kernel.Neigh{IP: a("10.244.9.0"), MAC: "0e:00:00:00:00:09", Dev: "flannel.1"}))
		neighs, err := n.k.Neighs("flannel.9")
		try(fmt.Sprintf("neighbours of a missing link (%d)", len(neighs)), err)
		fdb, err := n.k.FDB("flannel.9")
		try(fmt.Sprintf("FDB of a missing link (%d)", len(fdb)), err)
		// An FDB delete whose destination differs leaves the entry.
		must(t, n.k.ReplaceFDB(kernel.FDB{MAC: "0e:00:00:00:00:04", Dst: a("192.0.2.12"), Dev: "flannel.1"}))
		try("delete an FDB entry with another destination", n.k.DeleteFDB(kernel.FDB{MAC: "0e:00:00:00:00:04", Dst: a("192.0.2.99"), Dev: "flannel.1"}))
		fdb, err = n.k.FDB("flannel.1")
		try(fmt.Sprintf("FDB entries left: %v", fdb), err)
		return steps
	})
}
