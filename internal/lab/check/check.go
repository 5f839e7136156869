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
	"golang.org/x/net/ipv6"

	"github.com/weftnet/weft/internal/netns"
)

// probePort is where check's listeners answer inside pods and ext.
const probePort = 7777

// Endpoint is something check connects to: a pod or the external host.
type Endpoint struct {
	Name string `json:"name"`
	NS   string `json:"netns"`
	// Addrs are its addresses, at most one per family.
	Addrs []netip.Addr `json:"addrs"`
	// Node are a pod's node's underlay addresses, one per family: the
	// source the external host must see (masquerade), where other pods
	// see the pod's own.
	Node []netip.Addr `json:"node,omitempty"`
	// Routed (the external host): its network routes to the pods (a
	// router learned their subnets over BGP, and the agents do not
	// masquerade to it). Pods must reach it with their own addresses,
	// and it must reach every pod by the pod's address, seen as its own.
	Routed bool `json:"routed,omitempty"`
}

// addrOf is the address of addrs of family fam (4 or 6), or the zero
// Addr.
func addrOf(addrs []netip.Addr, fam int) netip.Addr {
	for _, a := range addrs {
		if family(a) == fam {
			return a
		}
	}
	return netip.Addr{}
}

// family is 4 or 6.
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// Result is one source-destination probe over one family.
type Result struct {
	From   string     `json:"from"`
	To     string     `json:"to"`
	Family int        `json:"family"` // 4 or 6
	Dst    netip.Addr `json:"dst"`
	ICMP   bool       `json:"icmp"`
	TCP    bool       `json:"tcp"`
	SeenAs string     `json:"seenAs,omitempty"`
	Want   string     `json:"wantSource,omitempty"`
	Err    string     `json:"error,omitempty"`
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

// listen answers each TCP connection to a's port with the source address
// it sees, inside ns: on 0.0.0.0 for IPv4, on [::] (IPv6 only) for IPv6.
func listen(ns string, a netip.Addr) (net.Listener, error) {
	network, any := "tcp4", netip.IPv4Unspecified()
	if family(a) == 6 {
		network, any = "tcp6", netip.IPv6Unspecified()
	}
	var ln net.Listener
	err := netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen(network, netip.AddrPortFrom(any, probePort).String())
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
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, probePort).String(), 3*time.Second)
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

// echo is the ICMP echo of one family: ICMP's for IPv4, ICMPv6's for
// IPv6 (on a raw ICMPv6 socket the kernel fills in the checksum).
type echo struct {
	network, any   string
	proto          int // for icmp.ParseMessage
	request, reply icmp.Type
}

func echoFor(dst netip.Addr) echo {
	if family(dst) == 6 {
		return echo{"ip6:ipv6-icmp", "::", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply}
	}
	return echo{"ip4:icmp", "0.0.0.0", 1, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply}
}

// open is a raw socket for e's echoes inside ns.
func (e echo) open(ns string) (*icmp.PacketConn, error) {
	var pc *icmp.PacketConn
	err := netns.Do(ns, func() error {
		var err error
		pc, err = icmp.ListenPacket(e.network, e.any)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	return pc, nil
}

// send sends echo request seq of id to dst.
func (e echo) send(pc *icmp.PacketConn, dst netip.Addr, id, seq int, data string) error {
	msg := icmp.Message{Type: e.request, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte(data)}}
	b, _ := msg.Marshal(nil)
	_, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

// replyFrom is the echo reply b holds if it came from dst, or nil.
func (e echo) replyFrom(b []byte, from net.Addr, dst netip.Addr) *icmp.Echo {
	m, err := icmp.ParseMessage(e.proto, b)
	if err != nil || m.Type != e.reply {
		return nil
	}
	ia, ok := from.(*net.IPAddr)
	if !ok {
		return nil
	}
	if a, ok := netip.AddrFromSlice(ia.IP); !ok || a.Unmap() != dst {
		return nil
	}
	r, _ := m.Body.(*icmp.Echo)
	return r
}

// pingProbe sends echo requests (ICMP or ICMPv6, as dst's family) from ns
// to dst on a raw socket.
func pingProbe(ns string, dst netip.Addr, id int) error {
	e := echoFor(dst)
	pc, err := e.open(ns)
	if err != nil {
		return err
	}
	defer pc.Close()
	for seq := 1; seq <= 3; seq++ {
		if err := e.send(pc, dst, id, seq, "weft-lab"); err != nil {
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
			if r := e.replyFrom(buf[:n], from, dst); r != nil && r.ID == id {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %s", dst)
}

// Run probes every pod to every other pod and to ext, over each family
// both have, then runs cniCheck for every pod (CNI CHECK, as a runtime
// runs it). A probe's failure is in the report; the error is for a check
// that could not run at all.
func Run(ctx context.Context, pods []Endpoint, ext Endpoint, cniCheck func(ctx context.Context, pod string) error) (*Report, error) {
	dsts := append(slices.Clone(pods), ext)
	for _, d := range dsts {
		for _, a := range d.Addrs {
			ln, err := listen(d.NS, a)
			if err != nil {
				return nil, err
			}
			defer ln.Close()
		}
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
			probe(&jobs[i], byName[jobs[i].From].NS, 0x4000+i)
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
// own address as the source, and to ext, wanting its node's (its own
// when ext is Routed); one per family that source and destination both
// have, IPv4 first. When ext is Routed, ext probes every pod too, each
// wanting ext's own address.
func plan(pods []Endpoint, ext Endpoint) []Result {
	var jobs []Result
	srcs := slices.Clone(pods)
	if ext.Routed {
		srcs = append(srcs, ext)
	}
	for _, src := range srcs {
		for _, d := range append(slices.Clone(pods), ext) {
			if d.Name == src.Name {
				continue
			}
			for _, fam := range []int{4, 6} {
				from, dst := addrOf(src.Addrs, fam), addrOf(d.Addrs, fam)
				if !from.IsValid() || !dst.IsValid() {
					continue
				}
				want := from
				if d.Name == ext.Name && !ext.Routed {
					want = addrOf(src.Node, fam)
				}
				jobs = append(jobs, Result{From: src.Name, To: d.Name, Family: fam, Dst: dst, Want: want.String()})
			}
		}
	}
	return jobs
}

// probe runs ICMP and TCP from namespace ns to j.Dst and fills in j.
func probe(j *Result, ns string, id int) {
	var errs []error
	if err := pingProbe(ns, j.Dst, id); err != nil {
		errs = append(errs, err)
	} else {
		j.ICMP = true
	}
	seen, err := tcpProbe(ns, j.Dst)
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
// passed with the expected source. In a dual-stack lab each cell holds
// two marks, IPv4's then IPv6's ("ok/ok"). When ext probed the pods (a
// routed ext), its row comes last: "ext reaches the pod by its own
// address".
func (r *Report) PrintMatrix(w io.Writer, pods []string) {
	cols := append(slices.Clone(pods), "ext")
	rows := pods
	if slices.ContainsFunc(r.Results, func(x Result) bool { return x.From == "ext" }) {
		rows = cols
	}
	type key struct {
		from, to string
		fam      int
	}
	cell := map[key]Result{}
	var fams []int
	for _, x := range r.Results {
		cell[key{x.From, x.To, x.Family}] = x
		if !slices.Contains(fams, x.Family) {
			fams = append(fams, x.Family)
		}
	}
	slices.Sort(fams)
	if len(fams) > 1 || slices.Equal(fams, []int{6}) {
		fmt.Fprintf(w, "each cell: %s\n", strings.Join(familyNames(fams), "/"))
	}
	if len(rows) > len(pods) {
		fmt.Fprintln(w, "ext is routed (BGP): pods reach it with their own addresses; row ext: ext reaches the pod by its own address")
	}
	printGrid(w, rows, cols, func(p, c string) string {
		var marks []string
		for _, f := range fams {
			x, ok := cell[key{p, c, f}]
			marks = append(marks, mark(x, ok))
		}
		if strings.Trim(strings.Join(marks, ""), "-") == "" {
			return "-" // no probe of any family: a pod and itself
		}
		return strings.Join(marks, "/")
	})
	for _, x := range r.Results {
		if !x.OK() {
			over := ""
			if len(fams) > 1 {
				over = " over " + familyNames([]int{x.Family})[0]
			}
			fmt.Fprintf(w, "  %s -> %s%s: %s\n", x.From, x.To, over, x.Err)
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

// mark is a cell's word for probe x (ok: there was one).
func mark(x Result, ok bool) string {
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
}

// familyNames are "IPv4", "IPv6" for 4, 6.
func familyNames(fams []int) []string {
	var out []string
	for _, f := range fams {
		out = append(out, fmt.Sprintf("IPv%d", f))
	}
	return out
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
