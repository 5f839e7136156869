package bgpbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/internal/lab"
)

// Add is one node added to the BGP lab, with when each thing happened.
type Add struct {
	Node   string
	Subnet netip.Prefix // its lease's IPv4 subnet
	Pod    netip.Addr   // its pod's address, which ext pinged
	Lease  time.Time    // the "leased subnet" line of its agent's log
	Up     time.Time    // its agent's first "BGP session up" line
	Route  time.Time    // the route to Subnet first seen in the router's table
	PodUp  time.Time    // Pod first seen on an interface in the pod's namespace
	Reply  time.Time    // ext's first echo reply from Pod
	Took   time.Duration
}

// ToRoute is the time from the lease to the route at the router.
func (a Add) ToRoute() time.Duration { return a.Route.Sub(a.Lease) }

// ToReply is the time from the lease to ext's first reply from the pod.
func (a Add) ToReply() time.Duration { return a.Reply.Sub(a.Lease) }

// line is a's figures on one line, as each round prints them.
func (a Add) line() string {
	return fmt.Sprintf("%s %s: lease -> BGP session up %s, -> route at the router %s, -> pod addressed %s, -> ext's first reply %s; node add %.1fs",
		a.Node, a.Subnet, ms(a.Up.Sub(a.Lease)), ms(a.ToRoute()), ms(a.PodUp.Sub(a.Lease)), ms(a.ToReply()), a.Took.Seconds())
}

// Memory is the agents' VmRSS and VmHWM in one lab, in MiB, one per
// node, and their BGP speakers' (the weft-bgp child; 0 with BGP off).
type Memory struct {
	Lab                    string
	RSS, HWM               []float64
	SpeakerRSS, SpeakerHWM []float64
}

// sum is xs[i]+ys[i], for each i of xs (ys may be shorter: 0).
func sum(xs, ys []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x
		if i < len(ys) {
			out[i] += ys[i]
		}
	}
	return out
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(max(len(xs), 1))
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// Report is a run's figures.
type Report struct {
	Adds    []Add
	Off, On Memory        // the lab without BGP, the lab with it
	Settle  time.Duration // how long after up the memory was read
}

// Spread is the minimum, median and maximum of durations (the median of
// an even count: the mean of the middle two).
type Spread struct{ Min, Median, Max time.Duration }

func spread(ds []time.Duration) Spread {
	if len(ds) == 0 {
		return Spread{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return Spread{Min: s[0], Median: m, Max: s[len(s)-1]}
}

func (s Spread) String() string {
	return fmt.Sprintf("min %s, median %s, max %s", ms(s.Min), ms(s.Median), ms(s.Max))
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// Print writes the report: the spreads over the node adds, then the
// agents' memory with BGP off and on side by side with the ratio on/off.
func (r Report) Print(w io.Writer) {
	var up, upToRoute, route, reply, podToReply []time.Duration
	for _, a := range r.Adds {
		up = append(up, a.Up.Sub(a.Lease))
		upToRoute = append(upToRoute, a.Route.Sub(a.Up))
		route = append(route, a.ToRoute())
		reply = append(reply, a.ToReply())
		podToReply = append(podToReply, a.Reply.Sub(a.PodUp))
	}
	fmt.Fprintf(w, "over %d node adds (from the \"leased subnet\" line of the new node's agent log):\n", len(r.Adds))
	fmt.Fprintf(w, "  lease -> route at the router:     %s\n", spread(route))
	fmt.Fprintf(w, "    lease -> BGP session up:        %s\n", spread(up))
	fmt.Fprintf(w, "    session up -> route:            %s\n", spread(upToRoute))
	fmt.Fprintf(w, "  lease -> ext's first ping reply:  %s\n", spread(reply))
	fmt.Fprintf(w, "    pod addressed -> that reply:    %s\n", spread(podToReply))
	fmt.Fprintf(w, "\nagents' memory %s after up, %d agents per lab (MiB):\n", r.Settle, len(r.On.RSS))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tBGP off\tBGP on\ton/off\t")
	row := func(name string, off, on float64) {
		ratio := "-"
		if off > 0 {
			ratio = fmt.Sprintf("%.2fx", on/off)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t\n", name, off, on, ratio)
	}
	row("VmRSS mean", mean(r.Off.RSS), mean(r.On.RSS))
	row("VmRSS max", maxOf(r.Off.RSS), maxOf(r.On.RSS))
	row("VmHWM mean", mean(r.Off.HWM), mean(r.On.HWM))
	row("VmHWM max", maxOf(r.Off.HWM), maxOf(r.On.HWM))
	row("speaker VmRSS mean", mean(r.Off.SpeakerRSS), mean(r.On.SpeakerRSS))
	row("agent+speaker VmRSS mean", mean(sum(r.Off.RSS, r.Off.SpeakerRSS)), mean(sum(r.On.RSS, r.On.SpeakerRSS)))
	row("agent+speaker VmHWM max", maxOf(sum(r.Off.HWM, r.Off.SpeakerHWM)), maxOf(sum(r.On.HWM, r.On.SpeakerHWM)))
	tw.Flush()
}

// The lines of the agent's log (internal/agent and internal/bgp, slog's
// text handler) that say when its lease was created, with its IPv4
// subnet, and when a BGP session came up.
var (
	leasedRE    = regexp.MustCompile(`^time=(\S+) level=INFO msg="leased subnet" subnet=(\S+)`)
	sessionUpRE = regexp.MustCompile(`^time=(\S+) level=INFO msg="BGP session up" `)
)

// agentLog is what addNode reads in a new node's agent log.
type agentLog struct {
	Lease  time.Time    // the first "leased subnet" line
	Subnet netip.Prefix // its IPv4 subnet
	Up     time.Time    // the first "BGP session up" line after it
}

// readAgentLog reads the agent log at path.
func readAgentLog(path string) (agentLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return agentLog{}, fmt.Errorf("read agent log: %w", err)
	}
	defer f.Close()
	l, err := parseAgentLog(f)
	if err != nil {
		return agentLog{}, fmt.Errorf("agent log %s: %w", path, err)
	}
	return l, nil
}

func parseAgentLog(r io.Reader) (agentLog, error) {
	var l agentLog
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if m := leasedRE.FindStringSubmatch(sc.Text()); m != nil && l.Lease.IsZero() {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				return agentLog{}, fmt.Errorf("leased subnet line: time %q: %w", m[1], err)
			}
			p, err := netip.ParsePrefix(m[2])
			if err != nil || !p.Addr().Is4() {
				return agentLog{}, fmt.Errorf("leased subnet line: subnet %q is not an IPv4 prefix", m[2])
			}
			l.Lease, l.Subnet = at, p.Masked()
		}
		if m := sessionUpRE.FindStringSubmatch(sc.Text()); m != nil && !l.Lease.IsZero() {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				return agentLog{}, fmt.Errorf("BGP session up line: time %q: %w", m[1], err)
			}
			l.Up = at
			return l, nil
		}
	}
	if err := sc.Err(); err != nil {
		return agentLog{}, err
	}
	if l.Lease.IsZero() {
		return agentLog{}, fmt.Errorf("no %q line", "leased subnet")
	}
	return agentLog{}, fmt.Errorf("no %q line after the lease's", "BGP session up")
}

// parseStatus reads `weft lab status --json`.
func parseStatus(s string) (lab.LabStatus, error) {
	var st lab.LabStatus
	if err := json.NewDecoder(strings.NewReader(s)).Decode(&st); err != nil {
		return lab.LabStatus{}, fmt.Errorf("lab status: %w", err)
	}
	return st, nil
}
