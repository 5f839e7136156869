package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/backend/hostgw"
	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lab/bench"
	"github.com/weftnet/weft/internal/lab/leasebench"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/process"
)

const labUsage = `weft lab — a real multi-node weft cluster in network namespaces

  weft lab up [--name NAME] [--nodes N] [--pods-per-node M] [--backend vxlan|host-gw|udp|wireguard]
              [--direct-routing] [--topology l2|l3] [--ip-family ipv4|ipv6|dual]
              [--flannel-nodes n3,...] [--flanneld PATH]
              [--store etcd|kube] [--kube-apiserver PATH] [--read-only] [--forward-drop]
              [--pod-ports 80,81]   ports every pod serves over TCP and UDP (and declares)
              [--bgp [--bgp-router bird|frr] [--bgp-password SECRET]]   with --topology l3
  weft lab status [--name NAME] [--json]
  weft lab check [--name NAME] [--json]
  weft lab exec [--name NAME] TARGET -- CMD...     TARGET: ctl, ext, underlay, n1, n1-p1
              (wireguard: on a node, 'wg show' reads that node's devices)
  weft lab agent stop|start|restart NODE [--name NAME] [--bgp-peer ADDRESS,as=N[,...]|router]...
  weft lab agent switch NODE --to weft|flannel [--flanneld PATH]   replace a node's agent in place
  weft lab node add [--pods M] [--agent weft|flannel] [--flanneld PATH] | remove NODE [--name NAME]
  weft lab ping [--name NAME] [--count N] [--interval D] [--ipv6] FROM TO   FROM: a pod; TO: a pod or ext
  weft lab trace [--name NAME] [--ipv6] [--json] [--probe] [--svg FILE] [--port 80/tcp] FROM TO   a packet's path
              FROM, TO: pods, nodes, ext; stops at the first missing route, neighbour, FDB entry or agent;
              --probe: real packets along it, each hop confirmed by its devices' counters; --svg: a drawing;
              --store kube: the NetworkPolicy verdicts (for --port) where the nodes enforce them
  weft lab bench [--name NAME] [--seconds S] [--modes veth,host-gw,vxlan,udp:tun,udp:bpf,wireguard] [--rounds N]
  weft lab bench-leases [--name NAME] [--leases 1000,5000] [--events 50] [--idle 60s]
              [--agent PATH] [--flanneld PATH] [--profile DIR]   lease events: weft-agent beside flanneld
  weft lab bench-bgp [--name NAME] [--rounds N] [--bgp-router bird|frr] [--nodes N] [--settle D]   lease -> route at the router -> ext; agent RSS BGP on/off
  weft lab pod add NAME --node N [--namespace NS] [--labels k=v,...] [--ports 80,81]
  weft lab pod remove NAME [--namespace NS]        a pod (with its Pod object, --store kube)
  weft lab kubectl [--name NAME] ARGS...           kubectl on the lab's API server (--store kube)
  weft lab down [--name NAME]

--ip-family: the pods' families. ipv6 and dual give every host an IPv6 address
in 2001:db8::/32 beside its IPv4 one (the store and API server stay on IPv4)
and the pods addresses from 2001:db8:244::/56; check probes each family.

--bgp: the l3 router runs BIRD 2 (default) or FRR as AS 64500 with an eBGP
session to each node nK (AS 64512+K; hold time 9 s, graceful restart, the
nodes' restart time 30 s); it learns the pods' subnets, so ext (whose network
is routable: no masquerade) and pods reach each other by their own addresses.
'agent restart NODE --bgp-peer SPEC' gives a node's agent its own peers
(the word router stands for the lab's; alone it restores them). 'node remove'
with --store kube deletes the Node while its agent runs: the agent withdraws
its routes and the router drops them at once; with etcd the router keeps
them until the restart time runs out.
'weft lab COMMAND -h' prints a command's flags.
`

// labCommand is one `weft lab` command: it defines its flags on fs and
// returns the function that runs it once fs is parsed, with the
// positional arguments and the command after "--".
type labCommand func(fs *flag.FlagSet, name *string) func(ctx context.Context, pos, command []string, stdout, stderr io.Writer) error

var labCommands = map[string]labCommand{
	"up": labUp, "down": labDown, "status": labStatus, "check": labCheck, "exec": labExec,
	"ping": labPing, "trace": labTrace, "agent": labAgent, "node": labNode, "bench": labBench,
	"bench-leases": labBenchLeases, "pod": labPod, "bench-bgp": labBenchBGP,
	"serve": labServe, // hidden: the servers inside a pod
}

// labHelp reports whether arg asks for the usage.
func labHelp(arg string) bool {
	return helpFlag(arg) || arg == "help"
}

// needRoot is the error of a lab command run without root.
func needRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("weft lab needs root: it creates network namespaces (run it with sudo)")
	}
	return nil
}

// labSynopsis is the lines of labUsage that show command cmd.
func labSynopsis(cmd string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(labUsage, "\n") {
		switch {
		case strings.HasPrefix(line, "  weft lab "+cmd+" ") || line == "  weft lab "+cmd:
			in = true
		case !strings.HasPrefix(line, "              "):
			in = false
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, labUsage)
		return exitError(2)
	}
	cmd, rest := args[0], args[1:]
	if labHelp(cmd) {
		fmt.Fprint(stdout, labUsage)
		return nil
	}
	if cmd == "kubectl" {
		if len(rest) == 1 && labHelp(rest[0]) {
			fmt.Fprint(stdout, labSynopsis(cmd))
			return nil
		}
		if err := needRoot(); err != nil {
			return err
		}
		return runLabKubectl(rest, stdout, stderr)
	}
	def, ok := labCommands[cmd]
	if !ok {
		fmt.Fprint(stderr, labUsage)
		return fmt.Errorf("weft lab: unknown command %q", cmd)
	}
	// agent and node take a verb (stop, add, ...): it is the first
	// positional argument.
	if (cmd == "agent" || cmd == "node" || cmd == "pod") && len(rest) == 0 {
		return fmt.Errorf("weft lab %s: say what to do\n%s", cmd, labSynopsis(cmd))
	}
	// The command of exec follows "--", and is not parsed.
	var command []string
	for i, a := range rest {
		if a == "--" {
			rest, command = rest[:i], rest[i+1:]
			break
		}
	}
	// -h prints the command's usage on stdout and succeeds; a mistake
	// prints nothing but the one-line error main prints.
	fs := newFlags("weft lab "+cmd, stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage:\n%s\nflags:\n", labSynopsis(cmd))
		fs.PrintDefaults()
	}
	name := fs.String("name", "weft", "lab name (1-8 lower-case letters and digits)")
	runCmd := def(fs, name)
	if err := parse(fs, rest); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	err := runCmd(ctx, fs.Args(), command, stdout, stderr)
	var ee lab.ExitError
	if errors.As(err, &ee) {
		return exitError(ee)
	}
	return err
}

func labUp(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var spec lab.Spec
	fs.IntVar(&spec.Nodes, "nodes", 3, "number of nodes")
	fs.IntVar(&spec.PodsPerNode, "pods-per-node", 2, "pods per node")
	fs.StringVar(&spec.Backend, "backend", lab.DefaultBackend, "the data path: "+strings.Join(lab.BackendTypes(), ", "))
	fs.BoolVar(&spec.DirectRouting, "direct-routing", false, lab.DirectRoutingHelp())
	fs.StringVar(&spec.Datapath, "datapath", "", "udp: the data path, auto (the default: bpf where the node supports it), bpf (in the kernel) or tun (through the agent)")
	fs.StringVar(&spec.Topology, "topology", "l2", "l2 (one bridge) or l3 (two subnets and a router)")
	fs.StringVar(&spec.IPFamily, "ip-family", "ipv4", "the pods' families: ipv4, ipv6 (EnableIPv4 false) or dual; IPv6 underlay and pods from 2001:db8::/32")
	fs.BoolVar(&spec.ForwardDrop, "forward-drop", false, "set iptables -P FORWARD DROP in every node before its agent starts, as Docker does")
	fs.Func("flannel-nodes", "nodes that run the reference flanneld instead of weft (e.g. n3)", func(v string) error {
		spec.FlannelNodes = strings.Split(v, ",")
		return nil
	})
	fs.StringVar(&spec.Flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
	fs.StringVar(&spec.Store, "store", "etcd", "etcd (the embedded store) or kube (a real kube-apiserver; agents in Kubernetes mode)")
	fs.StringVar(&spec.KubeAPIServer, "kube-apiserver", "", "--store kube: the kube-apiserver binary (default: beside weft)")
	fs.BoolVar(&spec.ReadOnly, "read-only", false, "--store kube: agents in read-only mode (get/list/watch on nodes only)")
	podPorts := fs.String("pod-ports", "", "ports every pod serves (weft lab serve) and declares: 80,81 (TCP and UDP each) or 80/tcp,53/udp")
	fs.BoolVar(&spec.BGP, "bgp", false, "with --topology l3: the router speaks BGP with every node (BIRD or FRR), learning the pods' subnets")
	fs.StringVar(&spec.BGPRouter, "bgp-router", "", "with --bgp: bird (BIRD 2, the default) or frr (FRR's zebra and bgpd)")
	fs.StringVar(&spec.BGPPassword, "bgp-password", "", "with --bgp: the TCP MD5 password of every session (router and agents)")
	return func(ctx context.Context, _, _ []string, stdout, _ io.Writer) error {
		spec.Name = *name
		var err error
		if spec.PodPorts, err = pod.ParsePorts(*podPorts); err != nil {
			return err
		}
		return lab.Up(ctx, spec, stdout)
	}
}

func labDown(_ *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	return func(_ context.Context, _, _ []string, stdout, _ io.Writer) error {
		return lab.Down(*name, stdout)
	}
}

func labStatus(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(_ context.Context, _, _ []string, stdout, _ io.Writer) error {
		return lab.Status(*name, *asJSON, stdout)
	}
}

func labCheck(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _, _ []string, stdout, _ io.Writer) error {
		return lab.Check(ctx, *name, *asJSON, stdout)
	}
}

func labExec(_ *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	return func(_ context.Context, pos, command []string, stdout, stderr io.Writer) error {
		if len(pos) != 1 || len(command) == 0 {
			return errors.New("usage: weft lab exec TARGET -- CMD...")
		}
		return lab.Exec(*name, pos[0], command, os.Stdin, stdout, stderr)
	}
}

func labPing(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o lab.PingOptions
	fs.IntVar(&o.Count, "count", 10, "echo requests to send")
	fs.DurationVar(&o.Interval, "interval", 50*time.Millisecond, "time between echo requests")
	fs.BoolVar(&o.IPv6, "ipv6", false, "ping TO's IPv6 address (ICMPv6); default: its first address")
	return func(ctx context.Context, pos, _ []string, stdout, _ io.Writer) error {
		if len(pos) != 2 {
			return errors.New("usage: weft lab ping [--count N] [--interval D] [--ipv6] FROM TO")
		}
		o.From, o.To = pos[0], pos[1]
		return lab.Ping(ctx, *name, o, stdout)
	}
}

func labTrace(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o lab.TraceOptions
	fs.BoolVar(&o.IPv6, "ipv6", false, "trace between the IPv6 addresses; default: the first")
	fs.BoolVar(&o.JSON, "json", false, "print the hops as JSON")
	fs.BoolVar(&o.Probe, "probe", false, "send 10 echo requests along the path and show what each hop's devices counted")
	fs.StringVar(&o.SVG, "svg", "", "also draw the lab with the path in this SVG file (opens in a browser)")
	fs.StringVar(&o.Port, "port", "", "PORT/PROTO (80/tcp) of the connection for the NetworkPolicy verdicts (--store kube); default: a packet without a port, as ICMP")
	return func(ctx context.Context, pos, _ []string, stdout, _ io.Writer) error {
		if len(pos) != 2 {
			return errors.New("usage: weft lab trace [--ipv6] [--json] [--probe] [--svg FILE] [--port 80/tcp] FROM TO")
		}
		o.From, o.To = pos[0], pos[1]
		return lab.Trace(ctx, *name, o, stdout)
	}
}

func labAgent(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o lab.AgentOptions
	fs.StringVar(&o.To, "to", "", "switch: the agent to run, weft or flannel")
	fs.StringVar(&o.Flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
	fs.Func("bgp-peer", "start, restart (repeatable): the agent's --bgp-peer values from now on; router: the lab's", func(v string) error {
		o.BGPPeers = append(o.BGPPeers, v)
		return nil
	})
	return func(ctx context.Context, pos, _ []string, stdout, _ io.Writer) error {
		// pos[0] is the action (stop, start, restart, switch).
		if len(pos) != 2 {
			return errors.New("usage: weft lab agent stop|start|restart NODE")
		}
		o.Action, o.Node = pos[0], pos[1]
		return lab.Agent(ctx, *name, o, stdout)
	}
}

func labNode(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o lab.NodeAddOptions
	fs.IntVar(&o.Pods, "pods", 2, "pods on the new node")
	fs.StringVar(&o.Agent, "agent", "weft", "the new node's agent: weft or flannel")
	fs.StringVar(&o.Flanneld, "flanneld", "", "the flanneld binary (default: beside weft)")
	return func(ctx context.Context, pos, _ []string, stdout, _ io.Writer) error {
		if len(pos) == 0 {
			return fmt.Errorf("weft lab node: say what to do\n%s", labUsage)
		}
		switch pos[0] { // the action
		case "add":
			return lab.NodeAdd(ctx, *name, o, stdout)
		case "remove":
			if len(pos) != 2 {
				return errors.New("usage: weft lab node remove NODE")
			}
			return lab.NodeRemove(ctx, *name, pos[1], stdout)
		}
		return fmt.Errorf("weft lab node: unknown action %q (add, remove)", pos[0])
	}
}

func labBench(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	modes := strings.Join([]string{bench.Veth, hostgw.Type, vxlan.Type, lab.UDPTUN, lab.UDPBPF, wireguard.Type}, ",")
	secs := fs.Int("seconds", 5, "seconds per measurement")
	fs.StringVar(&modes, "modes", modes, "data paths to measure: veth, a backend type, or udp:tun and udp:bpf (the udp backend's two data paths)")
	rounds := fs.Int("rounds", 1, "measure every mode this many times, then print the medians")
	return func(ctx context.Context, _, _ []string, stdout, _ io.Writer) error {
		n := *name
		if n == "weft" {
			n = "bench" // leave a lab under the default name alone
		}
		return lab.Bench(ctx, n, lab.BenchOptions{Modes: strings.Split(modes, ","), Seconds: *secs, Rounds: *rounds}, stdout)
	}
}

func labBenchLeases(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o leasebench.Options
	counts := fs.String("leases", "1000,5000", "lease counts to measure at, comma-separated")
	fs.IntVar(&o.Events, "events", 50, "single adds, and as many deletes, at each count")
	fs.DurationVar(&o.Gap, "gap", 200*time.Millisecond, "pause after every node saw a single add or delete")
	fs.DurationVar(&o.Idle, "idle", time.Minute, "how long idle CPU is measured at each count")
	fs.StringVar(&o.Agent, "agent", "", "the weft-agent binary to measure (default: beside weft)")
	fs.StringVar(&o.Flanneld, "flanneld", "", "the reference flanneld (default: beside weft)")
	fs.StringVar(&o.ProfileDir, "profile", "", "after each count, write heap and CPU profiles of the weft agents (single events, then idle) to this directory")
	profileSecs := fs.Int("profile-seconds", 30, "length of each profile, in seconds")
	return func(ctx context.Context, _, _ []string, stdout, _ io.Writer) error {
		o.Name = *name
		if o.Name == "weft" {
			o.Name = "lbench" // leave a lab under the default name alone
		}
		for _, c := range strings.Split(*counts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(c))
			if err != nil {
				return fmt.Errorf("--leases %q: give counts such as 1000,5000", *counts)
			}
			o.Counts = append(o.Counts, n)
		}
		weft, err := os.Executable()
		if err != nil {
			return err
		}
		o.Weft = weft
		if o.Agent == "" {
			if o.Agent, err = process.Beside(weft, process.AgentBinary); err != nil {
				return err
			}
		}
		if o.Flanneld == "" {
			o.Flanneld = filepath.Join(filepath.Dir(weft), "flanneld")
		}
		for _, p := range []*string{&o.Agent, &o.Flanneld} {
			if *p, err = filepath.Abs(*p); err != nil {
				return err
			}
			if _, err := os.Stat(*p); err != nil {
				return fmt.Errorf("no %s: build weft-agent with 'go build -o bin/ ./cmd/...' and the reference flanneld with '(cd tools/flannel && go build -o ../../bin/flanneld github.com/flannel-io/flannel)', or give --agent and --flanneld", *p)
			}
		}
		o.ProfileFor = time.Duration(*profileSecs) * time.Second
		o.Command = strings.Join(os.Args, " ")
		return leasebench.Run(ctx, o, stdout)
	}
}
