package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/internal/backend/udp"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/lab/check"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/lab/trace"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/subnetenv"
)

// TraceOptions say what `lab trace` follows.
type TraceOptions struct {
	From, To string // pods, nodes, ext
	IPv6     bool   // between the IPv6 addresses
	JSON     bool
	// Probe sends ProbeCount echo requests along the path and shows what
	// each hop's devices counted.
	Probe bool
	// SVG, if set, is a file to draw the lab and the path in.
	SVG string
	// Port is the connection's port for the NetworkPolicy verdicts
	// ("80/tcp"; "": a packet without a port, as ICMP).
	Port string
}

// ProbeCount is how many echo requests --probe sends, 20 ms apart.
const ProbeCount = 10

// Trace follows a packet from o.From to o.To through the lab's kernel
// state and prints every hop; ExitError 1 if it stops on the way.
func Trace(ctx context.Context, name string, o TraceOptions, w io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	if o.Port != "" && s.Kube == nil {
		return fmt.Errorf("--port is the connection's port for the NetworkPolicy verdicts, which need a lab with --store kube (lab %s has %s)", s.Name, "etcd")
	}
	k := s.traceKernel()
	r, fromNS, err := s.trace(k, o)
	if err != nil {
		return err
	}
	// The policy first: a denial ends the path the probe then confirms.
	if s.Kube != nil {
		if err := s.tracePolicy(ctx, r, o); err != nil {
			return err
		}
	}
	if o.Probe {
		err := trace.RunProbe(k, r, func() (int, int, error) {
			st, err := check.Ping(ctx, fromNS, r.Dst, ProbeCount, 20*time.Millisecond)
			return st.Sent, st.Received, err
		})
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
	}
	if o.SVG != "" {
		var b bytes.Buffer
		if err := trace.SVG(&b, s.topologyPicture(o.From+" -> "+o.To), r); err != nil {
			return err
		}
		if err := atomicfile.Write(o.SVG, &b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.SVG, err)
		}
	}
	if o.JSON {
		if err := writeJSON(w, r); err != nil {
			return err
		}
	} else {
		r.Print(w)
	}
	if !r.Delivered || (r.Probe != nil && r.Probe.Received < r.Probe.Sent) {
		return ExitError(1)
	}
	return nil
}

// trace runs the trace of o over k; it returns the namespace the packet
// starts in too.
func (s *State) trace(k trace.Kernel, o TraceOptions) (*trace.Result, string, error) {
	fromNS, err := s.target(o.From)
	if err != nil {
		return nil, "", err
	}
	if _, err := s.target(o.To); err != nil {
		return nil, "", err
	}
	dst, err := s.addrOf(o.To, o.IPv6)
	if err != nil {
		return nil, "", err
	}
	var src netip.Addr
	if _, err := s.node(o.From); err != nil { // a node's source is the one its route picks
		if src, err = s.addrOf(o.From, o.IPv6); err != nil {
			return nil, "", err
		}
		if src.Is4() != dst.Is4() {
			return nil, "", fmt.Errorf("lab %s: %s (%s) and %s (%s) are of different families", s.Name, o.From, src, o.To, dst)
		}
	}
	return trace.Run(k, s.traceCluster(dst.Is6()), o.From, o.To, fromNS, src, dst), fromNS, nil
}

// traceCluster is what a trace knows beyond the kernel: the nodes'
// subnets from their subnet files (what their agents leased), whether
// their agents run, and which peers they skip (their /readyz).
func (s *State) traceCluster(v6 bool) *trace.Cluster {
	c := &trace.Cluster{Backend: s.Backend, UDPPort: udp.DefaultPort, WGPort: wireguard.DefaultListenPort, Names: map[string]string{}, Namespaces: s.Namespaces}
	if v6 && s.Backend == wireguard.Type {
		c.WGPort = wireguard.DefaultListenPortV6
	}
	for _, p := range strings.Split(s.Network, ",") {
		if n, err := netip.ParsePrefix(strings.TrimSpace(p)); err == nil {
			c.Networks = append(c.Networks, n)
		}
	}
	c.Names[s.Underlay] = "underlay"
	c.Names[s.Ctl.NS], c.Names[s.Ext.NS] = s.Ctl.Name, s.Ext.Name
	for _, p := range s.Pods {
		c.Names[p.NS] = p.Display()
	}
	for _, n := range s.Nodes {
		c.Names[n.NS] = n.Name
		tn := trace.Node{Name: n.Name, NS: n.NS, Public: n.AddrOf(v6), Agent: "stopped", Skips: map[string]string{}}
		if !tn.Public.IsValid() {
			tn.Public = n.Addr
		}
		if process.Ours(n.PID, n.SubnetFile) {
			tn.Agent = "running"
		}
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			for _, p := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
				if p.IsValid() {
					tn.Subnets = append(tn.Subnets, p.Masked())
				}
			}
		}
		c.Nodes = append(c.Nodes, tn)
	}
	// Skipped peers: "SUBNET (...): why", by the node that holds SUBNET.
	for i := range c.Nodes {
		if c.Nodes[i].Agent != "running" || s.Nodes[i].Agent != process.Weft {
			continue
		}
		r, err := process.Readyz(c.Nodes[i].NS)
		if err != nil {
			continue
		}
		sk, _ := r["skippedPeers"].([]any)
		for _, x := range sk {
			line, _ := x.(string)
			for _, other := range c.Nodes {
				for _, sub := range other.Subnets {
					if strings.HasPrefix(line, sub.String()+" ") {
						c.Nodes[i].Skips[other.Name] = line
					}
				}
			}
		}
	}
	c.Fix = func(p trace.Problem) string { return s.traceFix(c, p) }
	return c
}

// traceFix says what restores what a trace found missing.
func (s *State) traceFix(c *trace.Cluster, p trace.Problem) string {
	agentOf := func(name string) string {
		for _, n := range c.Nodes {
			if n.Name == name {
				return n.Agent
			}
		}
		return ""
	}
	switch p.Kind {
	case trace.MissingAgent:
		n := p.Peer
		if n == "" {
			n = p.Node
		}
		return fmt.Sprintf("start it: weft lab agent start %s --name %s", n, s.Name)
	case trace.MissingPeer:
		return fmt.Sprintf("%s's agent will not route %s as %s is set up; see the reason above", p.Node, p.Peer, s.Backend)
	case trace.MissingRoute, trace.MissingNeigh, trace.MissingFDB, trace.MissingDecap:
		switch agentOf(p.Node) {
		case "running":
			return fmt.Sprintf("%s's agent is running: it watches the kernel and writes what it wants back at once (and at every full sync), so a piece that stays missing is one it did not want: see its log and /readyz (syncError, routeConflicts), or restart it: weft lab agent restart %s --name %s", p.Node, p.Node, s.Name)
		case "stopped":
			return fmt.Sprintf("%s's agent is stopped: weft lab agent start %s --name %s", p.Node, p.Node, s.Name)
		}
	}
	return ""
}

// maxPathNodes is the most nodes whose every pair kernelPaths traces.
const maxPathNodes = 6

// kernelPaths traces, for each ordered pair of nodes, a packet from the
// first to a pod of the second (its cni0 address if it has none), and
// says in a line how it goes, as the kernel has it now: the tunnel or the
// route, or where it breaks (a skipped peer, a missing neighbour entry, a
// stopped agent). Nil when the lab's namespaces cannot be read (not
// root, a lab on paper).
func (s *State) kernelPaths() []string {
	if len(s.Nodes) < 2 || !netns.Exists(s.Nodes[0].NS) {
		return nil
	}
	k := trace.Cached(s.traceKernel())
	if _, err := k.Snapshot(s.Nodes[0].NS); err != nil {
		return nil
	}
	c := s.traceCluster(false)
	var out []string
	// Every ordered pair in a small lab; in a large one (the lease
	// benchmarks' 40 nodes) the pairs with n1 only, so that a picture
	// costs what the nodes do, not their square.
	pair := func(a, b trace.Node) bool { return true }
	if len(c.Nodes) > maxPathNodes {
		first := c.Nodes[0].Name
		pair = func(a, b trace.Node) bool { return a.Name == first || b.Name == first }
		out = append(out, fmt.Sprintf("    (%d nodes: the paths to and from %s only; weft lab trace shows any other)", len(c.Nodes), first))
	}
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if a.Name == b.Name || len(b.Subnets) == 0 || !pair(a, b) {
				continue
			}
			to, dst := "", netip.Addr{}
			for _, p := range s.Pods {
				if p.Node == b.Name && p.Addr.IsValid() && p.Addr.Is4() == b.Subnets[0].Addr().Is4() {
					to, dst = p.Display(), p.Addr
					break
				}
			}
			if !dst.IsValid() {
				out = append(out, fmt.Sprintf("    %s -> %s: %s has no pod to trace to", a.Name, b.Name, b.Name))
				continue
			}
			r := trace.Run(k, c, a.Name, to, a.NS, netip.Addr{}, dst)
			out = append(out, fmt.Sprintf("    %s -> %s (%s): %s", a.Name, b.Name, to, r.Summary()))
		}
	}
	return out
}

// traceKernel reads the lab's namespaces, weft's nftables chains in the
// nodes' only.
func (s *State) traceKernel() trace.Netlink {
	nodes := map[string]bool{}
	for _, n := range s.Nodes {
		nodes[n.NS] = true
	}
	return trace.Netlink{Namespaces: s.Namespaces, NAT: func(ns string) bool { return nodes[ns] }}
}

// topologyPicture is the lab as trace.SVG draws it, titled with what.
func (s *State) topologyPicture(what string) trace.Topology {
	t := trace.Topology{Title: fmt.Sprintf("lab %s: %s, %s, %s", s.Name, s.backendMode(), s.Topology, what),
		Underlay: trace.Box{Name: "underlay", NS: s.Underlay, Label: "switch br-a"},
		Ctl:      trace.Box{Name: s.Ctl.Name, NS: s.Ctl.NS, Label: addrList(s.Ctl.Addrs())},
		Ext:      trace.Box{Name: s.Ext.Name, NS: s.Ext.NS, Label: addrList(s.Ext.Addrs())}}
	if s.Topology == topology.L3 {
		t.Underlay.Label = "router br-a br-b br-x"
	}
	for _, n := range s.Nodes {
		label := addrList(n.Addrs())
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			label += " " + subnets(env)
		}
		nb := trace.NodeBox{Box: trace.Box{Name: n.Name, NS: n.NS, Label: label}}
		for _, p := range s.Pods {
			if p.Node == n.Name {
				nb.Pods = append(nb.Pods, trace.Box{Name: p.Display(), NS: p.NS, Label: addrList(p.AllAddrs())})
			}
		}
		t.Nodes = append(t.Nodes, nb)
	}
	return t
}

// tracePolicy adds the NetworkPolicy verdicts (--store kube) to r: the
// source's node decides egress, the destination's ingress, as the agents
// compile the policies the API server holds now (weft policy explain).
func (s *State) tracePolicy(ctx context.Context, r *trace.Result, o TraceOptions) error {
	proto, port, err := policy.ParsePort(o.Port)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	kc, err := s.Kube.ReadCluster(rctx, s.Ctl.NS)
	cancel()
	if err != nil {
		return fmt.Errorf("read the NetworkPolicies: %w", err)
	}
	c, err := engineCluster(kc)
	if err != nil {
		return err
	}
	who := func(name string, a netip.Addr) string {
		for _, p := range s.Pods {
			if p.Is(name) {
				return p.Key()
			}
		}
		return a.String()
	}
	from, to := who(o.From, r.Src), who(o.To, r.Dst)
	e, err := policy.Allowed(c, from, to, proto, port)
	if err != nil {
		return fmt.Errorf("NetworkPolicy verdict: %w", err)
	}
	nodeNS := func(node string) string {
		if n, err := s.node(node); err == nil {
			return n.NS
		}
		return ""
	}
	explain := fmt.Sprintf("weft policy explain --lab %s --from %s --to %s", s.Name, from, to)
	if o.Port != "" {
		explain += " --port " + o.Port
	}
	// A side that is not policed (no pod, host network, not isolated) has
	// Allowed set already.
	r.ApplyPolicy([]trace.Verdict{
		{Dir: "egress", NS: nodeNS(e.Egress.Node), Text: e.Egress.Text(), Allowed: e.Egress.Allowed},
		{Dir: "ingress", NS: nodeNS(e.Ingress.Node), Text: e.Ingress.Text(), Allowed: e.Ingress.Allowed},
	}, explain)
	return nil
}
