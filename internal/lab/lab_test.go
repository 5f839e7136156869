package lab

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
)

func TestValidate(t *testing.T) {
	ok := Spec{Nodes: 3, PodsPerNode: 2, Backend: DefaultBackend, Topology: topology.L2, Store: "etcd"}
	if err := ok.validate(); err != nil {
		t.Fatalf("default spec: %v", err)
	}
	for _, tc := range []struct {
		change func(*Spec)
		want   string
	}{
		{func(s *Spec) { s.Nodes = 0 }, "--nodes 0: use 1 to 60"},
		{func(s *Spec) { s.PodsPerNode = 51 }, "--pods-per-node 51: use 0 to 50"},
		{func(s *Spec) { s.Backend = "ipsec" }, `--backend "ipsec": use vxlan, host-gw, udp or wireguard`},
		{func(s *Spec) { s.Topology = "l4" }, `--topology "l4": use l2 or l3`},
		{func(s *Spec) { s.Backend, s.DirectRouting = "host-gw", true }, "--direct-routing goes with --backend vxlan"},
		{func(s *Spec) { s.Store = "consul" }, `--store "consul": use etcd or kube`},
		{func(s *Spec) { s.IPFamily = "ipv5" }, `--ip-family "ipv5": use ipv4, ipv6 or dual`},
		{func(s *Spec) { s.IPFamily, s.Backend = topology.Dual, "udp" },
			"--ip-family dual: the udp backend carries IPv4 only (as flannel's); use --backend vxlan or host-gw"},
		{func(s *Spec) { s.IPFamily, s.Backend = topology.IPv6, "udp" },
			"--ip-family ipv6: the udp backend carries IPv4 only (as flannel's); use --backend vxlan or host-gw"},
		{func(s *Spec) { s.ReadOnly = true }, "--read-only goes with --store kube"},
		{func(s *Spec) { s.Store, s.ReadOnly, s.FlannelNodes = "kube", true, []string{"n3"} },
			"--read-only cannot mix with --flannel-nodes: flannel nodes need the annotations read-only agents do not publish"},
		{func(s *Spec) { s.BGP = true }, "--bgp needs --topology l3: the router between the two sides runs BIRD or FRR"},
		{func(s *Spec) { s.BGPRouter = "frr" }, "--bgp-router goes with --bgp"},
		{func(s *Spec) { s.BGPPassword = "x" }, "--bgp-password goes with --bgp"},
		{func(s *Spec) { s.BGP, s.Topology, s.FlannelNodes = true, topology.L3, []string{"n3"} },
			"--bgp cannot mix with --flannel-nodes: flanneld speaks no BGP"},
		{func(s *Spec) { s.BGP, s.Topology, s.BGPRouter = true, topology.L3, "gobgp" }, `--bgp-router "gobgp": use bird or frr`},
		{func(s *Spec) { s.BGP, s.Topology, s.BGPPassword = true, topology.L3, "se\x01cret" },
			"--bgp-password: the password has a control character at byte 2; use printable characters (spaces are fine)"},
		{func(s *Spec) { s.BGP, s.Topology, s.BGPPassword = true, topology.L3, `se"cret` },
			"--bgp-password: BIRD cannot take a password with a double quote (its strings have no escape); use another character"},
		{func(s *Spec) { s.BGP, s.Topology, s.BGPRouter, s.BGPPassword = true, topology.L3, "frr", "se cret" },
			"--bgp-password: FRR takes a password of one word (neighbor ... password WORD); use one without spaces"},
	} {
		s := ok
		tc.change(&s)
		if err := s.validate(); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %q", s, err, tc.want)
		}
	}
}

// testState is a 3-node l3 lab on paper: no namespace, process or file.
func testState(backend string, direct, forwardDrop bool) *State {
	s := &State{Name: "x", Backend: backend, DirectRouting: direct, Topology: topology.L3, ForwardDrop: forwardDrop,
		Network: topology.Network.String(), Underlay: "x-ul", Endpoint: "http://192.0.2.2:2379",
		Ctl: topology.Host{Name: "ctl", NS: "x-ctl", Addr: topology.StoreIP, Side: "a"},
		Ext: topology.Host{Name: "ext", NS: "x-ext", Addr: netip.MustParseAddr("203.0.113.10"), Side: "x"}}
	for i := 1; i <= 3; i++ {
		addr, side := topology.NodeAddr(topology.L3, i, 3)
		name := "n" + string(rune('0'+i))
		s.Nodes = append(s.Nodes, &Node{Host: topology.Host{Name: name, NS: "x-" + name, Addr: addr, Side: side},
			Agent: "weft", SubnetFile: "/nonexistent/" + name})
	}
	s.Pods = []*pod.Pod{{Name: "n1-p1", NS: "x-n1-p1", Node: "n1", Addr: netip.MustParseAddr("10.244.7.2")}}
	return s
}

func TestPicture(t *testing.T) {
	var b strings.Builder
	testState(DefaultBackend, true, true).picture(&b)
	want := `lab x — cluster network 10.244.0.0/16, backend vxlan + DirectRouting, underlay l3
  underlay: router x-ul joins side a 192.0.2.0/24 (br-a), side b 198.51.100.0/24 (br-b), outside 203.0.113.0/24 (br-x)
  nodes: iptables FORWARD policy DROP (as Docker sets it)
  ctl  x-ctl        192.0.2.2       store http://192.0.2.2:2379
  side a (192.0.2.0/24):
  n1   x-n1         192.0.2.11      subnet                 pods: n1-p1 10.244.7.2
  n2   x-n2         192.0.2.12      subnet                 pods: 
  side b (198.51.100.0/24):
  n3   x-n3         198.51.100.13   subnet                 pods: 
  ext  x-ext        203.0.113.10    outside the cluster network
  paths between nodes:
    n1 192.0.2.11 <-> n2 192.0.2.12: direct route (same segment)
    n1 192.0.2.11 <-> n3 198.51.100.13: vxlan VNI 1 udp/8472 via flannel.1
    n2 192.0.2.12 <-> n3 198.51.100.13: vxlan VNI 1 udp/8472 via flannel.1
`
	if b.String() != want {
		t.Errorf("picture:\n%s\nwant:\n%s", b.String(), want)
	}
	for backend, path := range map[string]string{"host-gw": "direct route (host-gw)", "udp": "udp/8285 via flannel0 (BPF, or userspace where the node lacks it)"} {
		b.Reset()
		testState(backend, false, false).picture(&b)
		if strings.Contains(b.String(), "FORWARD") || strings.Count(b.String(), ": "+path+"\n") != 3 {
			t.Errorf("%s picture:\n%s", backend, b.String())
		}
	}
}

func TestStatusPrint(t *testing.T) {
	var b strings.Builder
	testState(DefaultBackend, false, true).status().print(&b)
	first, _, _ := strings.Cut(b.String(), "\n")
	if want := "lab x: backend vxlan, topology l3, FORWARD policy DROP in every node, store http://192.0.2.2:2379 (pid 0, running false)"; first != want {
		t.Errorf("first line %q, want %q", first, want)
	}
	b.Reset()
	testState(DefaultBackend, true, false).status().print(&b)
	first, _, _ = strings.Cut(b.String(), "\n")
	if want := "lab x: backend vxlan (DirectRouting), topology l3, store http://192.0.2.2:2379 (pid 0, running false)"; first != want {
		t.Errorf("first line %q, want %q", first, want)
	}
	if !strings.Contains(b.String(), "n3    x-n3   198.51.100.13          weft   stopped  false") {
		t.Errorf("status:\n%s", b.String())
	}
}

func TestNetConf(t *testing.T) {
	if got, err := testState(DefaultBackend, true, false).netConf(); err != nil || got != `{"Backend":{"DirectRouting":true,"Type":"vxlan"},"Network":"10.244.0.0/16"}`+"\n" {
		t.Errorf("net-conf.json: %s %v", got, err)
	}
	if got, err := testState("host-gw", false, false).netConf(); err != nil || got != `{"Backend":{"Type":"host-gw"},"Network":"10.244.0.0/16"}`+"\n" {
		t.Errorf("net-conf.json: %s %v", got, err)
	}
}

// TestNetConfFamilies: the lab's net-conf.json per --ip-family, as the
// agents' parser reads it: dual adds the IPv6 network with a /64 per
// node, ipv6 turns IPv4 off, and udp refuses IPv6.
func TestNetConfFamilies(t *testing.T) {
	for _, tc := range []struct {
		fam, backend string
		v4, v6       bool
	}{
		{topology.IPv4, "vxlan", true, false},
		{topology.Dual, "vxlan", true, true},
		{topology.IPv6, "host-gw", false, true},
		{topology.Dual, "host-gw", true, true},
	} {
		doc, err := netConf(tc.backend, false, "", tc.fam)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.fam, tc.backend, err)
		}
		cfg, err := config.Parse(doc)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", tc.fam, tc.backend, err, doc)
		}
		if cfg.EnableIPv4 != tc.v4 || cfg.EnableIPv6 != tc.v6 {
			t.Errorf("%s: EnableIPv4 %v, EnableIPv6 %v:\n%s", tc.fam, cfg.EnableIPv4, cfg.EnableIPv6, doc)
		}
		if tc.v6 && (cfg.IPv6.Network != topology.Network6 || cfg.IPv6.SubnetLen != 64) {
			t.Errorf("%s: IPv6 %+v", tc.fam, cfg.IPv6)
		}
		if tc.v4 && cfg.IPv4.Network != topology.Network {
			t.Errorf("%s: IPv4 %+v", tc.fam, cfg.IPv4)
		}
	}
	if _, err := netConf("udp", false, "", topology.Dual); err == nil {
		t.Error("udp with IPv6 accepted")
	}
	if got := networks(topology.Dual); got != "10.244.0.0/16, 2001:db8:244::/56" {
		t.Errorf("networks of a dual lab: %s", got)
	}
}

// bgpState is testState with a BIRD router and an MD5 password.
func bgpState(fam string) *State {
	s := testState("host-gw", false, false)
	s.IPFamily = fam
	s.Router = &router.Router{Kind: router.BIRD, AS: router.AS, Password: "pw"}
	for _, n := range s.Nodes {
		n.Dir = "/run/weft-lab/x/" + n.Name
		if topology.HasIPv6(fam) {
			n.Host = n.WithIPv6()
		}
	}
	return s
}

// TestStateNoPassword: the state file (0644: `weft lab status` reads
// it) does not hold the sessions' password.
func TestStateNoPassword(t *testing.T) {
	s := bgpState(topology.IPv4)
	s.Router.Password = "s3cret-pw"
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cret-pw") {
		t.Errorf("the state holds the password: %s", b)
	}
}

// TestBGPNetConf: the BGP object of a --bgp lab's net-conf.json: import
// on, the lab's timers, ext's networks routable.
func TestBGPNetConf(t *testing.T) {
	got, err := bgpState(topology.Dual).netConf()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ BGP map[string]any }
	if err := json.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc.BGP)
	if want := `{"HoldTime":9,"Import":true,"LocalAS":64512,"RestartTime":30,"RoutableNetworks":["203.0.113.0/24","2001:db8:0:f::/64"]}`; string(b) != want {
		t.Errorf("BGP object %s, want %s", b, want)
	}
	if got, _ := testState("host-gw", false, false).netConf(); strings.Contains(got, "BGP") {
		t.Errorf("a lab without --bgp has a BGP object: %s", got)
	}
}

// TestBGPFlags: node nK's agent gets AS 64512+K and its side's router
// address per family with the password file (etcd mode); in Kubernetes
// mode the annotations say them; a node's own peers replace the lab's,
// "router" standing for them.
func TestBGPFlags(t *testing.T) {
	s := bgpState(topology.Dual)
	n3 := s.Nodes[2]
	want := "--bgp-local-as 64515 --bgp-peer 198.51.100.1,as=64500,password-file=/run/weft-lab/x/n3/bgp-password" +
		" --bgp-peer 2001:db8:0:b::1,as=64500,password-file=/run/weft-lab/x/n3/bgp-password"
	if got := strings.Join(s.bgpFlags(n3), " "); got != want {
		t.Errorf("n3's flags:\n got %s\nwant %s", got, want)
	}
	nb := s.neighbors(n3)
	if len(nb) != 2 || nb[0] != (router.Neighbor{Node: "n3", Addr: netip.MustParseAddr("198.51.100.13"), AS: 64515}) || nb[1].Addr != netip.MustParseAddr("2001:db8:0:b::d") {
		t.Errorf("n3's neighbours: %+v", nb)
	}
	if err := s.setPeers(n3, []string{"router", "192.0.2.99,as=64500"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.peerFlags(n3), " "); !strings.HasSuffix(got, " 192.0.2.99,as=64500") || !strings.HasPrefix(got, "198.51.100.1,as=64500,") {
		t.Errorf("n3's own peers: %s", got)
	}
	s.Kube = &kube.Kube{}
	if got := strings.Join(s.bgpFlags(s.Nodes[0]), " "); got != "" {
		t.Errorf("kube mode flags of n1: %q", got)
	}
	ann, err := s.bgpAnnotations(s.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if ann["bgp.weft.io/local-as"] != "64513" || ann["bgp.weft.io/peers"] != `[{"Address":"192.0.2.1","AS":64500,"Password":"pw"},{"Address":"2001:db8:0:a::1","AS":64500,"Password":"pw"}]` {
		t.Errorf("n1's annotations: %v", ann)
	}
	s4 := bgpState(topology.IPv4)
	if got := strings.Join(s4.bgpFlags(s4.Nodes[0]), " "); got != "--bgp-local-as 64513 --bgp-peer 192.0.2.1,as=64500,password-file=/run/weft-lab/x/n1/bgp-password" {
		t.Errorf("n1's flags in an IPv4 lab: %s", got)
	}
	if err := testState("vxlan", false, false).setPeers(n3, []string{"router"}); err == nil || !strings.Contains(err.Error(), "runs no BGP") {
		t.Errorf("--bgp-peer in a lab without BGP: %v", err)
	}
}

// TestBGPPicture: the picture says who speaks BGP with what timers.
func TestBGPPicture(t *testing.T) {
	var b strings.Builder
	bgpState(topology.IPv4).picture(&b)
	if !strings.Contains(b.String(), "  bgp: the router runs bird as AS 64500, an eBGP session with each node nK (AS 64512+K); hold time 9s, restart time 30s;\n"+
		"       it learns the pods' subnets and re-announces them; ext's network (203.0.113.0/24) is routable: no masquerade to it\n") {
		t.Errorf("picture:\n%s", b.String())
	}
}

// TestBGPSettingsParse: what the lab writes (the BGP object, n3's flags
// and n1's annotations) is what the agents' parsers accept, giving the
// node its AS, peers and password.
func TestBGPSettingsParse(t *testing.T) {
	s := bgpState(topology.Dual)
	doc, err := s.netConf()
	if err != nil {
		t.Fatal(err)
	}
	var nc struct{ BGP json.RawMessage }
	if err := json.Unmarshal([]byte(doc), &nc); err != nil {
		t.Fatal(err)
	}
	c, err := bgp.Parse(nc.BGP)
	if err != nil {
		t.Fatalf("bgp.Parse(%s): %v", nc.BGP, err)
	}
	if !c.Enabled || !c.Import || !c.GracefulRestart || c.HoldTime != 9*time.Second || c.RestartTime != 30*time.Second || len(c.RoutableNetworks) != 2 {
		t.Errorf("parsed BGP object: %+v", c)
	}
	flags := s.bgpFlags(s.Nodes[2])
	var peers []bgp.Peer
	for i := 0; i+1 < len(flags); i += 2 {
		if flags[i] != "--bgp-peer" {
			continue
		}
		p, err := bgp.ParsePeerFlag(flags[i+1], func(string) ([]byte, error) { return []byte("pw\n"), nil })
		if err != nil {
			t.Fatalf("--bgp-peer %s: %v", flags[i+1], err)
		}
		peers = append(peers, p)
	}
	if len(peers) != 2 || peers[0].AS != router.AS || peers[0].Password != "pw" || peers[1].Address != netip.MustParseAddr("2001:db8:0:b::1") {
		t.Errorf("n3's peers: %+v", peers)
	}
	if as, err := bgp.ParseAS(flags[1]); err != nil || as != 64515 {
		t.Errorf("--bgp-local-as %s: %d %v", flags[1], as, err)
	}
	ann, _ := s.bgpAnnotations(s.Nodes[0])
	ns, err := bgp.ParseAnnotations(ann)
	if err != nil || ns.LocalAS != 64513 || !ns.PeersSet || len(ns.Peers) != 2 || ns.Peers[0].Password != "pw" {
		t.Errorf("n1's annotations %v: %+v %v", ann, ns, err)
	}
	if err := c.WithNode(ns).Validate(); err != nil {
		t.Errorf("n1's merged config: %v", err)
	}
}

// TestStatusPrintBGP: the router's sessions and each agent's, from
// /readyz's bgp list.
func TestStatusPrintBGP(t *testing.T) {
	st := LabStatus{Name: "x", Router: &RouterStatus{Kind: router.BIRD, NS: "x-ul", AS: 64500, PIDs: []int{7}, Running: true, Socket: "/r/bird.ctl",
		Sessions: []router.Session{{Neighbor: netip.MustParseAddr("192.0.2.11"), AS: 64513, State: "established", Received: 1, Sent: 3}}},
		Nodes: []NodeStatus{{Name: "n1", BGPAS: 64513, BGP: []any{map[string]any{"address": "192.0.2.1", "as": 64500.0, "state": "established",
			"prefixesSent": 1.0, "prefixesReceived": 3.0, "flaps": 0.0}}}, {Name: "n2", BGPAS: 64514}}}
	var b strings.Builder
	st.print(&b)
	for _, want := range []string{
		"BGP router: bird in x-ul, AS 64500, pids [7] (running true), control /r/bird.ctl\n",
		"192.0.2.11        64513  established  1         3     -\n",
		"n1    64513  192.0.2.1  64500    established             1     3         0      -\n",
		"n2    64514  -          -        (no sessions reported)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
