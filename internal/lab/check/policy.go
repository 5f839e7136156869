package check

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/lab/pod"
)

// Target is a pod in a policy check: where it is and the ports it serves.
type Target struct {
	Name  string     `json:"name"` // as the lab shows it: n1-p1, x/a
	NS    string     `json:"netns"`
	Addr  netip.Addr `json:"addr"`
	Ports []pod.Port `json:"ports"`
	// Answer is what its servers answer ("" accepts any answer: a server
	// other than the lab's, such as agnhost serve-hostname).
	Answer string `json:"answer,omitempty"`
}

// Probe is one connection of a policy check: from a pod to a port of
// another, what the policies say (Want) and what happened (Got).
type Probe struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Want     bool   `json:"expectAllowed"`
	Got      bool   `json:"connected"`
	Answer   string `json:"answer,omitempty"`
	Err      string `json:"error,omitempty"`
}

// OK reports whether the probe went as the policies say.
func (p Probe) OK() bool { return p.Want == p.Got }

// PolicyReport is the outcome of a policy check.
type PolicyReport struct {
	Lab      string   `json:"lab"`
	Policies []string `json:"policies"` // namespace/name
	Probes   []Probe  `json:"probes"`
	// Skipped are pods left out, with why.
	Skipped []string `json:"skipped,omitempty"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
}

// Expect says whether the policies allow a connection from one target to
// a port of another.
type Expect func(from, to *Target, port Port) bool

// Port is a port a Target serves.
type Port = pod.Port

// PlanPolicy lists the probes of a policy check: from every target to
// every TCP and UDP port of every other target (a pod's traffic to itself
// never leaves it, so no policy enforcement point sees it), with what
// expect says of each.
func PlanPolicy(targets []*Target, expect Expect) []Probe {
	var probes []Probe
	for _, src := range targets {
		for _, dst := range targets {
			if src == dst {
				continue
			}
			for _, p := range dst.Ports {
				if p.Protocol != pod.TCP && p.Protocol != pod.UDP {
					continue // SCTP: this kernel has none
				}
				probes = append(probes, Probe{From: src.Name, To: dst.Name, Port: p.Port, Protocol: p.Protocol, Want: expect(src, dst, p)})
			}
		}
	}
	return probes
}

// RunPolicy runs the probes PlanPolicy lists, 16 at a time, each given
// timeout to connect and be answered; a probe is connected when the
// destination's server answered (with its Answer, if it has one).
func RunPolicy(ctx context.Context, targets []*Target, expect Expect, timeout time.Duration) *PolicyReport {
	byName := map[string]*Target{}
	for _, t := range targets {
		byName[t.Name] = t
	}
	probes := PlanPolicy(targets, expect)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				probes[i].Err = ctx.Err().Error()
				return
			}
			defer func() { <-sem }()
			pr := &probes[i]
			dst := byName[pr.To]
			got, err := pod.Ask(byName[pr.From].NS, pr.Protocol, netip.AddrPortFrom(dst.Addr, pr.Port), timeout)
			switch {
			case err != nil:
				pr.Err = err.Error()
			case dst.Answer != "" && got != dst.Answer:
				pr.Answer, pr.Err = got, fmt.Sprintf("answered %q, not %q", got, dst.Answer)
			default:
				pr.Got, pr.Answer = true, got
			}
		}()
	}
	wg.Wait()
	rep := &PolicyReport{Probes: probes}
	for _, p := range probes {
		if p.OK() {
			rep.Passed++
		} else {
			rep.Failed++
		}
	}
	return rep
}

// Print draws, per port and protocol, the matrix the policies imply and
// the one observed (rows are sources, columns destinations; "." allowed
// or connected, "X" denied or not connected, "-" no such probe), then
// lists every difference.
func (r *PolicyReport) Print(w io.Writer, pods []string) {
	fmt.Fprintf(w, "NetworkPolicies: %s\n", strings.Join(r.Policies, ", "))
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "  left out: %s\n", s)
	}
	type pp struct {
		port  uint16
		proto string
	}
	var ports []pp
	cell := map[pp]map[[2]string]Probe{}
	for _, p := range r.Probes {
		k := pp{p.Port, p.Protocol}
		if cell[k] == nil {
			cell[k] = map[[2]string]Probe{}
			ports = append(ports, k)
		}
		cell[k][[2]string{p.From, p.To}] = p
	}
	slices.SortFunc(ports, func(a, b pp) int {
		if a.port != b.port {
			return int(a.port) - int(b.port)
		}
		return strings.Compare(a.proto, b.proto)
	})
	for _, k := range ports {
		for _, observed := range []bool{false, true} {
			title := "expected (the policies, compiled)"
			if observed {
				title = "observed"
			}
			fmt.Fprintf(w, "\n%d/%s %s:\n", k.port, k.proto, title)
			printGrid(w, pods, pods, func(row, c string) string {
				p, ok := cell[k][[2]string{row, c}]
				v := p.Want
				if observed {
					v = p.Got
				}
				switch {
				case !ok:
					return "-"
				case v:
					return "."
				default:
					return "X"
				}
			})
		}
	}
	if r.Failed > 0 {
		fmt.Fprintln(w, "\ndifferences:")
	}
	for _, p := range r.Probes {
		if p.OK() {
			continue
		}
		want, got := "allowed", "connected"
		if !p.Want {
			want = "denied"
		}
		if !p.Got {
			got = "not connected: " + p.Err
		} else {
			got += fmt.Sprintf(" (answer %q)", p.Answer)
		}
		fmt.Fprintf(w, "  %s -> %s %d/%s: expected %s, %s\n", p.From, p.To, p.Port, p.Protocol, want, got)
	}
	fmt.Fprintf(w, "%d probes as the policies say, %d differ\n", r.Passed, r.Failed)
}
