package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/cni/libcni"
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
	// SeenAs is the source address the destination must see: the pod's
	// own address from pods, its node's underlay address at ext.
	node netip.Addr
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

// check probes every pod to every other pod and to the external host.
func (s *State) check(ctx context.Context) (*Report, error) {
	var dsts []Endpoint
	nodeAddr := map[string]netip.Addr{}
	for _, n := range s.Nodes {
		nodeAddr[n.Name] = n.Addr
	}
	for _, p := range s.Pods {
		dsts = append(dsts, Endpoint{Name: p.Name, NS: p.NS, Addr: p.Addr, node: nodeAddr[p.Node]})
	}
	dsts = append(dsts, Endpoint{Name: "ext", NS: s.Ext.NS, Addr: s.Ext.Addr})
	for _, d := range dsts {
		ln, err := listen(d.NS)
		if err != nil {
			return nil, err
		}
		defer ln.Close()
	}
	var jobs []Result
	for _, src := range s.Pods {
		for _, d := range dsts {
			if d.Name == src.Name {
				continue
			}
			want := src.Addr.String()
			if d.Name == "ext" {
				want = nodeAddr[src.Node].String()
			}
			jobs = append(jobs, Result{From: src.Name, To: d.Name, Want: want})
		}
	}
	ns := map[string]string{}
	addr := map[string]netip.Addr{}
	for _, d := range dsts {
		ns[d.Name], addr[d.Name] = d.NS, d.Addr
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			j := &jobs[i]
			var errs []error
			if err := pingProbe(ns[j.From], addr[j.To], 0x4000+i); err != nil {
				errs = append(errs, err)
			} else {
				j.ICMP = true
			}
			seen, err := tcpProbe(ns[j.From], addr[j.To])
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
		}()
	}
	wg.Wait()
	rep := &Report{Lab: s.Name, Results: jobs, CNICheck: map[string]string{}}
	for _, r := range jobs {
		if r.OK() {
			rep.Passed++
		} else {
			rep.Failed++
		}
	}
	// CNI CHECK, as a runtime runs it: interface, address and routes of
	// each pod are still what ADD made.
	for _, p := range s.Pods {
		rep.CNICheck[p.Name] = ""
		n, err := s.node(p.Node)
		if err == nil {
			var c interface {
				CheckNetworkList(context.Context, *libcni.NetworkConfigList, *libcni.RuntimeConf) error
			}
			var list *libcni.NetworkConfigList
			if c, list, err = s.cni(n); err == nil {
				err = c.CheckNetworkList(ctx, list, p.rt())
			}
		}
		if err != nil {
			rep.CNICheck[p.Name] = err.Error()
			rep.Failed++
		}
	}
	return rep, ctx.Err()
}

// printMatrix draws the connectivity matrix: rows are sources, columns
// destinations; "ok" means ICMP and TCP passed with the expected source.
func (r *Report) printMatrix(w io.Writer, s *State) {
	var cols []string
	for _, p := range s.Pods {
		cols = append(cols, p.Name)
	}
	cols = append(cols, "ext")
	cell := map[[2]string]Result{}
	for _, x := range r.Results {
		cell[[2]string{x.From, x.To}] = x
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, c := range cols {
		fmt.Fprintf(tw, "\t%s", c)
	}
	fmt.Fprintln(tw)
	for _, p := range s.Pods {
		fmt.Fprint(tw, p.Name)
		for _, c := range cols {
			x, ok := cell[[2]string{p.Name, c}]
			switch {
			case !ok:
				fmt.Fprint(tw, "\t-")
			case x.OK():
				fmt.Fprint(tw, "\tok")
			case !x.ICMP && !x.TCP:
				fmt.Fprint(tw, "\tFAIL")
			case !x.ICMP:
				fmt.Fprint(tw, "\tno-icmp")
			case !x.TCP:
				fmt.Fprint(tw, "\tno-tcp")
			default:
				fmt.Fprint(tw, "\tbad-src")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, x := range r.Results {
		if !x.OK() {
			fmt.Fprintf(w, "  %s -> %s: %s\n", x.From, x.To, x.Err)
		}
	}
	bad := 0
	for _, p := range s.Pods {
		if e := r.CNICheck[p.Name]; e != "" {
			fmt.Fprintf(w, "  CNI CHECK %s: %s\n", p.Name, e)
			bad++
		}
	}
	fmt.Fprintf(w, "CNI CHECK: %d of %d pods pass\n", len(s.Pods)-bad, len(s.Pods))
	fmt.Fprintf(w, "%d passed, %d failed\n", r.Passed, r.Failed)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
