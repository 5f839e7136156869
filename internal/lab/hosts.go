package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
)

// etcdPort is where the store listens, on topology.StoreIP.
const etcdPort = 2379

// buildUnderlay creates the switch (l2) or router (l3) namespace.
func (s *State) buildUnderlay() error {
	s.Underlay = s.Name + "-ul"
	if err := s.addNS(s.Underlay); err != nil {
		return err
	}
	return topology.BuildUnderlay(s.Underlay, s.Topology, s.IPFamily)
}

// place is h with the addresses of the lab's families: its IPv4 address
// (the store and the API server are reached over IPv4 in every lab) and
// in a lab with IPv6 pods its IPv6 address too.
func (s *State) place(h topology.Host) topology.Host {
	if topology.HasIPv6(s.IPFamily) {
		return h.WithIPv6()
	}
	return h
}

// addHost creates h's namespace and plugs it into the underlay.
func (s *State) addHost(h topology.Host) error {
	if err := s.addNS(h.NS); err != nil {
		return err
	}
	return topology.Attach(s.Underlay, s.Topology, h)
}

func (s *State) etcdArgs() []string {
	return []string{"--etcd-endpoints", s.Endpoint}
}

// startStore runs the embedded store in the control namespace and writes
// the network config, or with --store kube starts the API server on it.
func (s *State) startStore(ctx context.Context, w io.Writer) error {
	s.Ctl = s.place(topology.Host{Name: "ctl", NS: s.Name + "-ctl", Addr: topology.StoreIP, Side: "a"})
	if err := s.addHost(s.Ctl); err != nil {
		return err
	}
	s.Endpoint = fmt.Sprintf("http://%s:%d", topology.StoreIP, etcdPort)
	ctlDir := filepath.Join(dir(s.Name), "ctl")
	logPath := filepath.Join(ctlDir, "store.log")
	pid, err := process.Start(s.Ctl.NS, logPath, nil, s.Weft, "store", "serve",
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
		conf, err := s.netConf()
		if err != nil {
			return err
		}
		ctl := kube.Control{NS: s.Ctl.NS, Dir: ctlDir, Etcd: s.Endpoint}
		if err := s.Kube.Start(ctx, ctl, conf, s.save, w); err != nil {
			return err
		}
		return s.save()
	}
	return s.initStore(ctx, logPath, w)
}

// initStore writes the network config once the store accepts it.
func (s *State) initStore(ctx context.Context, logPath string, w io.Writer) error {
	conf, err := s.netConf()
	if err != nil {
		return err
	}
	confPath := filepath.Join(filepath.Dir(logPath), "net-conf.json")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	args := append([]string{s.Weft, "store", "init"}, s.etcdArgs()...)
	args = append(args, "--config", confPath)
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if !process.Alive(s.Ctl.PID) {
			return fmt.Errorf("the store exited: %s", process.TailFile(logPath, 1000))
		}
		if _, last = process.Run(s.Ctl.NS, args...); last == nil {
			fmt.Fprintf(w, "store: embedded etcd at %s in %s, config written\n", s.Endpoint, s.Ctl.NS)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("the store did not accept the config: %w", last)
}

// startExt creates the external host, outside the cluster network.
func (s *State) startExt() error {
	addr, side := topology.ExtAddr(s.Topology)
	s.Ext = s.place(topology.Host{Name: "ext", NS: s.Name + "-ext", Addr: addr, Side: side})
	return s.addHost(s.Ext)
}
