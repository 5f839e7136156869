package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/firewall"
	labbench "github.com/weftnet/weft/internal/lab/bench"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/synth"
)

// PacketResult is the cost per packet of a loaded rule set: the same two
// pods measured in each mode, alternately, round after round.
type PacketResult struct {
	Policies int
	Size     Size
	// Per mode (Modes), per round: request/response transactions per
	// second and single-stream Gbit/s.
	RR, Gbps [len(Modes)][]float64
	// Isolated: a connection the rule set denies (from a pod of another
	// namespace) failed while it was loaded: the rules were in the path.
	Isolated bool
}

// Modes of the per-packet measurement. In all three the node has weft's
// usual masquerade table, so connection tracking runs in each (as on every
// node): the difference is the policy table alone.
var Modes = [3]string{
	"no table",    // no policy engine
	"no policies", // the engine's table with nothing to enforce
	"loaded",      // the rule set of the synthetic cluster
}

// gateway is the bridge's address on the measured node n0.
var gateway = netip.MustParsePrefix("10.244.0.1/24")

// benchPods picks the bench's pods from the synthetic cluster, on node n0:
// a frontend and a backend of one namespace, whose policies select them and
// allow the frontend to the backend's port 8080, and a pod of another
// namespace, which they deny.
func benchPods(c *policy.Cluster) (frontend, backend, outsider netip.Addr, err error) {
	var ns string
	for _, p := range c.Pods {
		if p.Node != synth.Node {
			continue
		}
		switch {
		case !frontend.IsValid() && p.Labels["tier"] == "frontend":
			frontend, ns = p.IPs[0], p.Namespace
		case frontend.IsValid() && !backend.IsValid() && p.Namespace == ns && p.Labels["tier"] == "backend":
			backend = p.IPs[0]
		case frontend.IsValid() && !outsider.IsValid() && p.Namespace != ns:
			outsider = p.IPs[0]
		}
	}
	if !frontend.IsValid() || !backend.IsValid() || !outsider.IsValid() {
		return frontend, backend, outsider, errors.New("bench: the synthetic cluster is too small for the per-packet measurement: give it more pods")
	}
	return frontend, backend, outsider, nil
}

const benchPort = 8080

// NewApplier returns the policy applier for a namespace; the caller
// supplies it (package policy/nft) so that this package stays testable.
type NewApplier func(ns string) (Applier, func() error, error)

// PerPacket builds a node namespace with a bridge and three pods, loads
// the rule set of a synthetic cluster of policies x pods, and measures the
// frontend -> backend path with and without it, rounds times, alternating.
func PerPacket(ctx context.Context, name string, policies, pods, rounds int, secs int, newApplier NewApplier, w io.Writer) (*PacketResult, error) {
	c := synth.Cluster(synth.Shape{Pods: pods, Policies: policies})
	frontend, backend, outsider, err := benchPods(c)
	if err != nil {
		return nil, err
	}
	t, err := newTopology(name, frontend, backend, outsider)
	if err != nil {
		return nil, err
	}
	defer t.remove()
	rs := policy.Compile(c, synth.Node)
	res := &PacketResult{Policies: policies, Size: SizeOf(rs)}
	ap, closeAp, err := newApplier(t.node)
	if err != nil {
		return nil, err
	}
	defer func() { _ = closeAp() }()
	d := time.Duration(secs) * time.Second
	for round := range rounds {
		for mode := range Modes {
			var err error
			switch mode {
			case 0:
				err = ap.Remove(ctx)
			case 1:
				ap.Resync()
				err = ap.Apply(ctx, &policy.Ruleset{Node: synth.Node})
			default:
				ap.Resync()
				err = ap.Apply(ctx, rs)
			}
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", Modes[mode], err)
			}
			if mode == 2 && round == 0 {
				res.Isolated = !t.connects(t.outsider, t.backend, benchPort)
				if !t.connects(t.frontend, t.backend, benchPort) {
					return nil, fmt.Errorf("bench: the frontend cannot reach the backend with the rule set loaded: the synthetic cluster allows it only with more policies than namespaces (%d pods make %d namespaces)", pods, (pods+49)/50)
				}
			}
			rr, _, _, err := labbench.RequestResponse(t.pods[t.frontend], t.pods[t.backend], t.backend, benchPort, d)
			if err != nil {
				return nil, fmt.Errorf("bench: request/response: %w", err)
			}
			g, err := labbench.Iperf(ctx, t.pods[t.frontend], t.pods[t.backend], t.backend, benchPort, secs, 1)
			if err != nil {
				return nil, fmt.Errorf("bench: iperf3 (install iperf3): %w", err)
			}
			res.RR[mode], res.Gbps[mode] = append(res.RR[mode], rr), append(res.Gbps[mode], g)
			fmt.Fprintf(w, "round %d, %s: %.0f transactions/s, %.2f Gbit/s\n", round+1, Modes[mode], rr, g)
		}
	}
	return res, nil
}

// PrintPacket writes the medians and the cost of the loaded rule set
// against each of the other modes (a ratio above 1: slower loaded).
func PrintPacket(w io.Writer, r *PacketResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\t%s\t%s (%d policies)\tcost vs no table\tcost vs no policies\t\n", Modes[0], Modes[1], Modes[2], r.Policies)
	row := func(name, f string, v [len(Modes)][]float64) {
		m := [len(Modes)]float64{}
		for i := range m {
			m[i] = medianF(v[i])
		}
		fmt.Fprintf(tw, "%s\t"+f+"\t"+f+"\t"+f+"\t%.3fx\t%.3fx\t\n", name, m[0], m[1], m[2], m[0]/m[2], m[1]/m[2])
	}
	row("TCP_RR transactions/s", "%.0f", r.RR)
	row("single stream Gbit/s", "%.2f", r.Gbps)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "rule set: %d chains, %d rules, %d set elements, %d isolated pods; a denied connection was refused while loaded: %v\n",
		r.Size.Chains, r.Size.Rules, r.Size.Elements, r.Size.Pods, r.Isolated)
	return err
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// topology is a node namespace with bridge cni0 and three pod namespaces
// on it: same-node pod traffic crosses the bridge and, through
// br_netfilter, the forward hook where the rules are.
type topology struct {
	node                        string
	pods                        map[netip.Addr]string
	frontend, backend, outsider netip.Addr
}

func newTopology(name string, frontend, backend, outsider netip.Addr) (_ *topology, err error) {
	t := &topology{node: name + "-node", pods: map[netip.Addr]string{}, frontend: frontend, backend: backend, outsider: outsider}
	defer func() {
		if err != nil {
			t.remove()
		}
	}()
	if err := netns.Create(t.node); err != nil {
		return t, err
	}
	h, err := netns.Handle(t.node)
	if err != nil {
		return t, err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := h.LinkAdd(br); err != nil {
		return t, fmt.Errorf("bench: add bridge cni0 in %s: %w", t.node, err)
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixNet(gateway)}); err != nil {
		return t, fmt.Errorf("bench: address cni0: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return t, err
	}
	if err := netns.Do(t.node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		return t, fmt.Errorf("bench: forwarding in %s: %w", t.node, err)
	}
	// weft's masquerade, as on every node: connection tracking is on in
	// every mode.
	fw, err := firewall.New(firewall.Options{Namespace: t.node})
	if err != nil {
		return t, err
	}
	defer fw.Close()
	if err := fw.Apply(context.Background(), firewall.NewState(firewall.Masquerade(netip.MustParsePrefix("10.244.0.0/16"), gateway.Masked()))); err != nil {
		return t, fmt.Errorf("bench: masquerade in %s: %w", t.node, err)
	}
	for i, a := range []netip.Addr{frontend, backend, outsider} {
		if err := t.addPod(h, br, fmt.Sprintf("%s-p%d", name, i), a); err != nil {
			return t, err
		}
	}
	return t, nil
}

func (t *topology) addPod(h *netlink.Handle, br *netlink.Bridge, ns string, a netip.Addr) error {
	if err := netns.Create(ns); err != nil {
		return err
	}
	t.pods[a] = ns
	fd, err := netns.Fd(ns)
	if err != nil {
		return err
	}
	defer fd.Close()
	host := "veth" + strconv.Itoa(len(t.pods))
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd))}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("bench: add veth %s to %s: %w", host, ns, err)
	}
	if err := h.LinkSetUp(v); err != nil {
		return err
	}
	ph, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer ph.Close()
	eth, err := ph.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := ph.AddrAdd(eth, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, 24))}); err != nil {
		return fmt.Errorf("bench: address %s in %s: %w", a, ns, err)
	}
	if err := ph.LinkSetUp(eth); err != nil {
		return err
	}
	lo, err := ph.LinkByName("lo")
	if err == nil {
		_ = ph.LinkSetUp(lo)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (t *topology) remove() {
	for _, ns := range t.pods {
		_ = netns.Delete(ns)
	}
	_ = netns.Delete(t.node)
}

// connects reports whether a TCP connection from src to dst:port opens
// within a second.
func (t *topology) connects(src, dst netip.Addr, port int) bool {
	var ln net.Listener
	if err := netns.Do(t.pods[dst], func() error {
		var err error
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		return false
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	err := netns.Do(t.pods[src], func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(dst, uint16(port)).String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return err == nil
}
