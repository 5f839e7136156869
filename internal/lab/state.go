// Package lab builds a real multi-node weft cluster inside network
// namespaces on one machine: an underlay switch or router, a control
// namespace running the store, one namespace per node running its own agent
// process, pods attached through the CNI protocol, and an external host.
// It touches only namespaces it created and configures nothing in the root
// namespace. This package orchestrates; the pieces are its subpackages
// (topology, process, pod, check, kube, bench), and cmd/weft parses the
// command line.
package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netns"
)

// RunDir holds each lab's state, logs and files.
const RunDir = "/run/weft-lab"

// Node is a cluster node.
type Node struct {
	topology.Host
	Agent      string   `json:"agent"` // process.Weft or process.Flannel
	Dir        string   `json:"dir"`
	SubnetFile string   `json:"subnetFile"`
	CNIConfDir string   `json:"cniConfDir"`
	CNIBinDirs []string `json:"cniBinDirs"`
	LogFile    string   `json:"logFile"`
	PodCIDR    string   `json:"podCIDR,omitempty"` // --store kube: its Node's podCIDRs, comma-separated
	// BGPPeers are the node's own --bgp-peer values (`weft lab agent
	// restart --bgp-peer`), in place of the lab's; the word "router"
	// stands for the lab's.
	BGPPeers []string `json:"bgpPeers,omitempty"`
}

// runtime is the node's CNI set-up.
func (n *Node) runtime() pod.Runtime {
	return pod.Runtime{NS: n.NS, Dir: n.Dir, SubnetFile: n.SubnetFile, ConfDir: n.CNIConfDir, BinDirs: n.CNIBinDirs}
}

// State is everything a lab created, written before each creation so that
// `down` can remove it all after any failure.
type State struct {
	Name          string `json:"name"`
	Backend       string `json:"backend"`
	DirectRouting bool   `json:"directRouting"`
	Datapath      string `json:"datapath,omitempty"` // the udp backend's Datapath, when set
	Topology      string `json:"topology"`
	ForwardDrop   bool   `json:"forwardDrop,omitempty"` // iptables -P FORWARD DROP in every node
	Network       string `json:"network"`               // the pods' networks, comma-separated
	// IPFamily is the pod network's families, topology.IPv4, IPv6 or
	// Dual ("" in a state written before: IPv4).
	IPFamily    string        `json:"ipFamily,omitempty"`
	Weft        string        `json:"weftBinary"`
	AgentBinary string        `json:"agentBinary,omitempty"` // weft-agent
	Flanneld    string        `json:"flanneldBinary,omitempty"`
	Underlay    string        `json:"underlayNetns"`
	Ctl         topology.Host `json:"ctl"`
	Ext         topology.Host `json:"ext"`
	Nodes       []*Node       `json:"nodes"`
	Pods        []*pod.Pod    `json:"pods"`
	Namespaces  []string      `json:"namespaces"` // every namespace created, in order
	Endpoint    string        `json:"etcdEndpoint"`
	Kube        *kube.Kube    `json:"kube,omitempty"` // --store kube
	// Router is the BGP router in the underlay namespace (--bgp).
	Router *router.Router `json:"router,omitempty"`
	// PodPorts are the ports of the pods `up` and `node add` create.
	PodPorts []pod.Port `json:"podPorts,omitempty"`

	out      io.Writer      // where up reports what it does
	restarts map[string]int // flanneld restarts by node, during up
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// checkName keeps namespace and interface names short and safe.
func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1-8 lower-case letters and digits, starting with a letter", name)
	}
	return nil
}

func dir(name string) string       { return filepath.Join(RunDir, name) }
func statePath(name string) string { return filepath.Join(dir(name), "state.json") }
func lockPath(name string) string  { return filepath.Join(RunDir, name+".lock") }

// load reads a lab's state; os.ErrNotExist if there is no such lab.
func load(name string) (*State, error) {
	b, err := os.ReadFile(statePath(name))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab %s: corrupt state %s: %w", name, statePath(name), err)
	}
	if s.Router != nil { // its password is in a file of its own (0600)
		if err := s.Router.LoadPassword(); err != nil {
			return nil, fmt.Errorf("lab %s: %w", name, err)
		}
	}
	return &s, nil
}

// save writes the state atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(statePath(s.Name), bytes.NewReader(b), 0o644)
}

// lock serialises lab commands on one lab.
func lock(name string) (func(), error) {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockPath(name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// addNS records and creates a namespace.
func (s *State) addNS(name string) error {
	if netns.Exists(name) {
		return fmt.Errorf("namespace %s already exists and is not part of lab %s: remove it or pick another --name", name, s.Name)
	}
	s.Namespaces = append(s.Namespaces, name)
	if err := s.save(); err != nil {
		return err
	}
	return netns.Create(name)
}

func (s *State) node(name string) (*Node, error) {
	for _, n := range s.Nodes {
		if n.Name == name || n.NS == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("lab %s has no node %q", s.Name, name)
}

// target resolves a short or full name to a namespace.
func (s *State) target(t string) (string, error) {
	for _, h := range []topology.Host{s.Ctl, s.Ext} {
		if t == h.Name || t == h.NS {
			return h.NS, nil
		}
	}
	if t == "underlay" || t == s.Underlay {
		return s.Underlay, nil
	}
	for _, n := range s.Nodes {
		if t == n.Name || t == n.NS {
			return n.NS, nil
		}
	}
	for _, p := range s.Pods {
		if p.Is(t) {
			return p.NS, nil
		}
	}
	return "", fmt.Errorf("lab %s has no %q (try ctl, ext, n1, n1-p1, NAMESPACE/POD)", s.Name, t)
}

// addrOf resolves a pod, node or host name to its address: its first
// (IPv4 in a lab that has it), or with v6 its IPv6 one.
func (s *State) addrOf(t string, v6 bool) (netip.Addr, error) {
	var addrs []netip.Addr
	for _, p := range s.Pods {
		if p.Is(t) {
			addrs = p.AllAddrs()
		}
	}
	for _, h := range []topology.Host{s.Ctl, s.Ext} {
		if t == h.Name || t == h.NS {
			addrs = h.Addrs()
		}
	}
	for _, n := range s.Nodes {
		if t == n.Name || t == n.NS {
			addrs = n.Addrs()
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("lab %s has no %q", s.Name, t)
	}
	if !v6 {
		return addrs[0], nil
	}
	for _, a := range addrs {
		if a.Is6() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("lab %s: %s has no IPv6 address (start the lab with --ip-family dual or ipv6)", s.Name, t)
}
