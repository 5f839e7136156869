package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/subnetenv"
)

// NodeStatus is one node in `lab status`.
type NodeStatus struct {
	Name       string   `json:"name"`
	NS         string   `json:"netns"`
	Agent      string   `json:"agent"`
	Addr       string   `json:"addr"`
	Addr6      string   `json:"addr6,omitempty"`
	Subnet     string   `json:"subnet"` // IPv4 then IPv6, comma-separated
	AgentPID   int      `json:"agentPID"`
	Running    bool     `json:"running"`
	Ready      bool     `json:"ready"`
	Skipped    []any    `json:"skippedPeers,omitempty"`
	SubnetFile string   `json:"subnetFile"`
	CNIConfDir string   `json:"cniConfDir"`
	CNIBinDirs []string `json:"cniBinDirs"`
	Log        string   `json:"log"`
	// BGPAS is the node's AS and BGP its agent's sessions as its
	// /readyz reports them (address, as, state, prefixesSent, ...), in
	// a lab started with --bgp.
	BGPAS uint32 `json:"bgpAS,omitempty"`
	BGP   []any  `json:"bgp,omitempty"`
}

// RouterStatus is the BGP router of a lab started with --bgp.
type RouterStatus struct {
	Kind    string `json:"kind"`
	NS      string `json:"netns"`
	AS      uint32 `json:"as"`
	Running bool   `json:"running"`
	PIDs    []int  `json:"pids"`
	// Socket is birdc's -s or vtysh's --vty_socket.
	Socket   string           `json:"socket"`
	Config   string           `json:"config"`
	Log      string           `json:"log"`
	Sessions []router.Session `json:"sessions"`
	Error    string           `json:"error,omitempty"` // why the sessions could not be read
}

// LabStatus is `lab status`.
type LabStatus struct {
	Name     string `json:"name"`
	Backend  string `json:"backend"`
	Direct   bool   `json:"directRouting"`
	Topology string `json:"topology"`
	// ForwardDrop: every node's namespace has iptables -P FORWARD DROP.
	ForwardDrop bool          `json:"forwardDrop,omitempty"`
	Store       string        `json:"store"`
	Kube        string        `json:"kube,omitempty"`
	StorePID    int           `json:"storePID"`
	StoreUp     bool          `json:"storeRunning"`
	External    topology.Host `json:"external"`
	Nodes       []NodeStatus  `json:"nodes"`
	Pods        []*pod.Pod    `json:"pods"`
	Router      *RouterStatus `json:"router,omitempty"`
	// Paths say, for each ordered pair of nodes, how a packet goes
	// between them as the kernel has it now (or where it breaks).
	Paths []string `json:"paths,omitempty"`
}

func (s *State) status() LabStatus {
	st := LabStatus{Name: s.Name, Backend: s.Backend, Direct: s.DirectRouting, Topology: s.Topology, ForwardDrop: s.ForwardDrop,
		Store: s.Endpoint, StorePID: s.Ctl.PID, StoreUp: process.Ours(s.Ctl.PID, "serve"), External: s.Ext, Pods: s.Pods}
	if s.Kube != nil {
		st.Kube = s.Kube.Summary()
	}
	for _, n := range s.Nodes {
		ns := n.status()
		if s.Router != nil {
			ns.BGPAS = router.NodeAS(nodeIndex(n.Name))
		}
		st.Nodes = append(st.Nodes, ns)
	}
	if r := s.Router; r != nil {
		rs := &RouterStatus{Kind: r.Kind, NS: r.NS, AS: r.AS, Running: r.Running(), Socket: r.Socket(), Config: r.ConfigFile(), Log: r.LogFile()}
		for _, p := range r.Procs {
			rs.PIDs = append(rs.PIDs, p.PID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if rs.Sessions, err = r.Sessions(ctx); err != nil {
			rs.Error = err.Error()
		}
		st.Router = rs
	}
	for _, p := range s.kernelPaths() {
		st.Paths = append(st.Paths, strings.TrimSpace(p))
	}
	return st
}

// status is the node's line of `lab status`: its subnet from its subnet
// file, and whether its agent runs and is ready.
func (n *Node) status() NodeStatus {
	ns := NodeStatus{Name: n.Name, NS: n.NS, Agent: n.Agent, Addr: n.Addr.String(), AgentPID: n.PID, Running: process.Ours(n.PID, n.SubnetFile),
		SubnetFile: n.SubnetFile, CNIConfDir: n.CNIConfDir, CNIBinDirs: n.CNIBinDirs, Log: n.LogFile}
	if n.Addr6.IsValid() {
		ns.Addr6 = n.Addr6.String()
	}
	if env, err := subnetenv.Read(n.SubnetFile); err == nil {
		ns.Subnet = subnets(env)
	}
	switch {
	case !ns.Running:
	case n.Agent == process.Flannel:
		_, err := os.Stat(n.SubnetFile)
		ns.Ready = err == nil
	default:
		if r, err := process.Readyz(n.NS); err == nil {
			ns.Ready = r["ready"] == true
			if sk, ok := r["skippedPeers"].([]any); ok {
				ns.Skipped = sk
			}
			if b, ok := r["bgp"].([]any); ok {
				ns.BGP = b
			}
		}
	}
	return ns
}

// subnets are the node's subnets in its subnet file, IPv4 then IPv6,
// comma-separated.
func subnets(env subnetenv.Env) string {
	var out []string
	for _, p := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if p.IsValid() {
			out = append(out, p.Masked().String())
		}
	}
	return strings.Join(out, ",")
}

// addrList is addrs separated by spaces.
func addrList(addrs []netip.Addr) string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return strings.Join(out, " ")
}

func (st LabStatus) print(w io.Writer) {
	fmt.Fprintf(w, "lab %s: backend %s", st.Name, st.Backend)
	if st.Direct {
		fmt.Fprint(w, " (DirectRouting)")
	}
	fmt.Fprintf(w, ", topology %s", st.Topology)
	if st.ForwardDrop {
		fmt.Fprint(w, ", FORWARD policy DROP in every node")
	}
	fmt.Fprintf(w, ", store %s (pid %d, running %v)\n", st.Store, st.StorePID, st.StoreUp)
	if st.Kube != "" {
		fmt.Fprintln(w, st.Kube)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tUNDERLAY\tSUBNET\tAGENT\tPID\tREADY\tSUBNET FILE\tCNI CONF DIR")
	for _, n := range st.Nodes {
		pid := strconv.Itoa(n.AgentPID)
		if !n.Running {
			pid = "stopped"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\n", n.Name, n.NS, strings.TrimSpace(n.Addr+" "+n.Addr6), n.Subnet, n.Agent, pid, n.Ready, n.SubnetFile, n.CNIConfDir)
	}
	tw.Flush()
	for _, n := range st.Nodes {
		for _, sk := range n.Skipped {
			fmt.Fprintf(w, "  %s skips peer %v\n", n.Name, sk)
		}
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintf(w, "CNI plugins from: %s\n", strings.Join(st.Nodes[0].CNIBinDirs, ":"))
	}
	if len(st.Paths) > 0 {
		fmt.Fprintln(w, "paths as the kernel has them now (weft lab trace NODE POD shows every hop):")
		for _, p := range st.Paths {
			fmt.Fprintln(w, "  "+p)
		}
	}
	if st.Router != nil {
		st.printBGP(w)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNETNS\tNODE\tADDRESS\tLABELS\tPORTS")
	for _, p := range st.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Display(), p.NS, p.Node, addrList(p.AllAddrs()), orDash(labelList(p.Labels)), orDash(portList(p.Ports)))
	}
	fmt.Fprintf(tw, "ext\t%s\t-\t%s (outside the cluster network)\t-\t-\n", st.External.NS, addrList(st.External.Addrs()))
	tw.Flush()
}

// printBGP writes the router's sessions and each agent's.
func (st LabStatus) printBGP(w io.Writer) {
	r := st.Router
	fmt.Fprintf(w, "\nBGP router: %s in %s, AS %d, pids %v (running %v), control %s\n", r.Kind, r.NS, r.AS, r.PIDs, r.Running, r.Socket)
	if r.Error != "" {
		fmt.Fprintf(w, "  sessions: %s\n", r.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTER NEIGHBOUR\tAS\tSTATE\tRECEIVED\tSENT\tINFO")
	for _, x := range r.Sessions {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\n", x.Neighbor, x.AS, x.State, x.Received, x.Sent, orDash(x.Info))
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tAS\tPEER\tPEER AS\tSTATE\tSENT\tRECEIVED\tFLAPS\tLAST ERROR")
	for _, n := range st.Nodes {
		if len(n.BGP) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t(no sessions reported)\t\t\t\t\n", n.Name, n.BGPAS)
		}
		for _, p := range n.BGP {
			m, _ := p.(map[string]any)
			fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%v\t%v\t%v\t%s\n", n.Name, n.BGPAS, m["address"], m["as"], m["state"],
				m["prefixesSent"], m["prefixesReceived"], m["flaps"], orDash(fmt.Sprint(orNil(m["lastError"]))))
		}
	}
	tw.Flush()
}

// orNil is v, or "" for nil.
func orNil(v any) any {
	if v == nil {
		return ""
	}
	return v
}

// picture draws the topology.
func (s *State) picture(w io.Writer) {
	nodeSubnets := map[string]string{}
	for _, n := range s.Nodes {
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			nodeSubnets[n.Name] = subnets(env)
		}
	}
	pods := map[string][]string{}
	for _, p := range s.Pods {
		pods[p.Node] = append(pods[p.Node], fmt.Sprintf("%s %s", p.Display(), addrList(p.AllAddrs())))
	}
	fmt.Fprintf(w, "lab %s — cluster network %s, backend %s, underlay %s\n", s.Name, s.Network, s.backendMode(), s.Topology)
	seg := func(side string) string {
		if topology.HasIPv6(s.IPFamily) {
			return topology.Prefix(side).String() + " " + topology.Prefix6(side).String()
		}
		return topology.Prefix(side).String()
	}
	if s.Topology == topology.L3 {
		fmt.Fprintf(w, "  underlay: router %s joins side a %s (br-a), side b %s (br-b), outside %s (br-x)\n", s.Underlay, seg("a"), seg("b"), seg("x"))
	} else {
		fmt.Fprintf(w, "  underlay: switch %s, bridge br-a, %s\n", s.Underlay, seg("a"))
	}
	if s.ForwardDrop {
		fmt.Fprintln(w, "  nodes: iptables FORWARD policy DROP (as Docker sets it)")
	}
	if r := s.Router; r != nil {
		fmt.Fprintf(w, "  bgp: the router runs %s as AS %d, an eBGP session with each node nK (AS 64512+K); hold time %ds, restart time %ds;\n"+
			"       it learns the pods' subnets and re-announces them; ext's network (%s) is routable: no masquerade to it\n",
			r.Kind, r.AS, router.HoldTime, bgpRestartTime, strings.Join(s.routableNetworks(), " "))
	}
	fmt.Fprintf(w, "  ctl  %-12s %-15s store %s\n", s.Ctl.NS, addrList(s.Ctl.Addrs()), s.Endpoint)
	if s.Kube != nil {
		fmt.Fprintf(w, "       %s\n", s.Kube.Summary())
	}
	for _, side := range topology.NodeSides(s.Topology) {
		if s.Topology == topology.L3 {
			fmt.Fprintf(w, "  side %s (%s):\n", side, seg(side))
		}
		for _, n := range s.Nodes {
			if n.Side != side {
				continue
			}
			fmt.Fprintf(w, "  %-4s %-12s %-15s subnet %-15s pods: %s\n", n.Name, n.NS, addrList(n.Addrs()), nodeSubnets[n.Name], strings.Join(pods[n.Name], ", "))
		}
	}
	fmt.Fprintf(w, "  ext  %-12s %-15s outside the cluster network\n", s.Ext.NS, addrList(s.Ext.Addrs()))
	fmt.Fprintln(w, "  paths between nodes:")
	fmt.Fprintln(w, strings.Join(s.paths(), "\n"))
	if kp := s.kernelPaths(); kp != nil {
		fmt.Fprintln(w, "  paths as the kernel has them now (weft lab trace NODE POD shows every hop):")
		fmt.Fprintln(w, strings.Join(kp, "\n"))
	}
}

// backendMode is the lab's backend as the picture names it: "vxlan +
// DirectRouting".
func (s *State) backendMode() string {
	if s.DirectRouting {
		return s.Backend + " + DirectRouting"
	}
	return s.Backend
}

// paths describes, for each pair of nodes, how their pods' traffic goes.
func (s *State) paths() []string {
	var paths []string
	for i, a := range s.Nodes {
		for _, b := range s.Nodes[i+1:] {
			kind := s.pathBetween(a.Side == b.Side)
			paths = append(paths, fmt.Sprintf("    %s %s <-> %s %s: %s", a.Name, addrList(a.Addrs()), b.Name, addrList(b.Addrs()), kind))
		}
	}
	sort.Strings(paths)
	return paths
}

// netConf is the lab's net-conf.json, for --store kube.
func (s *State) netConf() (string, error) {
	doc, err := netConf(s.Backend, s.DirectRouting, s.Datapath, s.IPFamily)
	if err != nil {
		return "", err
	}
	doc, err = s.withBGP(doc)
	return string(doc) + "\n", err
}

// labelList is "k=v,k2=v2", sorted.
func labelList(labels map[string]string) string {
	var ls []string
	for k, v := range labels {
		ls = append(ls, k+"="+v)
	}
	sort.Strings(ls)
	return strings.Join(ls, ",")
}

// portList is "80/TCP,80/UDP".
func portList(ports []pod.Port) string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, p.String())
	}
	return strings.Join(ps, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
