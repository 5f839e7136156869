package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/agent"
	"github.com/weftnet/weft/internal/lease/etcdstore"
	"github.com/weftnet/weft/internal/subnetenv"
)

type etcdFlags struct {
	endpoints, prefix, cafile, certfile, keyfile, username, password string
}

func (e *etcdFlags) register(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&e.endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd endpoints")
	fs.StringVar(&e.prefix, "etcd-prefix", etcdstore.DefaultPrefix, "etcd prefix of the config and leases")
	fs.StringVar(&e.cafile, "etcd-cafile", "", "CA file to verify etcd's certificate")
	fs.StringVar(&e.certfile, "etcd-certfile", "", "client certificate for etcd")
	fs.StringVar(&e.keyfile, "etcd-keyfile", "", "client key for etcd")
	fs.StringVar(&e.username, "etcd-username", "", "etcd user name")
	fs.StringVar(&e.password, "etcd-password", "", "etcd password (never logged)")
}

func (e *etcdFlags) options() etcdstore.Options {
	return etcdstore.Options{
		Endpoints: strings.Split(e.endpoints, ","), Prefix: e.prefix,
		CAFile: e.cafile, CertFile: e.certfile, KeyFile: e.keyfile,
		Username: e.username, Password: e.password,
	}
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("weft agent", stderr)
	var ef etcdFlags
	ef.register(fs)
	iface := fs.String("iface", "", "underlay interface (default: the one with --public-ip, else of the default route)")
	publicIP := fs.String("public-ip", "", "this node's underlay address (default: the interface's)")
	subnetFile := fs.String("subnet-file", subnetenv.DefaultPath, "where to write subnet.env")
	ipMasq := fs.Bool("ip-masq", false, "masquerade traffic from pods to outside the cluster network")
	ttl := fs.Duration("subnet-lease-ttl", 24*time.Hour, "TTL of this node's lease")
	margin := fs.Duration("subnet-lease-renew-margin", time.Hour, "renew the lease this long before it expires")
	resync := fs.Duration("resync-interval", 30*time.Second, "full resync of the kernel with the leases at least this often")
	healthzIP := fs.String("healthz-ip", "0.0.0.0", "address of the health server")
	healthzPort := fs.Int("healthz-port", 0, "port of /healthz, /readyz and /metrics (0: off)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pprof := fs.Bool("pprof", false, "serve Go profiles at /debug/pprof/ on the health server")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(stderr, *logLevel)
	var pip netip.Addr
	if *publicIP != "" {
		var err error
		if pip, err = netip.ParseAddr(*publicIP); err != nil || !pip.Is4() {
			return fmt.Errorf("--public-ip %q is not an IPv4 address", *publicIP)
		}
	}
	log.Info("starting weft agent", "version", version, "etcd-endpoints", ef.endpoints, "etcd-prefix", ef.prefix,
		"etcd-username", ef.username, "etcd-password-set", ef.password != "", "iface", *iface, "ip-masq", *ipMasq)
	store, err := etcdstore.New(ef.options(), log)
	if err != nil {
		return err
	}
	defer store.Close()
	plat, err := agent.NewLinux()
	if err != nil {
		return err
	}
	a := agent.New(agent.Options{
		Store: store, Iface: *iface, PublicIP: pip, SubnetFile: *subnetFile, IPMasq: *ipMasq,
		LeaseTTL: *ttl, RenewMargin: *margin, Resync: *resync,
		HealthzAddr: agent.HealthzAddr(*healthzIP, *healthzPort), Pprof: *pprof, Log: log,
	}, plat)
	return a.Run(ctx)
}
