package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lab/trace"
)

// traceOf runs `weft lab trace --probe --json FROM TO` and decodes it;
// the exit status is 1 when the trace stops, which is not an error here.
// It logs the same trace as people read it.
func (l *lab) traceOf(from, to string) *trace.Result {
	l.t.Helper()
	out, _ := l.run("trace", "--probe", "--json", from, to)
	var r trace.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("weft lab trace %s %s: %v\n%s", from, to, err, out)
	}
	text, _ := l.run("trace", "--probe", from, to)
	l.t.Logf("weft lab trace --probe %s %s:\n%s", from, to, text)
	if r.Probe == nil || len(r.Probe.Hops) != len(r.Hops) || r.Probe.Sent == 0 {
		l.t.Fatalf("trace %s -> %s: no probe: %+v", from, to, r.Probe)
	}
	return &r
}

// path is the hops' names, an underlay hop marked with a "~".
func path(r *trace.Result) string {
	var p []string
	for _, h := range r.Hops {
		n := h.Name
		if h.Underlay {
			n = "~" + n
		}
		p = append(p, n)
	}
	return strings.Join(p, " ")
}

// steps are the texts of the hops' steps of kind k.
func steps(r *trace.Result, k string) []string {
	var out []string
	for _, h := range r.Hops {
		for _, s := range h.Steps {
			if s.Kind == k {
				out = append(out, h.Name+": "+s.Text)
			}
		}
	}
	return out
}

func hasStep(r *trace.Result, k, sub string) bool {
	for _, s := range steps(r, k) {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// svgOf parses the SVG file (failing the test if it is not well-formed
// XML) and returns its texts and its hop lines' numbers.
func svgOf(t *testing.T, file string) (texts, hops []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	in := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return texts, hops
		}
		if err != nil {
			t.Fatalf("%s is not well-formed: %v", file, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			in = e.Name.Local == "text"
			for _, a := range e.Attr {
				if a.Name.Local == "data-hop" {
					hops = append(hops, a.Value)
				}
			}
		case xml.CharData:
			if in {
				texts = append(texts, strings.TrimSpace(string(e)))
			}
		case xml.EndElement:
			in = false
		}
	}
}

// kernelPath is the line of `lab status --json` for the path from node
// a to node b.
func (l *lab) kernelPath(a, b string) string {
	l.t.Helper()
	var st struct{ Paths []string }
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		l.t.Fatal(err)
	}
	for _, p := range st.Paths {
		if strings.HasPrefix(p, a+" -> "+b+" ") {
			return p
		}
	}
	l.t.Errorf("lab status: no path %s -> %s in %q", a, b, st.Paths)
	return ""
}

// delivers checks that trace FROM TO is delivered along path want and
// that a real ping takes it too.
func (l *lab) delivers(t *testing.T, from, to, want string) *trace.Result {
	t.Helper()
	r := l.traceOf(from, to)
	if !r.Delivered || r.Problem != nil {
		t.Fatalf("trace %s -> %s not delivered: %+v", from, to, r.Problem)
	}
	if got := path(r); got != want {
		t.Errorf("trace %s -> %s: path %q, want %q", from, to, got, want)
	}
	// Every hop's devices counted the probe's packets.
	if p := r.Probe; p.StoppedAt >= 0 || p.Received != p.Sent {
		t.Errorf("trace %s -> %s: probe stopped at hop %d, %d of %d replies: %+v", from, to, p.StoppedAt+1, p.Received, p.Sent, p.Hops)
	}
	for i, c := range r.Probe.Hops {
		if h := r.Hops[i]; (h.InDev != "" && c.InRx < int64(r.Probe.Sent)) || (h.OutDev != "" && c.OutTx < int64(r.Probe.Sent)) {
			t.Errorf("trace %s -> %s: hop %d (%s): %+v, want at least %d on %q and %q", from, to, i+1, h.Name, c, r.Probe.Sent, h.InDev, h.OutDev)
		}
	}
	if out, err := l.run("ping", "--count", "3", from, to); err != nil {
		t.Errorf("ping %s %s (the path the trace shows): %v\n%s", from, to, err, out)
	}
	return r
}

// stops checks that trace FROM TO stops at the hop named node, missing
// kind, and that a real ping fails there too.
func (l *lab) stops(t *testing.T, from, to, node, kind string) *trace.Result {
	t.Helper()
	r := l.traceOf(from, to)
	p := r.Problem
	if r.Delivered || p == nil {
		t.Fatalf("trace %s -> %s: delivered, want it to stop at %s missing %s", from, to, node, kind)
	}
	if p.Node != node || p.Kind != kind || r.Hops[p.Hop].Name != node {
		t.Errorf("trace %s -> %s stopped at hop %d (%s) missing %s: %s; want %s missing %s", from, to, p.Hop+1, p.Node, p.Kind, p.What, node, kind)
	}
	if p.Fix == "" && kind != trace.MissingPeer {
		t.Errorf("trace %s -> %s: no fix for missing %s: %s", from, to, p.Kind, p.What)
	}
	if out, err := l.run("ping", "--count", "3", from, to); err == nil {
		t.Errorf("ping %s %s got through, yet the trace stops at %s:\n%s", from, to, node, out)
	}
	// The probe's packets reached the hop named (every hop before it
	// counted them all) and none came back.
	if pr := r.Probe; pr.Received != 0 || (pr.StoppedAt >= 0 && pr.StoppedAt < p.Hop) {
		t.Errorf("trace %s -> %s: probe %d of %d replies, stopped at hop %d; the trace stops at hop %d", from, to, pr.Received, pr.Sent, pr.StoppedAt+1, p.Hop+1)
	}
	return r
}

// TestTrace: `weft lab trace` between pods on two nodes lists every hop
// from the kernel state, on vxlan, host-gw and udp on l2 and vxlan with
// DirectRouting on l3; a real ping agrees. Broken on purpose (a route or
// a neighbour entry deleted while the agent is stopped, the peer's agent
// stopped on udp, a host-gw peer skipped across l3), the trace names the
// hop and the missing entry. To ext: the masquerade rule and the source.
func TestTrace(t *testing.T) {
	t.Run("vxlan", func(t *testing.T) {
		l, _ := newLab(t, "--nodes", "2", "--pods-per-node", "1", "--backend", "vxlan")
		r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
		for _, w := range [][2]string{{"route", "dev flannel.1 onlink proto weft"}, {"neigh", "PERMANENT on flannel.1"},
			{"fdb", "dst 192.0.2.12 on flannel.1"}, {"encap", "VXLAN encapsulation: VNI 1, UDP to 192.0.2.12:8472"},
			{"decap", "VNI 1: decapsulated by flannel.1"}, {"bridge", "bridge br-a"}, {"bridge", "bridge cni0"}} {
			if !hasStep(r, w[0], w[1]) {
				t.Errorf("no %s step with %q: %q", w[0], w[1], steps(r, w[0]))
			}
		}
		// The drawing: well-formed SVG with every node, pod and host, and
		// a numbered line for each move between namespaces.
		file := filepath.Join(t.TempDir(), "trace.svg")
		l.must("trace", "--svg", file, "n1-p1", "n2-p1")
		texts, hops := svgOf(t, file)
		for _, want := range []string{"n1", "n2", "n1-p1", "n2-p1", "ext", "ctl", "underlay", "delivered to n2-p1 after 7 hops"} {
			if !slices.Contains(texts, want) {
				t.Errorf("SVG: no text %q in %q", want, texts)
			}
		}
		if !slices.Equal(hops, []string{"2", "4", "5", "7"}) {
			t.Errorf("SVG: hop lines %q, want 2 4 5 7 (n1-p1 -> n1 -> underlay -> n2 -> n2-p1)", hops)
		}
		// To ext: masqueraded to n1's address.
		e := l.delivers(t, "n1-p1", "ext", "n1-p1 n1 underlay ext")
		if !hasStep(e, "masquerade", "becomes 192.0.2.11, eth0's address") || !hasStep(e, "masquerade", "masquerade fully-random") {
			t.Errorf("to ext: masquerade steps %q", steps(e, "masquerade"))
		}
		if got := e.Hops[len(e.Hops)-1].Src.String(); got != "192.0.2.11" {
			t.Errorf("to ext: the source at ext is %s, want 192.0.2.11", got)
		}
		// Broken: with n1's agent stopped (it would put them back at
		// once), the route to n2's subnet, then the neighbour entry.
		st := l.status()
		sub2 := st.Nodes[1].Subnet
		gw := strings.TrimSuffix(sub2, "/24")
		l.must("agent", "stop", "n1")
		l.must("exec", "n1", "--", "ip", "route", "del", sub2)
		p := l.stops(t, "n1-p1", "n2-p1", "n1", trace.MissingRoute).Problem
		if !strings.Contains(p.What, "n2's subnet "+sub2) || !strings.Contains(p.Fix, "weft lab agent start n1") {
			t.Errorf("missing route: %+v", p)
		}
		l.must("exec", "n1", "--", "ip", "route", "add", sub2, "via", gw, "dev", "flannel.1", "onlink")
		l.must("exec", "n1", "--", "ip", "neigh", "del", gw, "dev", "flannel.1")
		p = l.stops(t, "n1-p1", "n2-p1", "n1", trace.MissingNeigh).Problem
		if !strings.Contains(p.What, "neighbour "+gw) || !strings.Contains(p.What, "n2's VTEP") {
			t.Errorf("missing neighbour: %+v", p)
		}
		// The lab's picture, read from the kernel, shows it too.
		if kp := l.kernelPath("n1", "n2"); !strings.Contains(kp, "BROKEN at n1: missing neighbour: neighbour "+gw) {
			t.Errorf("lab status, n1 -> n2 without the neighbour entry: %q", kp)
		}
		if kp := l.kernelPath("n2", "n1"); !strings.Contains(kp, "VXLAN encapsulation: VNI 1") {
			t.Errorf("lab status, n2 -> n1: %q", kp)
		}
		l.must("agent", "start", "n1")
		l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
	})
	t.Run("host-gw", func(t *testing.T) {
		l, _ := newLab(t, "--nodes", "2", "--pods-per-node", "1", "--backend", "host-gw")
		r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 underlay n2 n2-p1")
		if !hasStep(r, "route", "via 192.0.2.12 dev eth0 proto weft") || len(steps(r, "encap")) != 0 {
			t.Errorf("host-gw: routes %q, encap %q", steps(r, "route"), steps(r, "encap"))
		}
	})
	t.Run("udp-bpf", func(t *testing.T) {
		// The kernel path: the programs carry the packet, and a stopped
		// agent changes nothing.
		l, _ := newLab(t, "--nodes", "2", "--pods-per-node", "1", "--backend", "udp", "--datapath", "bpf")
		check := func(when string) {
			t.Helper()
			r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
			for _, w := range [][2]string{{"bpf", "weft_udp_encap at tcx egress of flannel0"},
				{"encap", "UDP 192.0.2.11:8285 -> 192.0.2.12:8285"}, {"decap", "weft_udp_decap at XDP of eth0"}} {
				if !hasStep(r, w[0], w[1]) {
					t.Errorf("%s: no %s step with %q: %q", when, w[0], w[1], steps(r, w[0]))
				}
			}
			if len(steps(r, "agent")) != 0 {
				t.Errorf("%s: an agent step on the kernel path: %q", when, steps(r, "agent"))
			}
		}
		check("agents running")
		// The probe confirms every hop: flannel0 counts nothing on this
		// path, and the trace does not ask it to.
		if out := l.must("trace", "--probe", "n1-p1", "n2-p1"); !strings.Contains(out, "every hop counted them") {
			t.Errorf("probe on the kernel path:\n%s", out)
		}
		l.must("agent", "stop", "n2")
		check("n2's agent stopped")
		for _, pair := range [][2]string{{"n1-p1", "n2-p1"}, {"n2-p1", "n1-p1"}} {
			if out := l.must("ping", "--count", "10", "--interval", "50ms", pair[0], pair[1]); !strings.Contains(out, "10 received") {
				t.Errorf("n2's agent stopped, %s -> %s: %s", pair[0], pair[1], out)
			}
		}
		l.must("agent", "start", "n2")
	})
	t.Run("udp", func(t *testing.T) {
		l, _ := newLab(t, "--nodes", "2", "--pods-per-node", "1", "--backend", "udp", "--datapath", "tun")
		r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
		for _, w := range [][2]string{{"route", "dev flannel0"}, {"agent", "reads the packet from flannel0"},
			{"encap", "UDP 192.0.2.11:8285 -> 192.0.2.12:8285"}, {"decap", "writes the packet to flannel0"}} {
			if !hasStep(r, w[0], w[1]) {
				t.Errorf("no %s step with %q: %q", w[0], w[1], steps(r, w[0]))
			}
		}
		l.must("agent", "stop", "n2")
		p := l.stops(t, "n1-p1", "n2-p1", "n2", trace.MissingAgent).Problem
		if !strings.Contains(p.What, "UDP 8285") || !strings.Contains(p.Fix, "weft lab agent start n2") {
			t.Errorf("udp, n2's agent stopped: %+v", p)
		}
		if kp := l.kernelPath("n1", "n2"); !strings.Contains(kp, "BROKEN at n2: missing agent") {
			t.Errorf("lab status, n1 -> n2 with n2's agent stopped: %q", kp)
		}
		if kp := l.kernelPath("n2", "n1"); !strings.Contains(kp, "BROKEN at n2: missing route: a route to n1's subnet") || !strings.Contains(kp, "n2's agent is stopped (udp's agent removes flannel0") {
			t.Errorf("lab status, n2 -> n1 with n2's agent stopped: %q", kp)
		}
		l.must("agent", "start", "n2")
	})
	t.Run("wireguard-dual", func(t *testing.T) {
		l, _ := newLab(t, "--nodes", "2", "--pods-per-node", "1", "--backend", "wireguard", "--ip-family", "dual")
		r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
		if !hasStep(r, "encap", "the packet is encrypted to its key and sent in UDP 192.0.2.11:51820 -> 192.0.2.12:51820") || !hasStep(r, "decap", "WireGuard on UDP 51820") {
			t.Errorf("wireguard: encap %q, decap %q", steps(r, "encap"), steps(r, "decap"))
		}
		out, err := l.run("trace", "--json", "--ipv6", "n1-p1", "n2-p1")
		var r6 trace.Result
		if jerr := json.Unmarshal([]byte(out), &r6); err != nil || jerr != nil {
			t.Fatalf("trace --ipv6: %v %v\n%s", err, jerr, out)
		}
		if !r6.Delivered || !r6.Dst.Is6() || path(&r6) != "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1" || !hasStep(&r6, "decap", "WireGuard on UDP 51821") || !hasStep(&r6, "route", "dev flannel-wg-v6") {
			t.Errorf("trace --ipv6: path %q, decap %q, routes %q", path(&r6), steps(&r6, "decap"), steps(&r6, "route"))
		}
	})
	t.Run("vxlan-directrouting-l3", func(t *testing.T) {
		l, _ := newLab(t, "--nodes", "3", "--pods-per-node", "1", "--backend", "vxlan", "--direct-routing", "--topology", "l3")
		// n2 shares n1's side: a direct route; n3 is behind the router:
		// VXLAN, routed by the underlay.
		r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 underlay n2 n2-p1")
		if !hasStep(r, "route", "via 192.0.2.12 dev eth0 proto weft") {
			t.Errorf("n1 -> n2 (same side): routes %q", steps(r, "route"))
		}
		r = l.delivers(t, "n1-p1", "n3-p1", "n1-p1 n1 ~n1 ~underlay ~n3 n3 n3-p1")
		if !hasStep(r, "encap", "UDP to 198.51.100.13:8472") || !hasStep(r, "route", "198.51.100.0/24 dev br-b") {
			t.Errorf("n1 -> n3 (across the router): encap %q, routes %q", steps(r, "encap"), steps(r, "route"))
		}
	})
	t.Run("host-gw-l3-skipped", func(t *testing.T) {
		l, _ := newLabFailingCheck(t, "--nodes", "3", "--pods-per-node", "1", "--backend", "host-gw", "--topology", "l3")
		p := l.stops(t, "n1-p1", "n3-p1", "n1", trace.MissingPeer).Problem
		if p.Peer != "n3" || !strings.Contains(p.Why, "not on-link") {
			t.Errorf("host-gw across l3: %+v", p)
		}
		if kp := l.kernelPath("n1", "n3"); !strings.Contains(kp, "BROKEN at n1: missing peer: a route to n3's subnet") || !strings.Contains(kp, "n1's agent skips n3") {
			t.Errorf("lab status, n1 -> n3: %q", kp)
		}
		if kp := l.kernelPath("n1", "n2"); !strings.Contains(kp, "via 192.0.2.12 dev eth0 proto weft") {
			t.Errorf("lab status, n1 -> n2: %q", kp)
		}
		l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 underlay n2 n2-p1")
	})
}

// TestTracePolicy: in a lab on the Kubernetes store, the trace shows the
// NetworkPolicy verdicts where the nodes enforce them (egress on the
// source's node, ingress on the destination's) and stops at the node of
// a policy that denies the connection, naming it; a policy that admits
// it lets the trace through again, naming the policy that allowed it.
func TestTracePolicy(t *testing.T) {
	p := newPolicyLab(t)
	l := p.lab
	r := l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
	if !hasStep(r, "policy", "n1: NetworkPolicy egress: "+p.pods["n1-p1"].obj+" on n1: not isolated") ||
		!hasStep(r, "policy", "n2: NetworkPolicy ingress: "+p.pods["n2-p1"].obj+" on n2: not isolated") {
		t.Errorf("no policy: steps %q", steps(r, "policy"))
	}
	p.apply(t, "deny-all", "n2-p1")
	// The verdict comes from the API server at once; wait until n2's
	// agent enforces it too (no echo reply to the probe).
	var pr *trace.Problem
	if _, ok := poll(20*time.Second, 200*time.Millisecond, func() bool {
		r := l.traceOf("n1-p1", "n2-p1")
		pr = r.Problem
		return pr != nil && pr.Kind == trace.DeniedByPolicy && r.Probe.Received == 0
	}); !ok {
		t.Fatalf("deny-all: the trace did not stop at the policy, or n2 did not enforce it: %+v", pr)
	}
	r = l.stops(t, "n1-p1", "n2-p1", "n2", trace.DeniedByPolicy)
	if !strings.Contains(r.Problem.What, "ingress: "+p.pods["n2-p1"].obj+" on n2: isolated by") || !strings.Contains(r.Problem.What, "deny-all; allowed by none: denied") ||
		!strings.Contains(r.Problem.Fix, "weft policy explain --lab "+l.name) {
		t.Errorf("deny-all: %+v", r.Problem)
	}
	p.apply(t, "deny-all", "n2-p1", "n1-p1")
	if _, ok := poll(20*time.Second, 200*time.Millisecond, func() bool {
		r := l.traceOf("n1-p1", "n2-p1")
		return r.Delivered && r.Probe.Received == r.Probe.Sent
	}); !ok {
		t.Fatal("the policy admitting n1-p1: the trace still stops, or n2 still drops")
	}
	r = l.delivers(t, "n1-p1", "n2-p1", "n1-p1 n1 ~n1 ~underlay ~n2 n2 n2-p1")
	if !hasStep(r, "policy", "isolated by "+strings.Split(p.pods["n2-p1"].obj, "/")[0]+"/deny-all; allowed by "+strings.Split(p.pods["n2-p1"].obj, "/")[0]+"/deny-all") {
		t.Errorf("admitted: steps %q", steps(r, "policy"))
	}
}
