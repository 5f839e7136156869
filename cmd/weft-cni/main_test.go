package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/cni"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec()
	os.Exit(m.Run())
}

// TestNoHeavyDependencies guards the plugin's size: it must link neither
// the etcd client nor client-go.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"go.etcd.io/", "k8s.io/", "github.com/prometheus/", "github.com/google/nftables"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("weft-cni depends on %s", dep)
			}
		}
	}
}

// TestInstall: `weft-cni install` puts the plugin itself and the conflist
// in place; a bad conflist installs nothing. It needs no root.
func TestInstall(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	conflist := filepath.Join(dir, "cni-conf.json")
	binDir, confDir := filepath.Join(dir, "opt", "cni", "bin"), filepath.Join(dir, "etc", "cni", "net.d")
	if err := os.WriteFile(conflist, []byte(`{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	install := func(conflist string) (string, error) {
		out, err := exec.Command(bin, "install", "--plugin", bin, "--bin-dir", binDir, "--conflist", conflist,
			"--conf-dir", confDir).CombinedOutput()
		return string(out), err
	}
	if out, err := install(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(out, "missing.json") {
		t.Errorf("install with a missing conflist: %v: %s", err, out)
	}
	if _, err := os.Stat(binDir); !os.IsNotExist(err) {
		t.Errorf("a failed install created %s: %v", binDir, err)
	}
	if out, err := install(conflist); err != nil {
		t.Fatalf("install: %v: %s", err, out)
	}
	want, _ := os.ReadFile(bin)
	got, err := os.ReadFile(filepath.Join(binDir, "weft-cni"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("installed plugin differs from the binary (%v)", err)
	}
	if st, err := os.Stat(filepath.Join(binDir, "weft-cni")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed plugin: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(confDir, "10-weft.conflist")); err != nil {
		t.Errorf("conflist: %v", err)
	}
}

type plugin struct {
	bin, node, conf string
}

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "weft-cni")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// call runs the plugin in the node namespace like a runtime does.
func (p plugin) call(command, id, podNS, stdin string) (map[string]any, error) {
	cmd := netns.Command(p.node, p.bin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(p.bin)}
	if podNS != "" {
		cmd.Env = append(cmd.Env, "CNI_NETNS="+podNS)
	}
	if stdin == "" {
		stdin = p.conf
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var res map[string]any
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
			return nil, fmt.Errorf("output is not JSON: %q (%v)", out.String(), err)
		}
	}
	if err != nil {
		return res, fmt.Errorf("%s failed: %v: %s %s", command, err, out.String(), errb.String())
	}
	return res, nil
}

func setup(t *testing.T) (plugin, string) {
	netnstest.RequireRoot(t)
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(env, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","subnetFile":%q,"dataDir":%q}`, env, filepath.Join(dir, "ipam"))
	return plugin{bin: build(t), node: netnstest.New(t), conf: conf}, env
}

func TestParallelAddDel(t *testing.T) {
	p, _ := setup(t)
	const n = 50
	pods := make([]string, n)
	for i := range pods {
		pods[i] = netns.Path(netnstest.New(t))
	}
	ips := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.call("ADD", fmt.Sprintf("c%d", i), pods[i], "")
			if err != nil {
				t.Error(err)
				return
			}
			ipl, _ := res["ips"].([]any)
			if len(ipl) != 1 {
				t.Errorf("ADD c%d: result %v", i, res)
				return
			}
			ips[i] = ipl[0].(map[string]any)["address"].(string)
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ip := range ips {
		if j, dup := seen[ip]; dup && ip != "" {
			t.Errorf("pods %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
		if !strings.HasPrefix(ip, "10.244.5.") || !strings.HasSuffix(ip, "/24") {
			t.Errorf("pod %d got %q, outside 10.244.5.0/24", i, ip)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct addresses for %d pods", len(seen), n)
	}
	for i := range n {
		if _, err := p.call("CHECK", fmt.Sprintf("c%d", i), pods[i], ""); err != nil {
			t.Errorf("CHECK c%d: %v", i, err)
		}
	}
	// The bridge has a MAC of its own, which does not follow its ports (the
	// pods' neighbour entries for the gateway would go stale).
	bridgeMAC := func() string {
		h, err := netns.Handle(p.node)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		br, err := h.LinkByName("cni0")
		if err != nil {
			t.Fatal(err)
		}
		return br.Attrs().HardwareAddr.String()
	}
	if mac := bridgeMAC(); mac != "0a:58:0a:f4:05:01" {
		t.Errorf("cni0's MAC is %s, want 0a:58:0a:f4:05:01 (from its address 10.244.5.1)", mac)
	}
	for i := range n {
		for range 2 {
			if _, err := p.call("DEL", fmt.Sprintf("c%d", i), pods[i], ""); err != nil {
				t.Errorf("DEL c%d: %v", i, err)
			}
		}
	}
	if mac := bridgeMAC(); mac != "0a:58:0a:f4:05:01" {
		t.Errorf("cni0's MAC is %s after every pod left, want 0a:58:0a:f4:05:01", mac)
	}
	// DEL of a pod whose namespace is gone, and of one never added.
	if _, err := p.call("DEL", "ghost", "/run/netns/does-not-exist", ""); err != nil {
		t.Errorf("DEL with a missing namespace: %v", err)
	}
	if _, err := p.call("CHECK", "c0", pods[0], ""); err == nil {
		t.Error("CHECK passed after DEL")
	}
}

func TestErrors(t *testing.T) {
	p, env := setup(t)
	pod := netns.Path(netnstest.New(t))
	res, err := p.call("ADD", "x", pod, `{"cniVersion":"1.1.0", bad json`)
	if err == nil || res["code"] != float64(6) || res["msg"] == "" {
		t.Errorf("malformed config: %v %v; want a CNI error with code 6", res, err)
	}
	res, err = p.call("ADD", "x", pod, `{"cniVersion":"1.1.0","type":"weft-cni"}`)
	if err == nil || res["code"] != float64(7) {
		t.Errorf("config without name: %v %v; want code 7", res, err)
	}
	if _, err := p.call("STATUS", "", "", ""); err != nil {
		t.Errorf("STATUS with subnet.env: %v", err)
	}
	if err := os.Remove(env); err != nil {
		t.Fatal(err)
	}
	res, err = p.call("STATUS", "", "", "")
	if err == nil || res["code"] != float64(50) || !strings.Contains(fmt.Sprint(res["msg"]), "agent") {
		t.Errorf("STATUS without subnet.env: %v %v; want code 50 naming the agent", res, err)
	}
	res, err = p.call("ADD", "x", pod, "")
	if err == nil || res["code"] != float64(11) {
		t.Errorf("ADD without subnet.env: %v %v; want code 11 (try again later)", res, err)
	}
	res, err = p.call("VERSION", "", "", "")
	if err != nil || !strings.Contains(fmt.Sprint(res["supportedVersions"]), "1.1.0") {
		t.Errorf("VERSION: %v %v", res, err)
	}
}

func TestGC(t *testing.T) {
	p, _ := setup(t)
	a, b := netns.Path(netnstest.New(t)), netns.Path(netnstest.New(t))
	if _, err := p.call("ADD", "keep", a, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.call("ADD", "gone", b, ""); err != nil {
		t.Fatal(err)
	}
	gc := strings.TrimSuffix(p.conf, "}") + `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`
	if _, err := p.call("GC", "", "", gc); err != nil {
		t.Fatal(err)
	}
	if _, err := p.call("CHECK", "keep", a, ""); err != nil {
		t.Errorf("GC broke a valid attachment: %v", err)
	}
	if _, err := p.call("CHECK", "gone", b, ""); err == nil || !strings.Contains(err.Error(), "no address allocated") {
		t.Errorf("GC kept the allocation of a removed attachment: %v", err)
	}
}

// handle opens netlink in a namespace the test created.
func handle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// links names the links of a namespace, with their IPv4 addresses.
func links(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	ls, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		s := l.Attrs().Name
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			s += " " + a.IPNet.String()
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// allocated reports the addresses IPAM holds for container id, if any.
func allocated(t *testing.T, env, id string) string {
	t.Helper()
	st, err := cni.OpenStore(filepath.Join(filepath.Dir(env), "ipam", "weft"))
	if err != nil {
		t.Fatal(err)
	}
	ips, err := st.Lookup(cni.Attachment{ContainerID: id, IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) == 0 {
		return ""
	}
	return fmt.Sprint(ips)
}

// TestBadInputTouchesNothing: ADD checks its inputs before it touches
// anything. On a fresh node (no bridge yet) whose own interface is eth0,
// each bad CNI_NETNS (code 8), and an interface name the pod already has
// (code 4), is one CNI error document and a non-zero exit; the node keeps
// exactly its interfaces (no bridge, no veth, eth0 with its address), no
// address is allocated, and DEL afterwards succeeds and leaves the node's
// eth0 and the pod's alone (DEL names an interface eth0 too).
func TestBadInputTouchesNothing(t *testing.T) {
	p, env := setup(t)
	node := handle(t, p.node)
	eth0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}
	if err := node.LinkAdd(eth0); err != nil {
		t.Fatal(err)
	}
	if err := node.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.0.2.5"), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	before := links(t, node)
	notNS := filepath.Join(t.TempDir(), "not-a-namespace")
	if err := os.WriteFile(notNS, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	busy := netnstest.New(t) // a pod that has an eth0 already
	if err := handle(t, busy).LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, netns string
		code        float64
		want        string
	}{
		{"missing", "/run/netns/wt-does-not-exist", 8, "CNI_NETNS /run/netns/wt-does-not-exist: "},
		{"not a namespace", notNS, 8, "CNI_NETNS " + notNS + " is not a network namespace"},
		{"the plugin's own", netns.Path(p.node), 8, "CNI_NETNS " + netns.Path(p.node) + " is the plugin's own network namespace"},
		{"interface taken", netns.Path(busy), 4, "CNI_IFNAME eth0 already exists in CNI_NETNS " + netns.Path(busy)},
	} {
		res, err := p.call("ADD", "bad", tc.netns, "")
		if err == nil || res["code"] != tc.code || !strings.Contains(fmt.Sprint(res["msg"]), tc.want) {
			t.Errorf("%s: ADD gave %v (%v); want one error document, code %v, %q", tc.name, res, err, tc.code, tc.want)
		}
		if got := links(t, node); !slices.Equal(got, before) {
			t.Errorf("%s: the node's links are %q after ADD, want %q", tc.name, got, before)
		}
		if ip := allocated(t, env, "bad"); ip != "" {
			t.Errorf("%s: %s is allocated after ADD", tc.name, ip)
		}
		if _, err := p.call("DEL", "bad", tc.netns, ""); err != nil {
			t.Errorf("%s: DEL after the failed ADD: %v", tc.name, err)
		}
		if got := links(t, node); !slices.Equal(got, before) {
			t.Errorf("%s: the node's links are %q after DEL, want %q", tc.name, got, before)
		}
	}
	if _, err := handle(t, busy).LinkByName("eth0"); err != nil {
		t.Errorf("the pod's own eth0 is gone: %v", err)
	}
}

// TestFailedAddLeavesNothing: an ADD that fails after it has made the
// bridge, the veth pair and the pod's address (here the pod already has a
// default route, so adding weft's fails) undoes all of it: no bridge on
// the fresh node, no veth, no address in the pod, no allocation. DEL then
// succeeds, and ADD succeeds once the pod is fixed.
func TestFailedAddLeavesNothing(t *testing.T) {
	p, env := setup(t)
	node := handle(t, p.node)
	before := links(t, node)
	podNS := netnstest.New(t)
	pod := handle(t, podNS)
	dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dummy0"}, PeerName: "dummy0-peer"}
	if err := pod.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	if l, err := pod.LinkByName("dummy0-peer"); err != nil || pod.LinkSetUp(l) != nil {
		t.Fatalf("dummy0-peer: %v", err)
	}
	if err := pod.AddrAdd(dummy, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("203.0.113.2"), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := pod.LinkSetUp(dummy); err != nil {
		t.Fatal(err)
	}
	l, err := pod.LinkByName("dummy0")
	if err != nil {
		t.Fatal(err)
	}
	def := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("203.0.113.1")}
	if err := pod.RouteAdd(def); err != nil { // `ip route add default via 203.0.113.1 dev dummy0`
		t.Fatal(err)
	}
	podBefore := links(t, pod)
	res, err := p.call("ADD", "c1", netns.Path(podNS), "")
	if err == nil || !strings.Contains(fmt.Sprint(res["msg"]), "add default route via 10.244.5.1") {
		t.Fatalf("ADD into a pod with a default route: %v (%v); want it to fail adding the route", res, err)
	}
	if got := links(t, node); !slices.Equal(got, before) {
		t.Errorf("the node's links are %q after the failed ADD, want %q (no bridge, no veth)", got, before)
	}
	if got := links(t, pod); !slices.Equal(got, podBefore) {
		t.Errorf("the pod's links are %q after the failed ADD, want %q", got, podBefore)
	}
	if ip := allocated(t, env, "c1"); ip != "" {
		t.Errorf("%s is still allocated after the failed ADD", ip)
	}
	if _, err := p.call("DEL", "c1", netns.Path(podNS), ""); err != nil {
		t.Errorf("DEL after the failed ADD: %v", err)
	}
	if err := pod.RouteDel(def); err != nil {
		t.Fatal(err)
	}
	if _, err := p.call("ADD", "c1", netns.Path(podNS), ""); err != nil {
		t.Errorf("ADD once the pod is fixed: %v", err)
	}
	if _, err := node.LinkByName("cni0"); err != nil {
		t.Errorf("no bridge after a successful ADD: %v", err)
	}
}

// TestHelp: -h and --help print the usage and exit 0, as does
// `weft-cni install -h`; a runtime never passes arguments.
func TestHelp(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "weft-cni install [flags]"},
		{[]string{"--help"}, "weft-cni install [flags]"},
		{[]string{"install", "-h"}, "-conflist string"},
		{[]string{"install", "--help"}, "-conflist string"},
	} {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("weft-cni %q: %v, printed %q; want exit 0 and %q", tc.args, err, out, tc.want)
		}
	}
	if err := exec.Command(bin, "install", "--nope").Run(); err == nil {
		t.Error("weft-cni install --nope exited 0")
	}
}
