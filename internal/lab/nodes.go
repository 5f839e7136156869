package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
)

// addNode creates node i's namespace, plugs it in and starts its agent:
// weft's, or with agent process.Flannel the reference flanneld.
func (s *State) addNode(ctx context.Context, i, total int, agent string) (*Node, error) {
	addr, side := topology.NodeAddr(s.Topology, i, total)
	name := "n" + strconv.Itoa(i)
	nd := filepath.Join(dir(s.Name), name)
	n := &Node{
		Host:       s.place(topology.Host{Name: name, NS: s.Name + "-" + name, Addr: addr, Side: side}),
		Agent:      agent,
		Dir:        nd,
		SubnetFile: filepath.Join(nd, "subnet.env"),
		CNIConfDir: filepath.Join(nd, "cni", "net.d"),
		CNIBinDirs: pod.BinDirs(s.Weft),
		LogFile:    filepath.Join(nd, "agent.log"),
	}
	s.Nodes = append(s.Nodes, n)
	if err := s.addHost(n.Host); err != nil {
		return n, err
	}
	if err := n.runtime().WriteConflist(ctx); err != nil {
		return n, err
	}
	if agent == process.Flannel {
		// flanneld leaves IP forwarding to the node's set-up (kubelet or the
		// OS); weft's agent turns it on itself.
		if err := topology.EnableForwarding(n.NS, topology.HasIPv6(s.IPFamily)); err != nil {
			return n, err
		}
	}
	if s.ForwardDrop {
		// Before the agent starts, as on a host where Docker ran first.
		if err := topology.DropForward(n.NS); err != nil {
			return n, err
		}
	}
	if err := s.prepareBGP(ctx, n); err != nil {
		return n, err
	}
	if s.Kube != nil {
		ann, err := s.bgpAnnotations(n)
		if err != nil {
			return n, err
		}
		cidrs, err := s.Kube.RegisterNode(ctx, s.Ctl.NS, n.Name, n.Addrs(), podNetworks(s.IPFamily), ann)
		if err != nil {
			return n, err
		}
		n.PodCIDR = strings.Join(cidrs, ",")
		if err := s.save(); err != nil {
			return n, err
		}
	}
	return n, s.startAgent(n)
}

// agentSpec is how n's agent is started.
func (s *State) agentSpec(n *Node) (process.AgentSpec, error) {
	a := process.AgentSpec{Kind: n.Agent, Binary: s.Flanneld, SubnetFile: n.SubnetFile, Etcd: s.Endpoint}
	if n.Agent == process.Weft {
		if s.AgentBinary == "" { // a lab state written before weft-agent existed
			bin, err := process.Beside(s.Weft, process.AgentBinary)
			if err != nil {
				return a, err
			}
			s.AgentBinary = bin
		}
		a.Binary = s.AgentBinary
	}
	if s.Kube != nil {
		a.Etcd, a.Kubeconfig, a.NetConf, a.ReadOnly = "", s.Kube.Kubeconfig, s.Kube.NetConf, s.Kube.ReadOnly
	}
	wg, err := s.wireguardFlags(n)
	if err != nil {
		return a, err
	}
	a.Extra = append(s.bgpFlags(n), wg...)
	return a, nil
}

func (s *State) startAgent(n *Node) error {
	if process.Ours(n.PID, n.SubnetFile) {
		return fmt.Errorf("the agent of %s already runs (pid %d)", n.Name, n.PID)
	}
	a, err := s.agentSpec(n)
	if err != nil {
		return err
	}
	env := s.wireguardEnv(n)
	if s.Kube != nil {
		env = append(env, "NODE_NAME="+n.Name) // as the DaemonSet sets it
	}
	pid, err := process.Start(n.NS, n.LogFile, env, a.Args()...)
	if err != nil {
		return err
	}
	n.PID = pid
	return s.save()
}

func (s *State) stopAgent(n *Node) error {
	err := process.Stop(n.PID, n.SubnetFile, 10*time.Second)
	n.PID = 0
	if serr := s.save(); err == nil {
		err = serr
	}
	return err
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

// checkAgentKind accepts process.Weft or process.Flannel, and for flannel
// locates the flanneld binary.
func (s *State) checkAgentKind(kind, flanneld string) error {
	switch kind {
	case process.Weft:
		return nil
	case process.Flannel:
		return s.findFlanneld(flanneld)
	}
	return fmt.Errorf("agent %q: use weft or flannel (--to or --agent)", kind)
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

// addPod creates pod j of node n (n1-p1, ...) in the default namespace,
// with the lab's pod ports (served), registered as a Pod object when the
// store is the API server.
func (s *State) addPod(ctx context.Context, n *Node, j int) error {
	_, err := s.addPodWith(ctx, PodOptions{Name: fmt.Sprintf("%s-p%d", n.Name, j), Node: n.Name,
		Ports: s.PodPorts, Register: s.Kube != nil, Serve: len(s.PodPorts) > 0})
	return err
}

// waitReady waits until n's agent is ready and, when peers >= 0, has
// synced with that many other leases, so that a check right after sees a
// converged cluster.
func (s *State) waitReady(ctx context.Context, n *Node, timeout time.Duration, peers int) error {
	deadline := time.Now().Add(timeout)
	for {
		ready, err := s.ready(n, peers)
		if ready || err != nil {
			return err
		}
		if !process.Alive(n.PID) {
			return fmt.Errorf("the agent of %s exited; its log:\n%s", n.Name, process.TailFile(n.LogFile, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent of %s is not ready after %s; its log:\n%s%s", n.Name, timeout, process.TailFile(n.LogFile, 15), s.leaseless())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ready looks once whether n's agent is ready (with peers other leases,
// when peers >= 0).
func (s *State) ready(n *Node, peers int) (bool, error) {
	if n.Agent != process.Flannel {
		st, err := process.Readyz(n.NS)
		return err == nil && st["ready"] == true && (peers < 0 || st["peers"] == float64(peers)), nil
	}
	// flanneld has no readiness with peers: its subnet file says it holds
	// its lease; give it a moment to program its peers.
	if _, err := os.Stat(n.SubnetFile); err == nil && process.Alive(n.PID) {
		time.Sleep(time.Second)
		return true, nil
	}
	return false, s.restartLostFlanneld(n)
}

// restartLostFlanneld starts flanneld on n again if it exited after losing
// the race for a subnet: flanneld exits instead of trying another; its
// supervisor (systemd, a DaemonSet) starts it again, and so does the lab,
// up to 5 times per node.
func (s *State) restartLostFlanneld(n *Node) error {
	if s.restarts == nil {
		s.restarts = map[string]int{}
	}
	log, _ := os.ReadFile(n.LogFile)
	if process.Alive(n.PID) || !strings.Contains(string(log), "subnet already exists") || s.restarts[n.Name] >= 5 {
		return nil
	}
	s.restarts[n.Name]++
	n.PID = 0
	if err := s.startAgent(n); err != nil {
		return err
	}
	if s.out != nil {
		fmt.Fprintf(s.out, "flanneld on %s lost a race for a subnet and exited (flannel does not retry); restarted it, as its supervisor would\n", n.Name)
	}
	return nil
}

// leaseless describes the nodes whose agent holds no lease yet: the usual
// reason another node does not see all its peers.
func (s *State) leaseless() string {
	var b strings.Builder
	for _, n := range s.Nodes {
		if _, err := os.Stat(n.SubnetFile); err == nil {
			continue
		}
		fmt.Fprintf(&b, "\n%s (%s, pid %d, running %v) has no lease; its log:\n%s\n", n.Name, n.Agent, n.PID, process.Alive(n.PID), process.TailFile(n.LogFile, 10))
	}
	return b.String()
}
