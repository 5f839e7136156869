// Package check probes a lab's data paths: the connectivity matrix (ICMP
// and TCP from every pod to every other pod and to the external host, with
// the source address each destination sees) and a continuous ping. The
// probes run in this process, each socket created inside the source's
// namespace.
package check

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/netns"
)

// probePort is where check's listeners answer inside pods and ext.
const probePort = 7777

// Endpoint is something check connects to: a pod or the external host.
type Endpoint struct {
	Name string     `json:"name"`
	NS   string     `json:"netns"`
	Addr netip.Addr `json:"addr"`
	// Node is a pod's node's underlay address: the source the external
	// host must see (masquerade), where other pods see the pod's own.
	Node netip.Addr
}

// Result is one source-destination probe.
type Result struct {
	From   string `json:"from"`
	To     string `json:"to"`
	ICMP   bool   `json:"icmp"`
	TCP    bool   `json:"tcp"`
	SeenAs string `json:"seenAs,omitempty"`
	Want   string `json:"wantSource,omitempty"`
	Err    string `json:"error,omitempty"`
}

// OK reports whether the probe passed entirely.
func (r Result) OK() bool { return r.ICMP && r.TCP && r.SeenAs == r.Want }

// Report is the outcome of a check.
type Report struct {
	Lab     string   `json:"lab"`
	Results []Result `json:"results"`
	// CNICheck holds the error of CNI CHECK per pod ("" when it passed).
	CNICheck map[string]string `json:"cniCheck"`
	Passed   int               `json:"passed"`
	Failed   int               `json:"failed"`
}

// listener answers each TCP connection with the source address it sees.
func listen(ns string) (net.Listener, error) {
	var ln net.Listener
	err := netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", probePort))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", ns, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s\n", host)
			}()
		}
	}()
	return ln, nil
}

// tcpProbe connects from ns to dst and returns the source dst saw.
func tcpProbe(ns string, dst netip.Addr) (string, error) {
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(dst, probePort).String(), 3*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", dst, err)
	}
	return strings.TrimSpace(line), nil
}

// pingProbe sends ICMP echo requests from ns to dst on a raw socket.
func pingProbe(ns string, dst netip.Addr, id int) error {
	var pc *icmp.PacketConn
	err := netns.Do(ns, func() error {
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer pc.Close()
	for seq := 1; seq <= 3; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("weft-lab")}}
		b, _ := msg.Marshal(nil)
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("send echo to %s: %w", dst, err)
		}
		deadline := time.Now().Add(time.Second)
		_ = pc.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == dst.String() {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %s", dst)
}

// Run probes every pod to every other pod and to ext, then runs cniCheck
// for every pod (CNI CHECK, as a runtime runs it). A probe's failure is in
// the report; the error is for a check that could not run at all.
func Run(ctx context.Context, pods []Endpoint, ext Endpoint, cniCheck func(ctx context.Context, pod string) error) (*Report, error) {
	dsts := append(slices.Clone(pods), ext)
	for _, d := range dsts {
		ln, err := listen(d.NS)
		if err != nil {
			return nil, err
		}
		defer ln.Close()
	}
	jobs := plan(pods, ext)
	byName := map[string]Endpoint{}
	for _, d := range dsts {
		byName[d.Name] = d
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			probe(&jobs[i], byName[jobs[i].From].NS, byName[jobs[i].To].Addr, 0x4000+i)
		}()
	}
	wg.Wait()
	rep := &Report{Results: jobs, CNICheck: map[string]string{}}
	for _, r := range jobs {
		if r.OK() {
			rep.Passed++
		} else {
			rep.Failed++
		}
	}
	for _, p := range pods {
		rep.CNICheck[p.Name] = ""
		if err := cniCheck(ctx, p.Name); err != nil {
			rep.CNICheck[p.Name] = err.Error()
			rep.Failed++
		}
	}
	return rep, ctx.Err()
}

// plan lists the probes: from every pod to every other pod, wanting its
// own address as the source, and to ext, wanting its node's.
func plan(pods []Endpoint, ext Endpoint) []Result {
	var jobs []Result
	for _, src := range pods {
		for _, d := range append(slices.Clone(pods), ext) {
			if d.Name == src.Name {
				continue
			}
			want := src.Addr.String()
			if d.Name == ext.Name {
				want = src.Node.String()
			}
			jobs = append(jobs, Result{From: src.Name, To: d.Name, Want: want})
		}
	}
	return jobs
}

// probe runs ICMP and TCP from namespace ns to dst and fills in j.
func probe(j *Result, ns string, dst netip.Addr, id int) {
	var errs []error
	if err := pingProbe(ns, dst, id); err != nil {
		errs = append(errs, err)
	} else {
		j.ICMP = true
	}
	seen, err := tcpProbe(ns, dst)
	if err != nil {
		errs = append(errs, err)
	} else {
		j.TCP, j.SeenAs = true, seen
		if seen != j.Want {
			errs = append(errs, fmt.Errorf("%s saw source %s, want %s", j.To, seen, j.Want))
		}
	}
	if err := errors.Join(errs...); err != nil {
		j.Err = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
}

// PrintMatrix draws the connectivity matrix: rows are sources, columns
// destinations (the pods, in order, then ext); "ok" means ICMP and TCP
// passed with the expected source.
func (r *Report) PrintMatrix(w io.Writer, pods []string) {
	cols := append(slices.Clone(pods), "ext")
	cell := map[[2]string]Result{}
	for _, x := range r.Results {
		cell[[2]string{x.From, x.To}] = x
	}
	printGrid(w, pods, cols, func(p, c string) string {
		x, ok := cell[[2]string{p, c}]
		switch {
		case !ok:
			return "-"
		case x.OK():
			return "ok"
		case !x.ICMP && !x.TCP:
			return "FAIL"
		case !x.ICMP:
			return "no-icmp"
		case !x.TCP:
			return "no-tcp"
		default:
			return "bad-src"
		}
	})
	for _, x := range r.Results {
		if !x.OK() {
			fmt.Fprintf(w, "  %s -> %s: %s\n", x.From, x.To, x.Err)
		}
	}
	bad := 0
	for _, p := range pods {
		if e := r.CNICheck[p]; e != "" {
			fmt.Fprintf(w, "  CNI CHECK %s: %s\n", p, e)
			bad++
		}
	}
	fmt.Fprintf(w, "CNI CHECK: %d of %d pods pass\n", len(pods)-bad, len(pods))
	fmt.Fprintf(w, "%d passed, %d failed\n", r.Passed, r.Failed)
}

// printGrid writes a from \ to matrix: a row per source, a column per
// destination, each cell what mark says of the pair.
func printGrid(w io.Writer, rows, cols []string, mark func(from, to string) string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, c := range cols {
		fmt.Fprintf(tw, "\t%s", c)
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		fmt.Fprint(tw, r)
		for _, c := range cols {
			fmt.Fprintf(tw, "\t%s", mark(r, c))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
