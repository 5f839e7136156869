package e2e

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// wgPort is the wireguard backend's default ListenPort (flannel's).
const wgPort = 51820

// wgLab is a wireguard lab with what its tests read: nodes' and pods'
// addresses, nodes' directories, and a client of its store.
type wgLab struct {
	*lab
	node    map[string]netip.Addr // underlay address by node
	subnet  map[string]string     // subnet by node
	dir     map[string]string     // the node's directory (its wgkey)
	pod     map[string]netip.Addr // pod address by name
	podNode map[string]string
	cli     *clientv3.Client
}

func newWGLab(t *testing.T, l *lab) *wgLab {
	t.Helper()
	w := &wgLab{lab: l, node: map[string]netip.Addr{}, subnet: map[string]string{}, dir: map[string]string{},
		pod: map[string]netip.Addr{}, podNode: map[string]string{}, cli: l.store(t)}
	st := l.status()
	for _, n := range st.Nodes {
		w.node[n.Name] = netip.MustParseAddr(n.Addr)
		w.subnet[n.Name] = n.Subnet
		w.dir[n.Name] = filepath.Dir(n.SubnetFile)
	}
	for _, p := range st.Pods {
		w.pod[p.Name] = netip.MustParseAddr(p.Addr)
		w.podNode[p.Name] = p.Node
	}
	return w
}

// wg runs `wg ARGS...` on a node through `weft lab exec` (which shows wg
// that node's socket directory) and returns its trimmed output.
func (w *wgLab) wg(node string, args ...string) string {
	w.t.Helper()
	return strings.TrimSpace(w.must(append([]string{"exec", node, "--", "wg"}, args...)...))
}

// leaseKey is the store key of a node's lease.
func (w *wgLab) leaseKey(node string) string {
	return "/coreos.com/network/subnets/" + strings.Replace(w.subnet[node], "/", "-", 1)
}

// leasePublicKey decodes a lease's IPv4 backend data: its PublicKey.
func leasePublicKey(value []byte) (string, error) {
	var l struct {
		BackendType string
		BackendData struct {
			PublicKey string
			Port      int
		}
	}
	if err := json.Unmarshal(value, &l); err != nil {
		return "", err
	}
	if l.BackendType != "wireguard" || l.BackendData.Port != wgPort {
		return "", fmt.Errorf("lease %s: backend %s, port %d", value, l.BackendType, l.BackendData.Port)
	}
	return l.BackendData.PublicKey, nil
}

// storedKey is the PublicKey of a node's lease in the store.
func (w *wgLab) storedKey(t *testing.T, node string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, w.leaseKey(node))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("lease of %s (%s): %v, %d values", node, w.leaseKey(node), err, len(resp.Kvs))
	}
	k, err := leasePublicKey(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ns is the namespace of a lab host or pod.
func (w *wgLab) ns(name string) string { return w.name + "-" + name }

// TestWireGuard: the wireguard backend in the lab (issue 14). `weft lab
// check` passes on l2, l3 and dual stack; on one l2 lab: a marker sent
// between pods never crosses the underlay in clear (WireGuard messages on
// port 51820 only; a clear control is seen), strangers' datagrams and an
// unknown key's handshake reach no pod, an agent restart keeps the
// tunnel (gap, key, device), and a changed key is taken up within 2 s.
func TestWireGuard(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	t.Run("CheckL3", func(t *testing.T) {
		_, out := newLab(t, "--backend", "wireguard", "--topology", "l3")
		if !strings.Contains(out, "36 passed, 0 failed") {
			t.Fatalf("wireguard l3: want 36 passing probes:\n%s", out)
		}
	})
	t.Run("CheckDual", func(t *testing.T) {
		_, out := newLab(t, "--backend", "wireguard", "--ip-family", "dual", "--nodes", "2")
		if !strings.Contains(out, "32 passed, 0 failed") {
			t.Fatalf("wireguard dual l2: want 32 passing probes:\n%s", out)
		}
	})

	l, out := newLab(t, "--backend", "wireguard")
	if !strings.Contains(out, "36 passed, 0 failed") {
		t.Fatalf("wireguard l2: want 36 passing probes:\n%s", out)
	}
	w := newWGLab(t, l)
	for _, n := range []string{"n1", "n2", "n3"} {
		k := w.wg(n, "show", "flannel-wg", "public-key")
		if sk := w.storedKey(t, n); k != sk {
			t.Errorf("%s: wg show says public key %s, its lease %s", n, k, sk)
		}
		peers := w.wg(n, "show", "flannel-wg", "peers")
		if len(strings.Fields(peers)) != 2 {
			t.Errorf("%s has peers %q, want the 2 other nodes", n, peers)
		}
		fi, err := os.Stat(filepath.Join(w.dir[n], "wgkey"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s's key file: %v, mode %v, want 0600", n, err, fi.Mode().Perm())
		}
	}
	// lab exec mounted each node's socket directory in a mount namespace
	// of wg's own: none of those mounts is in this one.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(b), "wireguard") {
		t.Errorf("a WireGuard mount leaked into the host's mount table (%v):\n%s", err, b)
	}
	t.Run("Encrypted", w.testEncrypted)
	t.Run("Strangers", w.testStrangers)
	t.Run("RestartKeepsTunnel", w.testRestart)
	t.Run("KeyChange", w.testKeyChange)
}

// marker is 64 random bytes in hex, unique to the run.
func marker() []byte {
	var b [64]byte
	_, _ = rand.Read(b[:])
	return []byte(hex.EncodeToString(b[:]))
}

// markerCounts are the markers a namespace received.
type markerCounts struct {
	mu       sync.Mutex
	tcp, udp int
}

// serveMarkers counts the markers arriving in namespace ns over TCP (one
// connection at a time on port) and UDP (datagrams on port+1) until the
// test ends.
func (w *wgLab) serveMarkers(t *testing.T, ns string, port int, m []byte) *markerCounts {
	t.Helper()
	c := &markerCounts{}
	var ln net.Listener
	var pc net.PacketConn
	if err := netns.Do(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port+1))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(cn)
			cn.Close()
			c.mu.Lock()
			c.tcp += bytes.Count(b, m)
			c.mu.Unlock()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.udp += bytes.Count(buf[:n], m)
			c.mu.Unlock()
		}
	}()
	return c
}

// sendMarkers sends m count times over TCP (one connection) and count
// datagrams over UDP from namespace ns to dst's port and port+1.
func sendMarkers(t *testing.T, ns string, dst netip.Addr, port, count int, m []byte) {
	t.Helper()
	if err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(dst, uint16(port)).String(), 3*time.Second)
		if err != nil {
			return err
		}
		if _, err := c.Write(bytes.Repeat(m, count)); err != nil {
			return err
		}
		c.Close()
		u, err := net.Dial("udp4", netip.AddrPortFrom(dst, uint16(port+1)).String())
		if err != nil {
			return err
		}
		defer u.Close()
		for range count {
			if _, err := u.Write(m); err != nil {
				return err
			}
			time.Sleep(time.Millisecond) // no drops at the receiver's socket
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testEncrypted: issue 14 acceptance 2.
func (w *wgLab) testEncrypted(t *testing.T) {
	const count, ctlCount, port, ctlPort = 300, 30, 7101, 7201
	m := marker()
	cap := startCapture(t, w.ns("ul"), "", m)
	a, b := "n1-p1", "n2-p1"
	atA, atB := w.serveMarkers(t, w.ns(a), port, m), w.serveMarkers(t, w.ns(b), port, m)
	sendMarkers(t, w.ns(a), w.pod[b], port, count, m)
	sendMarkers(t, w.ns(b), w.pod[a], port, count, m)
	// The control: the same marker in clear from n1 to n2's underlay
	// address, where a socket takes it (no ICMP error quoting it back).
	ctl := w.serveMarkers(t, w.ns("n2"), ctlPort-1, m)
	if err := netns.Do(w.ns("n1"), func() error {
		u, err := net.Dial("udp4", netip.AddrPortFrom(w.node["n2"], ctlPort).String())
		if err != nil {
			return err
		}
		defer u.Close()
		for range ctlCount {
			if _, err := u.Write(m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	frames := cap.stop()
	for _, x := range []struct {
		what     string
		c        *markerCounts
		tcp, udp int
	}{{b + " from " + a, atB, count, count}, {a + " from " + b, atA, count, count}, {"n2 in clear from n1", ctl, 0, ctlCount}} {
		x.c.mu.Lock()
		if x.c.tcp != x.tcp || x.c.udp < x.udp*9/10 {
			t.Errorf("%s: %d markers over TCP, %d over UDP; want %d and %d: the traffic did not flow", x.what, x.c.tcp, x.c.udp, x.tcp, x.udp)
		}
		x.c.mu.Unlock()
	}
	n1, n2 := w.node["n1"], w.node["n2"]
	var between, ctlFrames, markerFrames, clearCtl int
	types := map[int]int{}
	dirs := map[bool]int{}
	var bad []string
	for _, f := range frames {
		if f.marker {
			markerFrames++
			if f.proto == 17 && f.src == n1 && f.dst == n2 && f.dport == ctlPort {
				clearCtl++
			} else {
				bad = append(bad, fmt.Sprintf("the marker in clear: %s -> %s proto %d ports %d -> %d", f.src, f.dst, f.proto, f.sport, f.dport))
			}
		}
		if !(f.src == n1 && f.dst == n2 || f.src == n2 && f.dst == n1) {
			continue
		}
		if f.proto == 17 && f.dport == ctlPort {
			ctlFrames++
			continue
		}
		between++
		dirs[f.src == n1]++
		typ := wgType(f)
		types[typ]++
		if f.proto != 17 || f.sport != wgPort || f.dport != wgPort || typ == 0 {
			bad = append(bad, fmt.Sprintf("not WireGuard between the nodes: %s -> %s proto %d ports %d -> %d, payload %x", f.src, f.dst, f.proto, f.sport, f.dport, f.udpPayload))
		}
	}
	t.Logf("underlay capture: %d frames in all; %d between n1 and n2 (n1->n2 %d, n2->n1 %d) by WireGuard message type %v; "+
		"marker in %d frames, all %d of them the clear control (%d datagrams sent, %d frames)",
		len(frames), between, dirs[true], dirs[false], types, markerFrames, clearCtl, ctlCount, ctlFrames)
	for i, s := range bad {
		if i == 10 {
			t.Errorf("... and %d more", len(bad)-10)
			break
		}
		t.Error(s)
	}
	if clearCtl < ctlCount {
		t.Errorf("the capture saw the clear control marker in %d frames for %d datagrams sent: it cannot see plaintext", clearCtl, ctlCount)
	}
	// Both directions carried 2*count TCP markers and count datagrams.
	if dirs[true] < 50 || dirs[false] < 50 {
		t.Errorf("frames between the nodes: n1->n2 %d, n2->n1 %d; want the pods' traffic both ways", dirs[true], dirs[false])
	}
	if types[4] < between*9/10 {
		t.Errorf("WireGuard data messages are %d of %d frames between the nodes (%v); want them to dominate", types[4], between, types)
	}
}

// keyPair is a new Curve25519 key pair, as `wg genkey | wg pubkey`.
func keyPair(t *testing.T) (priv, pub []byte) {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Bytes(), k.PublicKey().Bytes()
}

// stranger is a wireguard-go device in a namespace of its own plugged
// into the lab's underlay, with a key no lease holds, configured with
// n1 as its peer for the whole pod network.
type stranger struct {
	ns   string
	addr netip.Addr // underlay
	tun  netip.Addr // its tunnel address, as a pod would have
	dev  *device.Device
}

func (w *wgLab) newStranger(t *testing.T, peerKey string, peer netip.Addr) *stranger {
	t.Helper()
	s := &stranger{ns: w.ns("wgx"), addr: netip.MustParseAddr("192.0.2.200"), tun: netip.MustParseAddr("10.244.251.1")}
	if err := netns.Create(s.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.dev != nil {
			s.dev.Close()
		}
		if err := netns.Delete(s.ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := topology.Attach(w.ns("ul"), topology.L2, topology.Host{Name: "wgx", NS: s.ns, Addr: s.addr, Side: "a"}); err != nil {
		t.Fatal(err)
	}
	priv, _ := keyPair(t)
	pk, err := base64.StdEncoding.DecodeString(peerKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(s.ns, func() error {
		td, err := tun.CreateTUN("wgx0", 1420)
		if err != nil {
			return err
		}
		// Its UDP socket is opened by Up, on this thread: inside s.ns.
		s.dev = device.NewDevice(td, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
		cfg := fmt.Sprintf("private_key=%x\nlisten_port=%d\npublic_key=%x\nendpoint=%s\nallowed_ip=10.244.0.0/16\n",
			priv, wgPort, pk, netip.AddrPortFrom(peer, wgPort))
		if err := s.dev.IpcSet(cfg); err != nil {
			return err
		}
		return s.dev.Up()
	}); err != nil {
		t.Fatalf("stranger's wireguard-go: %v", err)
	}
	h, err := netns.Handle(s.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("wgx0")
	if err != nil {
		t.Fatal(err)
	}
	// `ip addr add 10.244.251.1/32 dev wgx0; ip link set wgx0 up;
	// ip route add 10.244.0.0/16 dev wgx0` in the stranger's namespace.
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: netconv.IPNet(netip.PrefixFrom(s.tun, 32))}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: netconv.IPNet(netip.MustParsePrefix("10.244.0.0/16"))}); err != nil {
		t.Fatal(err)
	}
	return s
}

// testStrangers: issue 14 acceptance 4, the second half.
func (w *wgLab) testStrangers(t *testing.T) {
	const garbage = 200
	m := []byte("stranger-" + hex.EncodeToString(marker()[:8]))
	n1 := w.node["n1"]
	ext := netip.MustParseAddr("192.0.2.254")
	var pods []*capture
	for name := range w.pod {
		pods = append(pods, startCapture(t, w.ns(name), "", m))
	}
	at := startCapture(t, w.ns("ul"), "n1", m) // n1's port on the switch
	// (i) Garbage from ext, which holds no lease: random datagrams, and
	// ones with WireGuard's headers (an initiation's length, a data
	// message with a made-up receiver index), each with the marker.
	if err := netns.Do(w.ns("ext"), func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(n1, wgPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range garbage {
			p := make([]byte, 160+i*7%1200)
			_, _ = rand.Read(p)
			switch i % 4 {
			case 1:
				p = p[:148]
				copy(p, []byte{1, 0, 0, 0})
			case 2:
				copy(p, []byte{4, 0, 0, 0})
			case 3:
				copy(p, []byte{2, 0, 0, 0})
			}
			copy(p[16:], m)
			if _, err := c.Write(p); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// (ii) An unknown key's handshake: wireguard-go with n1 as its peer,
	// pinging a pod on n1 through it.
	s := w.newStranger(t, w.wg("n1", "show", "flannel-wg", "public-key"), n1)
	p := startReplyClock(t, s.ns, w.pod["n1-p1"], 100*time.Millisecond)
	time.Sleep(6 * time.Second) // the initiation, and its retry after REKEY_TIMEOUT (5 s)
	sent, replies := p.stop()
	time.Sleep(300 * time.Millisecond)
	var garbageIn, initiations, answers int
	for _, f := range at.stop() {
		switch {
		case f.dst == n1 && f.src == ext && f.dport == wgPort && f.marker:
			garbageIn++
		case f.dst == n1 && f.src == s.addr && f.dport == wgPort && wgType(f) == 1:
			initiations++
		case f.src == n1 && (f.dst == ext || f.dst == s.addr):
			answers++
			t.Errorf("n1 answered a stranger: %s -> %s proto %d ports %d -> %d, payload %x", f.src, f.dst, f.proto, f.sport, f.dport, f.udpPayload)
		}
	}
	reached, atPods := 0, 0
	for _, c := range pods {
		for _, f := range c.stop() {
			atPods++
			if f.marker || f.src == s.tun || f.src == s.addr || f.src == ext {
				reached++
			}
		}
	}
	t.Logf("strangers: %d garbage datagrams sent from ext to n1:%d (%d seen arriving), the unknown key's wireguard-go sent %d handshake initiations "+
		"and %d pings; replies %d, n1's answers %d; frames from them at the %d pods: %d (of %d frames the pods saw meanwhile)",
		garbage, wgPort, garbageIn, initiations, sent, len(replies), answers, len(pods), reached, atPods)
	if garbageIn != garbage {
		t.Errorf("%d of %d garbage datagrams seen arriving at n1: the test did not send them", garbageIn, garbage)
	}
	if initiations < 1 {
		t.Error("the stranger's wireguard-go sent no handshake initiation to n1: the test did not try")
	}
	if len(replies) != 0 || reached != 0 {
		t.Errorf("the stranger's ping got %d replies and %d frames reached a pod; want none", len(replies), reached)
	}
}

// testRestart: issue 14 acceptance 3. Across the restart, markers flow
// between the pods both ways and the underlay is captured: no marker,
// and between the two nodes nothing but WireGuard on its port (and ICMP
// errors from n2 quoting such a datagram, while no socket takes it).
func (w *wgLab) testRestart(t *testing.T) {
	const port = 7301
	key, stored := w.wg("n2", "show", "flannel-wg", "public-key"), w.storedKey(t, "n2")
	h := w.handle("n2")
	dev, err := h.LinkByName("flannel-wg")
	if err != nil {
		t.Fatal(err)
	}
	pidBefore := w.agentPID("n2")
	m := marker()
	cap := startCapture(t, w.ns("ul"), "", m)
	a, b := "n1-p1", "n2-p1"
	atA, atB := w.serveMarkers(t, w.ns(a), port, m), w.serveMarkers(t, w.ns(b), port, m)
	toB, toA := w.streamMarkers(t, a, b, port+1, m), w.streamMarkers(t, b, a, port+1, m)
	p := startReplyClock(t, w.ns(a), w.pod[b], 50*time.Millisecond)
	time.Sleep(2 * time.Second)
	restart := time.Now()
	w.must("agent", "restart", "n2")
	restarted := time.Now()
	time.Sleep(3 * time.Second)
	sent, replies := p.stop()
	gap, stall := longestGap(replies), p.stall()
	sentB, sentA := toB.stop(), toA.stop()
	time.Sleep(300 * time.Millisecond)
	frames := cap.stop()
	t.Logf("20 pings/s n1-p1 -> n2-p1 across 'weft lab agent restart n2' (%s): %d sent, %d replies, longest gap between replies %s, last reply %s before the pinging stopped",
		restarted.Sub(restart).Round(time.Millisecond), sent, len(replies), gap.Round(time.Millisecond), stall.Round(time.Millisecond))
	if _, ok := firstAfter(replies, restarted.Add(time.Second)); !ok || replies[0].After(restart) {
		t.Fatalf("replies must come before and after the restart: %d replies", len(replies))
	}
	if gap >= time.Second {
		t.Errorf("the restart interrupted traffic for %s, want under 1s", gap.Round(time.Millisecond))
	}
	if stall >= time.Second {
		t.Errorf("no reply in the last %s of the pinging: traffic stalled after the restart", stall.Round(time.Millisecond))
	}
	if pid := w.agentPID("n2"); pid == pidBefore {
		t.Errorf("n2's agent is still pid %d: it did not restart", pid)
	}
	if k := w.wg("n2", "show", "flannel-wg", "public-key"); k != key {
		t.Errorf("n2's public key changed across a restart: %s -> %s", key, k)
	}
	if k := w.storedKey(t, "n2"); k != stored || k != key {
		t.Errorf("n2's lease key %s before, %s after (wg: %s)", stored, k, key)
	}
	after, err := h.LinkByName("flannel-wg")
	if err != nil || after.Attrs().Index != dev.Attrs().Index {
		t.Errorf("flannel-wg was ifindex %d, now %v (%v): the device was recreated", dev.Attrs().Index, after, err)
	}

	// The markers: sent both ways during the restart, received (so the
	// capture would have seen them in clear), never on the underlay.
	n1, n2 := w.node["n1"], w.node["n2"]
	down := func(at time.Time) bool { return !at.Before(restart) && !at.After(restarted) }
	var between, inDown, icmpErrs, markerFrames int
	var bad []string
	for _, f := range frames {
		if f.marker {
			markerFrames++
			bad = append(bad, fmt.Sprintf("the marker in clear at %s: %s -> %s proto %d ports %d -> %d", f.at.Format("15:04:05.000"), f.src, f.dst, f.proto, f.sport, f.dport))
		}
		if !(f.src == n1 && f.dst == n2 || f.src == n2 && f.dst == n1) {
			continue
		}
		between++
		if down(f.at) {
			inDown++
		}
		switch q := f.quoted; {
		case f.proto == 17 && f.sport == wgPort && f.dport == wgPort && wgType(f) != 0:
		case f.proto == 1 && f.src == n2 && q != nil && q.proto == 17 && q.src == n1 && q.dst == n2 && q.dport == wgPort:
			icmpErrs++ // n2's port closed for a moment: the error quotes an encrypted datagram
		default:
			bad = append(bad, fmt.Sprintf("not WireGuard between the nodes at %s (restart %s-%s): %s -> %s proto %d ports %d -> %d, payload %x",
				f.at.Format("15:04:05.000"), restart.Format("15:04:05.000"), restarted.Format("15:04:05.000"), f.src, f.dst, f.proto, f.sport, f.dport, f.udpPayload))
		}
	}
	sentDown := 0
	for _, at := range append(sentB, sentA...) {
		if down(at) {
			sentDown++
		}
	}
	atA.mu.Lock()
	gotA := atA.udp
	atA.mu.Unlock()
	atB.mu.Lock()
	gotB := atB.udp
	atB.mu.Unlock()
	t.Logf("underlay across the restart: %d frames, %d between n1 and n2 (%d during 'agent restart', %d of them ICMP errors quoting WireGuard); "+
		"markers sent %s->%s %d, %s->%s %d (%d during 'agent restart'), received %d and %d; in %d frames on the underlay",
		len(frames), between, inDown, icmpErrs, a, b, len(sentB), b, a, len(sentA), sentDown, gotB, gotA, markerFrames)
	for i, s := range bad {
		if i == 10 {
			t.Errorf("... and %d more", len(bad)-10)
			break
		}
		t.Error(s)
	}
	if gotA == 0 || gotB == 0 || sentDown == 0 || inDown == 0 {
		t.Errorf("markers received %d and %d, sent during the restart %d, frames between the nodes during it %d: the test did not watch the restart", gotB, gotA, sentDown, inDown)
	}
}

// markerStream sends a marker datagram from a pod to another every 10 ms
// until stopped.
type markerStream struct {
	stopped chan struct{}
	done    chan struct{}
	sent    []time.Time // when each was sent
}

// streamMarkers starts sending m from pod from to pod to's UDP port.
func (w *wgLab) streamMarkers(t *testing.T, from, to string, port int, m []byte) *markerStream {
	t.Helper()
	var u net.Conn
	if err := netns.Do(w.ns(from), func() error {
		var err error
		u, err = net.Dial("udp4", netip.AddrPortFrom(w.pod[to], uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := &markerStream{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := u.Write(m); err == nil {
				s.sent = append(s.sent, time.Now())
			}
			select {
			case <-s.stopped:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { s.stop(); u.Close() })
	return s
}

// stop ends the stream and returns when each marker was sent; safe to
// repeat.
func (s *markerStream) stop() []time.Time {
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
	}
	<-s.done
	return s.sent
}

// agentPID is a node's agent PID as `lab status` reports it.
func (w *wgLab) agentPID(node string) int {
	var st struct {
		Nodes []struct {
			Name     string
			AgentPID int
		}
	}
	if err := json.Unmarshal([]byte(w.must("status", "--json")), &st); err != nil {
		w.t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Name == node {
			return n.AgentPID
		}
	}
	return 0
}

// testKeyChange: issue 14 acceptance 4, the first half.
func (w *wgLab) testKeyChange(t *testing.T) {
	old := w.wg("n2", "show", "flannel-wg", "public-key")
	priv, pub := keyPair(t)
	newKey := base64.StdEncoding.EncodeToString(pub)
	// The time the store holds n2's lease with the new key.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan time.Time, 1)
	wch := w.cli.Watch(ctx, w.leaseKey("n2"))
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if k, err := leasePublicKey(ev.Kv.Value); err == nil && k == newKey {
					published <- time.Now()
					return
				}
			}
		}
	}()
	p := startReplyClock(t, w.ns("n1-p1"), w.pod["n2-p1"], 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	w.must("agent", "stop", "n2")
	stopped := time.Now()
	file := filepath.Join(w.dir["n2"], "wgkey")
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString(priv)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.must("agent", "start", "n2")
	var at time.Time
	select {
	case at = <-published:
	case <-time.After(10 * time.Second):
		t.Fatalf("n2's lease does not hold its new key %s 10s after its agent started", newKey)
	}
	time.Sleep(2500 * time.Millisecond)
	sent, replies := p.stop()
	resumed, ok := firstAfter(replies, at)
	var during int
	for _, r := range replies {
		if r.After(stopped) && r.Before(at) {
			during++
		}
	}
	t.Logf("key change: 100 pings/s n1-p1 -> n2-p1, %d sent, %d replies; %d replies between n2's agent stop and the new lease; "+
		"traffic resumed %s after the store held the new key (ok %v)", sent, len(replies), during, resumed.Sub(at).Round(time.Millisecond), ok)
	if !ok || resumed.Sub(at) >= 2*time.Second {
		t.Errorf("traffic to n2 did not resume within 2s of its new lease (resumed: %v, after %s)", ok, resumed.Sub(at))
	}
	// With no agent, then with only the new key on n2 and the old one at
	// n1, nothing reaches n2-p1.
	if during != 0 {
		t.Errorf("%d replies came between n2's agent stop and its new lease; want none", during)
	}
	if k := w.wg("n2", "show", "flannel-wg", "public-key"); k != newKey {
		t.Errorf("n2's device has public key %s, want the new %s", k, newKey)
	}
	peers := strings.Fields(w.wg("n1", "show", "flannel-wg", "peers"))
	has := map[string]bool{}
	for _, k := range peers {
		has[k] = true
	}
	if !has[newKey] || has[old] {
		t.Errorf("n1's peers %v: want the new key %s and not the old %s", peers, newKey, old)
	}
}
