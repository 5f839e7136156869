package topology

import (
	"os"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec() // DropForward runs iptables through netns.Command
	os.Exit(m.Run())
}

// TestDropForward sets the policy in a fresh namespace and reads it back
// with iptables there; the root namespace is never touched.
func TestDropForward(t *testing.T) {
	ns := netnstest.New(t)
	if err := CheckIPTables(); err != nil {
		t.Skip(err)
	}
	if err := DropForward(ns); err != nil {
		t.Fatal(err)
	}
	out, err := netns.Command(ns, "iptables", "-w", "5", "-S", "FORWARD").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S FORWARD: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "-P FORWARD DROP") {
		t.Errorf("FORWARD policy in %s:\n%s", ns, out)
	}
}

// TestUnderlayL3 builds a router and attaches a host on each side.
func TestUnderlayL3(t *testing.T) {
	ul, a := netnstest.New(t), netnstest.New(t)
	if err := BuildUnderlay(ul, L3); err != nil {
		t.Fatal(err)
	}
	addr, side := NodeAddr(L3, 1, 2)
	if err := Attach(ul, L3, Host{Name: "h1", NS: a, Addr: addr, Side: side}); err != nil {
		t.Fatal(err)
	}
	h, err := netns.Handle(a)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes, err := h.RouteList(nil, 2 /* AF_INET */)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.String())
	}
	if s := strings.Join(got, "\n"); !strings.Contains(s, "Gw: 192.0.2.1") || !strings.Contains(s, "Dst: 192.0.2.0/24") {
		t.Errorf("routes in the host:\n%s", s)
	}
}
