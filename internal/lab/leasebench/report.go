package leasebench

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Memory is a process's resident set (VmRSS) and its anonymous part
// (RssAnon: heap and stacks, not the mapped binary), in MiB.
type Memory struct {
	RSS, Anon float64
}

// Phase is one node's figures at one lease count.
type Phase struct {
	Bulk    time.Duration   // N leases written at once: the last of their routes in the kernel
	BulkDel time.Duration   // the N leases deleted at once: the last route gone
	Add     []time.Duration // single adds with N present: etcd write to route event
	Del     []time.Duration // single deletes with N present
	AddCPU  float64         // CPU seconds (user+system) over all single adds
	DelCPU  float64         // over all single deletes
	IdleCPU float64         // CPU seconds per idle minute
	Mem     Memory          // after the idle minute, N leases present
}

// NodeResult is one node's figures.
type NodeResult struct {
	Name  string // n1
	Agent string // "weft" or "flanneld"
	Mem0  Memory // before any synthetic lease
	At    map[int]*Phase
}

// Result is a whole run: the weft nodes and the reference node.
type Result struct {
	Counts []int
	Nodes  []*NodeResult // the reference node last
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100): the
// smallest sample with at least p% of the samples at or below it. With 50
// samples p99 is the largest.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// row is one line of the table: a label and one value per node, with the
// unit's precision.
type row struct {
	label  string
	values []float64
	prec   int
}

// rows lays the result out, in the order of the table.
func (r *Result) rows() []row {
	each := func(label string, prec int, f func(*NodeResult) float64) row {
		rw := row{label: label, prec: prec}
		for _, n := range r.Nodes {
			rw.values = append(rw.values, f(n))
		}
		return rw
	}
	out := []row{
		each("VmRSS, no leases (MiB)", 1, func(n *NodeResult) float64 { return n.Mem0.RSS }),
		each("RssAnon, no leases (MiB)", 1, func(n *NodeResult) float64 { return n.Mem0.Anon }),
	}
	for _, c := range r.Counts {
		at := func(f func(*Phase) float64) func(*NodeResult) float64 {
			return func(n *NodeResult) float64 {
				if p := n.At[c]; p != nil {
					return f(p)
				}
				return math.NaN()
			}
		}
		perEvent := func(cpu float64, k int) float64 {
			if k == 0 {
				return math.NaN()
			}
			return cpu / float64(k) * 1000
		}
		out = append(out,
			each(fmt.Sprintf("%d written at once: all routes in (ms)", c), 0, at(func(p *Phase) float64 { return ms(p.Bulk) })),
			each(fmt.Sprintf("add with %d present, p50 (ms)", c), 1, at(func(p *Phase) float64 { return ms(percentile(p.Add, 50)) })),
			each(fmt.Sprintf("add with %d present, p99 (ms)", c), 1, at(func(p *Phase) float64 { return ms(percentile(p.Add, 99)) })),
			each(fmt.Sprintf("delete with %d present, p50 (ms)", c), 1, at(func(p *Phase) float64 { return ms(percentile(p.Del, 50)) })),
			each(fmt.Sprintf("delete with %d present, p99 (ms)", c), 1, at(func(p *Phase) float64 { return ms(percentile(p.Del, 99)) })),
			each(fmt.Sprintf("CPU per add with %d (ms)", c), 1, at(func(p *Phase) float64 { return perEvent(p.AddCPU, len(p.Add)) })),
			each(fmt.Sprintf("CPU per delete with %d (ms)", c), 1, at(func(p *Phase) float64 { return perEvent(p.DelCPU, len(p.Del)) })),
			each(fmt.Sprintf("CPU per idle minute with %d (s)", c), 2, at(func(p *Phase) float64 { return p.IdleCPU })),
			each(fmt.Sprintf("VmRSS with %d (MiB)", c), 1, at(func(p *Phase) float64 { return p.Mem.RSS })),
			each(fmt.Sprintf("RssAnon with %d (MiB)", c), 1, at(func(p *Phase) float64 { return p.Mem.Anon })),
			each(fmt.Sprintf("%d deleted at once: all routes gone (ms)", c), 0, at(func(p *Phase) float64 { return ms(p.BulkDel) })),
		)
	}
	return out
}

// cell formats v, and when ref is a usable reference, v/ref as "(0.30x)".
func cell(v, ref float64, prec int, withRatio bool) string {
	if math.IsNaN(v) {
		return "-"
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if !withRatio {
		return s
	}
	if math.IsNaN(ref) || ref <= 0 {
		return s + " (-)"
	}
	return fmt.Sprintf("%s (%.2fx)", s, v/ref)
}

// Print writes the table: one column per node, every figure of a weft node
// also as a ratio to the reference node's (the last column).
func (r *Result) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{""}
	for _, n := range r.Nodes {
		head = append(head, n.Name+" "+n.Agent)
	}
	rows := r.rows()
	width := 0
	for _, rw := range rows {
		width = max(width, len(rw.label))
	}
	head[0] = strings.Repeat(" ", width)
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, rw := range rows {
		cells := []string{fmt.Sprintf("%-*s", width, rw.label)}
		ref := rw.values[len(rw.values)-1]
		for i, v := range rw.values {
			cells = append(cells, cell(v, ref, rw.prec, i < len(rw.values)-1))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
}

// readMemory reads VmRSS and RssAnon of pid from /proc/PID/status.
func readMemory(pid int) (Memory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	return parseStatus(string(b)), nil
}

// parseStatus picks VmRSS and RssAnon (kB) out of a /proc/PID/status
// document.
func parseStatus(doc string) Memory {
	var m Memory
	for line := range strings.SplitSeq(doc, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb / 1024
		case "RssAnon:":
			m.Anon = kb / 1024
		}
	}
	return m
}

// target is one of issue 10's targets: a figure of every weft node at most
// limit times flanneld's.
type target struct {
	label string
	limit float64
	f     func(*NodeResult) float64
}

// targets are issue 10's: single add and delete p99 at most flanneld's at
// every count, and at the largest count bulk convergence at most 0.3x,
// idle CPU and RssAnon at most flanneld's.
func (r *Result) targets() []target {
	at := func(c int, f func(*Phase) float64) func(*NodeResult) float64 {
		return func(n *NodeResult) float64 {
			if p := n.At[c]; p != nil {
				return f(p)
			}
			return math.NaN()
		}
	}
	var ts []target
	for _, c := range r.Counts {
		ts = append(ts,
			target{fmt.Sprintf("add p99 with %d", c), 1, at(c, func(p *Phase) float64 { return ms(percentile(p.Add, 99)) })},
			target{fmt.Sprintf("delete p99 with %d", c), 1, at(c, func(p *Phase) float64 { return ms(percentile(p.Del, 99)) })})
	}
	if len(r.Counts) > 0 {
		c := slices.Max(r.Counts)
		ts = append(ts,
			target{fmt.Sprintf("%d written at once", c), 0.3, at(c, func(p *Phase) float64 { return ms(p.Bulk) })},
			target{fmt.Sprintf("CPU per idle minute with %d", c), 1, at(c, func(p *Phase) float64 { return p.IdleCPU })},
			target{fmt.Sprintf("RssAnon with %d", c), 1, at(c, func(p *Phase) float64 { return p.Mem.Anon })})
	}
	return ts
}

// PrintTargets says for each target and weft node whether it was met.
func (r *Result) PrintTargets(w io.Writer) {
	if len(r.Nodes) < 2 {
		return
	}
	ref := r.Nodes[len(r.Nodes)-1]
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target (issue 10, ratio to %s %s)\t", ref.Name, ref.Agent)
	for _, n := range r.Nodes[:len(r.Nodes)-1] {
		fmt.Fprintf(tw, "%s\t", n.Name)
	}
	fmt.Fprintln(tw)
	for _, t := range r.targets() {
		fmt.Fprintf(tw, "%s <= %.1fx\t", t.label, t.limit)
		want := t.f(ref)
		for _, n := range r.Nodes[:len(r.Nodes)-1] {
			v := t.f(n)
			switch {
			case math.IsNaN(v) || math.IsNaN(want) || want <= 0:
				fmt.Fprint(tw, "-\t")
			case v <= t.limit*want:
				fmt.Fprintf(tw, "%.2fx met\t", v/want)
			default:
				fmt.Fprintf(tw, "%.2fx MISSED\t", v/want)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
