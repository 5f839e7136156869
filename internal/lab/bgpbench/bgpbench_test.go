package bgpbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
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

// TestParseAgentLog: the first "leased subnet" line of an agent log
// gives the lease's time and IPv4 subnet, the first "BGP session up"
// after it the session's; a log without either, or with a subnet that
// is not IPv4, is an error.
func TestParseAgentLog(t *testing.T) {
	const (
		start  = `time=2026-12-01T03:01:18.531Z level=INFO msg="starting weft agent" version=dev` + "\n"
		on     = `time=2026-12-01T03:01:18.556Z level=INFO msg="BGP on" local-as=64513 peers="[192.0.2.1 (AS 64500)]"` + "\n"
		leased = `time=2026-12-01T03:01:18.602Z level=INFO msg="leased subnet" subnet=10.244.88.0/24 ipv6-subnet=invalid Prefix expires=2026-12-02T03:01:18Z` + "\n"
		again  = `time=2026-12-01T03:05:00.000Z level=INFO msg="leased subnet" subnet=10.244.89.0/24 ipv6-subnet=invalid Prefix expires=2026-12-02T03:05:00Z` + "\n"
		up     = `time=2026-12-01T03:01:20.117Z level=INFO msg="BGP session up" peer=192.0.2.1 as=64500` + "\n"
		up2    = `time=2026-12-01T03:06:00.000Z level=INFO msg="BGP session up" peer=192.0.2.1 as=64500` + "\n"
	)
	l, err := parseAgentLog(strings.NewReader(start + on + leased + up + again + up2))
	if err != nil {
		t.Fatal(err)
	}
	want := agentLog{Lease: time.Date(2026, 12, 1, 3, 1, 18, 602e6, time.UTC), Subnet: netip.MustParsePrefix("10.244.88.0/24"),
		Up: time.Date(2026, 12, 1, 3, 1, 20, 117e6, time.UTC)}
	if !l.Lease.Equal(want.Lease) || l.Subnet != want.Subnet || !l.Up.Equal(want.Up) {
		t.Errorf("parseAgentLog = %+v, want %+v", l, want)
	}
	for _, bad := range []string{
		start + on,
		start + leased, // no session up
		up + leased,    // the session up before the lease is not this one
		start + strings.Replace(leased, "10.244.88.0/24", "invalid", 1) + up,
		strings.Replace(leased, "2026-12-01T03:01:18.602Z", "yesterday", 1) + up,
	} {
		if _, err := parseAgentLog(strings.NewReader(bad)); err == nil {
			t.Errorf("parseAgentLog(%q) succeeded", bad)
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
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	add := func(up, route, pod, reply int) Add {
		return Add{Node: "n3", Lease: t0, Up: at(up), Route: at(route), PodUp: at(pod), Reply: at(reply)}
	}
	r := Report{Adds: []Add{add(100, 120, 2000, 2300), add(30, 80, 1900, 2100), add(90, 100, 2100, 2250)}, Settle: 10 * time.Second,
		Off: Memory{RSS: []float64{20, 22}, HWM: []float64{27, 28}, SpeakerRSS: []float64{0, 0}, SpeakerHWM: []float64{0, 0}},
		On:  Memory{RSS: []float64{30, 34}, HWM: []float64{36, 42}, SpeakerRSS: []float64{10, 12}, SpeakerHWM: []float64{11, 13}}}
	var b bytes.Buffer
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"over 3 node adds",
		"lease -> route at the router:     min 80 ms, median 100 ms, max 120 ms",
		"lease -> BGP session up:        min 30 ms, median 90 ms, max 100 ms",
		"session up -> route:            min 10 ms, median 20 ms, max 50 ms",
		"lease -> ext's first ping reply:  min 2100 ms, median 2250 ms, max 2300 ms",
		"pod addressed -> that reply:    min 150 ms, median 200 ms, max 300 ms",
		"agents' memory 10s after up, 2 agents per lab (MiB):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, row := range []string{`VmRSS mean\s+21\.0\s+32\.0\s+1\.52x`, `VmRSS max\s+22\.0\s+34\.0\s+1\.55x`, `VmHWM max\s+28\.0\s+42\.0\s+1\.50x`,
		`speaker VmRSS mean\s+0\.0\s+11\.0\s+-`, `agent\+speaker VmRSS mean\s+21\.0\s+43\.0\s+2\.05x`, `agent\+speaker VmHWM max\s+28\.0\s+55\.0\s+1\.96x`} {
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
// then the first pod address in the pod's namespace, then ext's first
// reply once the router holds that address itself; a route there from
// the start is refused.
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
	hp, err := netns.Handle(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	time.Sleep(100 * time.Millisecond)
	addr := func(h *netlink.Handle) {
		t.Helper()
		lo, err := h.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		// ip -n NS addr add 10.244.7.2/32 dev lo
		if err := h.AddrAdd(lo, &netlink.Addr{IPNet: netconv.IPNet(netip.MustParsePrefix("10.244.7.2/32"))}); err != nil {
			t.Fatal(err)
		}
	}
	addr(hp) // the pod has its address
	time.Sleep(200 * time.Millisecond)
	addr(hr) // and the router answers ext for it
	res, err := w.wait(ctx, netip.MustParsePrefix("10.244.7.0/24"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pod, reply := res.podUp.Sub(res.route), res.reply.Sub(res.podUp)
	t.Logf("route -> pod addressed %s, -> reply %s", pod, reply)
	if res.route.IsZero() || pod < 250*time.Millisecond || reply < 150*time.Millisecond {
		t.Errorf("route at %s, pod addressed %s later, reply %s after that; want about 300 and 200 ms", res.route, pod, reply)
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

// children finds a process this test started by its parent's PID.
func TestChildren(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if got := children(os.Getpid()); !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("children(%d) = %v, want %d among them", os.Getpid(), got, cmd.Process.Pid)
	}
	if got := children(cmd.Process.Pid); len(got) != 0 {
		t.Errorf("sleep has children %v", got)
	}
}
