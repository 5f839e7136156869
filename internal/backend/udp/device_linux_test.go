package udp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestDeviceKeptRightInNamespace runs the backend in a fresh namespace:
// flannel0's address deleted by hand is back after the next Apply, and
// flannel0 deleted by hand is opened again.
func TestDeviceKeptRightInNamespace(t *testing.T) {
	ns := netnstest.New(t)
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	b := New(t.Context(), kernel.NewNetlink(h), Options{Common: backend.Common{Port: 8285}, Datapath: DatapathTUN}, kernel.Underlay{MTU: 1500}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { _ = b.Close() })
	st := state()
	// The device and the socket are opened in the namespace.
	apply := func() {
		t.Helper()
		err := netns.Do(ns, func() error {
			_, err := b.Apply(context.Background(), b.Plan(st))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// check returns flannel0 after it has been checked: up, MTU 1472,
	// exactly 10.244.1.0/16 (no IPv6 link-local address either).
	check := func(when string) netlink.Link {
		t.Helper()
		l, err := h.LinkByName(DeviceName)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != 1472 {
			t.Errorf("%s: flags %v MTU %d, want up and 1472", when, l.Attrs().Flags, l.Attrs().MTU)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/16" {
			t.Errorf("%s: addresses %v, want 10.244.1.0/16", when, addrs)
		}
		return l
	}
	apply()
	l := check("after the first Apply")

	// By hand: ip addr del 10.244.1.0/16 dev flannel0.
	addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
	if err := h.AddrDel(l, &addrs[0]); err != nil {
		t.Fatal(err)
	}
	apply()
	check("after the address was deleted by hand")

	// By hand: ip link del flannel0.
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	apply()
	if again := check("after flannel0 was deleted by hand"); again.Attrs().Index == l.Attrs().Index {
		t.Errorf("flannel0 kept index %d: not opened again", again.Attrs().Index)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(DeviceName); err == nil {
		t.Error("flannel0 is still there after Close")
	}
}
