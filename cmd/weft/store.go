package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/cmd/internal/etcdflag"
	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/etcdserver"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/etcdstore"
)

const storeUsage = `Usage:
  weft store serve [flags]           run the embedded etcd store
  weft store init [flags]            write the network config to the store
  weft store leases [flags]          list leases
  weft store evict SUBNET [flags]    delete a node's lease

Run 'weft store COMMAND -h' for a command's flags.
`

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("weft store: say serve, init, leases or evict")
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, storeUsage)
		return nil
	case "serve":
		return storeServe(ctx, args[1:], stderr)
	case "init":
		return storeInit(ctx, args[1:], stdout, stderr)
	case "leases":
		return storeLeases(ctx, args[1:], stdout, stderr)
	case "evict":
		return storeEvict(ctx, args[1:], stdout, stderr)
	default:
		return fmt.Errorf("weft store: unknown command %q (serve, init, leases, evict)", args[0])
	}
}

func storeServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("weft store serve", stderr)
	dataDir := fs.String("data-dir", "/var/lib/weft/store", "etcd data directory")
	listen := fs.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to serve")
	peer := fs.String("listen-peer-url", "http://127.0.0.1:2380", "peer URL (single member)")
	logLevel := fs.String("log-level", "info", "weft's log level")
	etcdLog := fs.String("etcd-log-level", "error", "etcd's own log level")
	cert := fs.String("cert-file", "", "TLS certificate for clients (client URLs must be https)")
	key := fs.String("key-file", "", "TLS key for clients")
	clientCA := fs.String("client-ca-file", "", "require client certificates signed by this CA")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(stderr, *logLevel)
	srv, err := etcdserver.Start(ctx, etcdserver.Options{
		DataDir: *dataDir, ClientURLs: strings.Split(*listen, ","), PeerURL: *peer, LogLevel: *etcdLog,
		CertFile: *cert, KeyFile: *key, ClientCAFile: *clientCA,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("embedded etcd serving", "client-urls", *listen, "data-dir", *dataDir)
	select {
	case <-ctx.Done():
		log.Info("stopping the store")
		return nil
	case err := <-srv.Err():
		return fmt.Errorf("store: %w", err)
	}
}

func storeInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("weft store init", stderr)
	network := fs.String("network", "", "cluster network, e.g. 10.244.0.0/16")
	backendType := fs.String("backend", table.Recommended, "backend: "+strings.Join(table.Types(), ", "))
	direct := fs.Bool("direct-routing", false, "vxlan: plain routes to on-link peers")
	subnetLen := fs.Int("subnet-len", 0, "prefix length of each node's subnet (default per net-conf.json rules)")
	file := fs.String("config", "", "a net-conf.json file (instead of --network and --backend)")
	return withStore(ctx, fs, args, stderr, func(ctx context.Context, s *etcdstore.Store) error {
		var doc []byte
		switch {
		case *file != "":
			b, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			if _, _, _, err := table.Parse(b); err != nil {
				return err
			}
			doc = b
		case *network != "":
			var extra map[string]any
			if *direct {
				extra = map[string]any{"DirectRouting": true}
			}
			d, err := table.Document(*network, *backendType, *subnetLen, extra)
			if err != nil {
				return err
			}
			doc = d
		default:
			return errors.New("weft store init: give --network (and --backend) or --config FILE")
		}
		if err := s.PutConfig(ctx, doc); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %s\n", s.ConfigKey(), doc)
		return nil
	})
}

// withStore parses the etcd flags of a store subcommand (and any others fs
// has), connects, and runs fn with a 15 s deadline.
func withStore(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer, fn func(context.Context, *etcdstore.Store) error) error {
	var ef etcdflag.Flags
	ef.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := etcdstore.New(ef.Options(), newLogger(stderr, "warn"))
	if err != nil {
		return err
	}
	defer s.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return fn(cctx, s)
}

func storeLeases(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return withStore(ctx, newFlags("weft store leases", stderr), args, stderr, func(ctx context.Context, s *etcdstore.Store) error {
		ls, err := s.List(ctx)
		if err != nil {
			return err
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].Subnet.Addr().Less(ls[j].Subnet.Addr()) })
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBNET\tPUBLIC-IP\tBACKEND\tKIND\tDATA")
		for _, l := range ls {
			kind := "lease"
			if l.Reservation() {
				kind = "reservation"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendType, kind, l.Attrs.BackendData)
		}
		return tw.Flush()
	})
}

func storeEvict(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("weft store evict", stderr)
	return withStore(ctx, fs, args, stderr, func(ctx context.Context, s *etcdstore.Store) error {
		if fs.NArg() != 1 {
			return errors.New("weft store evict: give one subnet, e.g. 10.244.3.0/24")
		}
		p, err := netip.ParsePrefix(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("weft store evict: %q is not a subnet", fs.Arg(0))
		}
		ok, err := s.Delete(ctx, lease.Key(p.Masked(), netip.Prefix{}))
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(stdout, "no lease for %s\n", p)
			return nil
		}
		fmt.Fprintf(stdout, "evicted %s\n", p)
		return nil
	})
}

func runConfig(args []string, stdout, stderr io.Writer) error {
	if slices.ContainsFunc(args, helpFlag) {
		fmt.Fprint(stdout, "Usage:\n  weft config check FILE    validate a net-conf.json and print it resolved (warnings to stderr)\n")
		return nil
	}
	if len(args) != 2 || args[0] != "check" {
		return errors.New("usage: weft config check FILE")
	}
	doc, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	c, _, opts, err := table.Parse(doc)
	if err != nil {
		return err
	}
	b, err := bgp.Parse(c.BGP)
	if err != nil {
		return err
	}
	out, err := c.MarshalResolved(opts.Resolved())
	if err != nil {
		return err
	}
	if out, err = withBGP(out, b); err != nil {
		return err
	}
	for _, k := range c.UnknownKeys {
		fmt.Fprintf(stderr, "warning: unknown key %q is ignored\n", k)
	}
	if c.BackendDefaulted {
		fmt.Fprintln(stderr, "warning: no Backend given: udp is the flannel-compatible default; vxlan is recommended")
	}
	for _, w := range b.Warnings() {
		fmt.Fprintln(stderr, "warning: "+w)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}

// withBGP adds the resolved BGP object (passwords shown as "(set)") to the
// resolved document, when there is one.
func withBGP(doc []byte, b bgp.Config) ([]byte, error) {
	r := b.Resolved()
	if r == nil {
		return doc, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	var err error
	if m["BGP"], err = json.Marshal(r); err != nil {
		return nil, err
	}
	return json.MarshalIndent(m, "", "  ")
}
