// Package bench measures the NetworkPolicy engine: compile and apply time
// and the size of the rule set for synthetic clusters (package synth), and
// the cost per packet of a loaded rule set, as a TCP request/response rate
// and a single-stream throughput between two pods on one node with the
// rule set loaded against none, run side by side and given as ratios (the
// machines are noisy: only ratios within one run are compared).
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/synth"
)

// Size is the size of a compiled rule set: what the kernel holds.
type Size struct {
	Pods     int // vmap elements: isolated local pod addresses
	Groups   int
	Chains   int
	Rules    int // rules of the policy chains
	Elements int // set elements: peer intervals, port intervals, named ports
}

// SizeOf counts a Ruleset.
func SizeOf(rs *policy.Ruleset) Size {
	s := Size{Pods: len(rs.Pods), Groups: len(rs.Groups), Chains: len(rs.Chains)}
	for _, c := range rs.Chains {
		s.Rules += len(c.Rules)
		for _, r := range c.Rules {
			s.Elements += len(r.Peers) + len(r.Ports) + len(r.Named)
		}
	}
	return s
}

// ScaleResult is one shape's figures.
type ScaleResult struct {
	Shape   synth.Shape
	Size    Size
	Compile time.Duration // median
	// Apply is the median time of a full apply (one transaction that
	// replaces the table); Change that of the incremental apply of one pod
	// added to the cluster; zero when not measured (not root).
	Apply, Change time.Duration
	ChangeOps     int // operations the incremental apply sent
}

// Applier applies rule sets in a namespace of the bench's own; nil when
// not measuring apply (not root).
type Applier interface {
	Apply(ctx context.Context, rs *policy.Ruleset) error
	Resync()
	LastOps() (ops int, full bool)
	Remove(ctx context.Context) error
}

// Scale compiles (and, with a, applies) each shape rounds times and
// returns the medians.
func Scale(ctx context.Context, shapes []synth.Shape, rounds int, a func() (Applier, func(), error)) ([]ScaleResult, error) {
	var out []ScaleResult
	for _, sh := range shapes {
		c := synth.Cluster(sh)
		r := ScaleResult{Shape: sh}
		var compile, apply, change []time.Duration
		for range rounds {
			t0 := time.Now()
			rs := policy.Compile(c, synth.Node)
			compile = append(compile, time.Since(t0))
			r.Size = SizeOf(rs)
			if a == nil {
				continue
			}
			ap, done, err := a()
			if err != nil {
				return nil, err
			}
			t0 = time.Now()
			err = ap.Apply(ctx, rs)
			apply = append(apply, time.Since(t0))
			if err == nil {
				// One more pod on this node, in the first namespace: the
				// change a pod start makes.
				more := *c
				more.Pods = append(slices.Clip(c.Pods), newPod(c))
				rs2 := policy.Compile(&more, synth.Node)
				t0 = time.Now()
				err = ap.Apply(ctx, rs2)
				change = append(change, time.Since(t0))
				r.ChangeOps, _ = ap.LastOps()
			}
			done()
			if err != nil {
				return nil, fmt.Errorf("apply %d policies x %d pods: %w", sh.Policies, sh.Pods, err)
			}
		}
		r.Compile, r.Apply, r.Change = median(compile), median(apply), median(change)
		out = append(out, r)
	}
	return out, nil
}

// newPod is a pod that the synthetic policies select, on the measured node,
// at an address no other pod has.
func newPod(c *policy.Cluster) *policy.Pod {
	p := *c.Pods[0]
	p.Name = "new-pod"
	p.IPs = []netip.Addr{netip.MustParseAddr("10.244.0.254")}
	return &p
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// PrintScale writes the scale results as a table.
func PrintScale(w io.Writer, rs []ScaleResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policies\tpods\tlocal pods\tgroups\tchains\trules\tset elements\tcompile\tfull apply\tcompile+apply\tone-pod change (ops)\t")
	for _, r := range rs {
		local := min(r.Shape.Pods, cmp.Or(r.Shape.PodsPerNode, synth.DefaultPodsPerNode))
		apply, total, change := "-", "-", "-"
		if r.Apply > 0 {
			apply = ms(r.Apply)
			total = ms(r.Compile + r.Apply)
			change = fmt.Sprintf("%s (%d)", ms(r.Change), r.ChangeOps)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", r.Shape.Policies, r.Shape.Pods, local,
			r.Size.Groups, r.Size.Chains, r.Size.Rules, r.Size.Elements+r.Size.Pods, ms(r.Compile), apply, total, change)
	}
	return tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1e3) }
