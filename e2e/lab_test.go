// Package e2e runs the lab end to end: real namespaces, real agent and
// store processes, real CNI invocations. It needs root.
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
)

var bin string // directory with weft, weft-agent and weft-cni

func TestMain(m *testing.M) {
	netns.HandleExec()
	flag.Parse()
	code := func() int {
		if os.Geteuid() != 0 {
			fmt.Println("e2e: skipping, needs root")
			return m.Run() // each test skips
		}
		dir, err := os.MkdirTemp("", "weft-e2e-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		// Every binary of cmd/: the lab starts weft-agent and weft-cni
		// from beside weft.
		out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/...").CombinedOutput()
		if err != nil {
			fmt.Printf("e2e: build: %v\n%s", err, out)
			return 1
		}
		bin = dir
		guardTimeout()
		return m.Run()
	}()
	os.Exit(code)
}

// labs are the names of the labs this run brought up: go test's -timeout
// ends the binary with a panic that runs no t.Cleanup, so guardTimeout
// removes them itself just before.
var labs struct {
	sync.Mutex
	names []string
}

func registerLab(name string) {
	labs.Lock()
	defer labs.Unlock()
	labs.names = append(labs.names, name)
}

// guardTimeout removes every lab of this run (`weft lab down`, which is
// safe to repeat) and exits, shortly before go test's -timeout would end
// the binary with its labs left behind.
func guardTimeout() {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	d, ok := f.Value.(flag.Getter).Get().(time.Duration)
	if !ok || d <= 0 {
		return
	}
	time.AfterFunc(d-min(d/10, time.Minute), func() {
		labs.Lock()
		defer labs.Unlock()
		fmt.Printf("e2e: the test timeout (%s) is near: removing this run's labs and stopping\n", d)
		for _, name := range labs.names {
			out, err := exec.Command(filepath.Join(bin, "weft"), "lab", "down", "--name", name).CombinedOutput()
			fmt.Printf("e2e: lab down --name %s: %v %s", name, err, out)
		}
		os.Exit(1)
	})
}

type lab struct {
	t    *testing.T
	name string
}

// newLab brings up a uniquely named lab and removes it when the test ends.
func newLab(t *testing.T, args ...string) (*lab, string) {
	t.Helper()
	return startLab(t, false, args...)
}

// newLabFailingCheck is newLab for a lab whose check, which up runs last,
// is meant to fail (host-gw across the l3 router): up's exit status 1 is
// expected then, and any other outcome fails the test.
func newLabFailingCheck(t *testing.T, args ...string) (*lab, string) {
	t.Helper()
	return startLab(t, true, args...)
}

func startLab(t *testing.T, checkFails bool, args ...string) (*lab, string) {
	t.Helper()
	if bin == "" {
		t.Skip("needs root")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	l := &lab{t: t, name: "t" + hex.EncodeToString(b[:])}
	registerLab(l.name)
	t.Cleanup(func() {
		if out, err := l.run("down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		for _, ns := range listNS() {
			if strings.HasPrefix(ns, l.name+"-") {
				t.Errorf("namespace %s left behind", ns)
			}
		}
	})
	out, err := l.run(append([]string{"up"}, args...)...)
	var ee *exec.ExitError
	switch {
	case checkFails && (err == nil || !errors.As(err, &ee) || ee.ExitCode() != 1 || !regexp.MustCompile(`\d+ passed, [1-9]\d* failed`).MatchString(out)):
		t.Fatalf("lab up: %v, want its check to fail\n%s", err, out)
	case !checkFails && err != nil:
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	t.Logf("lab up %s:\n%s", strings.Join(args, " "), out)
	return l, out
}

func listNS() []string {
	ents, _ := os.ReadDir(netns.Dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (l *lab) run(args ...string) (string, error) {
	// --name goes after the subcommand (and its verb).
	at := 1
	if len(args) > 0 && (args[0] == "agent" || args[0] == "node") {
		at = 2
	}
	at = min(at, len(args))
	full := append([]string{"lab"}, args[:at]...)
	full = append(full, "--name", l.name)
	full = append(full, args[at:]...)
	out, err := exec.Command(filepath.Join(bin, "weft"), full...).CombinedOutput()
	return string(out), err
}

func (l *lab) must(args ...string) string {
	l.t.Helper()
	out, err := l.run(args...)
	if err != nil {
		l.t.Fatalf("weft lab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type status struct {
	Nodes []struct {
		Name, Netns, Addr, Subnet, Agent, Log string
		Ready                                 bool
		SubnetFile                            string
	}
	Pods []struct {
		Name, Node, Addr string
	}
}

func (l *lab) status() status {
	l.t.Helper()
	var st status
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		l.t.Fatal(err)
	}
	return st
}

func (l *lab) handle(node string) *netlink.Handle {
	l.t.Helper()
	h, err := netns.Handle(l.name + "-" + node)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(h.Close)
	return h
}

// entries lists what a node has in the kernel for a peer subnet: routes,
// and neighbour and FDB entries on flannel.1.
func entries(h *netlink.Handle, subnet netip.Prefix) []string {
	var out []string
	routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == subnet.String() {
			out = append(out, "route "+r.String())
		}
	}
	if link, err := h.LinkByName("flannel.1"); err == nil {
		neighs, _ := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.String() == subnet.Addr().String() {
				out = append(out, "neigh "+n.String())
			}
		}
	}
	return out
}

func fdbCount(h *netlink.Handle) int {
	link, err := h.LinkByName("flannel.1")
	if err != nil {
		return 0
	}
	fdb, _ := h.NeighList(link.Attrs().Index, 7 /* AF_BRIDGE */)
	n := 0
	for _, f := range fdb {
		if f.IP != nil {
			n++
		}
	}
	return n
}

// pingAcrossRestarts pings n1-p1 -> n2-p1 at 20/s for 10 s while
// restarting the agents of n2 and then n1, and returns the ping's summary.
// It fails the test if the restarts did not happen while the ping ran.
func (l *lab) pingAcrossRestarts(t *testing.T) (string, error) {
	t.Helper()
	ping := exec.Command(filepath.Join(bin, "weft"), "lab", "ping", "--name", l.name, "--count", "200", "--interval", "50ms", "n1-p1", "n2-p1")
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	l.must("agent", "restart", "n2")
	time.Sleep(2 * time.Second)
	l.must("agent", "restart", "n1")
	done := make(chan error, 1)
	go func() { done <- ping.Wait() }()
	select {
	case <-done:
		t.Fatal("the ping ended before the restarts did: they did not overlap")
	case <-time.After(100 * time.Millisecond):
	}
	err := <-done
	t.Log(strings.TrimSpace(out.String()))
	return out.String(), err
}

var passRE = regexp.MustCompile(`(\d+) passed, 0 failed`)

func TestVXLANOnL2(t *testing.T) {
	l, out := newLab(t)
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("3 nodes x 2 pods: want 36 passing probes:\n%s", out)
	}
	st := l.status()
	for _, n := range st.Nodes {
		if !n.Ready {
			t.Errorf("node %s not ready", n.Name)
		}
		b, err := os.ReadFile(n.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^FLANNEL_NETWORK=10\.244\.0\.0/16\nFLANNEL_SUBNET=10\.244\.\d+\.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n$`).Match(b) {
			t.Errorf("%s subnet.env:\n%s", n.Name, b)
		}
	}

	t.Run("RestartDuringPing", func(t *testing.T) {
		before := l.status()
		h := l.handle("n2")
		dev, err := h.LinkByName("flannel.1")
		if err != nil {
			t.Fatal(err)
		}
		mac := dev.Attrs().HardwareAddr.String()
		out, err := l.pingAcrossRestarts(t)
		if err != nil || !strings.Contains(out, "200 sent, 200 received, 0 lost") {
			t.Errorf("packets lost across agent restarts: %v %s", err, out)
		}
		after := l.status()
		for i := range before.Nodes {
			if before.Nodes[i].Subnet != after.Nodes[i].Subnet {
				t.Errorf("%s changed subnet across a restart: %s -> %s", before.Nodes[i].Name, before.Nodes[i].Subnet, after.Nodes[i].Subnet)
			}
		}
		for i := range before.Pods {
			if before.Pods[i].Addr != after.Pods[i].Addr {
				t.Errorf("pod %s changed address", before.Pods[i].Name)
			}
		}
		dev, _ = h.LinkByName("flannel.1")
		if dev.Attrs().HardwareAddr.String() != mac {
			t.Errorf("VTEP MAC changed across a restart: %s -> %s", mac, dev.Attrs().HardwareAddr)
		}
		// IPAM allocations and pod plumbing survive: CNI CHECK passes for all.
		if out, err := l.run("check"); err != nil || !strings.Contains(out, "CNI CHECK: 6 of 6 pods pass") {
			t.Errorf("check after restarts: %v\n%s", err, out)
		}
	})

	t.Run("PlantedEntriesRemovedAtStart", func(t *testing.T) {
		l.must("agent", "stop", "n1")
		h := l.handle("n1")
		dev, err := h.LinkByName("flannel.1")
		if err != nil {
			t.Fatal(err)
		}
		stray := netip.MustParsePrefix("10.244.250.0/24")
		_, dst, _ := net.ParseCIDR(stray.String())
		mac, _ := net.ParseMAC("02:00:00:00:00:fa")
		if err := h.RouteAdd(&netlink.Route{LinkIndex: dev.Attrs().Index, Dst: dst, Gw: stray.Addr().AsSlice(), Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			t.Fatal(err)
		}
		if err := h.NeighAdd(&netlink.Neigh{LinkIndex: dev.Attrs().Index, State: netlink.NUD_PERMANENT, IP: stray.Addr().AsSlice(), HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
		fdbBefore := fdbCount(h)
		if err := h.NeighAppend(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: 7, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: net.ParseIP("192.0.2.250"), HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
		l.must("agent", "start", "n1")
		if e := entries(h, stray); len(e) != 0 {
			t.Errorf("planted entries survive the agent's start: %v", e)
		}
		if n := fdbCount(h); n != fdbBefore {
			t.Errorf("planted FDB entry survives: %d entries, want %d", n, fdbBefore)
		}
	})

	t.Run("RemovedNodeGoneWithin2s", func(t *testing.T) {
		st := l.status()
		var n3 netip.Prefix
		for _, n := range st.Nodes {
			if n.Name == "n3" {
				n3 = netip.MustParsePrefix(n.Subnet)
			}
		}
		h1, h2 := l.handle("n1"), l.handle("n2")
		if len(entries(h1, n3)) == 0 {
			t.Fatal("n1 has no entries for n3 to begin with")
		}
		// n1's agent is down while n3 leaves: it must clean up when it comes back.
		l.must("agent", "stop", "n1")
		l.must("agent", "stop", "n3")
		start := time.Now() // includes the evict command itself
		l.must("exec", "ctl", "--", filepath.Join(bin, "weft"), "store", "evict", n3.String(), "--etcd-endpoints", "http://192.0.2.2:2379")
		for len(entries(h2, n3)) > 0 || fdbCount(h2) != 1 {
			if time.Since(start) > 2*time.Second {
				t.Fatalf("n2 still has %v (fdb %d) 2s after n3's lease was deleted", entries(h2, n3), fdbCount(h2))
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("n2 dropped n3's route, neighbour and FDB entries %s after 'weft store evict' started", time.Since(start).Round(time.Millisecond))
		l.must("agent", "start", "n1")
		if e := entries(h1, n3); len(e) != 0 {
			t.Errorf("n1 kept entries of a node that left while its agent was down: %v", e)
		}
		l.must("agent", "start", "n3") // n3 comes back and leases again
	})

	t.Run("NodeAddRemove", func(t *testing.T) {
		l.must("node", "add", "--pods", "1")
		out, err := l.run("check")
		if err != nil || !passRE.MatchString(out) {
			t.Fatalf("check after node add: %v\n%s", err, out)
		}
		l.must("node", "remove", "n4")
		out, err = l.run("check")
		if err != nil || !strings.Contains(out, "36 passed, 0 failed") {
			t.Fatalf("check after node remove: %v\n%s", err, out)
		}
	})

	t.Run("UpAgainReports", func(t *testing.T) {
		out := l.must("up")
		if !strings.Contains(out, "already up") {
			t.Errorf("second up: %s", out)
		}
	})
}

func TestHostGWOnL2(t *testing.T) {
	_, out := newLab(t, "--backend", "host-gw")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("host-gw l2:\n%s", out)
	}
}

func TestVXLANOnL3(t *testing.T) {
	_, out := newLab(t, "--topology", "l3")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("vxlan l3:\n%s", out)
	}
}

func TestDirectRoutingOnL3(t *testing.T) {
	l, out := newLab(t, "--topology", "l3", "--direct-routing", "--nodes", "4")
	if !strings.Contains(out, "64 passed, 0 failed") {
		t.Fatalf("vxlan+DirectRouting l3:\n%s", out)
	}
	st := l.status()
	h := l.handle("n1")
	eth, _ := h.LinkByName("eth0")
	vx, _ := h.LinkByName("flannel.1")
	rs, _ := h.RouteList(nil, netlink.FAMILY_V4)
	got := map[string]netlink.Route{}
	for _, r := range rs {
		if r.Dst != nil {
			got[r.Dst.String()] = r
		}
	}
	for _, n := range st.Nodes {
		if n.Name == "n1" {
			continue
		}
		r, ok := got[n.Subnet]
		if !ok {
			t.Errorf("n1 has no route to %s (%s)", n.Name, n.Subnet)
			continue
		}
		sameSide := strings.HasPrefix(n.Addr, "192.0.2.")
		switch {
		case sameSide && (r.LinkIndex != eth.Attrs().Index || r.Gw.String() != n.Addr):
			t.Errorf("same-side %s: route %v, want via %s dev eth0", n.Name, r, n.Addr)
		case !sameSide && (r.LinkIndex != vx.Attrs().Index || r.Flags&int(netlink.FLAG_ONLINK) == 0):
			t.Errorf("far-side %s: route %v, want onlink via flannel.1", n.Name, r)
		}
		t.Logf("n1: %s via %s dev %d (%s)", n.Subnet, r.Gw, r.LinkIndex, map[bool]string{true: "direct", false: "vxlan"}[sameSide])
	}
}
