package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	network  = netip.MustParsePrefix("10.244.0.0/16")
	subnet   = netip.MustParsePrefix("10.244.3.0/24")
	network6 = netip.MustParsePrefix("2001:db8:244::/48")
	subnet6  = netip.MustParsePrefix("2001:db8:244:3::/64")
)

// The rules of flannel's FLANNEL-POSTRTG and FLANNEL-FWD, in nft syntax.
var golden = []string{
	"meta mark & 0x00004000 == 0x00004000 return",
	"ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
	"ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
	"ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
	"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
	"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
	"ip saddr 10.244.0.0/16 accept",
	"ip daddr 10.244.0.0/16 accept",
}

// The same for IPv6, as flannel's ip6tables rules: ff00::/8 for
// multicast.
var golden6 = []string{
	"meta mark & 0x00004000 == 0x00004000 return",
	"ip6 saddr 2001:db8:244:3::/64 ip6 daddr 2001:db8:244::/48 return",
	"ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return",
	"ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return",
	"ip6 saddr 2001:db8:244::/48 ip6 daddr != ff00::/8 masquerade fully-random",
	"ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244::/48 masquerade fully-random",
	"ip6 saddr 2001:db8:244::/48 accept",
	"ip6 daddr 2001:db8:244::/48 accept",
}

func rulesOf(parts ...Part) []string {
	var got []string
	for _, p := range parts {
		for _, c := range p.Chains {
			for _, r := range c.Rules {
				got = append(got, r.String())
			}
		}
	}
	return got
}

func TestRules(t *testing.T) {
	if got := rulesOf(Masquerade(network, subnet), Forward(network)); !slices.Equal(got, golden) {
		t.Errorf("rules:\n got %q\nwant %q", got, golden)
	}
	m6, f6 := Masquerade(network6, subnet6), Forward(network6)
	if got := rulesOf(m6, f6); !slices.Equal(got, golden6) {
		t.Errorf("IPv6 rules:\n got %q\nwant %q", got, golden6)
	}
	if m6.Family != IPv6 || f6.Family != IPv6 || f6.IPTables[0].Name != IPTablesForwardChain || !slices.Equal(f6.IPTables[0].Rules, f6.Chains[0].Rules) {
		t.Errorf("IPv6 parts: %+v %+v", m6, f6)
	}
	// --ip-masq-fully-random-disable: the same rules, plain masquerade.
	for i, fam := range []struct{ n, s netip.Prefix }{{network, subnet}, {network6, subnet6}} {
		want := slices.Clone([][]string{golden, golden6}[i][:6])
		for j := range want {
			want[j] = strings.Replace(want[j], "masquerade fully-random", "masquerade", 1)
		}
		if got := rulesOf(MasqueradeRandom(fam.n, fam.s, false)); !slices.Equal(got, want) {
			t.Errorf("not fully random:\n got %q\nwant %q", got, want)
		}
		if got := rulesOf(MasqueradeRandom(fam.n, fam.s, true)); !slices.Equal(got, rulesOf(Masquerade(fam.n, fam.s))) {
			t.Errorf("MasqueradeRandom(true) is not Masquerade: %q", got)
		}
	}
	v6 := Masquerade(netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd00:10:244:3::/64"))
	if v6.Family != IPv6 {
		t.Errorf("v6 part family %s", v6.Family)
	}
	if got := v6.Chains[0].Rules[4].String(); got != "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random" {
		t.Errorf("v6 masquerade rule: %s", got)
	}
	// An unmasked network is masked, as the kernel would compare it.
	if got := Forward(netip.MustParsePrefix("10.244.7.9/16")).Chains[0].Rules[0].String(); got != "ip saddr 10.244.0.0/16 accept" {
		t.Errorf("unmasked network: %s", got)
	}
}

// TestMasqueradeExcept: pods' traffic to a routable network keeps its
// source: one return per routable network of the part's family, after the
// pod-to-pod and outside-to-pod returns and before the masquerade of pods'
// traffic to the outside.
func TestMasqueradeExcept(t *testing.T) {
	pp := netip.MustParsePrefix
	routable := []netip.Prefix{pp("203.0.113.0/24"), pp("2001:db8:0:f::/64"), pp("198.51.100.7/24")}
	for _, tc := range []struct {
		name     string
		part     Part
		want     []string
		routable []string // the rules that the routable networks add, in order
	}{
		{"IPv4", MasqueradeExcept(network, subnet, true, routable), golden[:6], []string{
			"ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return",
			"ip saddr 10.244.0.0/16 ip daddr 198.51.100.0/24 return", // masked, as the kernel compares it
		}},
		{"IPv6", MasqueradeExcept(network6, subnet6, true, routable), golden6[:6], []string{
			"ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:0:f::/64 return",
		}},
		{"IPv4 not random", MasqueradeExcept(network, subnet, false, routable[:1]), []string{
			golden[0], golden[1], golden[2], golden[3],
			"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade",
			"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade",
		}, []string{"ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return"}},
		{"IPv6 with IPv4 networks only", MasqueradeExcept(network6, subnet6, true, []netip.Prefix{pp("203.0.113.0/24"), {}}), golden6[:6], nil},
		{"none", MasqueradeExcept(network, subnet, true, nil), golden[:6], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := slices.Concat(tc.want[:4], tc.routable, tc.want[4:])
			if got := rulesOf(tc.part); !slices.Equal(got, want) {
				t.Errorf("rules:\n got %q\nwant %q", got, want)
			}
			if tc.part.Name != PartMasquerade || tc.part.Family != FamilyOf(tc.part.Chains[0].Rules[1].Src.Prefix) {
				t.Errorf("part %s, family %s", tc.part.Name, tc.part.Family)
			}
		})
	}
	// Without routable networks it is MasqueradeRandom, rendered the same.
	for _, random := range []bool{true, false} {
		s, r := NewState(MasqueradeExcept(network, subnet, random, nil)), NewState(MasqueradeRandom(network, subnet, random))
		ts, err1 := Render(s, Observed{})
		tr, err2 := Render(r, Observed{})
		if err1 != nil || err2 != nil || ts.String() != tr.String() {
			t.Errorf("random %v: MasqueradeExcept without networks renders\n%s\nMasqueradeRandom\n%s (%v, %v)", random, ts, tr, err1, err2)
		}
	}
	// Rendered into the transaction.
	tx, err := Render(NewState(MasqueradeExcept(network, subnet, true, routable[:1])), Observed{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "add rule ip weft postrouting ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return\n" +
		"add rule ip weft postrouting ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n"; !strings.Contains(tx.String(), want) {
		t.Errorf("transaction lacks\n%s\nin\n%s", want, tx)
	}
}

const (
	addPost  = "add chain ip weft postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
	addFwd   = "add chain ip weft forward { type filter hook forward priority filter; policy accept; }\n"
	postRule = "add rule ip weft postrouting meta mark & 0x00004000 == 0x00004000 return\n" +
		"add rule ip weft postrouting ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return\n" +
		"add rule ip weft postrouting ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return\n" +
		"add rule ip weft postrouting ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return\n" +
		"add rule ip weft postrouting ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n" +
		"add rule ip weft postrouting ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random\n"
	fwdRule = "add rule ip weft forward ip saddr 10.244.0.0/16 accept\n" +
		"add rule ip weft forward ip daddr 10.244.0.0/16 accept\n"
)

// policy stands for the next part (NetworkPolicy): a base chain that jumps
// to a regular chain.
func policy() Part {
	return Part{Name: "policy", Family: IPv4, Chains: []Chain{
		{Name: "policy-forward", Base: &Base{Type: TypeFilter, Hook: HookForward, Priority: -10},
			Rules: []Rule{{Dst: in(netip.MustParsePrefix("10.244.3.0/24")), Verdict: VerdictReturn}}},
		{Name: "policy-pod", Rules: []Rule{{Src: in(netip.MustParsePrefix("10.244.3.5/32")), Verdict: VerdictAccept}}},
	}}
}

func TestRender(t *testing.T) {
	both := NewState(Masquerade(network, subnet), Forward(network))
	for _, tc := range []struct {
		name string
		// steps are applied in order, each from the tables the one before
		// left; want is the transaction of the last.
		steps []State
		want  string
	}{
		{"first sync", []State{both},
			"add table ip weft\n" + addPost + addFwd + postRule + fwdRule},
		{"same state again refills each chain, and only its own", []State{both, both},
			"add table ip weft\n" + addPost + addFwd +
				"flush chain ip weft postrouting\n" + postRule +
				"flush chain ip weft forward\n" + fwdRule},
		{"masquerade off: its chain goes, forward stays", []State{both, NewState(Forward(network))},
			"add table ip weft\n" + addFwd + "flush chain ip weft forward\n" + fwdRule +
				"flush chain ip weft postrouting\ndelete chain ip weft postrouting\n"},
		{"nothing left: the table goes", []State{both, {}},
			"delete table ip weft\n"},
		{"nothing, and no table: no transaction", []State{{}}, ""},
		{"a policy part: masquerade sync leaves policy chains to policy",
			[]State{NewState(Masquerade(network, subnet), policy()), NewState(Masquerade(network, subnet), policy())},
			"add table ip weft\n" + addPost +
				"add chain ip weft policy-forward { type filter hook forward priority filter - 10; policy accept; }\n" +
				"add chain ip weft policy-pod\n" +
				"flush chain ip weft postrouting\n" + postRule +
				"flush chain ip weft policy-forward\n" +
				"add rule ip weft policy-forward ip daddr 10.244.3.0/24 return\n" +
				"flush chain ip weft policy-pod\n" +
				"add rule ip weft policy-pod ip saddr 10.244.3.5 accept\n"},
		{"policy gone: both its chains are emptied before either is deleted",
			[]State{NewState(Forward(network), policy()), NewState(Forward(network))},
			"add table ip weft\n" + addFwd + "flush chain ip weft forward\n" + fwdRule +
				"flush chain ip weft policy-forward\nflush chain ip weft policy-pod\n" +
				"delete chain ip weft policy-forward\ndelete chain ip weft policy-pod\n"},
		{"dual stack: one table per family, ip first",
			[]State{NewState(Forward(netip.MustParsePrefix("fd00:10:244::/56")), Forward(network))},
			"add table ip weft\n" + addFwd + fwdRule +
				"add table ip6 weft\n" +
				"add chain ip6 weft forward { type filter hook forward priority filter; policy accept; }\n" +
				"add rule ip6 weft forward ip6 saddr fd00:10:244::/56 accept\n" +
				"add rule ip6 weft forward ip6 daddr fd00:10:244::/56 accept\n"},
		{"dual stack with masquerade: the same rules per family, ff00::/8 for IPv6",
			[]State{NewState(Masquerade(network, subnet), Forward(network), Masquerade(network6, subnet6), Forward(network6))},
			"add table ip weft\n" + addPost + addFwd + postRule + fwdRule +
				"add table ip6 weft\n" +
				"add chain ip6 weft postrouting { type nat hook postrouting priority srcnat; policy accept; }\n" +
				"add chain ip6 weft forward { type filter hook forward priority filter; policy accept; }\n" +
				"add rule ip6 weft postrouting meta mark & 0x00004000 == 0x00004000 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244:3::/64 ip6 daddr 2001:db8:244::/48 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return\n" +
				"add rule ip6 weft postrouting ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244::/48 ip6 daddr != ff00::/8 masquerade fully-random\n" +
				"add rule ip6 weft postrouting ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244::/48 masquerade fully-random\n" +
				"add rule ip6 weft forward ip6 saddr 2001:db8:244::/48 accept\n" +
				"add rule ip6 weft forward ip6 daddr 2001:db8:244::/48 accept\n"},
		{"IPv6 only after IPv4: the ip table goes, the ip6 one comes",
			[]State{NewState(Masquerade(network, subnet), Forward(network)), NewState(MasqueradeRandom(network6, subnet6, false))},
			"delete table ip weft\n" +
				"add table ip6 weft\n" +
				"add chain ip6 weft postrouting { type nat hook postrouting priority srcnat; policy accept; }\n" +
				"add rule ip6 weft postrouting meta mark & 0x00004000 == 0x00004000 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244:3::/64 ip6 daddr 2001:db8:244::/48 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return\n" +
				"add rule ip6 weft postrouting ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244:3::/64 return\n" +
				"add rule ip6 weft postrouting ip6 saddr 2001:db8:244::/48 ip6 daddr != ff00::/8 masquerade\n" +
				"add rule ip6 weft postrouting ip6 saddr != 2001:db8:244::/48 ip6 daddr 2001:db8:244::/48 masquerade\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var obs Observed
			var tx Transaction
			for i, s := range tc.steps {
				var err error
				if tx, err = Render(s, obs); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				obs = obs.After(tx)
				checkReached(t, s, obs)
			}
			if got := tx.String(); got != tc.want {
				t.Errorf("transaction:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// checkReached fails unless the tables hold exactly the chains of s.
func checkReached(t *testing.T, s State, obs Observed) {
	t.Helper()
	want := map[Family][]string{}
	for _, p := range s.Parts {
		for _, c := range p.Chains {
			want[p.Family] = append(want[p.Family], c.Name)
		}
	}
	for _, f := range []Family{IPv4, IPv6} {
		var got []string
		for n := range obs.Tables[f] {
			got = append(got, n)
		}
		slices.Sort(got)
		slices.Sort(want[f])
		if !slices.Equal(got, want[f]) {
			t.Errorf("%s chains after apply: %v, want %v", f, got, want[f])
		}
		if _, ok := obs.Tables[f]; ok != (len(want[f]) > 0) {
			t.Errorf("%s table exists: %v, want %v", f, ok, len(want[f]) > 0)
		}
	}
}

func TestRenderChangedHook(t *testing.T) {
	// A postrouting chain left with another priority (an older weft, or by
	// hand) cannot be changed in place: it is emptied, deleted and added.
	obs := Observed{Tables: map[Family]map[string]*Base{IPv4: {
		ChainPostrouting: {Type: TypeNAT, Hook: HookPostrouting, Priority: 0},
	}}}
	tx, err := Render(NewState(Masquerade(network, subnet)), obs)
	if err != nil {
		t.Fatal(err)
	}
	want := "add table ip weft\nflush chain ip weft postrouting\ndelete chain ip weft postrouting\n" + addPost + postRule
	if got := tx.String(); got != want {
		t.Errorf("transaction:\n%s\nwant:\n%s", got, want)
	}
	if b := obs.After(tx).Tables[IPv4][ChainPostrouting]; b == nil || b.Priority != PrioritySrcNAT {
		t.Errorf("after: postrouting is %+v", b)
	}
}

func TestRenderNeverFlushesTable(t *testing.T) {
	states := []State{
		{}, NewState(Masquerade(network, subnet)), NewState(Forward(network), policy()),
		NewState(Masquerade(network, subnet), Forward(network), policy()), NewState(policy()), {},
	}
	var obs Observed
	for _, a := range states {
		for _, b := range states {
			o := obs
			for _, s := range []State{a, b} {
				tx, err := Render(s, o)
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range tx {
					if op.Verb == Flush && op.Chain == "" {
						t.Fatalf("%s flushes the table", op)
					}
				}
				o = o.After(tx)
				checkReached(t, s, o)
			}
		}
	}
}

func TestRenderRejects(t *testing.T) {
	bad := Part{Name: "bad", Family: IPv4, Chains: []Chain{{Name: "x", Rules: []Rule{{Verdict: "reject"}}}}}
	for _, tc := range []struct {
		s    State
		want string
	}{
		{NewState(Forward(network), Forward(netip.MustParsePrefix("10.245.0.0/16"))), "given twice"},
		{NewState(Forward(network), Part{Name: "other", Family: IPv4, Chains: []Chain{{Name: ChainForward}}}), "already part forward's"},
		{NewState(Part{Family: IPv4}), "no name"},
		{NewState(Part{Name: "v6", Family: IPv6, Chains: Forward(network).Chains}), "matches ip addresses in an ip6 table"},
		{NewState(bad), `unknown verdict "reject"`},
		{NewState(Part{Name: "ipt", Family: IPv4, IPTables: []IPTablesChain{{Name: "FWD", From: "FORWARD"}}}), "must be named WEFT-"},
		{NewState(Part{Name: "hook", Family: IPv4, Chains: []Chain{{Name: "x", Base: &Base{Type: TypeFilter, Hook: "egress"}}}}), `hook "egress"`},
		{NewState(Part{Name: "type", Family: IPv4, Chains: []Chain{{Name: "x", Base: &Base{Type: "route", Hook: HookOutput}}}}), `type "route"`},
	} {
		if _, err := Render(tc.s, Observed{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Render(%v): %v, want an error with %q", tc.s, err, tc.want)
		}
	}
}

func TestBaseString(t *testing.T) {
	for _, tc := range []struct {
		b    Base
		want string
	}{
		{Base{TypeFilter, HookForward, 0}, "type filter hook forward priority filter; policy accept;"},
		{Base{TypeNAT, HookPostrouting, 100}, "type nat hook postrouting priority srcnat; policy accept;"},
		{Base{TypeFilter, HookForward, 100}, "type filter hook forward priority 100; policy accept;"},
		{Base{TypeFilter, HookForward, -10}, "type filter hook forward priority filter - 10; policy accept;"},
		{Base{TypeFilter, HookInput, 55}, "type filter hook input priority security + 5; policy accept;"},
		{Base{TypeNAT, HookPrerouting, -100}, "type nat hook prerouting priority dstnat; policy accept;"},
	} {
		if got := tc.b.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.b, got, tc.want)
		}
	}
}
