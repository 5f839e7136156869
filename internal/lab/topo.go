package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/netns"
)

// Spec is what `lab up` is asked for.
type Spec struct {
	Name          string
	Nodes         int
	PodsPerNode   int
	Backend       string
	DirectRouting bool
	Topology      string   // l2 or l3
	FlannelNodes  []string // nodes running the reference flanneld (n3, ...)
	Flanneld      string   // its binary; for `node add`, the agent kind
	Store         string   // etcd (default) or kube
	KubeAPIServer string   // kube: the kube-apiserver binary
	ReadOnly      bool     // kube: agents in read-only mode
}

// Underlay plan. All addresses are in the TEST-NET ranges.
var (
	sideA    = netip.MustParsePrefix("192.0.2.0/24")
	sideB    = netip.MustParsePrefix("198.51.100.0/24")
	outside  = netip.MustParsePrefix("203.0.113.0/24")
	network  = "10.244.0.0/16"
	storeIP  = netip.MustParseAddr("192.0.2.2")
	healthz  = 9570
	etcdPort = 2379
)

func nth(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// nodeAddr places node i (1-based): on l2 all on side A; on l3 the first
// half on side A, the rest on side B.
func (s *State) nodeAddr(i, total int) (netip.Addr, string) {
	if s.Topology == "l3" && i > (total+1)/2 {
		return nth(sideB, 10+i), "b"
	}
	return nth(sideA, 10+i), "a"
}

func (s *State) gateway(side string) netip.Addr {
	if s.Topology != "l3" {
		return netip.Addr{}
	}
	switch side {
	case "b":
		return nth(sideB, 1)
	case "x":
		return nth(outside, 1)
	}
	return nth(sideA, 1)
}

func bridgeFor(side string) string { return "br-" + side }

func prefixFor(side string) netip.Prefix {
	switch side {
	case "b":
		return sideB
	case "x":
		return outside
	}
	return sideA
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

// buildUnderlay creates the switch (l2) or router (l3) namespace.
func (s *State) buildUnderlay() error {
	s.Underlay = s.Name + "-ul"
	if err := s.addNS(s.Underlay); err != nil {
		return err
	}
	h, err := netns.Handle(s.Underlay)
	if err != nil {
		return err
	}
	defer h.Close()
	sides := []string{"a"}
	if s.Topology == "l3" {
		sides = []string{"a", "b", "x"}
	}
	for _, side := range sides {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeFor(side)}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("underlay: add bridge %s: %w", br.Name, err)
		}
		l, err := h.LinkByName(br.Name)
		if err != nil {
			return err
		}
		if s.Topology == "l3" {
			gw := netip.PrefixFrom(s.gateway(side), prefixFor(side).Bits())
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(gw)}); err != nil {
				return fmt.Errorf("underlay: address %s on %s: %w", gw, br.Name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	if s.Topology == "l3" {
		// The router forwards between the sides; this namespace only.
		if err := netns.Do(s.Underlay, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		}); err != nil {
			return fmt.Errorf("underlay: enable forwarding: %w", err)
		}
	}
	return nil
}

// attach plugs host h into the underlay on side: a veth whose end "eth0" is
// created directly inside h's namespace (never in the root namespace).
func (s *State) attach(h Host, side string) error {
	ul, err := netns.Handle(s.Underlay)
	if err != nil {
		return err
	}
	defer ul.Close()
	br, err := ul.LinkByName(bridgeFor(side))
	if err != nil {
		return fmt.Errorf("underlay: bridge %s: %w", bridgeFor(side), err)
	}
	fd, err := netns.Fd(h.NS)
	if err != nil {
		return err
	}
	defer fd.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Name, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(fd)),
	}
	if err := ul.LinkAdd(veth); err != nil {
		return fmt.Errorf("underlay: veth for %s: %w", h.Name, err)
	}
	l, err := ul.LinkByName(h.Name)
	if err != nil {
		return err
	}
	if err := ul.LinkSetUp(l); err != nil {
		return err
	}
	hh, err := netns.Handle(h.NS)
	if err != nil {
		return err
	}
	defer hh.Close()
	eth, err := hh.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr := netip.PrefixFrom(h.Addr, prefixFor(side).Bits())
	if err := hh.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("%s: address %s: %w", h.NS, addr, err)
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return err
	}
	if gw := s.gateway(side); gw.IsValid() {
		// `ip route add default via GW` inside the host's namespace.
		if err := hh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", h.NS, gw, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// start runs argv inside ns as a daemon of its own (new session), with its
// output appended to logFile, and returns its PID.
func start(ns, logFile string, argv ...string) (int, error) {
	return startEnv(ns, logFile, nil, argv...)
}

// startEnv is start with extra environment variables (KEY=VALUE).
func startEnv(ns, logFile string, env []string, argv ...string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := netns.Command(ns, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s in %s: %w", strings.Join(argv, " "), ns, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return pid, nil
}

// ours reports whether pid is a live process this lab started: a weft,
// flanneld or kube-apiserver process whose command line holds want (a
// node's subnet file, "serve" for the store, the certificate directory for
// the API server).
func ours(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) < 2 {
		return false
	}
	for _, a := range args {
		if a == want {
			base := filepath.Base(args[0])
			return strings.Contains(base, "weft") || strings.Contains(base, "flanneld") || base == "kube-apiserver"
		}
	}
	return false
}

// stop ends a process we started: SIGTERM, then SIGKILL after timeout.
func stop(pid int, want string, timeout time.Duration) error {
	if !ours(pid, want) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 40 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not exit", pid)
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// run runs argv inside ns and returns its combined output.
func run(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	cmd := netns.Command(ns, argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s (in %s): %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (s *State) etcdArgs() []string {
	return []string{"--etcd-endpoints", s.Endpoint}
}

// startStore runs the embedded store in the control namespace and writes
// the network config.
func (s *State) startStore(ctx context.Context, w io.Writer) error {
	s.Ctl = Host{Name: "ctl", NS: s.Name + "-ctl", Addr: storeIP, Side: "a"}
	if err := s.addNS(s.Ctl.NS); err != nil {
		return err
	}
	if err := s.attach(s.Ctl, "a"); err != nil {
		return err
	}
	s.Endpoint = fmt.Sprintf("http://%s:%d", storeIP, etcdPort)
	ctlDir := filepath.Join(dir(s.Name), "ctl")
	pid, err := start(s.Ctl.NS, filepath.Join(ctlDir, "store.log"), s.Weft, "store", "serve",
		"--data-dir", filepath.Join(ctlDir, "etcd"), "--listen-client-urls", s.Endpoint,
		"--listen-peer-url", "http://127.0.0.1:2380")
	if err != nil {
		return err
	}
	s.Ctl.PID = pid
	if err := s.save(); err != nil {
		return err
	}
	if s.Kube != nil {
		return s.startKube(ctx, w)
	}
	args := append([]string{s.Weft, "store", "init"}, s.etcdArgs()...)
	args = append(args, "--network", network, "--backend", s.Backend)
	if s.DirectRouting {
		args = append(args, "--direct-routing")
	}
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if !alive(pid) {
			log, _ := os.ReadFile(filepath.Join(ctlDir, "store.log"))
			return fmt.Errorf("the store exited: %s", strings.TrimSpace(string(log)))
		}
		if _, last = run(ctx, s.Ctl.NS, args...); last == nil {
			fmt.Fprintf(w, "store: embedded etcd at %s in %s, config written\n", s.Endpoint, s.Ctl.NS)
			return nil
		}
	}
	return fmt.Errorf("the store did not accept the config: %w", last)
}

// startExt creates the external host, outside the cluster network.
func (s *State) startExt() error {
	side := "a"
	addr := nth(sideA, 254)
	if s.Topology == "l3" {
		side, addr = "x", nth(outside, 10)
	}
	s.Ext = Host{Name: "ext", NS: s.Name + "-ext", Addr: addr, Side: side}
	if err := s.addNS(s.Ext.NS); err != nil {
		return err
	}
	return s.attach(s.Ext, side)
}

// addNode creates node i's namespace, plugs it in and starts its agent:
// weft's, or with agent "flannel" the reference flanneld.
func (s *State) addNode(i, total int, agent string) (*Node, error) {
	addr, side := s.nodeAddr(i, total)
	name := "n" + strconv.Itoa(i)
	nd := filepath.Join(dir(s.Name), name)
	n := &Node{
		Host:       Host{Name: name, NS: s.Name + "-" + name, Addr: addr, Side: side},
		Agent:      agent,
		Dir:        nd,
		SubnetFile: filepath.Join(nd, "subnet.env"),
		CNIConfDir: filepath.Join(nd, "cni", "net.d"),
		CNIBinDirs: cniBinDirs(s.Weft),
		LogFile:    filepath.Join(nd, "agent.log"),
	}
	s.Nodes = append(s.Nodes, n)
	if err := s.addNS(n.NS); err != nil {
		return n, err
	}
	if err := s.attach(n.Host, side); err != nil {
		return n, err
	}
	if err := writeConflist(n); err != nil {
		return n, err
	}
	if agent == "flannel" {
		// flanneld leaves IP forwarding to the node's set-up (kubelet or the
		// OS); weft's agent turns it on itself.
		if err := netns.Do(n.NS, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		}); err != nil {
			return n, fmt.Errorf("%s: enable forwarding: %w", n.NS, err)
		}
	}
	if s.Kube != nil {
		if err := s.registerNode(context.Background(), n); err != nil {
			return n, err
		}
	}
	return n, s.startAgent(n)
}

func (s *State) agentArgs(n *Node) []string {
	if s.Kube != nil {
		return s.kubeAgentArgs(n)
	}
	if n.Agent == "flannel" {
		// flanneld with the flags weft shares with it; it masquerades with
		// iptables (the iptables package must be installed).
		return []string{s.Flanneld, "--etcd-endpoints", s.Endpoint, "--iface", "eth0",
			"--subnet-file", n.SubnetFile, "--ip-masq", "--healthz-port", strconv.Itoa(healthz)}
	}
	args := append([]string{s.Weft, "agent"}, s.etcdArgs()...)
	return append(args, "--iface", "eth0", "--subnet-file", n.SubnetFile, "--ip-masq",
		"--healthz-port", strconv.Itoa(healthz), "--resync-interval", "10s", "--pprof")
}

func (s *State) startAgent(n *Node) error {
	if ours(n.PID, n.SubnetFile) {
		return fmt.Errorf("the agent of %s already runs (pid %d)", n.Name, n.PID)
	}
	var env []string
	if s.Kube != nil {
		env = []string{"NODE_NAME=" + n.Name}
	}
	pid, err := startEnv(n.NS, n.LogFile, env, s.agentArgs(n)...)
	if err != nil {
		return err
	}
	n.PID = pid
	return s.save()
}

func (s *State) stopAgent(n *Node) error {
	err := stop(n.PID, n.SubnetFile, 10*time.Second)
	n.PID = 0
	if serr := s.save(); err == nil {
		err = serr
	}
	return err
}

// cniBinDirs: weft-cni beside the weft binary, then the standard plugins.
func cniBinDirs(weft string) []string {
	return []string{filepath.Dir(weft), "/usr/lib/cni", "/opt/cni/bin"}
}

// down removes everything the lab created, in reverse order. Idempotent.
func (s *State) down(w io.Writer) error {
	var errs []error
	for _, n := range s.Nodes {
		if err := stop(n.PID, n.SubnetFile, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Kube != nil {
		if err := stop(s.Kube.PID, "--cert-dir="+s.Kube.Dir, 15*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := stop(s.Ctl.PID, "serve", 10*time.Second); err != nil {
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
	_ = os.Remove(filepath.Join(RunDir, s.Name+".lock")) // held by us until we return
	fmt.Fprintf(w, "lab %s: removed %d namespaces\n", s.Name, len(s.Namespaces))
	return nil
}
