package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

const (
	dualEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=%t\n"
	// flannelPlugin is kube-flannel.yml's plugin entry, type changed only.
	flannelPlugin = `{"cniVersion":"0.3.1","name":"cbr0","type":"weft-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true},"subnetFile":%q,"dataDir":%q}`
)

// setupWith is setup with the given subnet.env and plugin config (%q
// subnetFile, %q dataDir).
func setupWith(t *testing.T, env, conf string) plugin {
	netnstest.RequireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(path, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	return plugin{bin: build(t), node: netnstest.New(t), conf: fmt.Sprintf(conf, path, filepath.Join(dir, "ipam"))}
}

// ping sends one ICMP or ICMPv6 echo from inside ns to dst and waits up
// to timeout for the reply.
func ping(ns string, dst netip.Addr, timeout time.Duration) error {
	return netns.Do(ns, func() error {
		network, any, proto, req := "ip4:icmp", "0.0.0.0", 1, icmp.Type(ipv4.ICMPTypeEcho)
		if dst.Is6() {
			network, any, proto, req = "ip6:ipv6-icmp", "::", 58, ipv6.ICMPTypeEchoRequest
		}
		c, err := icmp.ListenPacket(network, any)
		if err != nil {
			return err
		}
		defer c.Close()
		id := os.Getpid() & 0xffff
		b, err := (&icmp.Message{Type: req, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("weft-cni")}}).Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		deadline := time.Now().Add(timeout)
		_ = c.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("ping %s: no reply in %s: %w", dst, timeout, err)
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) &&
				from.String() == dst.String() {
				return nil
			}
		}
	})
}

// resultIPs returns the addresses of an ADD result.
func resultIPs(res map[string]any) []string {
	var out []string
	ipl, _ := res["ips"].([]any)
	for _, ip := range ipl {
		out = append(out, fmt.Sprint(ip.(map[string]any)["address"]))
	}
	return out
}

// podRoutes lists the pod's routes via a gateway, "DST via GW".
func podRoutes(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	rs, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Gw == nil {
			continue
		}
		dst := "default"
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			dst = r.Dst.String()
		}
		out = append(out, dst+" via "+r.Gw.String())
	}
	return out
}

// TestDualStack: with both families in subnet.env (flannel's conflist,
// type changed only), a pod gets an address of each, the bridge the
// gateway of each, routes of each; the pod reaches its IPv6 gateway and
// another pod over IPv6 at once (no DAD wait); the bridge port is in
// hairpin mode; DEL frees both addresses.
func TestDualStack(t *testing.T) {
	p := setupWith(t, fmt.Sprintf(dualEnv, true), flannelPlugin)
	node := handle(t, p.node)
	pods := []string{netnstest.New(t), netnstest.New(t)}
	var addrs [][]string
	for i, pod := range pods {
		res, err := p.call("ADD", fmt.Sprintf("c%d", i), netns.Path(pod), "")
		if err != nil {
			t.Fatal(err)
		}
		if res["cniVersion"] != "0.3.1" {
			t.Errorf("result version %v, want the config's 0.3.1", res["cniVersion"])
		}
		addrs = append(addrs, resultIPs(res))
	}
	want := [][]string{{"10.244.5.2/24", "2001:db8:244:5::2/64"}, {"10.244.5.3/24", "2001:db8:244:5::3/64"}}
	if fmt.Sprint(addrs) != fmt.Sprint(want) {
		t.Fatalf("ADD results list %v, want %v", addrs, want)
	}
	// The pod pings its IPv6 gateway and the other pod right away.
	for _, dst := range []string{"2001:db8:244:5::1", "2001:db8:244:5::3", "10.244.5.1", "10.244.5.3"} {
		if err := ping(pods[0], netip.MustParseAddr(dst), 2*time.Second); err != nil {
			t.Errorf("pod c0: %v", err)
		}
	}
	pod0 := handle(t, pods[0])
	got := podRoutes(t, pod0)
	for _, r := range []string{"10.244.0.0/16 via 10.244.5.1", "default via 10.244.5.1", "2001:db8:244::/48 via 2001:db8:244:5::1", "default via 2001:db8:244:5::1"} {
		if !strings.Contains(strings.Join(got, ","), r) {
			t.Errorf("pod c0 lacks route %s: has %v", r, got)
		}
	}
	br, err := node.LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	bas, err := node.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var global []string
	for _, a := range bas {
		if !a.IP.IsLinkLocalUnicast() {
			global = append(global, a.IPNet.String())
		}
	}
	if fmt.Sprint(global) != "[10.244.5.1/24 2001:db8:244:5::1/64]" {
		t.Errorf("cni0 has %v, want the gateway of each family", global)
	}
	hairpins(t, node, br, 2)
	// Forwarding on for both families, as the bridge plugin does for flannel.
	if out, err := netns.Command(p.node, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding").CombinedOutput(); err != nil || string(out) != "1\n1\n" {
		t.Errorf("forwarding in the node namespace: %q %v, want on for both families", out, err)
	}
	check := strings.Replace(p.conf, `"cniVersion":"0.3.1"`, `"cniVersion":"1.0.0"`, 1) // CHECK came with 0.4.0
	for i, pod := range pods {
		if _, err := p.call("CHECK", fmt.Sprintf("c%d", i), netns.Path(pod), check); err != nil {
			t.Errorf("CHECK c%d: %v", i, err)
		}
	}
	if _, err := p.call("DEL", "c0", netns.Path(pods[0]), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.call("CHECK", "c0", netns.Path(pods[0]), check); err == nil || !strings.Contains(err.Error(), "no address allocated") {
		t.Errorf("CHECK after DEL: %v, want no allocation", err)
	}
	// The freed addresses come back round only after the others.
	res, err := p.call("ADD", "c2", netns.Path(pods[0]), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIPs(res); fmt.Sprint(got) != "[10.244.5.4/24 2001:db8:244:5::4/64]" {
		t.Errorf("ADD after DEL got %v", got)
	}
}

// hairpins checks that the bridge's n ports are in hairpin mode, as
// `bridge -d link show` would say.
func hairpins(t *testing.T, node *netlink.Handle, br netlink.Link, n int) {
	t.Helper()
	ls, err := node.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	ports := 0
	for _, l := range ls {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		ports++
		pi, err := node.LinkGetProtinfo(l)
		if err != nil {
			t.Fatal(err)
		}
		if !pi.Hairpin {
			t.Errorf("bridge port %s: hairpin off", l.Attrs().Name)
		}
	}
	if ports != n {
		t.Errorf("cni0 has %d ports, want %d", ports, n)
	}
}

// TestIPv6Only: subnet.env without IPv4; the pod has an IPv6 address
// and routes only, and reaches its gateway.
func TestIPv6Only(t *testing.T) {
	env := "FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:9::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	p := setupWith(t, env, `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","subnetFile":%q,"dataDir":%q}`)
	pod := netnstest.New(t)
	res, err := p.call("ADD", "c0", netns.Path(pod), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIPs(res); fmt.Sprint(got) != "[2001:db8:244:9::2/64]" {
		t.Errorf("ADD gave %v", got)
	}
	if err := ping(pod, netip.MustParseAddr("2001:db8:244:9::1"), 2*time.Second); err != nil {
		t.Error(err)
	}
	if got := podRoutes(t, handle(t, pod)); fmt.Sprint(got) != "[2001:db8:244::/48 via 2001:db8:244:9::1 default via 2001:db8:244:9::1]" {
		t.Errorf("pod routes %v", got)
	}
	if _, err := p.call("CHECK", "c0", netns.Path(pod), ""); err != nil {
		t.Error(err)
	}
	if _, err := p.call("DEL", "c0", netns.Path(pod), ""); err != nil {
		t.Error(err)
	}
}

// TestHairpinOff: a delegate that leaves hairpinMode out (or sets it
// false) gets the bridge plugin's default, off; without isDefaultGateway
// the pod has the cluster network's route and no default route.
func TestHairpinOff(t *testing.T) {
	p := setupWith(t, fmt.Sprintf(dualEnv, true), `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","subnetFile":%q,"dataDir":%q,"delegate":{}}`)
	pod := netnstest.New(t)
	if _, err := p.call("ADD", "c0", netns.Path(pod), ""); err != nil {
		t.Fatal(err)
	}
	node := handle(t, p.node)
	for _, l := range cni0Ports(t, node) {
		if pi, err := node.LinkGetProtinfo(l); err != nil || pi.Hairpin {
			t.Errorf("port %s: hairpin %v (%v), want off", l.Attrs().Name, pi.Hairpin, err)
		}
	}
	if got := podRoutes(t, handle(t, pod)); fmt.Sprint(got) != "[10.244.0.0/16 via 10.244.5.1 2001:db8:244::/48 via 2001:db8:244:5::1]" {
		t.Errorf("pod routes %v, want the cluster networks only", got)
	}
	if _, err := p.call("CHECK", "c0", netns.Path(pod), ""); err != nil {
		t.Error(err)
	}
}

// TestIPMasq: the plugin masquerades a pod's traffic leaving its subnet
// iff FLANNEL_IPMASQ=false (flannel's ipMasq = !FLANNEL_IPMASQ). The node
// namespace routes to an "outside" namespace that has no route back to
// the pods: a pod's ping there is answered only when its source was
// rewritten to the node's address. DEL removes the pod's elements.
func TestIPMasq(t *testing.T) {
	for _, agentMasq := range []bool{false, true} {
		t.Run(fmt.Sprintf("FLANNEL_IPMASQ=%t", agentMasq), func(t *testing.T) {
			p := setupWith(t, fmt.Sprintf(dualEnv, agentMasq), flannelPlugin)
			ext := netnstest.New(t)
			outside(t, p.node, ext)
			pod := netnstest.New(t)
			if _, err := p.call("ADD", "c0", netns.Path(pod), ""); err != nil {
				t.Fatal(err)
			}
			table, err := netns.Command(p.node, "nft", "list", "table", "inet", "weft-cni").CombinedOutput()
			if agentMasq {
				if err == nil {
					t.Errorf("the plugin made a masquerade table although the agent masquerades:\n%s", table)
				}
			} else if err != nil || !strings.Contains(string(table), "10.244.5.2") || !strings.Contains(string(table), "2001:db8:244:5::2") {
				t.Errorf("nft list table inet weft-cni: %v\n%s\nwant the pod's addresses", err, table)
			}
			for _, dst := range []string{"203.0.113.2", "2001:db8:1::2"} {
				err := ping(pod, netip.MustParseAddr(dst), time.Second)
				if agentMasq && err == nil {
					t.Errorf("%s answered a pod address it has no route to: masqueraded although FLANNEL_IPMASQ=true", dst)
				}
				if !agentMasq && err != nil {
					t.Errorf("not masqueraded: %v", err)
				}
			}
			if _, err := p.call("DEL", "c0", netns.Path(pod), ""); err != nil {
				t.Fatal(err)
			}
			table, _ = netns.Command(p.node, "nft", "list", "table", "inet", "weft-cni").CombinedOutput()
			if strings.Contains(string(table), "10.244.5.2") || strings.Contains(string(table), "2001:db8:244:5::2") {
				t.Errorf("the pod's masquerade is left after DEL:\n%s", table)
			}
			if _, err := p.call("DEL", "c0", netns.Path(pod), ""); err != nil {
				t.Errorf("second DEL: %v", err)
			}
		})
	}
}

// outside links the node namespace to ext over a veth pair:
// 203.0.113.1/24 and 2001:db8:1::1/64 on the node, .2 and ::2 in ext.
// Forwarding in the node is the plugin's to turn on; ext has no route to
// the pods.
func outside(t *testing.T, node, ext string) {
	t.Helper()
	h := handle(t, node)
	fd, err := netns.Fd(ext)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0", PeerNamespace: netlink.NsFd(int(fd))}); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		addrs []string
	}{{h, []string{"203.0.113.1/24", "2001:db8:1::1/64"}}, {handle(t, ext), []string{"203.0.113.2/24", "2001:db8:1::2/64"}}} {
		l, err := side.h.LinkByName("up0")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range side.addrs {
			p := netip.MustParsePrefix(a)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: 0x02} // nodad
			if err := side.h.AddrAdd(l, addr); err != nil {
				t.Fatal(err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	// Neighbour discovery on the new link settles before the first ping.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if ping(node, netip.MustParseAddr("2001:db8:1::2"), 200*time.Millisecond) == nil {
			return
		}
	}
	t.Fatal(errors.New("the outside namespace does not answer the node over IPv6"))
}

// TestCheckOlderPod: a pod weft-cni attached before it added the cluster
// network's route and turned hairpin on (weft's own conflist, no
// delegate) still passes CHECK: `ip route del 10.244.0.0/16` in the pod
// and `bridge link set dev vethX hairpin off` make it such a pod.
func TestCheckOlderPod(t *testing.T) {
	p := setupWith(t, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","subnetFile":%q,"dataDir":%q}`)
	pod := netnstest.New(t)
	if _, err := p.call("ADD", "c0", netns.Path(pod), ""); err != nil {
		t.Fatal(err)
	}
	ph := handle(t, pod)
	if err := ph.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 244, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}, Gw: net.IPv4(10, 244, 5, 1).To4()}); err != nil {
		t.Fatal(err)
	}
	node := handle(t, p.node)
	for _, l := range cni0Ports(t, node) {
		if err := node.LinkSetHairpin(l, false); err != nil { // `bridge link set dev VETH hairpin off`
			t.Fatal(err)
		}
	}
	if _, err := p.call("CHECK", "c0", netns.Path(pod), ""); err != nil {
		t.Errorf("CHECK of an older pod: %v", err)
	}
	// The default route is still required.
	if err := ph.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: net.IPv4(10, 244, 5, 1).To4()}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.call("CHECK", "c0", netns.Path(pod), ""); err == nil {
		t.Error("CHECK passed a pod without its default route")
	}
}

// cni0Ports lists the bridge's ports (`bridge link show master cni0`).
func cni0Ports(t *testing.T, node *netlink.Handle) []netlink.Link {
	t.Helper()
	br, err := node.LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := node.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Link
	for _, l := range ls {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l)
		}
	}
	return out
}
