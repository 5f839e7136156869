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
		// wireguard is udp's TUN path plus encryption (issue 14's targets).
		o.Targets = []bench.Target{{Mode: wireguard.Type, Base: udp.Type, MinThroughput: 0.7, MaxCPUPerGB: 1.5}}
	}
	return bench.Run(ctx, o, func(ctx context.Context, backend string) (bench.Pair, func(), error) {
		return benchUp(ctx, name, backend)
	}, w)
}

// benchUp brings up a 2-node l2 lab with one pod per node on backend.
func benchUp(ctx context.Context, name, backend string) (bench.Pair, func(), error) {
	unlock, err := lock(name)
	if err != nil {
		return bench.Pair{}, nil, err
	}
	if _, err := load(name); err == nil {
		unlock()
		return bench.Pair{}, nil, fmt.Errorf("lab %s is up; bench needs its name free (--name)", name)
	}
	var sink strings.Builder
	err = up(ctx, Spec{Name: name, Nodes: 2, PodsPerNode: 1, Backend: backend, Topology: topology.L2}, &sink)
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
