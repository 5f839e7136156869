package trace

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// table is a Kernel from a table: snapshots, and the route each
// namespace gives a destination.
type table struct {
	snaps  map[string]*Snapshot
	routes map[string]map[netip.Addr]Route // ns -> dst -> route (none: unreachable)
}

func (k table) Snapshot(ns string) (*Snapshot, error) {
	if s, ok := k.snaps[ns]; ok {
		return s, nil
	}
	return nil, errors.New("no such namespace")
}

func (k table) RouteGet(ns string, src, dst netip.Addr, iif string) (Route, error) {
	if r, ok := k.routes[ns][dst]; ok {
		return r, nil
	}
	return Route{}, errors.New("network is unreachable")
}

var (
	pp = netip.MustParsePrefix
	aa = netip.MustParseAddr
)

// hostGW is two host-gw nodes on one bridge, a pod on each:
// p1 (10.244.1.2) - n1 - ul (br-a) - n2 - p2 (10.244.2.2).
func hostGW() (table, *Cluster) {
	veth := func(idx int, name, mac string, peer int, peerNS string, addrs ...string) Link {
		l := Link{Index: idx, Name: name, Kind: "veth", MAC: mac, Up: true, Peer: peer, PeerNS: peerNS}
		for _, a := range addrs {
			l.Addrs = append(l.Addrs, pp(a))
		}
		return l
	}
	k := table{snaps: map[string]*Snapshot{
		"p1": {Links: []Link{veth(2, "eth0", "02:00:00:00:01:02", 5, "n1", "10.244.1.2/24")},
			Neighs: []Neigh{{IP: aa("10.244.1.1"), MAC: "02:00:00:00:01:01", Dev: "eth0", State: "REACHABLE"}}},
		"n1": {Links: []Link{
			veth(2, "eth0", "02:00:00:00:0a:0b", 3, "ul", "192.0.2.11/24"),
			{Index: 4, Name: "cni0", Kind: "bridge", MAC: "02:00:00:00:01:01", Up: true, Addrs: []netip.Prefix{pp("10.244.1.1/24")}},
			func() Link { l := veth(5, "veth1", "02:00:00:00:01:aa", 2, "p1"); l.Master = 4; return l }(),
		}},
		"ul": {Links: []Link{
			{Index: 2, Name: "br-a", Kind: "bridge", MAC: "02:00:00:00:0a:01", Up: true},
			func() Link { l := veth(3, "n1", "02:00:00:00:0a:a1", 2, "n1"); l.Master = 2; return l }(),
			func() Link { l := veth(4, "n2", "02:00:00:00:0a:a2", 2, "n2"); l.Master = 2; return l }(),
		}, FDB: []Neigh{{MAC: "02:00:00:00:0a:0c", Dev: "n2"}}},
		"n2": {Links: []Link{
			veth(2, "eth0", "02:00:00:00:0a:0c", 4, "ul", "192.0.2.12/24"),
			{Index: 4, Name: "cni0", Kind: "bridge", MAC: "02:00:00:00:02:01", Up: true, Addrs: []netip.Prefix{pp("10.244.2.1/24")}},
			func() Link { l := veth(5, "veth2", "02:00:00:00:02:aa", 2, "p2"); l.Master = 4; return l }(),
		}, FDB: []Neigh{{MAC: "02:00:00:00:02:02", Dev: "veth2"}}},
		"p2": {Links: []Link{veth(2, "eth0", "02:00:00:00:02:02", 5, "n2", "10.244.2.2/24")}},
	}, routes: map[string]map[netip.Addr]Route{
		"p1": {aa("10.244.2.2"): {Dst: pp("10.244.0.0/16"), Gw: aa("10.244.1.1"), Dev: "eth0", Table: 254}},
		"n1": {aa("10.244.2.2"): {Dst: pp("10.244.2.0/24"), Gw: aa("192.0.2.12"), Dev: "eth0", Table: 254, Proto: "weft"}},
		"n2": {aa("10.244.2.2"): {Dst: pp("10.244.2.0/24"), Dev: "cni0", Table: 254, Proto: "kernel"}},
	}}
	c := &Cluster{Backend: "host-gw", Networks: []netip.Prefix{pp("10.244.0.0/16")}, Namespaces: []string{"p1", "n1", "ul", "n2", "p2"},
		Names: map[string]string{"p1": "n1-p1", "p2": "n2-p1", "ul": "underlay"},
		Nodes: []Node{
			{Name: "n1", NS: "n1", Public: aa("192.0.2.11"), Subnets: []netip.Prefix{pp("10.244.1.0/24")}, Agent: "running", Skips: map[string]string{}},
			{Name: "n2", NS: "n2", Public: aa("192.0.2.12"), Subnets: []netip.Prefix{pp("10.244.2.0/24")}, Agent: "running", Skips: map[string]string{}},
		}}
	return k, c
}

func names(r *Result) string {
	var out []string
	for _, h := range r.Hops {
		out = append(out, h.Name)
	}
	return strings.Join(out, " ")
}

func TestWalkHostGW(t *testing.T) {
	k, c := hostGW()
	r := Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if !r.Delivered || r.Problem != nil || names(r) != "n1-p1 n1 underlay n2 n2-p1" {
		var b strings.Builder
		r.Print(&b)
		t.Fatalf("trace:\n%s", b.String())
	}
	// n1 -> n2's eth0: no neighbour entry, found as ARP would (n2's
	// MAC behind the underlay's bridge), then the bridge's fdb.
	var all []string
	for _, h := range r.Hops {
		for _, s := range h.Steps {
			all = append(all, s.Text)
		}
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		"10.244.2.0/24 via 192.0.2.12 dev eth0 proto weft (table main",
		"no neighbour entry for 192.0.2.12 on eth0 yet: ARP finds 02:00:00:00:0a:0c (eth0 in n2",
		"bridge br-a switches the frame to 02:00:00:00:0a:0c: fdb 02:00:00:00:0a:0c on port n2",
		"bridge cni0: fdb 02:00:00:00:02:02 on port veth2",
		"10.244.2.2 is eth0's address here: delivered",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no step %q in:\n%s", want, text)
		}
	}
}

func TestWalkMissing(t *testing.T) {
	// The route to n2's subnet gone: n1 names it, with the skip reason
	// when its agent skips n2.
	k, c := hostGW()
	delete(k.routes["n1"], aa("10.244.2.2"))
	r := Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if p := r.Problem; r.Delivered || p == nil || p.Kind != MissingRoute || p.Node != "n1" || p.Peer != "n2" || !strings.Contains(p.What, "n2's subnet 10.244.2.0/24") {
		t.Fatalf("route gone: %+v", r.Problem)
	}
	c.Nodes[0].Skips["n2"] = "10.244.2.0/24 (192.0.2.12): not on-link from eth0"
	c.Fix = func(p Problem) string { return "fix " + p.Kind }
	r = Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if p := r.Problem; p == nil || p.Kind != MissingPeer || !strings.Contains(p.Why, "not on-link") || p.Fix != "fix peer" {
		t.Fatalf("skipped: %+v", r.Problem)
	}
	// A default route instead of the agent's: the same hop is named.
	k.routes["n1"][aa("10.244.2.2")] = Route{Dst: pp("0.0.0.0/0"), Gw: aa("192.0.2.1"), Dev: "eth0", Table: 254}
	delete(c.Nodes[0].Skips, "n2")
	r = Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if p := r.Problem; p == nil || p.Kind != MissingRoute || p.Node != "n1" || !strings.Contains(p.What, "not the agent's") {
		t.Fatalf("default route: %+v", r.Problem)
	}
	// n2's pod port gone from the fdb and the veth's far end unknown:
	// the bridge on n2 names the MAC.
	k, c = hostGW()
	k.snaps["n2"].FDB = nil
	k.snaps["n2"].Links[2].PeerNS = ""
	r = Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if p := r.Problem; p == nil || p.Node != "n2" || (p.Kind != MissingNeigh && p.Kind != MissingFDB) {
		t.Fatalf("pod's port unknown: %+v", r.Problem)
	}
}

func TestApplyPolicy(t *testing.T) {
	k, c := hostGW()
	r := Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	r.ApplyPolicy([]Verdict{
		{Dir: "egress", NS: "n1", Text: "x/n1-p1 on n1: not isolated (no policy selects it), allowed", Allowed: true},
		{Dir: "ingress", NS: "n2", Text: "x/n2-p1 on n2: isolated by x/deny; allowed by none: denied"},
	}, "weft policy explain --lab x --from x/n1-p1 --to x/n2-p1")
	p := r.Problem
	if r.Delivered || p == nil || p.Kind != DeniedByPolicy || p.Node != "n2" || p.Hop != 3 || len(r.Hops) != 4 || !strings.Contains(p.What, "ingress: x/n2-p1 on n2: isolated by x/deny") || !strings.Contains(p.Fix, "weft policy explain") {
		t.Fatalf("denied at ingress: %d hops, %+v", len(r.Hops), p)
	}
	if got := r.Hops[1].Steps[len(r.Hops[1].Steps)-1]; got.Kind != "policy" || !strings.Contains(got.Text, "egress: x/n1-p1 on n1: not isolated") {
		t.Errorf("egress step at n1: %+v", got)
	}
	if !strings.HasPrefix(r.Summary(), "DENIED at n2 by NetworkPolicy: ingress") {
		t.Errorf("summary %q", r.Summary())
	}
}

// TestWalkVXLANDual: two host-gw-like nodes with vxlan devices of both
// families (flannel.1 and flannel-v6.1 share VNI 1 and port 8472): an
// IPv4 packet is encapsulated by n1's flannel.1 to n2's underlay address
// and decapsulated by n2's flannel.1, not by flannel-v6.1.
func TestWalkVXLANDual(t *testing.T) {
	k, c := hostGW()
	c.Backend = "vxlan"
	vx := func(idx int, name, mac, local string) Link {
		return Link{Index: idx, Name: name, Kind: "vxlan", MAC: mac, Up: true, VNI: 1, Port: 8472, Local: aa(local)}
	}
	k.snaps["n1"].Links = append(k.snaps["n1"].Links, vx(6, "flannel.1", "02:00:00:00:f1:01", "192.0.2.11"), vx(7, "flannel-v6.1", "02:00:00:00:f6:01", "2001:db8::11"))
	k.snaps["n2"].Links = append(k.snaps["n2"].Links, vx(6, "flannel.1", "02:00:00:00:f1:02", "192.0.2.12"), vx(7, "flannel-v6.1", "02:00:00:00:f6:02", "2001:db8::12"))
	k.snaps["n1"].Neighs = append(k.snaps["n1"].Neighs, Neigh{IP: aa("10.244.2.0"), MAC: "02:00:00:00:f1:02", Dev: "flannel.1", State: "PERMANENT"})
	k.snaps["n1"].FDB = append(k.snaps["n1"].FDB, Neigh{IP: aa("192.0.2.12"), MAC: "02:00:00:00:f1:02", Dev: "flannel.1"})
	k.routes["n1"][aa("10.244.2.2")] = Route{Dst: pp("10.244.2.0/24"), Gw: aa("10.244.2.0"), Dev: "flannel.1", OnLink: true, Table: 254, Proto: "weft"}
	k.routes["n1"][aa("192.0.2.12")] = Route{Dst: pp("192.0.2.0/24"), Dev: "eth0", Src: aa("192.0.2.11"), Table: 254, Proto: "kernel"}
	r := Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if !r.Delivered || names(r) != "n1-p1 n1 n1 underlay n2 n2 n2-p1" {
		var b strings.Builder
		r.Print(&b)
		t.Fatalf("trace:\n%s", b.String())
	}
	if h := r.Hops[5]; h.In != "flannel.1" || len(h.Steps) == 0 || h.Steps[0].Kind != "decap" || !strings.Contains(h.Steps[0].Text, "decapsulated by flannel.1 (MAC 02:00:00:00:f1:02)") {
		t.Errorf("decapsulation hop %+v", h)
	}
	if h := r.Hops[2]; !h.Underlay || h.Src != aa("192.0.2.11") || h.Dst != aa("192.0.2.12") {
		t.Errorf("outer packet hop %+v", h)
	}
	// The VTEP MAC in n1's neighbour entry not n2's flannel.1's: the
	// frame is dropped there, and n1's entry is what is wrong.
	k.snaps["n1"].Neighs[len(k.snaps["n1"].Neighs)-1].MAC = "02:00:00:00:f1:99"
	k.snaps["n1"].FDB[len(k.snaps["n1"].FDB)-1].MAC = "02:00:00:00:f1:99"
	r = Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	if p := r.Problem; r.Delivered || p == nil || p.Kind != MissingNeigh || p.Node != "n1" || !strings.Contains(p.What, "n2's flannel.1 has MAC 02:00:00:00:f1:02, but n1's neighbour entry says 02:00:00:00:f1:99") {
		t.Fatalf("stale VTEP MAC: %+v", r.Problem)
	}
}
