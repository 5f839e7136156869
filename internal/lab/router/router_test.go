package router

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec() // birdc and vtysh run through netns.Command
	os.Exit(m.Run())
}

func TestNodeAS(t *testing.T) {
	if NodeAS(1) != 64513 || NodeAS(4) != 64516 {
		t.Errorf("NodeAS(1), NodeAS(4) = %d, %d", NodeAS(1), NodeAS(4))
	}
}

// testPasswords are passwords each kind takes as they are: BIRD a
// space and a backslash (no escape in its strings), FRR a double quote,
// a backslash and a question mark (one word).
var testPasswords = map[string]string{BIRD: `s3 cr\et?`, FRR: `s3"cr\et?`}

func testRouter(kind string) *Router {
	return &Router{Kind: kind, Dir: "/run/weft-lab/x/router", ID: netip.MustParseAddr("192.0.2.1"), AS: AS, Password: testPasswords[kind],
		Neighbors: []Neighbor{
			{Node: "n1", Addr: netip.MustParseAddr("192.0.2.11"), AS: 64513},
			{Node: "n1", Addr: netip.MustParseAddr("2001:db8:0:a::b"), AS: 64513},
			{Node: "n3", Addr: netip.MustParseAddr("198.51.100.13"), AS: 64515},
		}}
}

// TestBIRDConfig: one protocol per neighbour and family, the lab's
// timers, graceful restart, the password quoted, kernel export on.
func TestBIRDConfig(t *testing.T) {
	c := BIRDConfig(testRouter(BIRD))
	for _, want := range []string{
		"router id 192.0.2.1;",
		"protocol kernel kernel4 { ipv4 { import none; export all; }; }",
		"protocol kernel kernel6 { ipv6 { import none; export all; }; }",
		"local as 64500;", "hold time 9;", "graceful restart on;", "connect retry time 3;",
		`password "s3 cr\et?";`,
		"protocol bgp n1 from node {\n  neighbor 192.0.2.11 as 64513;\n  ipv4 { import all; export all; };\n}",
		"protocol bgp n1_v6 from node {\n  neighbor 2001:db8:0:a::b as 64513;\n  ipv6 { import all; export all; };\n}",
		"protocol bgp n3 from node {\n  neighbor 198.51.100.13 as 64515;",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("bird.conf lacks %q:\n%s", want, c)
		}
	}
	r := testRouter(BIRD)
	r.Password = ""
	if c := BIRDConfig(r); strings.Contains(c, "password") {
		t.Errorf("bird.conf without a password:\n%s", c)
	}
}

// TestCheckPassword: what each kind cannot carry is refused in one line
// that does not show the password; what it can is taken.
func TestCheckPassword(t *testing.T) {
	for _, c := range []struct {
		kind, pw string
		ok       bool
	}{
		{BIRD, "", true}, {FRR, "", true},
		{BIRD, testPasswords[BIRD], true}, {FRR, testPasswords[FRR], true},
		{BIRD, `a"b`, false}, {FRR, "a b", false}, {FRR, "a\tb", false}, {FRR, " lead", false},
	} {
		err := CheckPassword(c.kind, c.pw)
		if (err == nil) != c.ok {
			t.Errorf("CheckPassword(%s, %q) = %v", c.kind, c.pw, err)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), c.pw)) {
			t.Errorf("CheckPassword(%s, %q) = %q: not one line, or shows the password", c.kind, c.pw, err)
		}
	}
}

// TestPasswordFile: the password is not in the router's JSON (the lab's
// state file); SavePassword keeps it in a file only its owner reads, and
// LoadPassword brings it back.
func TestPasswordFile(t *testing.T) {
	r := testRouter(BIRD)
	r.Dir = filepath.Join(t.TempDir(), "router")
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3 cr") || strings.Contains(string(b), `"password"`) {
		t.Errorf("the router's JSON holds the password: %s", b)
	}
	if err := r.SavePassword(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(r.PasswordFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want 0600", r.PasswordFile(), err, fi.Mode())
	}
	var back Router
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.LoadPassword(); err != nil || back.Password != testPasswords[BIRD] {
		t.Fatalf("LoadPassword: %q, %v", back.Password, err)
	}
	r.Password = ""
	if err := r.SavePassword(); err != nil {
		t.Fatal(err)
	}
	if err := back.LoadPassword(); err != nil || back.Password != "" {
		t.Fatalf("LoadPassword with no password saved: %q, %v", back.Password, err)
	}
}

// TestFRRConfig: eBGP without a required policy, each neighbour
// activated in its own family only.
func TestFRRConfig(t *testing.T) {
	c := FRRConfig(testRouter(FRR))
	for _, want := range []string{
		"router bgp 64500\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n timers bgp 3 9\n",
		" neighbor 192.0.2.11 remote-as 64513\n", " neighbor 2001:db8:0:a::b remote-as 64513\n",
		" neighbor 198.51.100.13 timers 3 9\n", " neighbor 192.0.2.11 password s3\"cr\\et?\n",
		" address-family ipv4 unicast\n  neighbor 192.0.2.11 activate\n  neighbor 198.51.100.13 activate\n exit-address-family\n",
		" address-family ipv6 unicast\n  neighbor 2001:db8:0:a::b activate\n exit-address-family\n",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("bgpd.conf lacks %q:\n%s", want, c)
		}
	}
}

func TestParseBIRDProtocols(t *testing.T) {
	text := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     02:35:56.268
kernel4    Kernel     master4    up     02:35:56.268
  Channel ipv4
    State:          UP
    Routes:         0 imported, 2 exported, 0 preferred
n1         BGP        ---        up     02:36:01.001  Established
  BGP state:          Established
    Neighbor address: 192.0.2.11
    Neighbor AS:      64513
    Local AS:         64500
  Channel ipv4
    State:          UP
    Routes:         1 imported, 2 exported, 1 preferred
n3         BGP        ---        start  02:35:56.268  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 198.51.100.13
    Neighbor AS:      64515
    Local AS:         64500
    Connect delay:    2.1/3
    Last error:       Socket: Connection refused
  Channel ipv4
    State:          DOWN
`
	got := parseBIRDProtocols(text)
	want := []Session{
		{Neighbor: netip.MustParseAddr("192.0.2.11"), AS: 64513, State: "established", Received: 1, Sent: 2},
		{Neighbor: netip.MustParseAddr("198.51.100.13"), AS: 64515, State: "active", Info: "Socket: Connection refused"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("session %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseFRRSummary(t *testing.T) {
	doc := `{"ipv4Unicast":{"as":64500,"peers":{"192.0.2.11":{"remoteAs":64513,"state":"Established","pfxRcd":1,"pfxSnt":3},
"192.0.2.12":{"remoteAs":64514,"state":"Active","pfxRcd":0,"pfxSnt":0,"lastNotificationReason":"OPEN Message Error/Bad Peer AS"}}},
"ipv6Unicast":{"peers":{"2001:db8:0:a::b":{"remoteAs":64513,"state":"Established","pfxRcd":1,"pfxSnt":1}}}}`
	got, err := parseFRRSummary([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Session{}
	for _, s := range got {
		by[s.Neighbor.String()] = s
	}
	if s := by["192.0.2.11"]; s.State != "established" || s.AS != 64513 || s.Received != 1 || s.Sent != 3 {
		t.Errorf("192.0.2.11: %+v", s)
	}
	if s := by["192.0.2.12"]; s.State != "active" || s.Info != "OPEN Message Error/Bad Peer AS" {
		t.Errorf("192.0.2.12: %+v", s)
	}
	if s := by["2001:db8:0:a::b"]; s.State != "established" || len(got) != 3 {
		t.Errorf("2001:db8:0:a::b: %+v (of %d)", s, len(got))
	}
	if _, err := parseFRRSummary([]byte("% Unknown command")); err == nil {
		t.Error("a vtysh error parsed as a summary")
	}
}

func TestFind(t *testing.T) {
	if err := Find("gobgp"); err == nil || !strings.Contains(err.Error(), "use bird or frr") {
		t.Errorf("Find(gobgp) = %v", err)
	}
}

// TestPeering runs each kind as the router of an l3 underlay, and the
// other kind as a node on side a peering with it, both with the same MD5
// password (one both take as it is, with a backslash and a question
// mark: BIRD has no escape, vtysh's standard input would take '?' for
// help): both see the session established. With BIRD as the router,
// FRR announces a pod subnet and BIRD writes it into the router's kernel
// table via the node; a neighbour added later shows up in the running
// router.
func TestPeering(t *testing.T) {
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			ul, node := netnstest.New(t), netnstest.New(t)
			other := FRR
			if kind == FRR {
				other = BIRD
			}
			for _, k := range []string{kind, other} {
				if err := Find(k); err != nil {
					if os.Getenv("CI") != "" {
						t.Fatalf("%v: .ci/run installs bird2 and frr", err)
					}
					t.Skip(err)
				}
			}
			if err := topology.BuildUnderlay(ul, topology.L3, topology.IPv4); err != nil {
				t.Fatal(err)
			}
			addr, side := topology.NodeAddr(topology.L3, 1, 2)
			if err := topology.Attach(ul, topology.L3, topology.Host{Name: "n1", NS: node, Addr: addr, Side: side}); err != nil {
				t.Fatal(err)
			}
			gw := topology.Gateway(topology.L3, side)
			ctx := context.Background()
			const pw = `s3\cr?et#`
			r := &Router{Kind: kind, NS: ul, Dir: frrDir(t), ID: gw, AS: AS, Password: pw}
			n := &Router{Kind: other, NS: node, Dir: frrDir(t), ID: addr, AS: NodeAS(1), Password: pw,
				Neighbors: []Neighbor{{Node: "r0", Addr: gw, AS: AS}}}
			for _, x := range []*Router{r, n} {
				t.Cleanup(func() {
					if err := x.Stop(); err != nil {
						t.Error(err)
					}
					if x.Running() {
						t.Errorf("%s still runs", x.Kind)
					}
				})
				if err := x.Start(ctx, func() error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
			// The neighbour added to the running router, as node add does.
			if err := r.AddNeighbor(ctx, Neighbor{Node: "n1", Addr: addr, AS: NodeAS(1)}); err != nil {
				t.Fatal(err)
			}
			if err := r.AddNeighbor(ctx, Neighbor{Node: "n1", Addr: addr, AS: NodeAS(1)}); err != nil || len(r.Neighbors) != 1 {
				t.Fatalf("adding a neighbour again: %v, %d neighbours", err, len(r.Neighbors))
			}
			subnet := netip.MustParsePrefix("10.244.1.0/24")
			if other == FRR {
				// FRR announces only what its RIB has: a blackhole route for
				// the subnet, as a node has the subnet on cni0.
				h, err := netns.Handle(node)
				if err != nil {
					t.Fatal(err)
				}
				defer h.Close()
				if err := h.RouteAdd(&netlink.Route{Dst: netconv.IPNet(subnet), Type: 6 /* RTN_BLACKHOLE */}); err != nil {
					t.Fatal(err)
				}
				if _, err := n.control(ctx, "configure terminal", "router bgp 64513", "address-family ipv4 unicast", "network "+subnet.String()); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				rs, rerr := r.Sessions(ctx)
				ns, nerr := n.Sessions(ctx)
				up := rerr == nil && nerr == nil && len(rs) == 1 && len(ns) == 1 && rs[0].State == "established" && ns[0].State == "established"
				if up && rs[0].AS == NodeAS(1) && ns[0].AS == AS && (other != FRR || rs[0].Received == 1) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("sessions not established: router %+v %v, node %+v %v\n%s", rs, rerr, ns, nerr, readFile(r.LogFile()))
				}
				time.Sleep(200 * time.Millisecond)
			}
			if other != FRR {
				return
			}
			if hops, err := r.NextHops(netip.MustParsePrefix("10.244.2.0/24")); err != nil || len(hops) != 0 {
				t.Fatalf("router's next hops to a subnet nobody announced: %v %v", hops, err)
			}
			for {
				hops, err := r.NextHops(subnet)
				if err == nil && len(hops) == 1 && hops[0] == addr {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("router's next hops to %s: %v %v", subnet, hops, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			// FRR withdraws the subnet: the router's route goes.
			if _, err := n.control(ctx, "configure terminal", "router bgp 64513", "address-family ipv4 unicast", "no network "+subnet.String()); err != nil {
				t.Fatal(err)
			}
			for {
				hops, err := r.NextHops(subnet)
				if err == nil && len(hops) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("router's next hops to %s after the withdrawal: %v %v", subnet, hops, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// frrDir is a temporary directory FRR's daemons can reach: they run as
// the frr user, and t.TempDir's parent is root's alone (0700).
func frrDir(t *testing.T) string {
	d := t.TempDir()
	if err := os.Chmod(filepath.Dir(d), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
