package leasebench

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
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/etcdstore"
	"github.com/weftnet/weft/internal/netns"
)

// maxTxnOps is etcd's default limit of operations in one transaction.
const maxTxnOps = 128

// leaseTTL is the etcd lease the synthetic keys hang on: flanneld reads
// each key's TTL (a key without one is an error to it), and this outlives
// any run.
const leaseTTL = 24 * 60 * 60

// node is one lab node and its agent.
type node struct {
	topology.Host
	kind       string // process.Weft or process.Flannel
	subnetFile string // also how process.Ours recognises the agent
	logFile    string
	restarts   int         // flanneld restarts after a lost subnet race
	routes     *routeWatch // its namespace's route events
}

// label is the node's column title.
func (n *node) label() string {
	if n.kind == process.Flannel {
		return "flanneld"
	}
	return "weft"
}

// cluster is the bench's own lab: an l2 underlay, the store in ctl, and
// three nodes. Everything it creates is recorded before it is created, so
// that stop removes all of it after any failure.
type cluster struct {
	name       string
	dir        string
	underlay   string
	namespaces []string // every namespace created, in order
	ctl        topology.Host
	endpoint   string
	nodes      []*node
	cli        *clientv3.Client
	leaseID    clientv3.LeaseID
	unlock     func()
}

// start builds the lab for o: the lab name's lock, the underlay, the store
// with a vxlan network of /29 subnets, weft-agent on n1 and n2 and flanneld
// on n3, each ready with its two peers, and a route watch per node.
func start(ctx context.Context, o Options, w io.Writer) (_ *cluster, err error) {
	c := &cluster{name: o.Name, dir: filepath.Join(lab.RunDir, o.Name)}
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := c.stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", serr))
			}
		}
	}()
	if _, err := os.Stat(filepath.Join(c.dir, "state.json")); err == nil {
		return nil, fmt.Errorf("lab %s is up; the bench needs its name free (--name, or 'weft lab down --name %s')", c.name, c.name)
	}
	for _, suffix := range []string{"ul", "ctl", "n1", "n2", "n3"} {
		if ns := c.name + "-" + suffix; netns.Exists(ns) {
			return nil, fmt.Errorf("namespace %s already exists: another lab or bench uses the name %s (--name)", ns, c.name)
		}
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	c.underlay = c.name + "-ul"
	if err := c.addNS(c.underlay); err != nil {
		return nil, err
	}
	if err := topology.BuildUnderlay(c.underlay, topology.L2, topology.IPv4); err != nil {
		return nil, err
	}
	if err := c.startStore(ctx, o.Weft); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "store: embedded etcd at %s in %s\n", c.endpoint, c.ctl.NS)
	for i := 1; i <= 3; i++ {
		kind, bin := process.Weft, o.Agent
		if i == 3 {
			kind, bin = process.Flannel, o.Flanneld
		}
		if err := c.addNode(i, kind, bin); err != nil {
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if err := c.waitReady(ctx, n, o.Flanneld, 90*time.Second); err != nil {
			return nil, err
		}
	}
	g, err := c.cli.Grant(ctx, leaseTTL)
	if err != nil {
		return nil, fmt.Errorf("grant the synthetic leases' etcd lease: %w", err)
	}
	c.leaseID = g.ID
	for _, n := range c.nodes {
		if n.routes, err = watchRoutes(n.NS); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// lock takes the lab name's lock, the one `weft lab` commands take, so
// that no lab command works on this name meanwhile.
func (c *cluster) lock() error {
	if err := os.MkdirAll(lab.RunDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(lab.RunDir, c.name+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lab name %s is in use by another weft lab command (%s): %w", c.name, path, err)
	}
	c.unlock = func() {
		_ = os.Remove(path)
		f.Close()
	}
	return nil
}

// addNS records and creates a namespace, same as `ip netns add NAME`.
func (c *cluster) addNS(name string) error {
	c.namespaces = append(c.namespaces, name)
	return netns.Create(name)
}

// addHost creates h's namespace and plugs it into the underlay.
func (c *cluster) addHost(h topology.Host) error {
	if err := c.addNS(h.NS); err != nil {
		return err
	}
	return topology.Attach(c.underlay, topology.L2, h)
}

// startStore runs the embedded etcd in ctl, connects to it from inside
// ctl's namespace, and writes the network config once it accepts it.
func (c *cluster) startStore(ctx context.Context, weft string) error {
	c.ctl = topology.Host{Name: "ctl", NS: c.name + "-ctl", Addr: topology.StoreIP, Side: "a"}
	if err := c.addHost(c.ctl); err != nil {
		return err
	}
	c.endpoint = "http://" + netip.AddrPortFrom(topology.StoreIP, 2379).String()
	logPath := filepath.Join(c.dir, "ctl", "store.log")
	pid, err := process.Start(c.ctl.NS, logPath, nil, weft, "store", "serve",
		"--data-dir", filepath.Join(c.dir, "ctl", "etcd"), "--listen-client-urls", c.endpoint,
		"--listen-peer-url", "http://127.0.0.1:2380")
	if err != nil {
		return err
	}
	c.ctl.PID = pid
	// The client lives here, the store in ctl: its sockets are made there.
	dial := netns.Dialer(c.ctl.NS)
	c.cli, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{c.endpoint},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", c.endpoint, err)
	}
	doc, err := table.Document(network, "vxlan", subnetLen, nil)
	if err != nil {
		return err
	}
	key := etcdstore.DefaultPrefix + "/config"
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if !process.Alive(pid) {
			return fmt.Errorf("the store exited: %s", process.TailFile(logPath, 20))
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = c.cli.Put(pctx, key, string(doc))
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("write the network config to %s: %w", c.endpoint, last)
}

// addNode creates node i and starts its agent (bin) of kind.
func (c *cluster) addNode(i int, kind, bin string) error {
	name := "n" + strconv.Itoa(i)
	addr, side := topology.NodeAddr(topology.L2, i, 3)
	dir := filepath.Join(c.dir, name)
	n := &node{
		Host:       topology.Host{Name: name, NS: c.name + "-" + name, Addr: addr, Side: side},
		kind:       kind,
		subnetFile: filepath.Join(dir, "subnet.env"),
		logFile:    filepath.Join(dir, "agent.log"),
	}
	c.nodes = append(c.nodes, n)
	if err := c.addHost(n.Host); err != nil {
		return err
	}
	if kind == process.Flannel {
		// flanneld leaves IP forwarding to the node's set-up; weft's agent
		// turns it on itself.
		if err := topology.EnableForwarding(n.NS, false); err != nil {
			return err
		}
	}
	return c.startAgent(n, bin)
}

func (c *cluster) startAgent(n *node, bin string) error {
	a := process.AgentSpec{Kind: n.kind, Binary: bin, SubnetFile: n.subnetFile, Etcd: c.endpoint}
	pid, err := process.Start(n.NS, n.logFile, nil, a.Args()...)
	if err != nil {
		return err
	}
	n.PID = pid
	return nil
}

// waitReady waits until n's agent holds its lease and (weft) has synced
// with both peers. flanneld exits when it loses a race for a subnet; it is
// started again, as its supervisor would, up to 5 times.
func (c *cluster) waitReady(ctx context.Context, n *node, flanneld string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if n.kind == process.Weft {
			st, err := process.Readyz(n.NS)
			if err == nil && st["ready"] == true && st["peers"] == float64(len(c.nodes)-1) {
				return nil
			}
		} else if _, err := os.Stat(n.subnetFile); err == nil && process.Alive(n.PID) {
			return nil
		}
		if !process.Alive(n.PID) {
			log, _ := os.ReadFile(n.logFile)
			if n.kind != process.Flannel || !strings.Contains(string(log), "subnet already exists") || n.restarts >= 5 {
				return fmt.Errorf("the agent of %s exited; its log:\n%s", n.Name, process.TailFile(n.logFile, 15))
			}
			n.restarts++
			if err := c.startAgent(n, flanneld); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent of %s is not ready after %s; its log:\n%s", n.Name, timeout, process.TailFile(n.logFile, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeSubnets reads the real nodes' leases from the store.
func (c *cluster) nodeSubnets(ctx context.Context) ([]netip.Prefix, error) {
	prefix := etcdstore.DefaultPrefix + "/subnets/"
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list leases at %s: %w", c.endpoint, err)
	}
	var out []netip.Prefix
	for _, kv := range resp.Kvs {
		v4, _, err := lease.ParseKey(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil {
			return nil, err
		}
		out = append(out, v4)
	}
	return out, nil
}

// write puts ls into the store (or deletes them) in transactions of at
// most maxTxnOps keys, four at a time: as fast as the store takes them.
func (c *cluster) write(ctx context.Context, ls []synth, del bool) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	prefix := etcdstore.DefaultPrefix + "/subnets/"
	for first := 0; first < len(ls); first += maxTxnOps {
		batch := ls[first:min(first+maxTxnOps, len(ls))]
		g.Go(func() error {
			ops := make([]clientv3.Op, 0, len(batch))
			for _, l := range batch {
				if del {
					ops = append(ops, clientv3.OpDelete(prefix+l.Key()))
				} else {
					ops = append(ops, clientv3.OpPut(prefix+l.Key(), string(l.Value), clientv3.WithLease(c.leaseID)))
				}
			}
			if _, err := c.cli.Txn(gctx).Then(ops...).Commit(); err != nil {
				verb := "put"
				if del {
					verb = "delete"
				}
				return fmt.Errorf("%s %d leases from %s at %s: %w", verb, len(batch), batch[0].Key(), c.endpoint, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// alive fails, with its log, if a node's agent has exited.
func (c *cluster) alive() error {
	for _, n := range c.nodes {
		if !process.Alive(n.PID) {
			return fmt.Errorf("the agent of %s (%s) exited; its log:\n%s", n.Name, n.label(), process.TailFile(n.logFile, 15))
		}
	}
	return nil
}

// stop removes everything start created, in reverse order. Idempotent.
func (c *cluster) stop() error {
	var errs []error
	for _, n := range c.nodes {
		if n.routes != nil {
			n.routes.Close()
			n.routes = nil
		}
	}
	if c.cli != nil {
		_ = c.cli.Close()
		c.cli = nil
	}
	for _, n := range c.nodes {
		if err := process.Stop(n.PID, n.subnetFile, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := process.Stop(c.ctl.PID, "serve", 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	for i := len(c.namespaces) - 1; i >= 0; i-- {
		if err := netns.Delete(c.namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	c.namespaces = nil
	if err := errors.Join(errs...); err != nil {
		return err // the lock stays held until the process exits; the files stay for inspection
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return err
	}
	if c.unlock != nil {
		c.unlock()
		c.unlock = nil
	}
	return nil
}
