package nft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
	"github.com/weftnet/weft/internal/policy"
)

// lab is a node namespace forwarding between pod namespaces: pods a and b
// on bridge cni0 (10.244.1.0/24: same-node traffic, which reaches the
// forward hook through br_netfilter) and pod c behind a routed veth
// (10.244.2.0/24: the path of cross-node traffic).
type lab struct {
	node string
	pods map[string]string // pod name -> namespace
	ips  map[string]netip.Addr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{node: netnstest.New(t), pods: map[string]string{}, ips: map[string]netip.Addr{
		"a": netip.MustParseAddr("10.244.1.2"),
		"b": netip.MustParseAddr("10.244.1.3"),
		"c": netip.MustParseAddr("10.244.2.2"),
	}}
	h, err := netns.Handle(l.node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := h.LinkAdd(br); err != nil { // ip link add cni0 type bridge
		t.Fatal(err)
	}
	addrUp(t, h, "cni0", "10.244.1.1/24")
	err = netns.Do(l.node, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return err
		}
		// Reads 1 in a new namespace here; a host may differ.
		return os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("node sysctls: %v", err)
	}
	for i, pod := range []string{"a", "b", "c"} {
		ns := netnstest.New(t)
		l.pods[pod] = ns
		host := fmt.Sprintf("veth%d", i)
		// ip link add vethI type veth peer name eth0 netns POD
		fd, err := netns.Fd(ns)
		if err != nil {
			t.Fatal(err)
		}
		err = h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd))})
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		gw := "10.244.1.1"
		if pod == "c" {
			gw = "10.244.2.1"
			addrUp(t, h, host, "10.244.2.1/24")
		} else {
			link, err := h.LinkByName(host)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetMaster(link, br); err != nil { // ip link set vethI master cni0
				t.Fatal(err)
			}
			if err := h.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
		}
		ph, err := netns.Handle(ns)
		if err != nil {
			t.Fatal(err)
		}
		addrUp(t, ph, "eth0", l.ips[pod].String()+"/24")
		err = ph.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}) // ip route add default via GW
		ph.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func addrUp(t *testing.T, h *netlink.Handle, name, addr string) {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(link, a); err != nil { // ip addr add ADDR dev NAME
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
}

// serve echoes what TCP clients send, on the pod's address and port.
func (l *lab) serve(t *testing.T, pod string, port uint16) {
	t.Helper()
	var ln net.Listener
	err := netns.Do(l.pods[pod], func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(l.ips[pod], port).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from pod to the other pod's port, within a second, and
// checks that a line goes there and back.
func (l *lab) dial(from, to string, port uint16) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(l.pods[from], func() error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(l.ips[to], port).String(), time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// echo sends a line on c and reads it back within a second.
func echo(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping\n" {
		return fmt.Errorf("echo: read %q", b)
	}
	return nil
}

// labRules: a isolated for ingress with no policy (deny all) and for egress
// by one that allows TCP 80-81 in 10.244.0.0/16; b isolated for ingress by
// a policy that allows TCP 80 from bIngressFrom, and for egress with no
// policy; c not isolated.
func labRules(l *lab, bIngressFrom ...string) *policy.Ruleset {
	var peers []policy.Range
	for _, p := range bIngressFrom {
		peers = append(peers, policy.Range{From: l.ips[p], To: l.ips[p]})
	}
	return &policy.Ruleset{
		Pods: []policy.PodEntry{
			{Addr: l.ips["a"], Pod: "x/a", Ingress: "gin-deny", Egress: "geg-a"},
			{Addr: l.ips["b"], Pod: "x/b", Ingress: "gin-b", Egress: "geg-deny"},
		},
		Groups: []policy.Group{
			{Name: "geg-a", Dir: policy.Egress, Chains: []string{"eg_x_a"}},
			{Name: "geg-deny", Dir: policy.Egress},
			{Name: "gin-b", Dir: policy.Ingress, Chains: []string{"in_x_b"}},
			{Name: "gin-deny", Dir: policy.Ingress},
		},
		Chains: []policy.Chain{
			{Name: "eg_x_a", Dir: policy.Egress, Policy: "x/a", Rules: []policy.Rule{{
				Peers: []policy.Range{rng("10.244.0.0", "10.244.255.255")},
				Ports: []policy.PortRange{{Protocol: policy.TCP, First: 80, Last: 81}},
			}}},
			{Name: "in_x_b", Dir: policy.Ingress, Policy: "x/b", Rules: []policy.Rule{{
				Peers: peers,
				Ports: []policy.PortRange{{Protocol: policy.TCP, First: 80, Last: 80}},
			}}},
		},
	}
}

// TestPackets: real TCP connections through the node's forward hook, over
// the bridge and routed: allowed ones connect and their replies come back
// through the deny-all groups of both ends; denied ones time out, and
// Denied counts their packets per pod and direction. A policy change that
// denies an established connection stops it at its next packet.
func TestPackets(t *testing.T) {
	l := newLab(t)
	a, err := New(Options{Namespace: l.node, LogGroup: 9})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		pod   string
		ports []uint16
	}{{"a", []uint16{80}}, {"b", []uint16{80, 81, 82}}, {"c", []uint16{80, 81}}} {
		for _, p := range s.ports {
			l.serve(t, s.pod, p)
		}
	}
	// No policy yet: everything connects (the lab itself works).
	for _, c := range [][2]string{{"a", "b"}, {"b", "c"}, {"c", "a"}} {
		conn, err := l.dial(c[0], c[1], 80)
		if err != nil {
			t.Fatalf("no policy: %s -> %s: %v", c[0], c[1], err)
		}
		conn.Close()
	}
	ctx := context.Background()
	if err := a.Apply(ctx, labRules(l, "a", "c")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to string
		port     uint16
		allowed  bool
		why      string
	}{
		{"a", "b", 80, true, "a's egress and b's ingress allow it; replies pass a's deny-all ingress and b's deny-all egress"},
		{"c", "b", 80, true, "routed: b's ingress allows c"},
		{"a", "b", 81, false, "b's ingress allows only 80"},
		{"a", "b", 82, false, "a's egress allows only 80-81"},
		{"b", "c", 80, false, "b's egress denies all"},
		{"c", "a", 80, false, "a's ingress denies all"},
		{"c", "b", 81, false, "b's ingress allows only 80"},
	} {
		conn, err := l.dial(c.from, c.to, c.port)
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != c.allowed {
			t.Errorf("%s -> %s:%d: error %v, want allowed %t (%s)", c.from, c.to, c.port, err, c.allowed, c.why)
		}
		if err != nil && !isTimeout(err) {
			t.Errorf("%s -> %s:%d: %v, want a timeout (dropped, not refused)", c.from, c.to, c.port, err)
		}
	}
	denied, err := a.Denied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ in, out bool }{"a": {in: true, out: true}, "b": {in: true, out: true}}
	for pod, w := range want {
		got := denied[l.ips[pod]]
		if (got.Ingress > 0) != w.in || (got.Egress > 0) != w.out {
			t.Errorf("pod %s: denied %+v, want ingress>0 %t, egress>0 %t", pod, got, w.in, w.out)
		}
	}
	if got, ok := denied[l.ips["c"]]; ok {
		t.Errorf("pod c is not isolated, has counts %+v", got)
	}
	t.Logf("denied: %v", denied)

	// An established connection that a change leaves allowed keeps
	// going; one the change denies stops at its next packet.
	ab, err := l.dial("a", "b", 80)
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	cb, err := l.dial("c", "b", 80)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := a.Apply(ctx, labRules(l, "c")); err != nil {
		t.Fatal(err)
	}
	if ops, full := a.LastOps(); full || ops != 1 {
		t.Errorf("the change took %d operations (full %t), want 1: a peer set element", ops, full)
	}
	if err := echo(cb); err != nil {
		t.Errorf("c -> b, still allowed: %v", err)
	}
	if err := echo(ab); err == nil {
		t.Error("a -> b, now denied: the established connection still carries data")
	} else if !isTimeout(err) {
		t.Errorf("a -> b, now denied: %v, want a timeout", err)
	}
	after, err := a.Denied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after[l.ips["b"]].Ingress <= denied[l.ips["b"]].Ingress {
		t.Errorf("b's ingress drops did not grow: %+v then %+v", denied[l.ips["b"]], after[l.ips["b"]])
	}

	// Removed: everything connects again.
	if err := a.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := l.dial("c", "a", 80)
	if err != nil {
		t.Fatalf("after Remove: c -> a: %v", err)
	}
	conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
