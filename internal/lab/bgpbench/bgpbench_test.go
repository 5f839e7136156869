package bgpbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestParseLease: the first "leased subnet" line of an agent log gives
// the lease's time and IPv4 subnet; a log without one, or with a subnet
// that is not IPv4, is an error.
func TestParseLease(t *testing.T) {
	log := `time=2026-12-01T03:01:18.531Z level=INFO msg="starting weft agent" version=dev
time=2026-12-01T03:01:18.556Z level=INFO msg="BGP on" local-as=64513 peers="[192.0.2.1 (AS 64500)]"
time=2026-12-01T03:01:18.602Z level=INFO msg="leased subnet" subnet=10.244.88.0/24 ipv6-subnet=invalid Prefix expires=2026-12-02T03:01:18Z
time=2026-12-01T03:05:00.000Z level=INFO msg="leased subnet" subnet=10.244.89.0/24 ipv6-subnet=invalid Prefix expires=2026-12-02T03:05:00Z
`
	at, p, err := parseLease(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 12, 1, 3, 1, 18, 602e6, time.UTC); !at.Equal(want) || p != netip.MustParsePrefix("10.244.88.0/24") {
		t.Errorf("parseLease = %s, %s; want %s, 10.244.88.0/24", at, p, want)
	}
	for _, bad := range []string{
		"time=2026-12-01T03:01:18.531Z level=INFO msg=\"starting weft agent\"\n",
		"time=2026-12-01T03:01:18.602Z level=INFO msg=\"leased subnet\" subnet=invalid ipv6-subnet=2001:db8:244::/64\n",
		"time=yesterday level=INFO msg=\"leased subnet\" subnet=10.244.88.0/24\n",
	} {
		if _, _, err := parseLease(strings.NewReader(bad)); err == nil {
			t.Errorf("parseLease(%q) succeeded", bad)
		}
	}
}

func TestSpread(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range xs {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		want string
	}{
		{ms(300, 100, 200), "min 100 ms, median 200 ms, max 300 ms"},
		{ms(400, 100, 300, 200), "min 100 ms, median 250 ms, max 400 ms"},
		{ms(7), "min 7 ms, median 7 ms, max 7 ms"},
	} {
		if got := spread(c.in).String(); got != c.want {
			t.Errorf("spread(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestPrint: the spreads come from the adds' times, and the memory rows
// show BGP off and on side by side with the ratio on/off.
func TestPrint(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	add := func(route, pod, reply int) Add {
		return Add{Node: "n3", Lease: t0, Route: t0.Add(time.Duration(route) * time.Millisecond),
			PodNS: t0.Add(time.Duration(pod) * time.Millisecond), Reply: t0.Add(time.Duration(reply) * time.Millisecond)}
	}
	r := Report{Adds: []Add{add(120, 2000, 2300), add(80, 1900, 2100), add(100, 2100, 2250)}, Settle: 10 * time.Second,
		Off: Memory{RSS: []float64{20, 22}, HWM: []float64{27, 28}}, On: Memory{RSS: []float64{30, 34}, HWM: []float64{36, 42}}}
	var b bytes.Buffer
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"over 3 node adds",
		"lease -> route at the router:     min 80 ms, median 100 ms, max 120 ms",
		"lease -> ext's first ping reply:  min 2100 ms, median 2250 ms, max 2300 ms",
		"pod's namespace -> that reply:    min 150 ms, median 200 ms, max 300 ms",
		"agents' memory 10s after up, 2 agents per lab (MiB):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, row := range []string{`VmRSS mean\s+21\.0\s+32\.0\s+1\.52x`, `VmRSS max\s+22\.0\s+34\.0\s+1\.55x`, `VmHWM max\s+28\.0\s+42\.0\s+1\.50x`} {
		if !regexpMatch(row, out) {
			t.Errorf("no row matching %s:\n%s", row, out)
		}
	}
}

func TestNextNodeAndFirstPod(t *testing.T) {
	nodes := []lab.NodeStatus{{Name: "n1"}, {Name: "n2"}, {Name: "n4"}}
	if got := nextNode(nodes); got != "n3" {
		t.Errorf("nextNode = %s, want n3", got)
	}
	if got := nextNode(nil); got != "n1" {
		t.Errorf("nextNode(nil) = %s, want n1", got)
	}
	if got := firstPod(netip.MustParsePrefix("10.244.88.0/24")); got != netip.MustParseAddr("10.244.88.2") {
		t.Errorf("firstPod = %s", got)
	}
}

func TestValidate(t *testing.T) {
	good := Options{Name: "bb1", Rounds: 1, Router: "bird", Nodes: 2}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Options{
		{Name: "bb12345", Rounds: 1, Router: "bird", Nodes: 2},
		{Name: "bb1", Rounds: 0, Router: "bird", Nodes: 2},
		{Name: "bb1", Rounds: 1, Router: "quagga", Nodes: 2},
		{Name: "bb1", Rounds: 1, Router: "frr", Nodes: 1},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestWatch: in a fresh "router" namespace joined to a fresh "ext" one,
// the watcher sees a new route (a blackhole: ext's echoes get nothing),
// then the pod's namespace, then ext's first reply once the router
// holds the first pod address itself; a route there from the start is
// refused.
func TestWatch(t *testing.T) {
	rt, ext := netnstest.New(t), netnstest.New(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	podNS := "wt-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { _ = netns.Delete(podNS) })
	hr, err := netns.Handle(rt)
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Close()
	he, err := netns.Handle(ext)
	if err != nil {
		t.Fatal(err)
	}
	defer he.Close()
	fd, err := netns.Fd(ext)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// ip link add r0 type veth peer name e0 netns EXT
	if err := hr.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "r0"}, PeerName: "e0", PeerNamespace: netlink.NsFd(fd)}); err != nil {
		t.Fatal(err)
	}
	up := func(h *netlink.Handle, name, addr string) {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if addr != "" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: netconv.IPNet(netip.MustParsePrefix(addr))}); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	up(hr, "lo", "")
	up(he, "lo", "")
	up(hr, "r0", "192.0.2.1/24")
	up(he, "e0", "192.0.2.10/24")
	// ip -n EXT route add 10.244.0.0/16 via 192.0.2.1
	if err := he.RouteAdd(&netlink.Route{Dst: netconv.IPNet(netip.MustParsePrefix("10.244.0.0/16")), Gw: netip.MustParseAddr("192.0.2.1").AsSlice()}); err != nil {
		t.Fatal(err)
	}
	blackhole := func(p string) {
		t.Helper()
		// ip -n RT route add blackhole P
		if err := hr.RouteAdd(&netlink.Route{Dst: netconv.IPNet(netip.MustParsePrefix(p)), Type: unix.RTN_BLACKHOLE}); err != nil {
			t.Fatal(err)
		}
	}
	blackhole("10.244.9.0/24") // there before the add

	ctx := context.Background()
	w, err := watch(ctx, rt, ext, podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer w.stop()
	time.Sleep(100 * time.Millisecond)
	blackhole("10.244.7.0/24")
	time.Sleep(200 * time.Millisecond)
	if err := netns.Create(podNS); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	lo, err := hr.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// ip -n RT addr add 10.244.7.2/32 dev lo: the router answers ext now
	if err := hr.AddrAdd(lo, &netlink.Addr{IPNet: netconv.IPNet(netip.MustParsePrefix("10.244.7.2/32"))}); err != nil {
		t.Fatal(err)
	}
	res, err := w.wait(ctx, netip.MustParsePrefix("10.244.7.0/24"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	route, pod := res.podNS.Sub(res.route), res.reply.Sub(res.podNS)
	t.Logf("route -> pod namespace %s, -> reply %s", route, pod)
	if res.route.IsZero() || route < 150*time.Millisecond || pod < 150*time.Millisecond {
		t.Errorf("route at %s, pod namespace %s later, reply %s after that; want about 200 ms each", res.route, route, pod)
	}

	w2, err := watch(ctx, rt, ext, podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.stop()
	if _, err := w2.wait(ctx, netip.MustParsePrefix("10.244.9.0/24"), 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "before") {
		t.Errorf("a route there before the add: %v, want an error saying so", err)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
