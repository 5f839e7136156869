package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/backend/udp"
	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netns"
)

// Spec is what `lab up` is asked for.
type Spec struct {
	Name          string
	Nodes         int
	PodsPerNode   int
	Backend       string
	DirectRouting bool
	Datapath      string     // udp: the Datapath option (auto, bpf or tun); "" leaves the default
	Topology      string     // topology.L2 or topology.L3
	IPFamily      string     // the pods' families: topology.IPv4 (default), IPv6 or Dual
	ForwardDrop   bool       // iptables -P FORWARD DROP in every node, as Docker sets it
	FlannelNodes  []string   // nodes running the reference flanneld (n3, ...)
	Flanneld      string     // its binary (default: beside weft)
	Store         string     // etcd (default) or kube
	KubeAPIServer string     // kube: the kube-apiserver binary
	ReadOnly      bool       // kube: agents in read-only mode
	PodPorts      []pod.Port // ports every pod serves and declares
	// BGP runs a BGP router (BGPRouter: router.BIRD, the default, or
	// router.FRR) in the l3 router namespace, peering with every node;
	// BGPPassword is every session's TCP MD5 password.
	BGP         bool
	BGPRouter   string
	BGPPassword string
}

// ExitError carries a command's exit status (check failures, exec).
type ExitError int

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Up creates the lab spec asks for, starts its store, agents and pods,
// prints its picture and runs the check. A lab already up is reported, not
// changed. On a failure everything created is removed, except after a
// failed check (ExitError 1): that lab stays up for inspection.
func Up(ctx context.Context, spec Spec, w io.Writer) error {
	if err := checkName(spec.Name); err != nil {
		return err
	}
	unlock, err := lock(spec.Name)
	if err != nil {
		return err
	}
	defer unlock()
	return up(ctx, spec, w)
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
	if spec.IPFamily == "" {
		spec.IPFamily = topology.IPv4
	}
	if err := spec.validate(); err != nil {
		return err
	}
	s, agentOf, err := newState(spec)
	if err != nil {
		return err
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
	if err := s.build(ctx, spec, agentOf, w); err != nil {
		return err
	}
	fmt.Fprintf(w, "lab %s up in %.1fs\n\n", s.Name, time.Since(start).Seconds())
	s.picture(w)
	if s.Kube != nil {
		fmt.Fprintf(w, "  kubectl: the API server is reachable only inside %s; 'weft lab kubectl --name %s get pods -A' runs\n"+
			"    kubectl there with the admin kubeconfig, as does 'ip netns exec %s env KUBECONFIG=%s kubectl ...'\n",
			s.Ctl.NS, s.Name, s.Ctl.NS, s.Kube.AdminKubeconfig())
	}
	fmt.Fprintln(w)
	rep, err := s.check(ctx)
	if err != nil {
		return err
	}
	rep.PrintMatrix(w, s.podNames())
	if rep.Failed > 0 {
		fmt.Fprintf(w, "\nsome probes failed; the lab stays up for inspection ('weft lab status', 'weft lab down')\n")
		return ExitError(1)
	}
	return nil
}

// validate says what is wrong with a spec, one thing at a time.
func (spec Spec) validate() error {
	switch {
	case spec.Nodes < 1 || spec.Nodes > 60:
		return fmt.Errorf("--nodes %d: use 1 to 60", spec.Nodes)
	case spec.PodsPerNode < 0 || spec.PodsPerNode > 50:
		return fmt.Errorf("--pods-per-node %d: use 0 to 50", spec.PodsPerNode)
	case !slices.Contains(BackendTypes(), spec.Backend):
		return fmt.Errorf("--backend %q: use %s", spec.Backend, orList(BackendTypes()))
	case spec.Topology != topology.L2 && spec.Topology != topology.L3:
		return fmt.Errorf("--topology %q: use l2 or l3", spec.Topology)
	case spec.IPFamily != "" && !slices.Contains(topology.Families(), spec.IPFamily):
		return fmt.Errorf("--ip-family %q: use %s", spec.IPFamily, orList(topology.Families()))
	case topology.HasIPv6(spec.IPFamily) && spec.Backend == "udp":
		return fmt.Errorf("--ip-family %s: the udp backend carries IPv4 only (as flannel's); use --backend vxlan or host-gw", spec.IPFamily)
	case spec.Datapath != "" && spec.Backend != udp.Type:
		return fmt.Errorf("--datapath goes with --backend %s", udp.Type)
	case spec.Datapath != "" && !slices.Contains([]string{udp.DatapathAuto, udp.DatapathBPF, udp.DatapathTUN}, spec.Datapath):
		return fmt.Errorf("--datapath %q: use auto, bpf or tun", spec.Datapath)
	case spec.DirectRouting && !takesDirectRouting(spec.Backend):
		return fmt.Errorf("--direct-routing goes with --backend %s", orList(directRoutingTypes()))
	case spec.Store != "etcd" && spec.Store != "kube":
		return fmt.Errorf("--store %q: use etcd or kube", spec.Store)
	case spec.ReadOnly && spec.Store != "kube":
		return errors.New("--read-only goes with --store kube")
	case spec.ReadOnly && len(spec.FlannelNodes) > 0:
		return errors.New("--read-only cannot mix with --flannel-nodes: flannel nodes need the annotations read-only agents do not publish")
	case spec.BGP && spec.Topology != topology.L3:
		return errors.New("--bgp needs --topology l3: the router between the two sides runs BIRD or FRR")
	case !spec.BGP && spec.BGPRouter != "":
		return errors.New("--bgp-router goes with --bgp")
	case !spec.BGP && spec.BGPPassword != "":
		return errors.New("--bgp-password goes with --bgp")
	case spec.BGP && len(spec.FlannelNodes) > 0:
		return errors.New("--bgp cannot mix with --flannel-nodes: flanneld speaks no BGP")
	case spec.BGP && spec.BGPRouter != "" && !slices.Contains(router.Kinds(), spec.BGPRouter):
		return fmt.Errorf("--bgp-router %q: use %s", spec.BGPRouter, orList(router.Kinds()))
	case spec.BGP:
		kind := cmp.Or(spec.BGPRouter, router.BIRD)
		if err := bgp.CheckPassword(spec.BGPPassword); err != nil {
			return fmt.Errorf("--bgp-password: %w", err)
		}
		if err := router.CheckPassword(kind, spec.BGPPassword); err != nil {
			return fmt.Errorf("--bgp-password: %w", err)
		}
		if err := router.Find(kind); err != nil {
			return err
		}
	}
	if spec.ForwardDrop {
		return topology.CheckIPTables()
	}
	return nil
}

// orList is "a, b or c".
func orList(xs []string) string {
	if len(xs) < 2 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// newState finds the binaries the lab runs and returns its first state,
// with the agent kind of each node that does not run weft.
func newState(spec Spec) (*State, map[string]string, error) {
	weft, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(weft), "weft-cni")); err != nil {
		return nil, nil, fmt.Errorf("weft-cni is not beside %s: build both with 'go build -o bin/ ./cmd/...'", weft)
	}
	agent, err := process.Beside(weft, process.AgentBinary)
	if err != nil {
		return nil, nil, err
	}
	if spec.BGP {
		if _, err := process.Beside(weft, process.SpeakerBinary); err != nil {
			return nil, nil, fmt.Errorf("--bgp: %w", err)
		}
	}
	s := &State{Name: spec.Name, Backend: spec.Backend, DirectRouting: spec.DirectRouting, Datapath: spec.Datapath, Topology: spec.Topology,
		ForwardDrop: spec.ForwardDrop, IPFamily: spec.IPFamily, Network: networks(spec.IPFamily), Weft: weft, AgentBinary: agent, PodPorts: spec.PodPorts}
	if spec.Store == "kube" {
		bin, err := kube.Find(spec.KubeAPIServer, weft)
		if err != nil {
			return nil, nil, err
		}
		s.Kube = &kube.Kube{Binary: bin, ReadOnly: spec.ReadOnly}
	}
	if spec.BGP {
		s.Router = &router.Router{Kind: cmp.Or(spec.BGPRouter, router.BIRD), Password: spec.BGPPassword}
	}
	agentOf := map[string]string{}
	for _, n := range spec.FlannelNodes {
		i, err := strconv.Atoi(strings.TrimPrefix(n, "n"))
		if !strings.HasPrefix(n, "n") || err != nil || i < 1 || i > spec.Nodes {
			return nil, nil, fmt.Errorf("--flannel-nodes: %q is not a node of this lab (n1 to n%d)", n, spec.Nodes)
		}
		agentOf[n] = process.Flannel
	}
	if len(agentOf) > 0 {
		if err := s.findFlanneld(spec.Flanneld); err != nil {
			return nil, nil, err
		}
	}
	return s, agentOf, nil
}

// networks names the cluster networks of a lab of family fam.
func networks(fam string) string {
	var out []string
	for _, n := range podNetworks(fam) {
		out = append(out, n.Prefix.String())
	}
	return strings.Join(out, ", ")
}

// podNetworks are the cluster networks of a lab of family fam, IPv4
// first, with the length of a node's subnet in each.
func podNetworks(fam string) []kube.PodNetwork {
	var out []kube.PodNetwork
	if topology.HasIPv4(fam) {
		out = append(out, kube.PodNetwork{Prefix: topology.Network, SubnetLen: 24})
	}
	if topology.HasIPv6(fam) {
		out = append(out, kube.PodNetwork{Prefix: topology.Network6, SubnetLen: topology.SubnetLen6})
	}
	return out
}

// build creates the underlay, the store, the external host, the nodes
// with their agents, and the pods.
func (s *State) build(ctx context.Context, spec Spec, agentOf map[string]string, w io.Writer) error {
	if err := s.buildUnderlay(); err != nil {
		return err
	}
	if s.Router != nil {
		if err := s.startRouter(ctx, w); err != nil {
			return err
		}
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
			agent = process.Weft
		}
		if _, err := s.addNode(ctx, i, spec.Nodes, agent); err != nil {
			return err
		}
	}
	// flanneld nodes first: one that lost a lease race is restarted there,
	// and the weft nodes cannot see all peers before it has a lease.
	s.out, s.restarts = w, map[string]int{}
	for _, agent := range []string{process.Flannel, process.Weft} {
		for _, n := range s.Nodes {
			if n.Agent == agent {
				if err := s.waitReady(ctx, n, 60*time.Second, len(s.Nodes)-1); err != nil {
					return err
				}
			}
		}
	}
	if err := s.waitBGP(ctx, w, 60*time.Second); err != nil {
		return err
	}
	for _, n := range s.Nodes {
		for j := 1; j <= spec.PodsPerNode; j++ {
			if err := s.addPod(ctx, n, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// down removes everything the lab created, in reverse order. Idempotent.
func (s *State) down(w io.Writer) error {
	var errs []error
	errs = append(errs, s.downPods(w)...)
	for _, n := range s.Nodes {
		if err := process.Stop(n.PID, n.SubnetFile, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Kube != nil {
		if err := s.Kube.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Router != nil {
		if err := s.Router.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := process.Stop(s.Ctl.PID, "serve", 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	for i := len(s.Namespaces) - 1; i >= 0; i-- {
		if err := netns.Delete(s.Namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.RemoveAll(dir(s.Name)); err != nil {
		return err
	}
	_ = os.Remove(lockPath(s.Name)) // held by us until we return
	fmt.Fprintf(w, "lab %s: removed %d namespaces\n", s.Name, len(s.Namespaces))
	return nil
}

// downPods stops the pods' processes and deletes the Pod objects the lab
// registered, while the API server still runs (their namespaces go with
// the others'). A Pod object that cannot be deleted is reported, not an
// error: its store goes with the lab.
func (s *State) downPods(w io.Writer) []error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kubeUp := s.Kube != nil && s.Kube.Running()
	for _, p := range s.Pods {
		for _, h := range p.Procs {
			if err := h.Stop(5 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("pod %s: %w", p.Key(), err))
			}
		}
		if p.Registered && kubeUp {
			if err := s.Kube.DeletePod(ctx, s.Ctl.NS, p.KubeNamespace(), p.Name); err != nil {
				fmt.Fprintf(w, "lab %s: %v\n", s.Name, err)
			}
		}
	}
	return errs
}
