package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lease/kubestore"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/bench"
	"github.com/weftnet/weft/internal/policy/nft"
	"github.com/weftnet/weft/internal/policy/source"
	"github.com/weftnet/weft/internal/policy/synth"
)

const policyUsage = `weft policy — NetworkPolicy as weft's agents enforce it

  weft policy explain --from NS/POD --to NS/POD|ADDR [--port 80/tcp]
              [--kubeconfig FILE | --lab NAME | -f FILE ...]
      whether the connection is allowed, direction by direction, and by
      which policies: from the API server (a kubeconfig, or a lab's), or
      offline from YAML or JSON files of Pods (with status.podIP),
      Namespaces and NetworkPolicies; exit status 1 when denied
  weft policy bench [--pods 1000,5000] [--policies 100,1000] [--rounds 3]
              [--packet-policies 1000] [--packet-pods 5000] [--packet-rounds 3] [--seconds 5]
      compile and apply time and rule-set size for synthetic clusters, and
      the cost per packet of a loaded rule set against none (root; the
      apply and per-packet parts run in network namespaces of their own)
`

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return exitError(2)
	}
	if helpFlag(args[0]) {
		fmt.Fprint(stdout, policyUsage)
		return nil
	}
	switch args[0] {
	case "explain":
		return policyExplain(ctx, args[1:], stdout, stderr)
	case "bench":
		return policyBench(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, policyUsage)
		return fmt.Errorf("unknown command 'policy %s'", args[0])
	}
}

// files is a repeatable -f flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func policyExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("weft policy explain", stderr)
	from := fs.String("from", "", "the client: NS/POD, or an address outside the cluster")
	to := fs.String("to", "", "the server: NS/POD, or an address")
	portFlag := fs.String("port", "", "PORT/PROTO (tcp, udp, sctp); empty: a packet with no port (ICMP)")
	kubeconfig := fs.String("kubeconfig", "", "read the cluster from this kubeconfig's API server")
	labName := fs.String("lab", "", "read the cluster from this lab's API server (weft lab up --store kube)")
	var fileArgs files
	fs.Var(&fileArgs, "f", "read the cluster from this YAML or JSON file (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return errors.New("weft policy explain: give --from and --to (run with -h for help)")
	}
	proto, port, err := policy.ParsePort(*portFlag)
	if err != nil {
		return err
	}
	sources := 0
	for _, set := range []bool{*kubeconfig != "", *labName != "", len(fileArgs) > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return errors.New("weft policy explain: give one of --kubeconfig, --lab or -f (run with -h for help)")
	}
	var c *policy.Cluster
	switch {
	case len(fileArgs) > 0:
		c, err = readClusterFiles(fileArgs)
	default:
		var cl *kubeclient.Client
		if *labName != "" {
			cfg, cerr := lab.KubeConfig(*labName)
			if cerr != nil {
				return cerr
			}
			cl, err = kubeclient.New(cfg)
		} else {
			cl, err = kubestore.Client("", *kubeconfig, "weft/"+version)
		}
		if err == nil {
			c, err = source.List(ctx, cl)
		}
	}
	if err != nil {
		return err
	}
	e, err := policy.Allowed(c, *from, *to, proto, port)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, e.String())
	if !e.Allowed {
		// As `kubectl auth can-i` says no: for scripts.
		return exitError(1)
	}
	return nil
}

// readClusterFiles decodes every document of the files (YAML or JSON, a
// List or single objects) and keeps the Pods, Namespaces and
// NetworkPolicies.
func readClusterFiles(paths []string) (*policy.Cluster, error) {
	var objs []runtime.Object
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			o, err := kubeclient.Decode(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
			}
			objs = append(objs, o)
		}
	}
	return source.FromObjects(objs)
}

func policyBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("weft policy bench", stderr)
	pods := fs.String("pods", "1000,5000", "cluster sizes in pods (comma-separated)")
	policies := fs.String("policies", "100,1000", "numbers of policies (comma-separated)")
	rounds := fs.Int("rounds", 3, "runs of each size; the medians are printed")
	pktPolicies := fs.Int("packet-policies", 1000, "policies loaded for the per-packet measurement (0: skip it)")
	pktPods := fs.Int("packet-pods", 5000, "pods of the cluster whose rule set the per-packet measurement loads")
	pktRounds := fs.Int("packet-rounds", 3, "alternating runs without and with the rule set")
	secs := fs.Int("seconds", 5, "seconds of each per-packet measurement")
	if err := parse(fs, args); err != nil {
		return err
	}
	podCounts, err := intList("--pods", *pods)
	if err != nil {
		return err
	}
	polCounts, err := intList("--policies", *policies)
	if err != nil {
		return err
	}
	if *rounds < 1 || *pktRounds < 1 || *secs < 1 {
		return errors.New("--rounds, --packet-rounds and --seconds must be at least 1")
	}
	var shapes []synth.Shape
	for _, np := range polCounts {
		for _, n := range podCounts {
			shapes = append(shapes, synth.Shape{Pods: n, Policies: np})
		}
	}
	root := os.Geteuid() == 0
	name := fmt.Sprintf("wpb%d", os.Getpid())
	var newAp func() (bench.Applier, func(), error)
	if root {
		newAp = func() (bench.Applier, func(), error) { return benchApplier(name + "-apply") }
	} else {
		fmt.Fprintln(stdout, "not root: compile only (apply and per-packet need network namespaces)")
	}
	fmt.Fprintf(stdout, "weft policy bench: synthetic clusters (internal/policy/synth), node %s, %d rounds, medians\n", synth.Node, *rounds)
	res, err := bench.Scale(ctx, shapes, *rounds, newAp)
	if err != nil {
		return err
	}
	if err := bench.PrintScale(stdout, res); err != nil {
		return err
	}
	if !root || *pktPolicies == 0 {
		return nil
	}
	fmt.Fprintf(stdout, "\nper packet: frontend -> backend pod across node %s's bridge, %d policies x %d pods loaded against none, %d s each, alternating\n", synth.Node, *pktPolicies, *pktPods, *secs)
	pr, err := bench.PerPacket(ctx, name, *pktPolicies, *pktPods, *pktRounds, *secs, func(ns string) (bench.Applier, func() error, error) {
		a, err := nft.New(nft.Options{Namespace: ns})
		if err != nil {
			return nil, nil, err
		}
		return a, func() error { return nil }, nil
	}, stdout)
	if err != nil {
		return err
	}
	return bench.PrintPacket(stdout, pr)
}

// benchApplier is a policy applier in a namespace of its own, removed by
// the returned function.
func benchApplier(ns string) (bench.Applier, func(), error) {
	if err := netns.Create(ns); err != nil {
		return nil, nil, err
	}
	a, err := nft.New(nft.Options{Namespace: ns})
	if err != nil {
		_ = netns.Delete(ns)
		return nil, nil, err
	}
	return a, func() { _ = netns.Delete(ns) }, nil
}

func intList(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s %s: %q is not a positive number", flagName, s, f)
		}
		out = append(out, n)
	}
	return out, nil
}
