// Package bgpbench measures BGP in the l3 lab (`weft lab bench-bgp`):
// how long after a new node's lease the router's kernel table has the
// route to the node's pod subnet and ext first reaches a pod on it, and
// the agents' memory with BGP on against the same lab without it. Both
// labs come up in one run, one after the other, under names of their
// own, and are removed on the way out, failure or not.
package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
)

// Options say what Run measures.
type Options struct {
	// Name is the base of the two labs' names (at most 6 characters):
	// Name+"on" runs BGP, Name+"of" does not.
	Name    string
	Rounds  int           // nodes added one at a time to the BGP lab, each measured
	Router  string        // router.BIRD or router.FRR
	Nodes   int           // nodes of each lab before the adds
	Settle  time.Duration // how long after up the agents' memory is read
	Backend string        // the data path ("": the lab's default)
	Command string        // the command line, printed in the report
}

// roundTimeout bounds one node add and the waits after it.
const roundTimeout = 100 * time.Second

// Run brings up an l3 lab without BGP and reads its agents' memory, then
// the same lab with BGP, reads theirs, and adds o.Rounds nodes to it one
// at a time, timing each; it prints the report on w.
func Run(ctx context.Context, o Options, w io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if err := router.Find(o.Router); err != nil {
		return err
	}
	fmt.Fprintf(w, "weft lab bench-bgp: %s router, %s, %d-node l3 labs with 1 pod per node; %d nodes added one at a time\n",
		o.Router, o.backend(), o.Nodes, o.Rounds)
	if o.Command != "" {
		fmt.Fprintf(w, "command: %s\n", o.Command)
	}
	var rep Report
	rep.Settle = o.Settle
	err := o.withLab(ctx, o.Name+"of", false, w, func(st lab.LabStatus) error {
		var err error
		rep.Off, err = o.memory(ctx, st.Name)
		return err
	})
	if err != nil {
		return err
	}
	err = o.withLab(ctx, o.Name+"on", true, w, func(st lab.LabStatus) error {
		var err error
		if rep.On, err = o.memory(ctx, st.Name); err != nil {
			return err
		}
		for i := 1; i <= o.Rounds; i++ {
			a, err := addNode(ctx, st.Name)
			if err != nil {
				return fmt.Errorf("round %d: %w", i, err)
			}
			fmt.Fprintf(w, "  round %d: %s\n", i, a.line())
			rep.Adds = append(rep.Adds, a)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(w)
	rep.Print(w)
	return nil
}

func (o Options) validate() error {
	switch {
	case len(o.Name) == 0 || len(o.Name) > 6:
		return fmt.Errorf("bench-bgp: lab name base %q: give 1-6 lower-case letters and digits (the labs add \"on\" and \"of\")", o.Name)
	case o.Rounds < 1:
		return fmt.Errorf("bench-bgp: --rounds %d: give 1 or more", o.Rounds)
	case o.Nodes < 2:
		return fmt.Errorf("bench-bgp: --nodes %d: give 2 or more (one each side of the router)", o.Nodes)
	case !slices.Contains(router.Kinds(), o.Router):
		return fmt.Errorf("bench-bgp: --bgp-router %q: give %s", o.Router, strings.Join(router.Kinds(), " or "))
	}
	return nil
}

func (o Options) backend() string {
	if o.Backend == "" {
		return lab.DefaultBackend
	}
	return o.Backend
}

// withLab brings up lab name (with BGP or not), runs fn on its status
// and removes the lab whatever happens. Up's output is kept and shown
// only when it fails.
func (o Options) withLab(ctx context.Context, name string, bgp bool, w io.Writer, fn func(lab.LabStatus) error) (err error) {
	spec := lab.Spec{Name: name, Nodes: o.Nodes, PodsPerNode: 1, Backend: o.backend(), Topology: topology.L3, BGP: bgp}
	if bgp {
		spec.BGPRouter = o.Router
	}
	var out strings.Builder
	start := time.Now()
	defer func() {
		var down strings.Builder
		if derr := lab.Down(name, &down); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove lab %s: %w\n%s", name, derr, down.String()))
		}
		fmt.Fprintf(w, "lab %s: up and down in %.0fs\n", name, time.Since(start).Seconds())
	}()
	if err := lab.Up(ctx, spec, &out); err != nil {
		return fmt.Errorf("lab %s (bgp %v) did not come up cleanly (%w):\n%s", name, bgp, err, process.Tail(out.String(), 30))
	}
	st, err := status(name)
	if err != nil {
		return err
	}
	return fn(st)
}

// status is `weft lab status --json` of lab name.
func status(name string) (lab.LabStatus, error) {
	var b strings.Builder
	if err := lab.Status(name, true, &b); err != nil {
		return lab.LabStatus{}, fmt.Errorf("status of lab %s: %w", name, err)
	}
	return parseStatus(b.String())
}

// memory waits o.Settle and reads every agent's VmRSS and VmHWM.
func (o Options) memory(ctx context.Context, name string) (Memory, error) {
	select {
	case <-ctx.Done():
		return Memory{}, ctx.Err()
	case <-time.After(o.Settle):
	}
	st, err := status(name)
	if err != nil {
		return Memory{}, err
	}
	m := Memory{Lab: name}
	for _, n := range st.Nodes {
		if !n.Running {
			return Memory{}, fmt.Errorf("lab %s: %s's agent (pid %d) is not running", name, n.Name, n.AgentPID)
		}
		rss, hwm := process.Memory(n.AgentPID)
		if rss == 0 {
			return Memory{}, fmt.Errorf("lab %s: read /proc/%d/status of %s's agent: no VmRSS", name, n.AgentPID, n.Name)
		}
		m.RSS = append(m.RSS, rss)
		m.HWM = append(m.HWM, hwm)
		// With BGP on the speaker is the agent's child, weft-bgp: the
		// node pays for both.
		var srss, shwm float64
		for _, c := range children(n.AgentPID) {
			r, h := process.Memory(c)
			srss, shwm = srss+r, shwm+h
		}
		m.SpeakerRSS = append(m.SpeakerRSS, srss)
		m.SpeakerHWM = append(m.SpeakerHWM, shwm)
	}
	return m, nil
}

// children are the PIDs whose parent is pid (from /proc/PID/stat's
// fourth field).
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "PID (COMM) STATE PPID ...": COMM may hold spaces and
		// parentheses; the fields after its last ')' do not.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// nextNode is the name `lab node add` gives the next node: the first
// free nK.
func nextNode(nodes []lab.NodeStatus) string {
	used := map[string]bool{}
	for _, n := range nodes {
		used[n.Name] = true
	}
	i := 1
	for used["n"+strconv.Itoa(i)] {
		i++
	}
	return "n" + strconv.Itoa(i)
}

// addNode adds one node with one pod to lab name and times it: the
// lease and the first BGP session up from the lines of the node's agent
// log (the agent writes the first as soon as the store has created the
// lease), the route from polling the router's kernel table, the pod's
// address (.2 of the route's subnet) from polling the pod's namespace,
// and ext's first reply from pinging that address every 10 ms.
func addNode(ctx context.Context, name string) (Add, error) {
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	st, err := status(name)
	if err != nil {
		return Add{}, err
	}
	if st.Router == nil {
		return Add{}, fmt.Errorf("lab %s runs no BGP router", name)
	}
	node := nextNode(st.Nodes)
	podNS := name + "-" + node + "-p1" // the lab's pod namespace names
	w, err := watch(ctx, st.Router.NS, st.External.NS, podNS)
	if err != nil {
		return Add{}, err
	}
	defer w.stop()
	var out strings.Builder
	start := time.Now()
	if err := lab.NodeAdd(ctx, name, lab.NodeAddOptions{Pods: 1, Agent: process.Weft}, &out); err != nil {
		return Add{}, fmt.Errorf("node add: %w\n%s", err, out.String())
	}
	a := Add{Node: node, Took: time.Since(start)}
	if st, err = status(name); err != nil {
		return Add{}, err
	}
	var log string
	for _, n := range st.Nodes {
		if n.Name == node {
			log = n.Log
		}
	}
	for _, p := range st.Pods {
		if p.Node == node {
			a.Pod = p.Addr
		}
	}
	if log == "" || !a.Pod.IsValid() {
		return Add{}, fmt.Errorf("lab %s has no node %s with a pod after node add:\n%s", name, node, out.String())
	}
	l, err := readAgentLog(log)
	if err != nil {
		return Add{}, err
	}
	a.Lease, a.Subnet, a.Up = l.Lease, l.Subnet, l.Up
	if a.Pod != firstPod(a.Subnet) {
		return Add{}, fmt.Errorf("%s's pod has %s, not %s: ext pinged the wrong address", node, a.Pod, firstPod(a.Subnet))
	}
	res, err := w.wait(ctx, a.Subnet, 10*time.Second)
	if err != nil {
		return Add{}, fmt.Errorf("%s (%s): %w", node, a.Subnet, err)
	}
	a.Route, a.PodUp, a.Reply = res.route, res.podUp, res.reply
	return a, nil
}

// firstPod is the address the first pod on a fresh subnet gets: the
// one after the bridge's.
func firstPod(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next().Next()
}
