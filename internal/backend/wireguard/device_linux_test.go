package wireguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// node is one side of the namespace tests: a namespace whose eth0 holds
// 192.0.2.N/24, and its wireguard backend.
type node struct {
	t       *testing.T
	ns      string
	h       *netlink.Handle
	env     backend.Env
	b       *Backend
	subnet  netip.Prefix
	pub     netip.Addr
	sockDir string
}

// pair makes two namespaces joined by a veth pair, eth0 in each
// (192.0.2.1/24 and 192.0.2.2/24), with a backend on each (not applied).
func pair(t *testing.T) (*node, *node) {
	a, b := netnstest.New(t), netnstest.New(t)
	var nodes [2]*node
	for i, ns := range []string{a, b} {
		h, err := netns.Handle(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		nodes[i] = &node{t: t, ns: ns, h: h, subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1)),
			pub: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)), sockDir: t.TempDir()}
	}
	fdB, err := netns.Fd(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fdB.Close()
	// ip link add eth0 type veth peer name eth0 netns B
	if err := nodes[0].h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(fdB))}); err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	logs := new([2]syncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			for i := range logs {
				t.Logf("node %d's log:\n%s", i+1, logs[i].String())
			}
		}
	})
	for i, n := range nodes {
		l, err := n.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		// ip addr add 192.0.2.N/24 dev eth0; ip link set eth0 up
		if err := n.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: n.pub.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := n.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		n.env = backend.Env{Kernel: kernel.NewNetlink(n.h), Network: netip.MustParsePrefix("10.244.0.0/16"),
			Underlay:         kernel.Underlay{Name: "eth0", LinkIndex: l.Attrs().Index, Addr: n.pub, MTU: 1500},
			WireGuardKeyFile: filepath.Join(keyDir, fmt.Sprintf("wgkey%d", i)), WireGuardSocketDir: n.sockDir,
			Log: slog.New(slog.NewTextHandler(&logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))}
		n.start()
	}
	return nodes[0], nodes[1]
}

// start builds the node's backend anew (an agent start).
func (n *node) start() {
	n.t.Helper()
	opts, err := Parse(nil)
	if err != nil {
		n.t.Fatal(err)
	}
	b, err := New(n.t.Context(), n.env, opts.(Options))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = b.Close() })
	n.b = b
}

// lease is the node's lease as its agent publishes it.
func (n *node) lease() lease.Lease {
	a := n.b.LeaseAttrs()
	a.PublicIP = n.pub
	return lease.Lease{Subnet: n.subnet, Attrs: a}
}

// apply applies the node's backend with peers, in its namespace.
func (n *node) apply(peers ...lease.Lease) backend.Report {
	n.t.Helper()
	st := backend.NodeState{Network: n.env.Network, Own: n.lease(), Peers: peers}
	var rep backend.Report
	err := netns.Do(n.ns, func() error {
		var err error
		rep, err = n.b.Apply(context.Background(), n.b.Plan(st))
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return rep
}

// wgShow asks the device's control socket, as `wg show flannel-wg dump`
// does.
func (n *node) wgShow() State {
	n.t.Helper()
	c, err := net.Dial("unix", filepath.Join(n.sockDir, DeviceName+".sock"))
	if err != nil {
		n.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		n.t.Fatal(err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() && sc.Text() != "" {
		b.WriteString(sc.Text() + "\n")
	}
	if !strings.Contains(b.String(), "errno=0\n") {
		n.t.Fatalf("wg show: %q", b.String())
	}
	st, err := ParseUAPI(b.String())
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

// link is flannel-wg in the node's namespace.
func (n *node) link() netlink.Link {
	n.t.Helper()
	l, err := n.h.LinkByName(DeviceName)
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

// offloads reports whether the kernel has TCP segmentation and transmit
// checksum offload on for flannel-wg in the node's namespace (`ethtool -k
// flannel-wg`: tcp-segmentation-offload, tx-checksumming): what
// wireguard-go turns on (TUNSETOFFLOAD) when the TUN is attached with a
// virtio-net header, so that the kernel hands it 64 KiB TCP segments
// rather than one per MTU.
func (n *node) offloads() (tso, csum bool) {
	n.t.Helper()
	// struct ifreq with ifr_data, and struct ethtool_value.
	type ifreqData struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	type ethtoolValue struct{ cmd, data uint32 }
	get := func(fd int, cmd uint32) bool {
		v := ethtoolValue{cmd: cmd}
		ifr := ifreqData{data: unsafe.Pointer(&v)}
		copy(ifr.name[:], DeviceName)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			n.t.Fatalf("ethtool -k %s (command %#x): %v", DeviceName, cmd, e)
		}
		return v.data != 0
	}
	if err := netns.Do(n.ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tso, csum = get(fd, unix.ETHTOOL_GTSO), get(fd, unix.ETHTOOL_GTXCSUM)
		return nil
	}); err != nil {
		n.t.Fatal(err)
	}
	return tso, csum
}

// echo sends a datagram from the from's flannel-wg address to to's, which
// echoes it back, and fails unless the reply comes within the deadline.
func echo(t *testing.T, from, to *node, deadline time.Duration) {
	t.Helper()
	var srv net.PacketConn
	if err := netns.Do(to.ns, func() error {
		var err error
		srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(to.subnet.Addr(), 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			k, addr, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:k], addr)
		}
	}()
	var c net.Conn
	if err := netns.Do(from.ns, func() error {
		var err error
		d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.subnet.Addr(), 0))}
		c, err = d.Dial("udp4", srv.LocalAddr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	end := time.Now().Add(deadline)
	buf := make([]byte, 64)
	for time.Now().Before(end) {
		if _, err := c.Write([]byte("marker")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if k, err := c.Read(buf); err == nil && string(buf[:k]) == "marker" {
			return
		}
	}
	t.Fatalf("no echo from %s to %s within %s", from.subnet.Addr(), to.subnet.Addr(), deadline)
}

// TestTunnelInNamespaces runs two backends on wireguard-go (this kernel,
// or one that has WireGuard: then the test checks the kernel's devices)
// in two namespaces: traffic between the nodes' subnet addresses crosses
// the tunnel; an agent restart keeps the device, its index and the public
// key, and traffic resumes; a peer's new key replaces the old on the device
// without recreating it; a departed peer is removed from the device.
func TestTunnelInNamespaces(t *testing.T) {
	n1, n2 := pair(t)
	n1.apply(n2.lease())
	n2.apply(n1.lease())
	if userspace, _ := n1.b.Userspace(); !userspace {
		t.Skip("the kernel has WireGuard: this test covers wireguard-go")
	}
	// flannel-wg: a TUN, up, MTU 1420, 10.244.1.0/32, and the route of
	// the network to it.
	l := n1.link()
	if l.Type() != "tuntap" || l.Attrs().MTU != 1420 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("flannel-wg: %s MTU %d flags %v", l.Type(), l.Attrs().MTU, l.Attrs().Flags)
	}
	if tso, csum := n1.offloads(); !tso || !csum {
		t.Errorf("flannel-wg created: TSO %v, tx checksum offload %v; want both on", tso, csum)
	}
	addrs, _ := n1.h.AddrList(l, netlink.FAMILY_ALL)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
		t.Errorf("flannel-wg addresses %v", addrs)
	}
	routes, _ := n1.h.RouteList(l, netlink.FAMILY_V4)
	if len(routes) != 1 || routes[0].Dst.String() != "10.244.0.0/16" {
		t.Errorf("flannel-wg routes %v", routes)
	}
	st := n1.wgShow()
	if st.PrivateKey != n1.b.priv || st.ListenPort != 51820 || len(st.Peers) != 1 || st.Peers[0].Key != n2.b.pub ||
		st.Peers[0].Endpoint.String() != "192.0.2.2:51820" || fmt.Sprint(st.Peers[0].AllowedIPs) != "[10.244.2.0/24]" || st.Peers[0].Keepalive != 0 {
		t.Errorf("wg show flannel-wg on node 1: %+v", st)
	}
	// Both nodes add each other at once here: if their handshakes cross
	// (a loaded machine, -race), WireGuard retries after 5 s.
	echo(t, n1, n2, 8*time.Second)
	echo(t, n2, n1, 3*time.Second)
	if hs := n1.wgShow().Status[n2.b.pub].LastHandshake; hs.IsZero() {
		t.Error("no handshake recorded")
	}

	// Node 1's agent restarts: the device stays while no agent runs; the
	// new one re-attaches to it with the same key.
	idx, pub := l.Attrs().Index, n1.b.pub
	if err := n1.b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n1.sockDir, DeviceName+".sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket is left after Close: %v", err)
	}
	if l := n1.link(); l.Attrs().Index != idx {
		t.Fatalf("flannel-wg went away with the agent (index %d, was %d)", l.Attrs().Index, idx)
	}
	if routes, _ := n1.h.RouteList(n1.link(), netlink.FAMILY_V4); len(routes) != 1 {
		t.Errorf("routes without an agent: %v", routes)
	}
	n1.start()
	if n1.b.pub != pub {
		t.Fatal("the public key changed across the restart")
	}
	start := time.Now()
	n1.apply(n2.lease())
	// Traffic from the node that did not restart resumes: the restarted
	// one starts a handshake at once.
	echo(t, n2, n1, 3*time.Second)
	t.Logf("traffic from the peer resumed %v after the restarted agent's first Apply", time.Since(start))
	if l := n1.link(); l.Attrs().Index != idx {
		t.Errorf("flannel-wg was recreated (index %d, was %d)", l.Attrs().Index, idx)
	}
	if tso, csum := n1.offloads(); !tso || !csum {
		t.Errorf("flannel-wg re-attached: TSO %v, tx checksum offload %v; want both on", tso, csum)
	}

	// Node 2 restarts with a new key: node 1 replaces the peer in place.
	if err := n2.b.Close(); err != nil {
		t.Fatal(err)
	}
	n2.env.WireGuardKeyFile += ".new"
	n2.start()
	n2.apply(n1.lease())
	rep := n1.apply(n2.lease())
	if rep.Added != 1 || rep.Removed != 1 {
		t.Errorf("key change: report %+v, want 1 added and 1 removed", rep)
	}
	if st := n1.wgShow(); len(st.Peers) != 1 || st.Peers[0].Key != n2.b.pub {
		t.Errorf("after the key change node 1 holds %v, want only %s", st.Peers, keyString(n2.b.pub))
	}
	echo(t, n1, n2, 8*time.Second) // both add each other again: as above
	if l := n1.link(); l.Attrs().Index != idx {
		t.Errorf("flannel-wg was recreated by a peer's key change")
	}
	// A second Apply changes nothing.
	if rep := n1.apply(n2.lease()); rep.Added != 0 || rep.Removed != 0 {
		t.Errorf("idempotent Apply wrote: %+v", rep)
	}

	// Node 2 departs.
	if rep := n1.apply(); rep.Removed != 1 {
		t.Errorf("departure: report %+v", rep)
	}
	if st := n1.wgShow(); len(st.Peers) != 0 {
		t.Errorf("the departed peer is still on the device: %v", st.Peers)
	}
	if err := n1.b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRoamedEndpointKept: a peer whose packets come from another address
// than its lease says (NAT; a --public-ip that is not the packets'
// source): node 1's device moves the peer's endpoint to where its packets
// come from, and further Applies leave it there, so that node 1 reaches
// the peer without waiting for it to speak. A change of the lease's
// endpoint is written.
func TestRoamedEndpointKept(t *testing.T) {
	n1, n2 := pair(t)
	behindNAT := n2.lease()
	behindNAT.Attrs.PublicIP = netip.MustParseAddr("192.0.2.99") // nobody's
	n1.apply(behindNAT)
	n2.apply(n1.lease())
	if userspace, _ := n1.b.Userspace(); !userspace {
		t.Skip("the kernel has WireGuard: this test covers wireguard-go")
	}
	actual := "192.0.2.2:51820"
	echo(t, n2, n1, 8*time.Second) // node 2 starts: node 1 learns where it is
	if ep := n1.wgShow().Peers[0].Endpoint.String(); ep != actual {
		t.Fatalf("node 2's endpoint on node 1 after it spoke: %s, want %s", ep, actual)
	}
	for i := range 2 {
		if rep := n1.apply(behindNAT); rep.Added != 0 || rep.Removed != 0 {
			t.Errorf("Apply %d: %+v", i+1, rep)
		}
		if ep := n1.wgShow().Peers[0].Endpoint.String(); ep != actual {
			t.Errorf("Apply %d set node 2's endpoint to %s, want it left at %s", i+1, ep, actual)
		}
	}
	// Node 1 speaks first, within less than WireGuard's keepalive and
	// rekey times: node 2 answers only if it hears.
	echo(t, n1, n2, 2*time.Second)

	// The lease's endpoint changes: it is written.
	moved := n2.lease()
	moved.Attrs.PublicIP = netip.MustParseAddr("192.0.2.98")
	n1.apply(moved)
	if ep := n1.wgShow().Peers[0].Endpoint.String(); ep != "192.0.2.98:51820" {
		t.Errorf("node 2's lease moved to 192.0.2.98: endpoint %s", ep)
	}
}

// TestDeviceRepairInNamespaces: flannel-wg deleted by hand comes back at
// the next Apply, with its key, listen port, peer, address and route, and
// traffic crosses it again; an MTU changed by hand is put back without
// reopening the device.
func TestDeviceRepairInNamespaces(t *testing.T) {
	n1, n2 := pair(t)
	n1.apply(n2.lease())
	n2.apply(n1.lease())
	if userspace, _ := n1.b.Userspace(); !userspace {
		t.Skip("the kernel has WireGuard: this test covers wireguard-go")
	}
	echo(t, n1, n2, 8*time.Second)

	// ip link del flannel-wg
	idx := n1.link().Attrs().Index
	if err := n1.h.LinkDel(n1.link()); err != nil {
		t.Fatal(err)
	}
	n1.apply(n2.lease())
	l := n1.link()
	if l.Attrs().Index == idx || l.Type() != "tuntap" || l.Attrs().MTU != 1420 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("flannel-wg after its deletion: index %d (was %d) %s MTU %d flags %v", l.Attrs().Index, idx, l.Type(), l.Attrs().MTU, l.Attrs().Flags)
	}
	if addrs, _ := n1.h.AddrList(l, netlink.FAMILY_ALL); len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
		t.Errorf("flannel-wg addresses after its deletion %v", addrs)
	}
	if routes, _ := n1.h.RouteList(l, netlink.FAMILY_V4); len(routes) != 1 || routes[0].Dst.String() != "10.244.0.0/16" {
		t.Errorf("flannel-wg routes after its deletion %v", routes)
	}
	st := n1.wgShow()
	if st.PrivateKey != n1.b.priv || st.ListenPort != 51820 || len(st.Peers) != 1 || st.Peers[0].Key != n2.b.pub ||
		st.Peers[0].Endpoint.String() != "192.0.2.2:51820" || fmt.Sprint(st.Peers[0].AllowedIPs) != "[10.244.2.0/24]" {
		t.Errorf("wg show flannel-wg after its deletion: %+v", st)
	}
	echo(t, n1, n2, 8*time.Second)
	echo(t, n2, n1, 3*time.Second)

	// ip link set flannel-wg mtu 1300
	idx = l.Attrs().Index
	if err := n1.h.LinkSetMTU(l, 1300); err != nil {
		t.Fatal(err)
	}
	n1.apply(n2.lease())
	if l := n1.link(); l.Attrs().MTU != 1420 || l.Attrs().Index != idx {
		t.Errorf("flannel-wg after its MTU was set to 1300: MTU %d index %d (was %d)", l.Attrs().MTU, l.Attrs().Index, idx)
	}
	echo(t, n1, n2, 3*time.Second)
}

// syncBuffer is a log buffer both a test and wireguard-go's goroutines
// write.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
