// Command weft-agent is weft's node agent: one per node, as the DaemonSet's
// container or a lab node's process. It takes flannel's flags (and, as
// flanneld does, FLANNELD_* environment variables) and links only what a
// node runs: netlink, nftables, the etcd client, the Kubernetes client and
// the backends. The embedded store, the lab and the config checker are in
// the weft binary, the CNI plugin is weft-cni.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/weftnet/weft/cmd/internal/cmdline"
	"github.com/weftnet/weft/cmd/internal/etcdflag"
	"github.com/weftnet/weft/internal/agent"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/etcdstore"
	"github.com/weftnet/weft/internal/lease/kubestore"
	"github.com/weftnet/weft/internal/lockfile"
	"github.com/weftnet/weft/internal/policy/nflog"
	"github.com/weftnet/weft/internal/policy/source"
	"github.com/weftnet/weft/internal/subnetenv"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // -h, --help: the usage was asked for
	default:
		fmt.Fprintf(os.Stderr, "weft-agent: %v\n", err)
		os.Exit(1)
	}
}

// kubeFlags are flannel's Kubernetes-mode flags, and weft's read-only mode.
type kubeFlags struct {
	enabled, readOnly                       bool
	apiURL, kubeconfig, netConfPath, prefix string
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.enabled, "kube-subnet-mgr", false, "Kubernetes mode: the subnet is the Node's podCIDR, peers are Node objects")
	fs.StringVar(&k.apiURL, "kube-api-url", "", "Kubernetes API server URL (default: in-cluster)")
	fs.StringVar(&k.kubeconfig, "kubeconfig-file", "", "kubeconfig to reach the API server (default: in-cluster)")
	fs.StringVar(&k.netConfPath, "net-config-path", kubestore.DefaultConfigPath, "Kubernetes mode: the net-conf.json file")
	fs.StringVar(&k.prefix, "kube-annotation-prefix", kubestore.DefaultPrefix, "Kubernetes mode: prefix of the Node annotations")
	fs.BoolVar(&k.readOnly, "kube-read-only", false, "Kubernetes mode: write nothing to the API server (needs only get/list/watch on nodes, and on pods, namespaces and networkpolicies for NetworkPolicy; vxlan MACs are derived from node addresses; no flannel nodes)")
}

// store returns the Kubernetes lease store, its client and this node's name.
func (k *kubeFlags) store(ctx context.Context, log *slog.Logger) (*kubestore.Store, *kubeclient.Client, string, error) {
	c, err := kubestore.Client(k.apiURL, k.kubeconfig, "weft/"+version)
	if err != nil {
		return nil, nil, "", err
	}
	node, err := kubestore.NodeName(ctx, c)
	if err != nil {
		return nil, nil, "", err
	}
	log.Info("this node", "node", node)
	s, err := kubestore.New(kubestore.Options{Client: c, NodeName: node, ConfigPath: k.netConfPath,
		Prefix: k.prefix, ReadOnly: k.readOnly, Log: log})
	return s, c, node, err
}

// policyFlags are the NetworkPolicy options.
type policyFlags struct {
	enabled  bool
	logGroup uint
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&p.enabled, "network-policy", true, "Kubernetes mode: enforce NetworkPolicy on this node's pods (table inet weft-policy); false for clusters that run another policy engine, and removes the table a previous run left")
	fs.UintVar(&p.logGroup, "network-policy-log-group", 0, "log packets NetworkPolicy denies to this NFLOG group, rate-limited (0: off; they are counted in /metrics either way)")
}

// check resolves --network-policy for the mode: on by default in
// Kubernetes mode, off in etcd mode, where asking for it is a mistake.
func (p *policyFlags) check(kube bool, set map[string]bool) error {
	if !kube {
		if set["network-policy"] && p.enabled {
			return errors.New("--network-policy needs the Kubernetes API (Pods, Namespaces, NetworkPolicies): add --kube-subnet-mgr, or drop it")
		}
		p.enabled = false
	}
	switch {
	case p.logGroup > 65535:
		return fmt.Errorf("--network-policy-log-group %d: use an NFLOG group from 1 to 65535, or 0 for none", p.logGroup)
	case p.logGroup != 0 && !p.enabled:
		return errors.New("--network-policy-log-group logs what NetworkPolicy denies, which is off: drop it, or enforce NetworkPolicy (--kube-subnet-mgr, without --network-policy=false)")
	}
	return nil
}

// bgpFlags are this node's own BGP settings. They override the Node's
// annotations (Kubernetes mode), which override net-conf.json's BGP
// object; BGP runs only when net-conf.json has that object.
type bgpFlags struct {
	localAS, routerID string
	peers             cmdline.Strings
}

func (b *bgpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.localAS, "bgp-local-as", "", "BGP: this node's `AS` number, over net-conf.json's BGP.LocalAS and the Node annotation "+bgp.AnnotationLocalAS+" (e.g. 64513; a per-node private AS, 64512-65534 or 4200000000-4294967294)")
	fs.StringVar(&b.routerID, "bgp-router-id", "", "BGP: this node's router ID, an IPv4 `ADDRESS`, over BGP.RouterID and the annotation "+bgp.AnnotationRouterID+" (default: the node's IPv4 underlay address)")
	fs.Var(&b.peers, "bgp-peer", "BGP: a router to peer with; `PEER` is ADDRESS,as=N[,port=N][,multihop=TTL][,hold-time=SECONDS][,password-file=PATH] (TCP MD5 password from PATH, less a trailing newline; never on the command line); repeat it for each router. Any --bgp-peer replaces BGP.Peers and the annotation "+bgp.AnnotationPeers)
}

// settings parses the flags given; password files are read with readFile.
func (b *bgpFlags) settings(readFile func(string) ([]byte, error)) (bgp.NodeSettings, error) {
	var n bgp.NodeSettings
	if b.localAS != "" {
		as, err := bgp.ParseAS(b.localAS)
		if err != nil {
			return n, fmt.Errorf("--bgp-local-as: %w", err)
		}
		n.LocalAS = as
	}
	if b.routerID != "" {
		id, err := bgp.ParseRouterID(b.routerID)
		if err != nil {
			return n, fmt.Errorf("--bgp-router-id: %w", err)
		}
		n.RouterID = id
	}
	seen := map[netip.Addr]bool{}
	for _, v := range b.peers.Values {
		p, err := bgp.ParsePeerFlag(v, readFile)
		if err != nil {
			return n, err
		}
		if seen[p.Address] {
			return n, fmt.Errorf("--bgp-peer %s is given twice; give each peer once", p.Address)
		}
		seen[p.Address] = true
		n.Peers, n.PeersSet = append(n.Peers, p), true
	}
	return n, nil
}

// readPasswordFile reads a --bgp-peer password file. One that group or
// others can read is read all the same (refusing it would stop BGP over a
// mode), with a note, once per file, to chmod it.
func (f *flags) readPasswordFile(path string) ([]byte, error) {
	b, mode, err := readFileMode(path)
	if err != nil {
		return nil, err
	}
	if mode&0o044 != 0 {
		note := fmt.Sprintf("--bgp-peer password file %s can be read by group or others (mode %04o), and with it the TCP MD5 password: chmod 600 %s", path, mode, path)
		if !slices.Contains(f.notes, note) {
			f.notes = append(f.notes, note)
		}
	}
	return b, nil
}

// readFileMode reads a file and returns its permission bits, those of the
// file opened (as `stat -c %a`), not of a name another process may swap.
func readFileMode(path string) ([]byte, os.FileMode, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(file) // errors name the file ("read PATH: ...")
	if err != nil {
		return nil, 0, err
	}
	return b, st.Mode().Perm(), nil
}

// flags are weft-agent's command line, parsed and checked.
type flags struct {
	etcd                etcdflag.Flags
	kube                kubeFlags
	policy              policyFlags
	bgp                 bgpFlags
	bgpNode             bgp.NodeSettings     // from bgp
	underlay            kernel.UnderlayQuery // --iface, --iface-regex, --iface-can-reach, --public-ip(v6)
	subnetFile          string
	wgSocketDir         string // --wireguard-socket-dir
	wgKeyFile           string // WIREGUARD_KEY_FILE, flannel's variable
	ipMasq, forward     bool
	masqNotFullyRandom  bool // --ip-masq-fully-random-disable
	setNetworkAvailable bool // --set-node-network-unavailable
	ttl, margin, resync time.Duration
	healthzIP           string
	healthzPort         int
	logLevel            string
	pprof               bool
	version             bool
	notes               []string // warnings said at start-up: flannel flags given that have no effect here, password files others can read
	unknownEnv          []string // FLANNELD_ variables that name no flag
}

// parseFlags parses args and checks every value, touching nothing: a
// mistake is refused before anything is locked, leased or written. Every
// flag of flanneld v0.28 is taken (docs/migrating-from-flannel.md):
// implemented, mapped to weft's own, or refused in one line saying what
// to use instead.
func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	var f flags
	fs := cmdline.NewFlagSet("weft-agent", stderr)
	f.etcd.Register(fs)
	ifaces := &cmdline.Strings{Check: func(v string) error {
		if v == "" {
			return errors.New("empty: name an interface or give one of its addresses")
		}
		return nil
	}}
	fs.Var(ifaces, "iface", "underlay interface, a name or one of its addresses; repeat it to try each in order (default: the one with --public-ip, else of the default route)")
	regexes := &cmdline.Strings{Check: func(v string) error {
		_, err := regexp.Compile(v)
		return err
	}}
	fs.Var(regexes, "iface-regex", "regular expression matched against the interfaces' addresses, then their names, to pick the underlay; repeatable, tried after --iface")
	canReach := fs.String("iface-can-reach", "", "pick the interface and address the node would use to reach this IP address (as `ip route get`), after --iface and --iface-regex")
	publicIP := fs.String("public-ip", "", "this node's IPv4 underlay address, on one of its interfaces (default: the interface's)")
	publicIPv6 := fs.String("public-ipv6", "", "this node's IPv6 underlay address, on one of its interfaces (default: the interface's)")
	fs.StringVar(&f.subnetFile, "subnet-file", subnetenv.DefaultPath, "where to write subnet.env; SUBNET-FILE.lock beside it makes this the node's only agent for that file")
	fs.StringVar(&f.wgSocketDir, "wireguard-socket-dir", wireguard.DefaultSocketDir, "wireguard backend on wireguard-go (a kernel without WireGuard): where its control sockets go, DIR/flannel-wg.sock, read by wg show; the private key file is WIREGUARD_KEY_FILE (default "+wireguard.DefaultKeyFile+"), as flannel's")
	fs.BoolVar(&f.ipMasq, "ip-masq", false, "masquerade traffic from pods to outside the cluster network")
	fs.BoolVar(&f.masqNotFullyRandom, "ip-masq-fully-random-disable", false, "masquerade without fully-random source ports")
	fs.BoolVar(&f.forward, "iptables-forward-rules", true, "accept forwarded traffic from and to the cluster network, in weft's nftables table and, where the node has iptables, in iptables' FORWARD chain (chain WEFT-FWD), as flannel does, so that a DROP policy there (Docker sets one) does not drop pod traffic; false removes both")
	fs.DurationVar(&f.ttl, "subnet-lease-ttl", 24*time.Hour, "TTL of this node's lease (at least 1m)")
	f.margin = time.Hour
	fs.Var((*minutes)(&f.margin), "subnet-lease-renew-margin", "renew the lease this long before it expires, shorter than the TTL: minutes from 1 to 1439, as flannel takes it, or a duration (90m)")
	fs.DurationVar(&f.resync, "resync-interval", 30*time.Second, "full resync of the kernel and the firewall with the leases at least this often")
	iptablesResync := fs.Int("iptables-resync", 0, "flannel's resync period in seconds: the same as --resync-interval (which wins when both are given)")
	blackhole := fs.Bool("ip-blackhole-route", false, "flannel's blackhole route for the node's subnet: not supported (refused when true)")
	fs.BoolVar(&f.setNetworkAvailable, "set-node-network-unavailable", true, "Kubernetes mode: set the Node's condition NetworkUnavailable=False once the network is up (false: leave the condition to another component)")
	fs.StringVar(&f.healthzIP, "healthz-ip", "0.0.0.0", "address of the health server")
	fs.IntVar(&f.healthzPort, "healthz-port", 0, "port of /healthz, /readyz and /metrics (0: off)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	verbosity := fs.Int("v", 0, "flannel's (klog's) verbosity: 0 is --log-level info, 1 or more is debug (--log-level wins when both are given)")
	vmodule := fs.String("vmodule", "", "klog's per-file verbosity, accepted for flannel's command lines; it has no effect (use --log-level)")
	backtrace := fs.String("log_backtrace_at", "", "klog's stack trace at a log line, accepted for flannel's command lines; it has no effect")
	fs.BoolVar(&f.version, "version", false, "print the version (to stderr, as flanneld) and exit")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the health server")
	f.kube.register(fs)
	f.policy.register(fs)
	f.bgp.register(fs)
	if err := cmdline.Parse(fs, args); err != nil {
		return nil, err
	}
	f.unknownEnv = cmdline.UnknownEnv(fs, cmdline.FlannelPrefix, os.Environ())
	f.wgKeyFile = os.Getenv("WIREGUARD_KEY_FILE")
	if f.wgKeyFile == "" {
		f.wgKeyFile = wireguard.DefaultKeyFile
	}
	if f.wgSocketDir == "" {
		return nil, errors.New("--wireguard-socket-dir is empty: name a directory (wg looks in " + wireguard.DefaultSocketDir + ")")
	}
	if f.version {
		return &f, nil
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if err := f.policy.check(f.kube.enabled, set); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: weft-agent takes only flags (run weft-agent -h)", fs.Args())
	}
	f.underlay.Ifaces, f.underlay.Regexes = ifaces.Values, regexes.Values
	for _, a := range []struct {
		flag, value, family string
		to                  *netip.Addr
	}{
		{"--public-ip", *publicIP, "IPv4", &f.underlay.PublicIP},
		{"--public-ipv6", *publicIPv6, "IPv6", &f.underlay.PublicIPv6},
	} {
		if a.value == "" {
			continue
		}
		ip, err := netip.ParseAddr(a.value)
		if err != nil || ip.Is4() != (a.family == "IPv4") || ip.Is4In6() || ip.Zone() != "" {
			return nil, fmt.Errorf("%s %q is not an %s address", a.flag, a.value, a.family)
		}
		*a.to = ip
	}
	if *canReach != "" {
		ip, err := netip.ParseAddr(*canReach)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("--iface-can-reach %q is not an IP address", *canReach)
		}
		f.underlay.CanReach = ip.Unmap()
	}
	if set["iptables-resync"] {
		if *iptablesResync < 1 {
			return nil, fmt.Errorf("--iptables-resync %d: use a number of seconds of at least 1 (it sets --resync-interval)", *iptablesResync)
		}
		if !set["resync-interval"] {
			f.resync = time.Duration(*iptablesResync) * time.Second
		}
	}
	var err error
	if f.bgpNode, err = f.bgp.settings(f.readPasswordFile); err != nil {
		return nil, err
	}
	if *blackhole {
		return nil, errors.New("--ip-blackhole-route is not supported: weft keeps no blackhole route for the node's subnet; add it yourself (ip route add blackhole SUBNET proto static, SUBNET from FLANNEL_SUBNET in --subnet-file: weft leaves routes it did not write alone), or drop the flag")
	}
	if set["v"] && !set["log-level"] {
		if *verbosity < 0 {
			return nil, fmt.Errorf("-v %d: use a verbosity of 0 or more (or --log-level)", *verbosity)
		}
		if *verbosity > 0 {
			f.logLevel = "debug"
		}
	}
	for _, k := range []struct{ name, value string }{{"vmodule", *vmodule}, {"log_backtrace_at", *backtrace}} {
		if k.value != "" {
			f.notes = append(f.notes, fmt.Sprintf("-%s has no effect on weft-agent (flannel's klog flag, accepted for its command lines); use --log-level", k.name))
		}
	}
	return &f, f.check()
}

// check refuses values no agent can run with, naming the flag and what to
// use instead. It is pure: the file system is checked by checkSubnetDir.
func (f *flags) check() error {
	var l slog.Level
	switch {
	case l.UnmarshalText([]byte(f.logLevel)) != nil:
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	case f.underlay.PublicIP.IsValid() && !routable(f.underlay.PublicIP):
		return fmt.Errorf("--public-ip %s is not a unicast address peers can reach; use the node's underlay address", f.underlay.PublicIP)
	case f.underlay.PublicIPv6.IsValid() && !routable(f.underlay.PublicIPv6):
		return fmt.Errorf("--public-ipv6 %s is not a unicast address peers can reach; use the node's underlay address", f.underlay.PublicIPv6)
	case f.healthzPort < 0 || f.healthzPort > 65535:
		return fmt.Errorf("--healthz-port %d: use a port from 1 to 65535, or 0 for no health server", f.healthzPort)
	case f.subnetFile == "":
		return errors.New("--subnet-file is empty: name the file the CNI plugin reads (flannel's is " + subnetenv.DefaultPath + ")")
	case f.ttl < time.Minute:
		return fmt.Errorf("--subnet-lease-ttl %s: use at least 1m (the default is 24h)", f.ttl)
	case f.margin <= 0 || f.margin >= f.ttl:
		return fmt.Errorf("--subnet-lease-renew-margin %s: use a positive duration shorter than --subnet-lease-ttl %s", f.margin, f.ttl)
	case f.resync < time.Second:
		return fmt.Errorf("--resync-interval %s: use at least 1s (the default is 30s)", f.resync)
	case f.kube.readOnly && !f.kube.enabled:
		return errors.New("--kube-read-only is a Kubernetes mode option: add --kube-subnet-mgr, or drop it")
	}
	if _, err := netip.ParseAddr(f.healthzIP); err != nil {
		return fmt.Errorf("--healthz-ip %q is not an IP address (0.0.0.0: every IPv4 address of the node)", f.healthzIP)
	}
	return nil
}

// routable reports whether ip can be a node's address for its peers: not
// unspecified, loopback, multicast, link-local or the broadcast address
// (private and documentation addresses are fine).
func routable(ip netip.Addr) bool {
	return ip.IsGlobalUnicast()
}

// minutes is a duration flag that also takes a bare number as minutes,
// as flannel's --subnet-lease-renew-margin does, in flannel's range (1 to
// 1439); a Go duration is weft's extension, checked against the TTL.
type minutes time.Duration

func (m *minutes) String() string { return time.Duration(*m).String() }
func (m *minutes) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 1439 {
			return fmt.Errorf("%d minutes: use 1 to 1439, as flannel (less than a day)", n)
		}
		*m = minutes(time.Duration(n) * time.Minute)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (90m, 1h) or a number of minutes")
	}
	*m = minutes(d)
	return nil
}

// checkSubnetDir checks that subnet.env can be written where asked: its
// directory is made (0755, as flannel does) and a file is created in it
// and removed, as writing subnet.env will.
func checkSubnetDir(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--subnet-file %s is a directory; name a file", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--subnet-file %s: make its directory: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".weft-agent-check-*")
	if err != nil {
		return fmt.Errorf("--subnet-file %s: its directory is not writable: %w", path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// lockNode makes this the node's only agent for subnetFile: a second one
// would lease a second subnet for the node and fight over its devices.
// The lock is released when the process ends, however it ends.
func lockNode(subnetFile string) (*lockfile.File, error) {
	l, err := lockfile.Acquire(subnetFile + ".lock")
	var held *lockfile.HeldError
	if errors.As(err, &held) {
		pid := "PID unknown"
		if held.PID > 0 {
			pid = "PID " + strconv.Itoa(held.PID)
		}
		return nil, fmt.Errorf("another weft agent (%s) runs on this node with subnet file %s; stop it first", pid, subnetFile)
	}
	return l, err
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stderr, version) // to stderr, as flanneld prints it
		return nil
	}
	if err := checkSubnetDir(f.subnetFile); err != nil {
		return err
	}
	lock, err := lockNode(f.subnetFile)
	if err != nil {
		return err
	}
	defer lock.Release()
	log := cmdline.Logger(stderr, f.logLevel)
	for _, name := range f.unknownEnv {
		log.Warn("environment variable "+name+" names no flag and is ignored (flanneld ignores it too); check its spelling against weft-agent -h", "variable", name)
	}
	for _, note := range f.notes {
		log.Warn(note)
	}
	// The agent's live heap is a few MiB; at Go's default GOGC=100 the heap
	// grows to twice that before each collection. At 50 it stays smaller,
	// for a little more collection work. GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	uq := f.underlay
	var nat, nat6 bool
	var store interface {
		lease.Store
		Close() error
	}
	var pol *agent.PolicyOptions
	if kf := f.kube; kf.enabled {
		log.Info("starting weft agent in Kubernetes mode", "version", version, "net-config-path", kf.netConfPath,
			"read-only", kf.readOnly, "iface", uq.Ifaces, "iface-regex", uq.Regexes, "ip-masq", f.ipMasq, "network-policy", f.policy.enabled)
		ks, client, node, err := kf.store(ctx, log)
		if err != nil {
			return err
		}
		defer ks.Close()
		if pol, err = policyOptions(f.policy, client, node, log); err != nil {
			return err
		}
		// The node-public-ip(v6) annotations stand for --public-ip(v6)
		// when it is not given; public-ip(v6)-overwrite says the address
		// is a NAT address, on none of the node's interfaces.
		for _, a := range []struct {
			ip        *netip.Addr
			nat       *bool
			annotated func(context.Context) (netip.Addr, error)
			overwrite func(context.Context) (bool, error)
		}{
			{&uq.PublicIP, &nat, ks.NodePublicIP, ks.PublicIPOverwrite},
			{&uq.PublicIPv6, &nat6, ks.NodePublicIPv6, ks.PublicIPv6Overwrite},
		} {
			if !a.ip.IsValid() {
				if *a.ip, err = a.annotated(ctx); err != nil {
					return err
				}
			}
			if *a.nat, err = a.overwrite(ctx); err != nil {
				return err
			}
		}
		store = ks
		if !f.setNetworkAvailable {
			store = noReadyMark{ks}
		}
	} else {
		ef := f.etcd
		log.Info("starting weft agent", "version", version, "etcd-endpoints", ef.Endpoints, "etcd-prefix", ef.Prefix,
			"etcd-username", ef.Username, "etcd-password-set", ef.Password != "", "iface", uq.Ifaces, "iface-regex", uq.Regexes, "ip-masq", f.ipMasq)
		es, err := etcdstore.New(ef.Options(), log)
		if err != nil {
			return err
		}
		defer es.Close()
		store = es
	}
	plat, err := agent.NewLinux(log)
	if err != nil {
		return err
	}
	defer plat.Close()
	a := agent.New(agent.Options{
		Store: store, Underlay: uq, PublicIPNAT: nat, PublicIPv6NAT: nat6, SubnetFile: f.subnetFile,
		IPMasq: f.ipMasq, IPMasqFullyRandomDisable: f.masqNotFullyRandom,
		LeaseTTL: f.ttl, RenewMargin: f.margin, Resync: f.resync,
		HealthzAddr: agent.HealthzAddr(f.healthzIP, f.healthzPort), Pprof: f.pprof, Log: log,
		ReadOnly: f.kube.enabled && f.kube.readOnly, ForwardRules: f.forward, Policy: pol,
		BGPNode: f.bgpNode, WireGuardKeyFile: f.wgKeyFile, WireGuardSocketDir: f.wgSocketDir,
	}, plat)
	return a.Run(ctx)
}

// noReadyMark is the Kubernetes store with --set-node-network-unavailable
// false: it leaves the Node's NetworkUnavailable condition to another
// component (the agent marks the node ready through MarkReady when its
// store has it). Every other method is the store's.
type noReadyMark struct{ *kubestore.Store }

// MarkReady does nothing.
func (noReadyMark) MarkReady(context.Context) error { return nil }

// policyOptions prepares NetworkPolicy enforcement (Kubernetes mode): the
// informers when it is on, and the table in either case (off, the agent
// removes what a previous run left).
func policyOptions(pf policyFlags, c *kubeclient.Client, node string, log *slog.Logger) (*agent.PolicyOptions, error) {
	enf, err := agent.NewPolicyEnforcer(log, uint16(pf.logGroup))
	if err != nil {
		return nil, fmt.Errorf("NetworkPolicy: %w", err)
	}
	o := &agent.PolicyOptions{Enabled: pf.enabled, Node: node, Enforcer: enf}
	if pf.enabled && pf.logGroup != 0 {
		group := uint16(pf.logGroup)
		o.Denials = func(ctx context.Context, fn func(nflog.Packet)) error {
			return nflog.Listen(ctx, group, "", fn)
		}
	}
	if pf.enabled {
		src, err := source.New(source.Options{Client: c, Log: log})
		if err != nil {
			return nil, err
		}
		o.Source = src
	}
	return o, nil
}
