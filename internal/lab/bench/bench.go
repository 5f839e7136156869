// Package bench measures a lab's data paths pod to pod across two nodes:
// TCP throughput (one and four streams), the machine's CPU time per GB
// carried, request/response rate and latency, and the agents' CPU and
// memory, for each backend and for a bare veth pair as the machine's limit.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// Result is one data path's figures, pod to pod across two nodes.
type Result struct {
	Mode      string  `json:"mode"`
	Gbps1     float64 `json:"tcp1Gbps"`      // single TCP stream
	Gbps4     float64 `json:"tcp4Gbps"`      // four TCP streams
	RRPerSec  float64 `json:"rrPerSec"`      // 1-byte request/response transactions per second
	P50us     float64 `json:"rrP50us"`       // their latency
	P99us     float64 `json:"rrP99us"`       //
	UDPGbps   float64 `json:"udpRecvGbps"`   // a UDP flood (1400-byte datagrams, unlimited rate): what the receiver got
	UDPLoss   float64 `json:"udpLossPct"`    // and the share of datagrams lost
	CPUPerGB  float64 `json:"cpuSecPerGB"`   // the machine's busy CPU seconds per GB carried, single stream
	StealPct  float64 `json:"stealPct"`      // share of the machine's CPU time the host took meanwhile
	AgentCPU  float64 `json:"agentCPUs"`     // CPU seconds of both agents during the runs
	AgentRSS  float64 `json:"agentRSSMiB"`   // largest resident set of an agent
	AgentPeak float64 `json:"agentPeakMiB"`  // largest VmHWM of an agent
	Seconds   float64 `json:"secondsPerRun"` //
}

// Pair is a 2-node lab with one pod on each node, up for one mode.
type Pair struct {
	SrcNS, DstNS string     // the pods' namespaces
	Dst          netip.Addr // the destination pod's address
	Agents       []int      // the agents' PIDs
}

// UpFunc brings up a 2-node, 1-pod-per-node lab on backend and returns it
// with a function that removes it.
type UpFunc func(ctx context.Context, backend string) (Pair, func(), error)

// Options say what to measure.
type Options struct {
	Name    string   // prefix of the namespaces of the veth measurement
	Modes   []string // "veth" or a backend type
	Seconds int      // per measurement
	Rounds  int      // measure every mode this many times, then print the medians
	// Reference is the mode every figure is also shown as a ratio to.
	Reference string
	// Targets hold a mode's figures against another mode's of the same
	// run; each is printed under the table when both modes ran.
	Targets []Target
}

// Target is what one mode's figures should be as ratios to another's of
// the same run: wireguard's to udp's (the same TUN path plus encryption),
// the udp kernel path's to kernel VXLAN's.
type Target struct {
	Mode, Base string
	// MinThroughput is the least ratio of each TCP throughput (1 and 4
	// streams); MaxCPUPerGB the largest ratio of CPU s/GB (0: none).
	MinThroughput, MaxCPUPerGB float64
	// Single: MinThroughput holds for the single stream only.
	Single bool
	// MinUDP is the least ratio of the UDP flood's received rate, with a
	// loss no larger than Base's (0: none); MaxP50 the largest ratio of
	// the RR p50 latency (0: none).
	MinUDP, MaxP50 float64
}

// Ratios are Mode's figures as ratios to Base's.
type Ratios struct {
	Gbps1, Gbps4, CPUPerGB, P50us, P99us, UDPGbps float64
	// LossNoWorse: Mode's UDP loss is at most Base's.
	LossNoWorse bool
}

// ratios compares r with base; a base figure of 0 gives a ratio of 0.
func ratios(r, base Result) Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return Ratios{Gbps1: div(r.Gbps1, base.Gbps1), Gbps4: div(r.Gbps4, base.Gbps4), CPUPerGB: div(r.CPUPerGB, base.CPUPerGB),
		P50us: div(r.P50us, base.P50us), P99us: div(r.P99us, base.P99us), UDPGbps: div(r.UDPGbps, base.UDPGbps),
		LossNoWorse: r.UDPLoss <= base.UDPLoss}
}

// Met reports which of t's bounds x meets: throughput (both stream
// counts) and CPU per GB.
func (t Target) Met(x Ratios) (throughput, cpu bool) {
	return x.Gbps1 >= t.MinThroughput && (t.Single || x.Gbps4 >= t.MinThroughput), x.CPUPerGB > 0 && x.CPUPerGB <= t.MaxCPUPerGB
}

// MetUDP reports whether x meets t's UDP flood and RR p50 bounds.
func (t Target) MetUDP(x Ratios) (udp, p50 bool) {
	return x.UDPGbps >= t.MinUDP && x.LossNoWorse, x.P50us > 0 && x.P50us <= t.MaxP50
}

// printTargets writes one line per target whose two modes are in rs.
func printTargets(w io.Writer, rs []Result, targets []Target) {
	find := func(mode string) *Result {
		for i := range rs {
			if rs[i].Mode == mode {
				return &rs[i]
			}
		}
		return nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, t := range targets {
		r, base := find(t.Mode), find(t.Base)
		if r == nil || base == nil {
			continue
		}
		x := ratios(*r, *base)
		tp, cpu := t.Met(x)
		if t.MinUDP > 0 {
			udp, p50 := t.MetUDP(x)
			fmt.Fprintf(w, "%s / %s in this run: TCP 1 stream %.2fx (target >= %.2fx: %s), 4 streams %.2fx; UDP flood received %.2fx, loss %.1f%% vs %.1f%% (target >= %.2fx and no more loss: %s); RR p50 %.2fx (target <= %.2fx: %s), p99 %.2fx; CPU s/GB %.2fx\n",
				t.Mode, t.Base, x.Gbps1, t.MinThroughput, verdict(x.Gbps1 >= t.MinThroughput), x.Gbps4, x.UDPGbps, r.UDPLoss, base.UDPLoss, t.MinUDP, verdict(udp), x.P50us, t.MaxP50, verdict(p50), x.P99us, x.CPUPerGB)
			continue
		}
		fmt.Fprintf(w, "%s / %s in this run: TCP 1 stream %.2fx, 4 streams %.2fx (target >= %.2fx: %s); CPU s/GB %.2fx (target <= %.2fx: %s); RR p50 %.2fx, p99 %.2fx\n",
			t.Mode, t.Base, x.Gbps1, x.Gbps4, t.MinThroughput, verdict(tp), x.CPUPerGB, t.MaxCPUPerGB, verdict(cpu), x.P50us, x.P99us)
	}
}

// Run measures each mode in turn and prints a table with every figure also
// as a ratio to the reference mode. With more than one round it measures
// every mode once per round, prints each round, and then the median of
// each figure over the rounds: a shared machine's noise comes and goes,
// and rounds that interleave the modes meet it alike.
func Run(ctx context.Context, o Options, up UpFunc, w io.Writer) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return errors.New("weft lab bench needs iperf3 (apt-get install iperf3)")
	}
	if o.Rounds < 1 {
		return errors.New("--rounds must be at least 1")
	}
	all := make([][]Result, len(o.Modes)) // by mode, then round
	for round := range o.Rounds {
		var results []Result
		for i, mode := range o.Modes {
			fmt.Fprintf(w, "measuring %s ...\n", mode)
			r, err := o.measureMode(ctx, mode, up)
			if err != nil {
				return fmt.Errorf("bench %s: %w", mode, err)
			}
			results = append(results, r)
			all[i] = append(all[i], r)
		}
		if o.Rounds > 1 {
			fmt.Fprintf(w, "round %d of %d:\n", round+1, o.Rounds)
		}
		printBench(w, results, o.Reference)
		printTargets(w, results, o.Targets)
	}
	if o.Rounds > 1 {
		var med []Result
		for _, rs := range all {
			med = append(med, medianResult(rs))
		}
		fmt.Fprintf(w, "median of %d rounds:\n", o.Rounds)
		printBench(w, med, o.Reference)
		printTargets(w, med, o.Targets)
	}
	return nil
}

// Veth is the mode of the bare veth pair.
const Veth = "veth"

func (o Options) measureMode(ctx context.Context, mode string, up UpFunc) (Result, error) {
	if mode == Veth {
		return benchVeth(ctx, o.Name, o.Seconds)
	}
	return benchLab(ctx, mode, o.Seconds, up)
}

// medianResult is the median of each figure over rounds of one mode.
func medianResult(rs []Result) Result {
	m := rs[0]
	med := func(f func(Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	m.Gbps1 = med(func(r Result) float64 { return r.Gbps1 })
	m.CPUPerGB = med(func(r Result) float64 { return r.CPUPerGB })
	m.StealPct = med(func(r Result) float64 { return r.StealPct })
	m.Gbps4 = med(func(r Result) float64 { return r.Gbps4 })
	m.RRPerSec = med(func(r Result) float64 { return r.RRPerSec })
	m.P50us = med(func(r Result) float64 { return r.P50us })
	m.P99us = med(func(r Result) float64 { return r.P99us })
	m.UDPGbps = med(func(r Result) float64 { return r.UDPGbps })
	m.UDPLoss = med(func(r Result) float64 { return r.UDPLoss })
	m.AgentCPU = med(func(r Result) float64 { return r.AgentCPU })
	m.AgentRSS = med(func(r Result) float64 { return r.AgentRSS })
	m.AgentPeak = med(func(r Result) float64 { return r.AgentPeak })
	return m
}

func benchLab(ctx context.Context, backend string, secs int, up UpFunc) (Result, error) {
	r := Result{Mode: backend, Seconds: float64(secs)}
	p, down, err := up(ctx, backend)
	if err != nil {
		return r, err
	}
	defer down()
	cpu0 := agentsCPU(p.Agents)
	if err := measure(ctx, &r, p.SrcNS, p.DstNS, p.Dst, secs); err != nil {
		return r, err
	}
	r.AgentCPU = agentsCPU(p.Agents) - cpu0
	for _, pid := range p.Agents {
		rss, hwm := process.Memory(pid)
		r.AgentRSS, r.AgentPeak = max(r.AgentRSS, rss), max(r.AgentPeak, hwm)
	}
	return r, nil
}

// benchVeth is the machine's limit: two namespaces joined by one veth.
func benchVeth(ctx context.Context, name string, secs int) (Result, error) {
	r := Result{Mode: "veth", Seconds: float64(secs)}
	a, b := name+"-va", name+"-vb"
	for _, ns := range []string{a, b} {
		if netns.Exists(ns) {
			return r, fmt.Errorf("namespace %s exists", ns)
		}
		if err := netns.Create(ns); err != nil {
			return r, err
		}
		defer netns.Delete(ns)
	}
	ha, err := netns.Handle(a)
	if err != nil {
		return r, err
	}
	defer ha.Close()
	fd, err := netns.Fd(b)
	if err != nil {
		return r, err
	}
	defer fd.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd))}); err != nil {
		return r, fmt.Errorf("veth: %w", err)
	}
	addrs := map[string]netip.Prefix{a: netip.MustParsePrefix("203.0.113.1/24"), b: netip.MustParsePrefix("203.0.113.2/24")}
	for ns, p := range addrs {
		h, err := netns.Handle(ns)
		if err != nil {
			return r, err
		}
		l, err := h.LinkByName("eth0")
		if err == nil {
			err = h.AddrAdd(l, &netlink.Addr{IPNet: netconv.IPNet(p)})
		}
		if err == nil {
			err = h.LinkSetUp(l)
		}
		h.Close()
		if err != nil {
			return r, err
		}
	}
	return r, measure(ctx, &r, a, b, addrs[b].Addr(), secs)
}

// measure runs iperf3 (1 and 4 streams) and the request/response test
// from namespace src to dst.
func measure(ctx context.Context, r *Result, src, dst string, ip netip.Addr, secs int) error {
	var err error
	before := readCPU()
	if r.Gbps1, err = Iperf(ctx, src, dst, ip, 5201, secs, 1); err != nil {
		return err
	}
	after := readCPU()
	if gb := r.Gbps1 * float64(secs) / 8; gb > 0 {
		r.CPUPerGB = (after.busy - before.busy) / gb
	}
	if total := after.total - before.total; total > 0 {
		r.StealPct = 100 * (after.steal - before.steal) / total
	}
	if r.Gbps4, err = Iperf(ctx, src, dst, ip, 5201, secs, 4); err != nil {
		return err
	}
	r.RRPerSec, r.P50us, r.P99us, err = RequestResponse(src, dst, ip, 5202, time.Duration(secs)*time.Second)
	if err != nil {
		return err
	}
	r.UDPGbps, r.UDPLoss, err = UDPFlood(ctx, src, dst, ip, 5201, secs)
	return err
}

// UDPFlood runs iperf3's server in namespace dst on port and a UDP client
// in src that sends 1400-byte datagrams as fast as it can for secs
// seconds; it returns what the receiver got, in Gbit/s, and the share of
// datagrams lost, in percent.
func UDPFlood(ctx context.Context, src, dst string, ip netip.Addr, port, secs int) (float64, float64, error) {
	out, err := iperf3(src, dst, ip, port, "-t", strconv.Itoa(secs), "-u", "-b", "0", "-l", "1400")
	if err != nil {
		return 0, 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				LostPercent   float64 `json:"lost_percent"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, res.End.SumReceived.LostPercent, nil
}

// Iperf runs iperf3's server in namespace dst on port and its client in
// src for secs seconds with streams streams, and returns the receiver's
// Gbit/s.
func Iperf(ctx context.Context, src, dst string, ip netip.Addr, port, secs, streams int) (float64, error) {
	out, err := iperf3(src, dst, ip, port, "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams))
	if err != nil {
		return 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

// iperf3 runs iperf3's server in namespace dst on port, once, and its
// client in src towards ip with args, and returns the client's JSON report.
func iperf3(src, dst string, ip netip.Addr, port int, args ...string) ([]byte, error) {
	srv := netns.Command(dst, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for try := 0; try < 20; try++ { // until the server listens
		time.Sleep(100 * time.Millisecond)
		out, err = netns.Command(src, append([]string{"iperf3", "-c", ip.String(), "-p", strconv.Itoa(port), "-J"}, args...)...).Output()
		if err == nil || !strings.Contains(string(out), "unable to connect") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("iperf3: %w: %s", err, out)
	}
	return out, nil
}

// RequestResponse sends 1-byte requests over one TCP connection from
// namespace src to a server in dst on port, and waits for each 1-byte
// answer, for d; it returns transactions per second and the p50 and p99
// latency in microseconds.
func RequestResponse(src, dst string, ip netip.Addr, port int, d time.Duration) (float64, float64, float64, error) {
	var ln net.Listener
	if err := netns.Do(dst, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		return 0, 0, 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		for {
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	if err := netns.Do(src, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(ip, uint16(port)).String(), 3*time.Second)
		return err
	}); err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	lat := make([]time.Duration, 0, 1<<16)
	b := []byte{1}
	start := time.Now()
	for time.Since(start) < d {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, 0, 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, 0, 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e3 }
	return float64(len(lat)) / time.Since(start).Seconds(), us(0.50), us(0.99), nil
}

// cpuTimes are the machine's CPU seconds from /proc/stat: busy (user,
// nice, system, irq, softirq), stolen by the host, and all of them.
type cpuTimes struct{ busy, steal, total float64 }

// readCPU reads /proc/stat's first line. Busy time per GB carried is the
// efficiency of a data path, and unlike throughput it holds when the host
// takes CPU time from this machine (steal), as a shared VM's host does.
func readCPU() cpuTimes {
	var t cpuTimes
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return t
	}
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		x, _ := strconv.ParseFloat(v, 64)
		x /= 100 // USER_HZ
		t.total += x
		switch i {
		case 0, 1, 2, 5, 6:
			t.busy += x
		case 7:
			t.steal += x
		}
	}
	return t
}

// agentsCPU sums the CPU seconds (user and system) of the agents.
func agentsCPU(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		total += process.CPUSeconds(pid)
	}
	return total
}

func printBench(w io.Writer, rs []Result, reference string) {
	var ref *Result
	for i := range rs {
		if rs[i].Mode == reference {
			ref = &rs[i]
		}
	}
	ratio := func(v, r float64) string {
		if ref == nil || r == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.2fx)", v/r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tTCP 1 stream Gbit/s\tCPU s/GB\tTCP 4 streams Gbit/s\tRR/s\tRR p50 µs\tRR p99 µs\tUDP flood recv Gbit/s\tUDP loss %\tagents CPU s\tagent RSS MiB\tagent peak MiB\t")
	var steal []string
	for _, r := range rs {
		var g1, cg, g4, rr, p50, p99, ug string
		if ref != nil {
			g1, cg, g4, rr, p50, p99 = ratio(r.Gbps1, ref.Gbps1), ratio(r.CPUPerGB, ref.CPUPerGB), ratio(r.Gbps4, ref.Gbps4), ratio(r.RRPerSec, ref.RRPerSec), ratio(r.P50us, ref.P50us), ratio(r.P99us, ref.P99us)
			ug = ratio(r.UDPGbps, ref.UDPGbps)
		}
		steal = append(steal, fmt.Sprintf("%s %.0f%%", r.Mode, r.StealPct))
		cpu, rss, hwm := "-", "-", "-"
		if r.Mode != Veth {
			cpu, rss, hwm = fmt.Sprintf("%.1f", r.AgentCPU), fmt.Sprintf("%.1f", r.AgentRSS), fmt.Sprintf("%.1f", r.AgentPeak)
		}
		fmt.Fprintf(tw, "%s\t%.2f%s\t%.2f%s\t%.2f%s\t%.0f%s\t%.0f%s\t%.0f%s\t%.2f%s\t%.1f\t%s\t%s\t%s\t\n", r.Mode,
			r.Gbps1, g1, r.CPUPerGB, cg, r.Gbps4, g4, r.RRPerSec, rr, r.P50us, p50, r.P99us, p99, r.UDPGbps, ug, r.UDPLoss, cpu, rss, hwm)
	}
	tw.Flush()
	fmt.Fprintf(w, "ratios are to kernel %s in the same run; pod to pod across two nodes of a 2-node l2 lab\n", reference)
	fmt.Fprintln(w, "CPU s/GB: the machine's busy CPU seconds per GB carried by the single stream (lower is better; it holds when the host steals time)")
	fmt.Fprintln(w, "host steal during the single-stream runs: "+strings.Join(steal, ", "))
}
