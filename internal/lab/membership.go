package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/subnetenv"
)

// NodeAddOptions describe the node `lab node add` adds.
type NodeAddOptions struct {
	Pods     int
	Agent    string // process.Weft or process.Flannel
	Flanneld string // its binary, if not the lab's or beside weft
}

// NodeAdd adds a node with its agent and pods under the first free name,
// and waits until every agent knows it.
func NodeAdd(ctx context.Context, name string, o NodeAddOptions, w io.Writer) error {
	s, done, err := open(name, true)
	if err != nil {
		return err
	}
	defer done()
	if err := s.checkAgentKind(o.Agent, o.Flanneld); err != nil {
		return err
	}
	i := 1
	used := map[string]bool{}
	for _, n := range s.Nodes {
		used[n.Name] = true
	}
	for used["n"+strconv.Itoa(i)] {
		i++
	}
	total := max(len(s.Nodes)+1, i)
	n, err := s.addNode(ctx, i, total, o.Agent)
	if err != nil {
		return err
	}
	if err := s.waitReady(ctx, n, 60*time.Second, len(s.Nodes)-1); err != nil {
		return err
	}
	for _, other := range s.Nodes { // and every other node knows the new one
		if other != n && other.Agent == process.Weft && process.Ours(other.PID, other.SubnetFile) {
			if err := s.waitReady(ctx, other, 30*time.Second, len(s.Nodes)-1); err != nil {
				return err
			}
		}
	}
	if err := s.waitBGP(ctx, w, 60*time.Second); err != nil {
		return err
	}
	for j := 1; j <= o.Pods; j++ {
		if err := s.addPod(ctx, n, j); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "added %s (%s, %s)\n", n.Name, n.NS, n.Addr)
	return nil
}

// NodeRemove stops the node's agent, removes its pods and lease (or Node
// object), and its namespace: the other nodes drop its routes when the
// lease goes. In Kubernetes mode the Node goes first, while the agent
// still runs: with BGP, the agent that sees its own Node deleted
// withdraws its routes, and the router drops them at once (see
// awaitWithdrawal). In etcd mode the agent is stopped first (its sessions
// close without a NOTIFICATION), and the router drops the node's routes
// when the restart time runs out.
func NodeRemove(ctx context.Context, name, node string, w io.Writer) error {
	s, done, err := open(name, true)
	if err != nil {
		return err
	}
	defer done()
	n, err := s.node(node)
	if err != nil {
		return err
	}
	subnet := ""
	var subnets []netip.Prefix
	if env, err := subnetenv.Read(n.SubnetFile); err == nil {
		subnet = env.Subnet.Masked().String()
		for _, p := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
			if p.IsValid() {
				subnets = append(subnets, p.Masked())
			}
		}
	}
	if s.Kube != nil {
		running := process.Ours(n.PID, n.SubnetFile)
		if err := s.Kube.DeleteNode(ctx, s.Ctl.NS, n.Name); err != nil {
			return err
		}
		if running {
			s.awaitWithdrawal(ctx, w, n, subnets, withdrawTimeout)
		}
	}
	if err := s.stopAgent(n); err != nil {
		return err
	}
	if err := s.removePods(ctx, n); err != nil {
		return err
	}
	if s.Kube == nil && subnet != "" {
		if _, err := process.Run(s.Ctl.NS, append([]string{s.Weft, "store", "evict", subnet}, s.etcdArgs()...)...); err != nil {
			return err
		}
	}
	if err := s.forget(n); err != nil {
		return err
	}
	if s.Kube != nil {
		fmt.Fprintf(w, "removed %s (Node object deleted, podCIDR %s)\n", n.Name, n.PodCIDR)
		return nil
	}
	fmt.Fprintf(w, "removed %s (lease %s evicted)\n", n.Name, subnet)
	return nil
}

// removePods removes n's pods (servers, CNI DEL, namespaces, Pod objects).
func (s *State) removePods(ctx context.Context, n *Node) error {
	for _, p := range slices.Clone(s.Pods) {
		if p.Node == n.Name {
			if err := s.removePod(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// forget deletes n's namespace and files and drops it from the state.
func (s *State) forget(n *Node) error {
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
	return nil
}
