package lab

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/subnetenv"
)

const usage = `weft lab — a real multi-node weft cluster in network namespaces

  weft lab up [--name NAME] [--nodes N] [--pods-per-node M] [--backend vxlan|host-gw|udp]
              [--direct-routing] [--topology l2|l3] [--flannel-nodes n3,...] [--flanneld PATH]
              [--store etcd|kube] [--kube-apiserver PATH] [--read-only]
  weft lab status [--name NAME] [--json]
  weft lab check [--name NAME] [--json]
  weft lab exec [--name NAME] TARGET -- CMD...     TARGET: ctl, ext, underlay, n1, n1-p1
  weft lab agent stop|start|restart NODE [--name NAME]
  weft lab agent switch NODE --to weft|flannel [--flanneld PATH]   replace a node's agent in place
  weft lab node add [--pods M] [--agent weft|flannel] [--flanneld PATH] | remove NODE [--name NAME]
  weft lab ping [--name NAME] [--count N] [--interval D] FROM TO   FROM: a pod; TO: a pod or ext
  weft lab bench [--name NAME] [--seconds S] [--modes veth,host-gw,vxlan,udp] [--rounds N]
  weft lab down [--name NAME]
`

// ExitError carries a command's exit status (check failures, exec).
type ExitError int

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Main runs `weft lab ARGS`.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitError(2)
	}
	if os.Geteuid() != 0 {
		return errors.New("weft lab needs root: it creates network namespaces (run it with sudo)")
	}
	cmd, rest := args[0], args[1:]
	// Subcommands with a verb before the flags.
	verb := ""
	if cmd == "agent" || cmd == "node" {
		if len(rest) == 0 {
			return fmt.Errorf("weft lab %s: say what to do\n%s", cmd, usage)
		}
		verb, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("weft lab "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "weft", "lab name (1-8 lower-case letters and digits)")
	var spec Spec
	asJSON := false
	pods := 0
	agentKind, flanneld := "", "" // agent switch --to, node add --agent; and --flanneld
	switch cmd {
	case "up":
		fs.IntVar(&spec.Nodes, "nodes", 3, "number of nodes")
		fs.IntVar(&spec.PodsPerNode, "pods-per-node", 2, "pods per node")
		fs.StringVar(&spec.Backend, "backend", "vxlan", "vxlan, host-gw or udp")
		fs.BoolVar(&spec.DirectRouting, "direct-routing", false, "vxlan: plain routes to on-link peers")
		fs.StringVar(&spec.Topology, "topology", "l2", "l2 (one bridge) or l3 (two subnets and a router)")
		fs.Func("flannel-nodes", "nodes that run the reference flanneld instead of weft (e.g. n3)", func(v string) error {
			spec.FlannelNodes = strings.Split(v, ",")
			return nil
		})
		fs.StringVar(&spec.Flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
		fs.StringVar(&spec.Store, "store", "etcd", "etcd (the embedded store) or kube (a real kube-apiserver; agents in Kubernetes mode)")
		fs.StringVar(&spec.KubeAPIServer, "kube-apiserver", "", "--store kube: the kube-apiserver binary (default: beside weft)")
		fs.BoolVar(&spec.ReadOnly, "read-only", false, "--store kube: agents in read-only mode (get/list/watch on nodes only)")
	case "status", "check":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "agent":
		fs.StringVar(&agentKind, "to", "", "switch: the agent to run, weft or flannel")
		fs.StringVar(&flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
	case "node":
		fs.IntVar(&pods, "pods", 2, "pods on the new node")
		fs.StringVar(&agentKind, "agent", "weft", "the new node's agent: weft or flannel")
		fs.StringVar(&flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
	}
	secs := fs.Int("seconds", 5, "bench: seconds per measurement")
	modes := fs.String("modes", "veth,host-gw,vxlan,udp", "bench: data paths to measure")
	rounds := fs.Int("rounds", 1, "bench: measure every mode this many times, then print the medians")
	count := fs.Int("count", 10, "ping: echo requests to send")
	interval := fs.Duration("interval", 50*time.Millisecond, "ping: time between echo requests")
	// The command of exec follows "--"; flags may follow positional
	// arguments (weft lab agent stop n1 --name x).
	var command []string
	for i, a := range rest {
		if a == "--" {
			rest, command = rest[:i], rest[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	if err := checkName(*name); err != nil {
		return err
	}
	if cmd == "bench" {
		if *name == "weft" {
			*name = "bench" // leave a lab under the default name alone
		}
		return bench(ctx, *name, strings.Split(*modes, ","), *secs, *rounds, stdout)
	}
	// Commands that change the lab take its lock; status, check, exec and
	// ping only read the state, and must run while the others do (a ping
	// across an agent restart).
	switch cmd {
	case "up", "down", "agent", "node":
		unlock, err := lock(*name)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if cmd == "up" {
		spec.Name = *name
		return up(ctx, spec, stdout)
	}
	s, err := load(*name)
	if errors.Is(err, os.ErrNotExist) {
		if cmd == "down" {
			_ = os.Remove(filepath.Join(RunDir, *name+".lock")) // taken just above
			fmt.Fprintf(stdout, "lab %s: nothing to remove\n", *name)
			return nil
		}
		return fmt.Errorf("lab %s is not up: start it with 'weft lab up --name %s'", *name, *name)
	}
	if err != nil {
		return err
	}
	switch cmd {
	case "down":
		return s.down(stdout)
	case "status":
		st := s.status()
		if asJSON {
			return writeJSON(stdout, st)
		}
		st.print(stdout)
		return nil
	case "check":
		rep, err := s.check(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			if err := writeJSON(stdout, rep); err != nil {
				return err
			}
		} else {
			rep.printMatrix(stdout, s)
		}
		if rep.Failed > 0 {
			return ExitError(1)
		}
		return nil
	case "exec":
		if len(pos) != 1 || len(command) == 0 {
			return errors.New("usage: weft lab exec TARGET -- CMD...")
		}
		ns, err := s.target(pos[0])
		if err != nil {
			return err
		}
		c := netns.Command(ns, command...)
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, stderr
		if err := c.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ExitError(ee.ExitCode())
			}
			return err
		}
		return nil
	case "ping":
		if len(pos) != 2 {
			return errors.New("usage: weft lab ping [--count N] [--interval D] FROM TO")
		}
		from, err := s.target(pos[0])
		if err != nil {
			return err
		}
		to, err := s.addrOf(pos[1])
		if err != nil {
			return err
		}
		st, err := ping(ctx, from, to, *count, *interval)
		st.From, st.To = pos[0], pos[1]
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, st)
		if st.Received < st.Sent {
			return ExitError(1)
		}
		return nil
	case "agent":
		if len(pos) != 1 {
			return errors.New("usage: weft lab agent stop|start|restart NODE")
		}
		n, err := s.node(pos[0])
		if err != nil {
			return err
		}
		switch verb {
		case "stop":
			return s.stopAgent(n)
		case "start":
			if err := s.startAgent(n); err != nil {
				return err
			}
			return s.waitReady(ctx, n, 30*time.Second, -1)
		case "restart":
			return s.replaceAgent(ctx, n, n.Agent)
		case "switch":
			// The migration step: the other agent on the same node, store,
			// subnet file and kernel state.
			if err := s.checkAgentKind(agentKind, flanneld); err != nil {
				return err
			}
			if err := s.replaceAgent(ctx, n, agentKind); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s now runs %s (pid %d)\n", n.Name, n.Agent, n.PID)
			return nil
		}
		return fmt.Errorf("weft lab agent: unknown action %q (stop, start, restart)", verb)
	case "node":
		switch verb {
		case "add":
			if err := s.checkAgentKind(agentKind, flanneld); err != nil {
				return err
			}
			return s.nodeAdd(ctx, pods, agentKind, stdout)
		case "remove":
			if len(pos) != 1 {
				return errors.New("usage: weft lab node remove NODE")
			}
			return s.nodeRemove(ctx, pos[0], stdout)
		}
		return fmt.Errorf("weft lab node: unknown action %q (add, remove)", verb)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("weft lab: unknown command %q", cmd)
}

func up(ctx context.Context, spec Spec, w io.Writer) (err error) {
	if old, lerr := load(spec.Name); lerr == nil {
		fmt.Fprintf(w, "lab %s is already up; 'weft lab down --name %s' removes it\n\n", spec.Name, spec.Name)
		old.picture(w)
		return nil
	}
	if spec.Store == "" {
		spec.Store = "etcd"
	}
	switch {
	case spec.Nodes < 1 || spec.Nodes > 60:
		return fmt.Errorf("--nodes %d: use 1 to 60", spec.Nodes)
	case spec.PodsPerNode < 0 || spec.PodsPerNode > 50:
		return fmt.Errorf("--pods-per-node %d: use 0 to 50", spec.PodsPerNode)
	case spec.Backend != "vxlan" && spec.Backend != "host-gw" && spec.Backend != "udp":
		return fmt.Errorf("--backend %q: use vxlan, host-gw or udp", spec.Backend)
	case spec.Topology != "l2" && spec.Topology != "l3":
		return fmt.Errorf("--topology %q: use l2 or l3", spec.Topology)
	case spec.DirectRouting && spec.Backend != "vxlan":
		return errors.New("--direct-routing goes with --backend vxlan")
	case spec.Store != "etcd" && spec.Store != "kube":
		return fmt.Errorf("--store %q: use etcd or kube", spec.Store)
	case spec.ReadOnly && spec.Store != "kube":
		return errors.New("--read-only goes with --store kube")
	case spec.ReadOnly && len(spec.FlannelNodes) > 0:
		return errors.New("--read-only cannot mix with --flannel-nodes: flannel nodes need the annotations read-only agents do not publish")
	}
	weft, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(weft), "weft-cni")); err != nil {
		return fmt.Errorf("weft-cni is not beside %s: build both with 'go build -o bin/ ./cmd/...'", weft)
	}
	s := &State{Name: spec.Name, Backend: spec.Backend, DirectRouting: spec.DirectRouting,
		Topology: spec.Topology, Network: network, Weft: weft}
	if spec.Store == "kube" {
		bin, err := findKubeAPIServer(spec.KubeAPIServer, weft)
		if err != nil {
			return err
		}
		s.Kube = &Kube{Binary: bin, ReadOnly: spec.ReadOnly}
	}
	agentOf := map[string]string{}
	for _, n := range spec.FlannelNodes {
		i, err := strconv.Atoi(strings.TrimPrefix(n, "n"))
		if !strings.HasPrefix(n, "n") || err != nil || i < 1 || i > spec.Nodes {
			return fmt.Errorf("--flannel-nodes: %q is not a node of this lab (n1 to n%d)", n, spec.Nodes)
		}
		agentOf[n] = "flannel"
	}
	if len(agentOf) > 0 {
		if err := s.findFlanneld(spec.Flanneld); err != nil {
			return err
		}
	}
	if err := s.save(); err != nil {
		return err
	}
	defer func() {
		var ee ExitError
		if err != nil && !errors.As(err, &ee) { // a failed check keeps the lab for inspection
			fmt.Fprintf(w, "lab %s: %v\nremoving what was created...\n", s.Name, err)
			if derr := s.down(w); derr != nil {
				fmt.Fprintf(w, "cleanup: %v\n", derr)
			}
		}
	}()
	start := time.Now()
	if err := s.buildUnderlay(); err != nil {
		return err
	}
	if err := s.startStore(ctx, w); err != nil {
		return err
	}
	if err := s.startExt(); err != nil {
		return err
	}
	for i := 1; i <= spec.Nodes; i++ {
		agent := agentOf["n"+strconv.Itoa(i)]
		if agent == "" {
			agent = "weft"
		}
		if _, err := s.addNode(i, spec.Nodes, agent); err != nil {
			return err
		}
	}
	// flanneld nodes first: one that lost a lease race is restarted there,
	// and the weft nodes cannot see all peers before it has a lease.
	s.out, s.restarts = w, map[string]int{}
	for _, agent := range []string{"flannel", "weft"} {
		for _, n := range s.Nodes {
			if n.Agent == agent {
				if err := s.waitReady(ctx, n, 60*time.Second, len(s.Nodes)-1); err != nil {
					return err
				}
			}
		}
	}
	for _, n := range s.Nodes {
		for j := 1; j <= spec.PodsPerNode; j++ {
			if _, err := s.addPod(ctx, n, j); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(w, "lab %s up in %.1fs\n\n", s.Name, time.Since(start).Seconds())
	s.picture(w)
	fmt.Fprintln(w)
	rep, err := s.check(ctx)
	if err != nil {
		return err
	}
	rep.printMatrix(w, s)
	if rep.Failed > 0 {
		fmt.Fprintf(w, "\nsome probes failed; the lab stays up for inspection ('weft lab status', 'weft lab down')\n")
		return ExitError(1)
	}
	return nil
}

// readyz asks a node's agent for its status, from inside the node.
func (s *State) readyz(n *Node) (map[string]any, error) {
	var out map[string]any
	err := netns.Do(n.NS, func() error {
		c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(healthz), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		req, _ := http.NewRequest("GET", "http://node/readyz", nil)
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufioReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&out)
	})
	return out, err
}

// waitReady waits until n's agent is ready and, when peers >= 0, has
// synced with that many other leases, so that a check right after sees a
// converged cluster.
func (s *State) waitReady(ctx context.Context, n *Node, timeout time.Duration, peers int) error {
	if s.restarts == nil {
		s.restarts = map[string]int{}
	}
	if s.out == nil {
		s.out = io.Discard
	}
	deadline := time.Now().Add(timeout)
	for {
		if n.Agent == "flannel" {
			// flanneld has no readiness with peers: its subnet file says it
			// holds its lease; give it a moment to program its peers.
			if _, err := os.Stat(n.SubnetFile); err == nil && alive(n.PID) {
				time.Sleep(time.Second)
				return nil
			}
			// flanneld exits when it loses the race for a subnet instead of
			// trying another; its supervisor (systemd, a DaemonSet) starts
			// it again, and so does the lab.
			if log, _ := os.ReadFile(n.LogFile); !alive(n.PID) && strings.Contains(string(log), "subnet already exists") && s.restarts[n.Name] < 5 {
				s.restarts[n.Name]++
				n.PID = 0
				if err := s.startAgent(n); err != nil {
					return err
				}
				fmt.Fprintf(s.out, "flanneld on %s lost a race for a subnet and exited (flannel does not retry); restarted it, as its supervisor would\n", n.Name)
				continue
			}
		} else if st, err := s.readyz(n); err == nil && st["ready"] == true && (peers < 0 || st["peers"] == float64(peers)) {
			return nil
		}
		if !alive(n.PID) {
			log, _ := os.ReadFile(n.LogFile)
			return fmt.Errorf("the agent of %s exited; its log:\n%s", n.Name, tail(string(log), 15))
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(n.LogFile)
			return fmt.Errorf("the agent of %s is not ready after %s; its log:\n%s%s", n.Name, timeout, tail(string(log), 15), s.leaseless())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leaseless describes the nodes whose agent holds no lease yet: the usual
// reason another node does not see all its peers.
func (s *State) leaseless() string {
	var b strings.Builder
	for _, n := range s.Nodes {
		if _, err := os.Stat(n.SubnetFile); err == nil {
			continue
		}
		log, _ := os.ReadFile(n.LogFile)
		fmt.Fprintf(&b, "\n%s (%s, pid %d, running %v) has no lease; its log:\n%s\n", n.Name, n.Agent, n.PID, alive(n.PID), tail(string(log), 10))
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkAgentKind accepts "weft" or "flannel", and for flannel locates the
// flanneld binary.
func (s *State) checkAgentKind(kind, flanneld string) error {
	switch kind {
	case "weft":
		return nil
	case "flannel":
		return s.findFlanneld(flanneld)
	}
	return fmt.Errorf("agent %q: use weft or flannel (--to or --agent)", kind)
}

// replaceAgent stops n's agent and starts one of kind in its place, then
// waits until it is ready.
func (s *State) replaceAgent(ctx context.Context, n *Node, kind string) error {
	if err := s.stopAgent(n); err != nil {
		return err
	}
	n.Agent = kind
	if err := s.startAgent(n); err != nil {
		return err
	}
	return s.waitReady(ctx, n, 30*time.Second, -1)
}

// findFlanneld locates the reference flanneld: path, else the one already
// in the state, else beside the weft binary.
func (s *State) findFlanneld(path string) error {
	if path == "" {
		path = s.Flanneld
	}
	if path == "" {
		path = filepath.Join(filepath.Dir(s.Weft), "flanneld")
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no flanneld at %s: build the reference one with '(cd tools/flannel && go build -o ../../bin/flanneld github.com/flannel-io/flannel)' or give --flanneld", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	s.Flanneld = abs
	return nil
}

func (s *State) nodeAdd(ctx context.Context, pods int, agent string, w io.Writer) error {
	i := 1
	used := map[string]bool{}
	for _, n := range s.Nodes {
		used[n.Name] = true
	}
	for used["n"+strconv.Itoa(i)] {
		i++
	}
	total := max(len(s.Nodes)+1, i)
	n, err := s.addNode(i, total, agent)
	if err != nil {
		return err
	}
	if err := s.waitReady(ctx, n, 60*time.Second, len(s.Nodes)-1); err != nil {
		return err
	}
	for _, other := range s.Nodes { // and every other node knows the new one
		if other != n && other.Agent == "weft" && ours(other.PID, other.SubnetFile) {
			if err := s.waitReady(ctx, other, 30*time.Second, len(s.Nodes)-1); err != nil {
				return err
			}
		}
	}
	for j := 1; j <= pods; j++ {
		if _, err := s.addPod(ctx, n, j); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "added %s (%s, %s)\n", n.Name, n.NS, n.Addr)
	return nil
}

// nodeRemove stops the node's agent, removes its pods and lease, and its
// namespace: the other nodes drop its routes when the lease goes.
func (s *State) nodeRemove(ctx context.Context, name string, w io.Writer) error {
	n, err := s.node(name)
	if err != nil {
		return err
	}
	subnet := ""
	if env, err := subnetenv.Read(n.SubnetFile); err == nil {
		subnet = env.Subnet.Masked().String()
	}
	if err := s.stopAgent(n); err != nil {
		return err
	}
	var keep []*Pod
	for _, p := range s.Pods {
		if p.Node != n.Name {
			keep = append(keep, p)
			continue
		}
		if err := s.delPod(ctx, p); err != nil {
			return err
		}
	}
	s.Pods = keep
	if s.Kube != nil {
		if err := s.deleteNode(ctx, n); err != nil {
			return err
		}
	} else if subnet != "" {
		if _, err := run(ctx, s.Ctl.NS, append([]string{s.Weft, "store", "evict", subnet}, s.etcdArgs()...)...); err != nil {
			return err
		}
	}
	if err := netns.Delete(n.NS); err != nil {
		return err
	}
	var nodes []*Node
	for _, x := range s.Nodes {
		if x != n {
			nodes = append(nodes, x)
		}
	}
	s.Nodes = nodes
	var nss []string
	for _, x := range s.Namespaces {
		if x != n.NS && !strings.HasPrefix(x, n.NS+"-p") {
			nss = append(nss, x)
		}
	}
	s.Namespaces = nss
	if err := s.save(); err != nil {
		return err
	}
	_ = os.RemoveAll(n.Dir)
	if s.Kube != nil {
		fmt.Fprintf(w, "removed %s (Node object deleted, podCIDR %s)\n", n.Name, n.PodCIDR)
		return nil
	}
	fmt.Fprintf(w, "removed %s (lease %s evicted)\n", n.Name, subnet)
	return nil
}

// NodeStatus is one node in `lab status`.
type NodeStatus struct {
	Name       string   `json:"name"`
	NS         string   `json:"netns"`
	Agent      string   `json:"agent"`
	Addr       string   `json:"addr"`
	Subnet     string   `json:"subnet"`
	AgentPID   int      `json:"agentPID"`
	Running    bool     `json:"running"`
	Ready      bool     `json:"ready"`
	Skipped    []any    `json:"skippedPeers,omitempty"`
	SubnetFile string   `json:"subnetFile"`
	CNIConfDir string   `json:"cniConfDir"`
	CNIBinDirs []string `json:"cniBinDirs"`
	Log        string   `json:"log"`
}

// LabStatus is `lab status`.
type LabStatus struct {
	Name     string       `json:"name"`
	Backend  string       `json:"backend"`
	Direct   bool         `json:"directRouting"`
	Topology string       `json:"topology"`
	Store    string       `json:"store"`
	Kube     string       `json:"kube,omitempty"`
	StorePID int          `json:"storePID"`
	StoreUp  bool         `json:"storeRunning"`
	External Host         `json:"external"`
	Nodes    []NodeStatus `json:"nodes"`
	Pods     []*Pod       `json:"pods"`
}

func (s *State) status() LabStatus {
	st := LabStatus{Name: s.Name, Backend: s.Backend, Direct: s.DirectRouting, Topology: s.Topology,
		Store: s.Endpoint, StorePID: s.Ctl.PID, StoreUp: ours(s.Ctl.PID, "serve"), External: s.Ext, Pods: s.Pods}
	if s.Kube != nil {
		st.Kube = s.kubeSummary()
	}
	for _, n := range s.Nodes {
		ns := NodeStatus{Name: n.Name, NS: n.NS, Agent: n.Agent, Addr: n.Addr.String(), AgentPID: n.PID, Running: ours(n.PID, n.SubnetFile),
			SubnetFile: n.SubnetFile, CNIConfDir: n.CNIConfDir, CNIBinDirs: n.CNIBinDirs, Log: n.LogFile}
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			ns.Subnet = env.Subnet.Masked().String()
		}
		if ns.Running && n.Agent == "flannel" {
			_, err := os.Stat(n.SubnetFile)
			ns.Ready = err == nil
		} else if ns.Running {
			if r, err := s.readyz(n); err == nil {
				ns.Ready = r["ready"] == true
				if sk, ok := r["skippedPeers"].([]any); ok {
					ns.Skipped = sk
				}
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

func (st LabStatus) print(w io.Writer) {
	fmt.Fprintf(w, "lab %s: backend %s", st.Name, st.Backend)
	if st.Direct {
		fmt.Fprint(w, " (DirectRouting)")
	}
	fmt.Fprintf(w, ", topology %s, store %s (pid %d, running %v)\n", st.Topology, st.Store, st.StorePID, st.StoreUp)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\n", n.Name, n.NS, n.Addr, n.Subnet, n.Agent, pid, n.Ready, n.SubnetFile, n.CNIConfDir)
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
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNETNS\tNODE\tADDRESS")
	for _, p := range st.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.NS, p.Node, p.Addr)
	}
	fmt.Fprintf(tw, "ext\t%s\t-\t%s (outside the cluster network)\n", st.External.NS, st.External.Addr)
	tw.Flush()
}

// picture draws the topology.
func (s *State) picture(w io.Writer) {
	subnets := map[string]string{}
	for _, n := range s.Nodes {
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			subnets[n.Name] = env.Subnet.Masked().String()
		}
	}
	pods := map[string][]string{}
	for _, p := range s.Pods {
		pods[p.Node] = append(pods[p.Node], fmt.Sprintf("%s %s", p.Name, p.Addr))
	}
	mode := s.Backend
	if s.DirectRouting {
		mode += " + DirectRouting"
	}
	fmt.Fprintf(w, "lab %s — cluster network %s, backend %s, underlay %s\n", s.Name, s.Network, mode, s.Topology)
	if s.Topology == "l3" {
		fmt.Fprintf(w, "  underlay: router %s joins side a %s (br-a), side b %s (br-b), outside %s (br-x)\n", s.Underlay, sideA, sideB, outside)
	} else {
		fmt.Fprintf(w, "  underlay: switch %s, bridge br-a, %s\n", s.Underlay, sideA)
	}
	fmt.Fprintf(w, "  ctl  %-12s %-15s store %s\n", s.Ctl.NS, s.Ctl.Addr, s.Endpoint)
	if s.Kube != nil {
		fmt.Fprintf(w, "       %s\n", s.kubeSummary())
	}
	sides := []string{"a"}
	if s.Topology == "l3" {
		sides = []string{"a", "b"}
	}
	for _, side := range sides {
		if s.Topology == "l3" {
			fmt.Fprintf(w, "  side %s (%s):\n", side, prefixFor(side))
		}
		for _, n := range s.Nodes {
			if n.Side != side {
				continue
			}
			fmt.Fprintf(w, "  %-4s %-12s %-15s subnet %-15s pods: %s\n", n.Name, n.NS, n.Addr, subnets[n.Name], strings.Join(pods[n.Name], ", "))
		}
	}
	fmt.Fprintf(w, "  ext  %-12s %-15s outside the cluster network\n", s.Ext.NS, s.Ext.Addr)
	var tunnels []string
	for i, a := range s.Nodes {
		for _, b := range s.Nodes[i+1:] {
			kind := "vxlan VNI 1 udp/8472 via flannel.1"
			switch {
			case s.Backend == "host-gw":
				kind = "direct route (host-gw)"
			case s.Backend == "udp":
				kind = "udp/8285 via flannel0 (userspace)"
			case s.DirectRouting && a.Side == b.Side:
				kind = "direct route (same segment)"
			}
			tunnels = append(tunnels, fmt.Sprintf("    %s %s <-> %s %s: %s", a.Name, a.Addr, b.Name, b.Addr, kind))
		}
	}
	sort.Strings(tunnels)
	fmt.Fprintln(w, "  paths between nodes:")
	fmt.Fprintln(w, strings.Join(tunnels, "\n"))
}
