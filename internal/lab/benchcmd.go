package lab

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/weftnet/weft/internal/backend/udp"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/lab/bench"
	"github.com/weftnet/weft/internal/lab/topology"
)

// BenchOptions say what `lab bench` measures.
type BenchOptions = bench.Options

// Bench measures the data paths of o.Modes, each on a fresh 2-node lab
// named name (the name must be free), and prints the table.
func Bench(ctx context.Context, name string, o BenchOptions, w io.Writer) error {
	if err := checkName(name); err != nil {
		return err
	}
	o.Name = name
	if o.Reference == "" {
		o.Reference = DefaultBackend
	}
	if o.Targets == nil {
		o.Targets = []bench.Target{
			// wireguard is udp's TUN path plus encryption.
			{Mode: wireguard.Type, Base: UDPTUN, MinThroughput: 0.7, MaxCPUPerGB: 1.5},
			// udp's kernel path against kernel VXLAN.
			{Mode: UDPBPF, Base: "vxlan", MinThroughput: 1.0, Single: true, MinUDP: 1.0, MaxP50: 1.2},
		}
	}
	return bench.Run(ctx, o, func(ctx context.Context, backend string) (bench.Pair, func(), error) {
		return benchUp(ctx, name, backend)
	}, w)
}

// The bench modes of the udp backend's two data paths: TYPE:DATAPATH.
const (
	UDPTUN = udp.Type + ":" + udp.DatapathTUN
	UDPBPF = udp.Type + ":" + udp.DatapathBPF
)

// benchUp brings up a 2-node l2 lab with one pod per node on backend
// (a backend type, or udp:DATAPATH).
func benchUp(ctx context.Context, name, backend string) (bench.Pair, func(), error) {
	typ, datapath, _ := strings.Cut(backend, ":")
	unlock, err := lock(name)
	if err != nil {
		return bench.Pair{}, nil, err
	}
	if _, err := load(name); err == nil {
		unlock()
		return bench.Pair{}, nil, fmt.Errorf("lab %s is up; bench needs its name free (--name)", name)
	}
	var sink strings.Builder
	err = up(ctx, Spec{Name: name, Nodes: 2, PodsPerNode: 1, Backend: typ, Datapath: datapath, Topology: topology.L2}, &sink)
	s, lerr := load(name)
	down := func() {
		if lerr == nil {
			_ = s.down(io.Discard)
		}
		unlock()
	}
	if err != nil {
		down()
		// A failed check comes back as ExitError: say why, not just "exit 1".
		return bench.Pair{}, nil, fmt.Errorf("the %s lab did not come up cleanly (%v):\n%s", backend, err, sink.String())
	}
	p := bench.Pair{SrcNS: s.Pods[0].NS, DstNS: s.Pods[1].NS, Dst: s.Pods[1].Addr}
	for _, n := range s.Nodes {
		p.Agents = append(p.Agents, n.PID)
	}
	return p, down, nil
}
