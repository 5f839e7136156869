package lab

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

	"github.com/weftnet/weft/internal/netns"
)

// BenchResult is one data path's figures, pod to pod across two nodes.
type BenchResult struct {
	Mode      string  `json:"mode"`
	Gbps1     float64 `json:"tcp1Gbps"`      // single TCP stream
	Gbps4     float64 `json:"tcp4Gbps"`      // four TCP streams
	RRPerSec  float64 `json:"rrPerSec"`      // 1-byte request/response transactions per second
	P50us     float64 `json:"rrP50us"`       // their latency
	P99us     float64 `json:"rrP99us"`       //
	CPUPerGB  float64 `json:"cpuSecPerGB"`   // the machine's busy CPU seconds per GB carried, single stream
	StealPct  float64 `json:"stealPct"`      // share of the machine's CPU time the host took meanwhile
	AgentCPU  float64 `json:"agentCPUs"`     // CPU seconds of both agents during the runs
	AgentRSS  float64 `json:"agentRSSMiB"`   // largest resident set of an agent
	AgentPeak float64 `json:"agentPeakMiB"`  // largest VmHWM of an agent
	Seconds   float64 `json:"secondsPerRun"` //
}

// bench measures each mode in turn, in one run, and prints a table with
// every figure also as a ratio to kernel vxlan. With more than one round it
// measures every mode once per round, prints each round, and then the
// median of each figure over the rounds: a shared machine's noise comes
// and goes, and rounds that interleave the modes meet it alike.
func bench(ctx context.Context, name string, modes []string, secs, rounds int, w io.Writer) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return errors.New("weft lab bench needs iperf3 (apt-get install iperf3)")
	}
	if rounds < 1 {
		return errors.New("--rounds must be at least 1")
	}
	all := make([][]BenchResult, len(modes)) // by mode, then round
	for round := range rounds {
		var results []BenchResult
		for i, mode := range modes {
			fmt.Fprintf(w, "measuring %s ...\n", mode)
			var r BenchResult
			var err error
			if mode == "veth" {
				r, err = benchVeth(ctx, name, secs)
			} else {
				r, err = benchLab(ctx, name, mode, secs)
			}
			if err != nil {
				return fmt.Errorf("bench %s: %w", mode, err)
			}
			results = append(results, r)
			all[i] = append(all[i], r)
		}
		if rounds > 1 {
			fmt.Fprintf(w, "round %d of %d:\n", round+1, rounds)
		}
		printBench(w, results)
	}
	if rounds > 1 {
		var med []BenchResult
		for _, rs := range all {
			med = append(med, medianResult(rs))
		}
		fmt.Fprintf(w, "median of %d rounds:\n", rounds)
		printBench(w, med)
	}
	return nil
}

// medianResult is the median of each figure over rounds of one mode.
func medianResult(rs []BenchResult) BenchResult {
	m := rs[0]
	med := func(f func(BenchResult) float64) float64 {
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
	m.Gbps1 = med(func(r BenchResult) float64 { return r.Gbps1 })
	m.CPUPerGB = med(func(r BenchResult) float64 { return r.CPUPerGB })
	m.StealPct = med(func(r BenchResult) float64 { return r.StealPct })
	m.Gbps4 = med(func(r BenchResult) float64 { return r.Gbps4 })
	m.RRPerSec = med(func(r BenchResult) float64 { return r.RRPerSec })
	m.P50us = med(func(r BenchResult) float64 { return r.P50us })
	m.P99us = med(func(r BenchResult) float64 { return r.P99us })
	m.AgentCPU = med(func(r BenchResult) float64 { return r.AgentCPU })
	m.AgentRSS = med(func(r BenchResult) float64 { return r.AgentRSS })
	m.AgentPeak = med(func(r BenchResult) float64 { return r.AgentPeak })
	return m
}

func benchLab(ctx context.Context, name, backend string, secs int) (BenchResult, error) {
	r := BenchResult{Mode: backend, Seconds: float64(secs)}
	unlock, err := lock(name)
	if err != nil {
		return r, err
	}
	defer unlock()
	if _, err := load(name); err == nil {
		return r, fmt.Errorf("lab %s is up; bench needs its name free (--name)", name)
	}
	var sink strings.Builder
	err = up(ctx, Spec{Name: name, Nodes: 2, PodsPerNode: 1, Backend: backend, Topology: "l2"}, &sink)
	s, lerr := load(name)
	if lerr == nil {
		defer s.down(io.Discard)
	}
	if err != nil {
		// A failed check comes back as ExitError: say why, not just "exit 1".
		return r, fmt.Errorf("the %s lab did not come up cleanly (%v):\n%s", backend, err, sink.String())
	}
	src, dst := s.Pods[0], s.Pods[1]
	cpu0 := agentsCPU(s)
	if err := measure(ctx, &r, src.NS, dst.NS, dst.Addr, secs); err != nil {
		return r, err
	}
	r.AgentCPU = agentsCPU(s) - cpu0
	for _, n := range s.Nodes {
		rss, hwm := memory(n.PID)
		r.AgentRSS, r.AgentPeak = max(r.AgentRSS, rss), max(r.AgentPeak, hwm)
	}
	return r, nil
}

// benchVeth is the machine's limit: two namespaces joined by one veth.
func benchVeth(ctx context.Context, name string, secs int) (BenchResult, error) {
	r := BenchResult{Mode: "veth", Seconds: float64(secs)}
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
			err = h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)})
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
func measure(ctx context.Context, r *BenchResult, src, dst string, ip netip.Addr, secs int) error {
	var err error
	before := readCPU()
	if r.Gbps1, err = iperf(ctx, src, dst, ip, secs, 1); err != nil {
		return err
	}
	after := readCPU()
	if gb := r.Gbps1 * float64(secs) / 8; gb > 0 {
		r.CPUPerGB = (after.busy - before.busy) / gb
	}
	if total := after.total - before.total; total > 0 {
		r.StealPct = 100 * (after.steal - before.steal) / total
	}
	if r.Gbps4, err = iperf(ctx, src, dst, ip, secs, 4); err != nil {
		return err
	}
	r.RRPerSec, r.P50us, r.P99us, err = requestResponse(src, dst, ip, time.Duration(secs)*time.Second)
	return err
}

func iperf(ctx context.Context, src, dst string, ip netip.Addr, secs, streams int) (float64, error) {
	srv := netns.Command(dst, "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for try := 0; try < 20; try++ { // until the server listens
		time.Sleep(100 * time.Millisecond)
		out, err = netns.Command(src, "iperf3", "-c", ip.String(), "-p", "5201", "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J").Output()
		if err == nil || !strings.Contains(string(out), "unable to connect") {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w: %s", err, out)
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

// requestResponse sends 1-byte requests over one TCP connection and waits
// for each 1-byte answer, for d; it returns transactions per second and the
// p50 and p99 latency in microseconds.
func requestResponse(src, dst string, ip netip.Addr, d time.Duration) (float64, float64, float64, error) {
	var ln net.Listener
	if err := netns.Do(dst, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":5202")
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
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(ip, 5202).String(), 3*time.Second)
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

// agentsCPU sums the CPU seconds (user and system) of the lab's agents.
func agentsCPU(s *State) float64 {
	total := 0.0
	for _, n := range s.Nodes {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(n.PID) + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 13 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			total += (ut + st) / 100 // USER_HZ
		}
	}
	return total
}

// memory returns a process's VmRSS and VmHWM in MiB.
func memory(pid int) (rss, hwm float64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

func printBench(w io.Writer, rs []BenchResult) {
	var ref *BenchResult
	for i := range rs {
		if rs[i].Mode == "vxlan" {
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
	fmt.Fprintln(tw, "mode\tTCP 1 stream Gbit/s\tCPU s/GB\tTCP 4 streams Gbit/s\tRR/s\tRR p50 µs\tRR p99 µs\tagents CPU s\tagent RSS MiB\tagent peak MiB\t")
	var steal []string
	for _, r := range rs {
		var g1, cg, g4, rr, p50, p99 string
		if ref != nil {
			g1, cg, g4, rr, p50, p99 = ratio(r.Gbps1, ref.Gbps1), ratio(r.CPUPerGB, ref.CPUPerGB), ratio(r.Gbps4, ref.Gbps4), ratio(r.RRPerSec, ref.RRPerSec), ratio(r.P50us, ref.P50us), ratio(r.P99us, ref.P99us)
		}
		steal = append(steal, fmt.Sprintf("%s %.0f%%", r.Mode, r.StealPct))
		cpu, rss, hwm := "-", "-", "-"
		if r.Mode != "veth" {
			cpu, rss, hwm = fmt.Sprintf("%.1f", r.AgentCPU), fmt.Sprintf("%.1f", r.AgentRSS), fmt.Sprintf("%.1f", r.AgentPeak)
		}
		fmt.Fprintf(tw, "%s\t%.2f%s\t%.2f%s\t%.2f%s\t%.0f%s\t%.0f%s\t%.0f%s\t%s\t%s\t%s\t\n", r.Mode,
			r.Gbps1, g1, r.CPUPerGB, cg, r.Gbps4, g4, r.RRPerSec, rr, r.P50us, p50, r.P99us, p99, cpu, rss, hwm)
	}
	tw.Flush()
	fmt.Fprintln(w, "ratios are to kernel vxlan in the same run; pod to pod across two nodes of a 2-node l2 lab")
	fmt.Fprintln(w, "CPU s/GB: the machine's busy CPU seconds per GB carried by the single stream (lower is better; it holds when the host steals time)")
	fmt.Fprintln(w, "host steal during the single-stream runs: "+strings.Join(steal, ", "))
}
