// Package leasebench measures what lease events cost the node agents, weft's
// beside the reference flanneld: a lab of three nodes on vxlan (weft-agent on
// n1 and n2, flanneld on n3) sharing one embedded etcd, into which it writes
// thousands of synthetic leases in flannel's format. Per node it times, from
// the etcd write to the route event in the node's namespace, N leases
// written at once and single adds and deletes with N present, and reads the
// agents' CPU time and memory from /proc; every weft figure is also shown as
// a ratio to flanneld's. The synthetic leases name documentation addresses
// as PublicIP; nothing is ever sent to them (the lab has no pods).
package leasebench

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/lab/process"
)

// Options say what to measure.
type Options struct {
	Name     string        // lab name: namespaces Name-ul, Name-ctl, Name-n1 to Name-n3
	Counts   []int         // lease counts to measure at, e.g. 1000 and 5000
	Events   int           // single adds, and as many deletes, at each count
	Gap      time.Duration // pause after every node saw a single event
	Idle     time.Duration // how long idle CPU is measured at each count
	Weft     string        // the weft binary: runs the store
	Agent    string        // the weft-agent binary
	Flanneld string        // the reference flanneld binary
	Command  string        // the command line, printed in the header
	// With ProfileDir set, after the measurements at each count the weft
	// agents' heap profiles are taken, then CPU profiles over ProfileFor
	// while single events go on, and as long again idle; all are written
	// there.
	ProfileDir string
	ProfileFor time.Duration
}

// settle is the pause after the lab comes up and after each bulk write,
// so that the agents' follow-up work is not counted in what comes next.
const settle = 3 * time.Second

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

func (o Options) validate() error {
	switch {
	case !nameRE.MatchString(o.Name):
		return fmt.Errorf("lab name %q: use 1-8 lower-case letters and digits, starting with a letter", o.Name)
	case len(o.Counts) == 0:
		return errors.New("--leases: give at least one count")
	case o.Events < 1:
		return fmt.Errorf("--events %d: use at least 1", o.Events)
	case o.Idle < time.Second:
		return fmt.Errorf("--idle %s: use at least 1s", o.Idle)
	case o.Gap < 0:
		return fmt.Errorf("--gap %s: use 0 or more", o.Gap)
	case o.ProfileDir != "" && o.ProfileFor < time.Second:
		return fmt.Errorf("--profile-seconds %s: use at least 1s", o.ProfileFor)
	}
	for _, c := range o.Counts {
		if c < 1 || c+o.Events > 8000 {
			return fmt.Errorf("--leases %d: use 1 to %d (with --events %d: 8190 /%d subnets fit in %s, three are the nodes')", c, 8000-o.Events, o.Events, subnetLen, network)
		}
	}
	return nil
}

// Run builds the lab, measures at each count in turn and prints the table
// to w; the lab is removed at the end, also after a failure or when ctx is
// cancelled.
func Run(ctx context.Context, o Options, w io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	header(w, o)
	c, err := start(ctx, o, w)
	if err != nil {
		return err
	}
	defer func() {
		if serr := c.stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup of lab %s: %w", o.Name, serr))
		}
	}()
	taken, err := c.nodeSubnets(ctx)
	if err != nil {
		return err
	}
	for _, n := range c.nodes {
		fmt.Fprintf(w, "%s: %s, pid %d, %s\n", n.Name, n.label(), n.PID, n.Addr)
	}
	fmt.Fprintf(w, "node subnets: %v\n", taken)
	res := &Result{Counts: o.Counts}
	for _, n := range c.nodes {
		res.Nodes = append(res.Nodes, &NodeResult{Name: n.Name, Agent: n.label(), At: map[int]*Phase{}})
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	for i, n := range c.nodes {
		if res.Nodes[i].Mem0, err = readMemory(n.PID); err != nil {
			return err
		}
	}
	p := newPool(taken)
	for _, count := range o.Counts {
		if err := c.measure(ctx, o, p, count, res, w); err != nil {
			return fmt.Errorf("with %d leases: %w", count, err)
		}
	}
	fmt.Fprintln(w)
	res.Print(w)
	fmt.Fprintln(w)
	res.PrintTargets(w)
	return nil
}

// header prints what was run, on what.
func header(w io.Writer, o Options) {
	fmt.Fprintf(w, "command: %s\n", o.Command)
	fmt.Fprintf(w, "lab: 3 nodes on one l2 underlay, vxlan, network %s with SubnetLen %d, one embedded etcd; weft-agent on n1 and n2, flanneld on n3\n", network, subnetLen)
	fmt.Fprintf(w, "weft-agent: %s (%s)\n", o.Agent, buildOf(o.Agent, ""))
	fmt.Fprintf(w, "flanneld: %s (%s)\n", o.Flanneld, buildOf(o.Flanneld, "github.com/flannel-io/flannel"))
	var u unix.Utsname
	_ = unix.Uname(&u)
	fmt.Fprintf(w, "machine: %d CPUs, Linux %s; %s\n", runtime.NumCPU(), unix.ByteSliceToString(u.Release[:]), time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "per count: bulk write, %d single adds then %d deletes (%s apart), %s idle, bulk delete\n", o.Events, o.Events, o.Gap, o.Idle)
}

// buildOf says which source a Go binary was built from: its VCS revision,
// or the version of module dep among its dependencies.
func buildOf(path, dep string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "no build info: " + err.Error()
	}
	var parts []string
	if dep != "" {
		for _, d := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			if d.Path == dep {
				parts = append(parts, d.Path+" "+d.Version)
			}
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			parts = append(parts, "commit "+s.Value)
		case "vcs.modified":
			if s.Value == "true" {
				parts = append(parts, "with uncommitted changes")
			}
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "no VCS stamp")
	}
	return bi.GoVersion + ", " + strings.Join(parts, ", ")
}

// measure runs one count's phases: bulk write, single adds and deletes,
// idle, memory, bulk delete.
func (c *cluster) measure(ctx context.Context, o Options, p *pool, count int, res *Result, w io.Writer) error {
	phases := make([]*Phase, len(c.nodes))
	for i := range c.nodes {
		phases[i] = &Phase{}
		res.Nodes[i].At[count] = phases[i]
	}
	bulk, err := p.take(count)
	if err != nil {
		return err
	}
	timeout := 60*time.Second + time.Duration(count)*20*time.Millisecond
	took, wrote, err := c.converge(ctx, bulk, false, timeout)
	if err != nil {
		return fmt.Errorf("%d leases written at once: %w", count, err)
	}
	for i := range c.nodes {
		phases[i].Bulk = took[i]
	}
	fmt.Fprintf(w, "%d leases written in %d ms; all routes in: %s\n", count, wrote.Milliseconds(), c.perNode(took))
	if err := sleep(ctx, settle); err != nil {
		return err
	}

	singles, err := p.take(o.Events)
	if err != nil {
		return err
	}
	for _, del := range []bool{false, true} {
		cpu0 := c.cpu()
		for _, l := range singles {
			took, _, err := c.converge(ctx, []synth{l}, del, 10*time.Second)
			if err != nil {
				return fmt.Errorf("single event on %s (delete %v): %w", l.Subnet, del, err)
			}
			for i, t := range took {
				if del {
					phases[i].Del = append(phases[i].Del, t)
				} else {
					phases[i].Add = append(phases[i].Add, t)
				}
			}
			if err := sleep(ctx, o.Gap); err != nil {
				return err
			}
		}
		for i, cpu := range c.cpu() {
			if del {
				phases[i].DelCPU = cpu - cpu0[i]
			} else {
				phases[i].AddCPU = cpu - cpu0[i]
			}
		}
	}
	p.give(singles)
	fmt.Fprintf(w, "%d single adds and %d deletes with %d present: done\n", o.Events, o.Events, count)

	cpu0 := c.cpu()
	if err := sleep(ctx, o.Idle); err != nil {
		return err
	}
	for i, cpu := range c.cpu() {
		phases[i].IdleCPU = (cpu - cpu0[i]) * float64(time.Minute) / float64(o.Idle)
	}
	if err := c.alive(); err != nil {
		return err
	}
	for i, n := range c.nodes {
		if phases[i].Mem, err = readMemory(n.PID); err != nil {
			return err
		}
	}

	if o.ProfileDir != "" {
		if err := c.heapProfiles(ctx, o.ProfileDir, count); err != nil {
			return err
		}
		if err := c.profileWeft(ctx, o.ProfileDir, count, "events", o.ProfileFor, func(stop <-chan struct{}) error {
			return c.churn(ctx, p, o.Gap, stop)
		}); err != nil {
			return err
		}
		if err := c.profileWeft(ctx, o.ProfileDir, count, "idle", o.ProfileFor, func(<-chan struct{}) error { return nil }); err != nil {
			return err
		}
		fmt.Fprintf(w, "profiles of the weft agents with %d leases (heap after the idle minute; CPU over %s of single events, then %s idle): %s/%d-*.pprof\n", count, o.ProfileFor, o.ProfileFor, o.ProfileDir, count)
	}

	took, wrote, err = c.converge(ctx, bulk, true, timeout)
	if err != nil {
		return fmt.Errorf("%d leases deleted at once: %w", count, err)
	}
	for i := range c.nodes {
		phases[i].BulkDel = took[i]
	}
	p.give(bulk)
	fmt.Fprintf(w, "%d leases deleted in %d ms; all routes gone: %s\n", count, wrote.Milliseconds(), c.perNode(took))
	return sleep(ctx, settle)
}

// converge writes (or deletes) ls and waits until every node's kernel
// shows it: how long each node took from the start of the write to its
// last route event, and how long the write took.
func (c *cluster) converge(ctx context.Context, ls []synth, del bool, timeout time.Duration) ([]time.Duration, time.Duration, error) {
	dsts := make([]netip.Prefix, len(ls))
	for i, l := range ls {
		dsts[i] = l.Subnet
	}
	exps := make([]*expectation, len(c.nodes))
	for i, n := range c.nodes {
		exps[i] = n.routes.expect(dsts, del)
	}
	t0 := time.Now()
	if err := c.write(ctx, ls, del); err != nil {
		return nil, 0, err
	}
	wrote := time.Since(t0)
	took := make([]time.Duration, len(c.nodes))
	var errs []error
	for i, n := range c.nodes {
		last, err := n.routes.wait(ctx, exps[i], timeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", n.Name, n.label(), err))
			continue
		}
		took[i] = last.Sub(t0)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, 0, errors.Join(err, c.alive())
	}
	return took, wrote, nil
}

// cpu is each node's agent's CPU time so far, in seconds.
func (c *cluster) cpu() []float64 {
	out := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = process.CPUSeconds(n.PID)
	}
	return out
}

func (c *cluster) perNode(ds []time.Duration) string {
	var parts []string
	for i, n := range c.nodes {
		parts = append(parts, fmt.Sprintf("%s %s %d ms", n.Name, n.label(), ds[i].Milliseconds()))
	}
	return strings.Join(parts, ", ")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
