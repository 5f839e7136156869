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
	"runtime/debug"
	"syscall"
	"time"

	"github.com/weftnet/weft/cmd/internal/cmdline"
	"github.com/weftnet/weft/cmd/internal/etcdflag"
	"github.com/weftnet/weft/internal/agent"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/etcdstore"
	"github.com/weftnet/weft/internal/lease/kubestore"
	"github.com/weftnet/weft/internal/subnetenv"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
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
	fs.BoolVar(&k.readOnly, "kube-read-only", false, "Kubernetes mode: write nothing to the API server (needs only get/list/watch on nodes; vxlan MACs are derived from node addresses; no flannel nodes)")
}

func (k *kubeFlags) store(ctx context.Context, log *slog.Logger) (*kubestore.Store, error) {
	c, err := kubestore.Client(k.apiURL, k.kubeconfig, "weft/"+version)
	if err != nil {
		return nil, err
	}
	node, err := kubestore.NodeName(ctx, c)
	if err != nil {
		return nil, err
	}
	log.Info("this node", "node", node)
	return kubestore.New(kubestore.Options{Client: c, NodeName: node, ConfigPath: k.netConfPath,
		Prefix: k.prefix, ReadOnly: k.readOnly, Log: log})
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := cmdline.NewFlagSet("weft-agent", stderr)
	var ef etcdflag.Flags
	ef.Register(fs)
	iface := fs.String("iface", "", "underlay interface (default: the one with --public-ip, else of the default route)")
	publicIP := fs.String("public-ip", "", "this node's underlay address (default: the interface's)")
	subnetFile := fs.String("subnet-file", subnetenv.DefaultPath, "where to write subnet.env")
	ipMasq := fs.Bool("ip-masq", false, "masquerade traffic from pods to outside the cluster network")
	iptablesForward := fs.Bool("iptables-forward-rules", true, "accept forwarded traffic from and to the cluster network, in weft's nftables table and, where the node has iptables, in iptables' FORWARD chain (chain WEFT-FWD), as flannel does, so that a DROP policy there (Docker sets one) does not drop pod traffic; false removes both")
	ttl := fs.Duration("subnet-lease-ttl", 24*time.Hour, "TTL of this node's lease")
	margin := fs.Duration("subnet-lease-renew-margin", time.Hour, "renew the lease this long before it expires")
	resync := fs.Duration("resync-interval", 30*time.Second, "full resync of the kernel with the leases at least this often")
	healthzIP := fs.String("healthz-ip", "0.0.0.0", "address of the health server")
	healthzPort := fs.Int("healthz-port", 0, "port of /healthz, /readyz and /metrics (0: off)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pprof := fs.Bool("pprof", false, "serve Go profiles at /debug/pprof/ on the health server")
	var kf kubeFlags
	kf.register(fs)
	if err := cmdline.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: weft-agent takes only flags (run weft-agent -h)", fs.Args())
	}
	log := cmdline.Logger(stderr, *logLevel)
	// The agent's live heap is a few MiB; at Go's default GOGC=100 the heap
	// grows to twice that before each collection. At 50 it stays smaller,
	// for a little more collection work. GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	var pip netip.Addr
	if *publicIP != "" {
		var err error
		if pip, err = netip.ParseAddr(*publicIP); err != nil || !pip.Is4() {
			return fmt.Errorf("--public-ip %q is not an IPv4 address", *publicIP)
		}
	}
	var store interface {
		lease.Store
		Close() error
	}
	if kf.enabled {
		log.Info("starting weft agent in Kubernetes mode", "version", version, "net-config-path", kf.netConfPath,
			"read-only", kf.readOnly, "iface", *iface, "ip-masq", *ipMasq)
		ks, err := kf.store(ctx, log)
		if err != nil {
			return err
		}
		defer ks.Close()
		if !pip.IsValid() {
			if pip, err = ks.NodePublicIP(ctx); err != nil {
				return err
			}
		}
		store = ks
	} else {
		log.Info("starting weft agent", "version", version, "etcd-endpoints", ef.Endpoints, "etcd-prefix", ef.Prefix,
			"etcd-username", ef.Username, "etcd-password-set", ef.Password != "", "iface", *iface, "ip-masq", *ipMasq)
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
		Store: store, Iface: *iface, PublicIP: pip, SubnetFile: *subnetFile, IPMasq: *ipMasq,
		LeaseTTL: *ttl, RenewMargin: *margin, Resync: *resync,
		HealthzAddr: agent.HealthzAddr(*healthzIP, *healthzPort), Pprof: *pprof, Log: log,
		ReadOnly: kf.enabled && kf.readOnly, ForwardRules: *iptablesForward,
	}, plat)
	return a.Run(ctx)
}
