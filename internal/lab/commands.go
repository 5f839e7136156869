package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/weftnet/weft/internal/lab/check"
)

// open loads lab name, holding its lock when change is set (commands that
// change the lab take it; status, check, exec and ping only read the
// state, and must run while the others do: a ping across an agent
// restart). release releases the lock.
func open(name string, change bool) (s *State, release func(), err error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	release = func() {}
	if change {
		if release, err = lock(name); err != nil {
			return nil, nil, err
		}
	}
	s, err = load(name)
	if errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("lab %s is not up: start it with 'weft lab up --name %s'", name, name)
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return s, release, nil
}

// Down removes lab name and everything it created; a lab that is not up
// is reported, not an error.
func Down(name string, w io.Writer) error {
	if err := checkName(name); err != nil {
		return err
	}
	unlock, err := lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := load(name)
	if errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(lockPath(name)) // taken just above
		fmt.Fprintf(w, "lab %s: nothing to remove\n", name)
		return nil
	}
	if err != nil {
		return err
	}
	return s.down(w)
}

// Status prints the lab's nodes, agents and pods, as a table or JSON.
func Status(name string, asJSON bool, w io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	st := s.status()
	if asJSON {
		return writeJSON(w, st)
	}
	st.print(w)
	return nil
}

// Check runs the connectivity matrix and prints it, as a table or JSON;
// ExitError 1 if any probe failed. In a lab whose API server holds
// NetworkPolicies, the matrix is every pod pair, port and protocol,
// compared with what the policies allow (policyCheck).
func Check(ctx context.Context, name string, asJSON bool, w io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	prep, ok, err := s.policyCheck(ctx)
	if err != nil && !asJSON {
		// The check of the data path still runs: an API server down is
		// something tests do on purpose.
		fmt.Fprintf(w, "no NetworkPolicy check: %v\n", err)
	}
	if ok {
		if asJSON {
			if err := writeJSON(w, prep); err != nil {
				return err
			}
		} else {
			prep.Print(w, s.podNames())
		}
		if prep.Failed > 0 {
			return ExitError(1)
		}
		return nil
	}
	rep, err := s.check(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(w, rep); err != nil {
			return err
		}
	} else {
		rep.PrintMatrix(w, s.podNames())
	}
	if rep.Failed > 0 {
		return ExitError(1)
	}
	return nil
}

// Exec runs argv inside one of the lab's namespaces (ctl, ext, underlay,
// a node or a pod), with its exit status as an ExitError. On a node of a
// wireguard lab it runs in a private mount namespace where the node's
// socket directory is /var/run/wireguard: `wg show` reads that node's
// devices.
func Exec(name, target string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	ns, err := s.target(target)
	if err != nil {
		return err
	}
	c := s.execCommand(target, ns, argv)
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
	if err := c.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ExitError(ee.ExitCode())
		}
		return err
	}
	return nil
}

// PingOptions say what `lab ping` sends.
type PingOptions struct {
	From, To string // a pod; a pod, node or host
	IPv6     bool   // ping To's IPv6 address (ICMPv6), not its first
	Count    int
	Interval time.Duration
}

// Ping pings o.To from o.From and prints the summary; ExitError 1 if any
// reply was lost.
func Ping(ctx context.Context, name string, o PingOptions, w io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	from, err := s.target(o.From)
	if err != nil {
		return err
	}
	to, err := s.addrOf(o.To, o.IPv6)
	if err != nil {
		return err
	}
	st, err := check.Ping(ctx, from, to, o.Count, o.Interval)
	st.From, st.To = o.From, o.To
	if err != nil {
		return err
	}
	fmt.Fprintln(w, st)
	if st.Received < st.Sent {
		return ExitError(1)
	}
	return nil
}

// AgentOptions say what `lab agent` does to a node's agent.
type AgentOptions struct {
	Action   string // stop, start, restart or switch
	Node     string
	To       string // switch: process.Weft or process.Flannel
	Flanneld string // its binary, if not the lab's or beside weft
	// BGPPeers (start, restart) replace the node's --bgp-peer values
	// from now on; "router" stands for the lab's (alone: back to them).
	BGPPeers []string
}

// Agent stops, starts, restarts or switches a node's agent.
func Agent(ctx context.Context, name string, o AgentOptions, w io.Writer) error {
	s, done, err := open(name, true)
	if err != nil {
		return err
	}
	defer done()
	n, err := s.node(o.Node)
	if err != nil {
		return err
	}
	if len(o.BGPPeers) > 0 && o.Action != "start" && o.Action != "restart" {
		return errors.New("--bgp-peer goes with start or restart")
	}
	if err := s.setPeers(n, o.BGPPeers); err != nil {
		return err
	}
	switch o.Action {
	case "stop":
		return s.stopAgent(n)
	case "start":
		if err := s.startAgent(n); err != nil {
			return err
		}
		return s.waitReady(ctx, n, 30*time.Second, -1)
	case "restart":
		return s.replaceAgent(ctx, n, n.Agent)
	case "switch":
		// The migration step: the other agent on the same node, store,
		// subnet file and kernel state.
		if err := s.checkAgentKind(o.To, o.Flanneld); err != nil {
			return err
		}
		if err := s.replaceAgent(ctx, n, o.To); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s now runs %s (pid %d)\n", n.Name, n.Agent, n.PID)
		return nil
	}
	return fmt.Errorf("weft lab agent: unknown action %q (stop, start, restart)", o.Action)
}

// check runs the connectivity matrix over the lab's pods and ext.
func (s *State) check(ctx context.Context) (*check.Report, error) {
	var pods []check.Endpoint
	for _, p := range s.Pods {
		e := check.Endpoint{Name: p.Display(), NS: p.NS, Addrs: p.AllAddrs()}
		if n, err := s.node(p.Node); err == nil {
			e.Node = n.Addrs()
		}
		pods = append(pods, e)
	}
	// With BGP the router routes ext's network to the pods: ext sees
	// them by their own addresses and reaches them.
	ext := check.Endpoint{Name: s.Ext.Name, NS: s.Ext.NS, Addrs: s.Ext.Addrs(), Routed: s.Router != nil}
	rep, err := check.Run(ctx, pods, ext, s.cniCheck)
	if rep != nil {
		rep.Lab = s.Name
	}
	return rep, err
}

// cniCheck runs CNI CHECK for pod name on its node.
func (s *State) cniCheck(ctx context.Context, name string) error {
	for _, p := range s.Pods {
		if p.Display() != name {
			continue
		}
		n, err := s.node(p.Node)
		if err != nil {
			return err
		}
		return n.runtime().Check(ctx, p)
	}
	return fmt.Errorf("lab %s has no pod %q", s.Name, name)
}

func (s *State) podNames() []string {
	var names []string
	for _, p := range s.Pods {
		names = append(names, p.Display())
	}
	return names
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
