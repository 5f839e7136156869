package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The tunnel guard's chains for node subnet 10.244.3.0/24 behind
// flannel-wg, as `nft list table ip weft` prints them.
var guardIn = []string{
	"type filter hook prerouting priority raw; policy accept;",
	`iifname "flannel-wg" return`,
	"ip saddr 10.244.3.0/24 return",
	`ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter name "tunnel-in-dropped" drop`,
}

var guardOut = []string{
	"type filter hook postrouting priority filter; policy accept;",
	`oifname "flannel-wg" return`,
	"ip daddr 10.244.3.0/24 return",
	`ip daddr 10.244.0.0/16 counter name "tunnel-out-dropped" drop`,
}

// chainLines renders c as tableOf reads a chain: its spec, then its rules.
func chainLines(c Chain) []string {
	var l []string
	if c.Base != nil {
		l = append(l, c.Base.String())
	}
	for _, r := range c.Rules {
		l = append(l, r.String())
	}
	return l
}

func TestTunnelGuard(t *testing.T) {
	pp := netip.MustParsePrefix
	for _, tc := range []struct {
		name     string
		part     Part
		in, out  []string
		wantFam  Family
		counters []string
	}{
		{"IPv4 through flannel-wg", TunnelGuard(network, subnet, []string{"flannel-wg"}), guardIn, guardOut, IPv4, nil},
		{"IPv6 through flannel-wg-v6 (Mode separate)", TunnelGuard(network6, subnet6, []string{"flannel-wg-v6"}), []string{
			guardIn[0],
			`iifname "flannel-wg-v6" return`,
			"ip6 saddr 2001:db8:244:3::/64 return",
			`ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:244::/48 counter name "tunnel-in-dropped" drop`,
		}, []string{
			guardOut[0],
			`oifname "flannel-wg-v6" return`,
			"ip6 daddr 2001:db8:244:3::/64 return",
			`ip6 daddr 2001:db8:244::/48 counter name "tunnel-out-dropped" drop`,
		}, IPv6, nil},
		{"IPv6 through flannel-wg (single-device modes)", TunnelGuard(network6, subnet6, []string{"flannel-wg"}), []string{
			guardIn[0], guardIn[1],
			"ip6 saddr 2001:db8:244:3::/64 return",
			`ip6 saddr 2001:db8:244::/48 ip6 daddr 2001:db8:244::/48 counter name "tunnel-in-dropped" drop`,
		}, []string{
			guardOut[0], guardOut[1],
			"ip6 daddr 2001:db8:244:3::/64 return",
			`ip6 daddr 2001:db8:244::/48 counter name "tunnel-out-dropped" drop`,
		}, IPv6, nil},
		{"two devices, unmasked prefixes", TunnelGuard(pp("10.244.9.9/16"), pp("10.244.3.7/24"), []string{"wg0", "wg1"}), []string{
			guardIn[0], `iifname "wg0" return`, `iifname "wg1" return`, guardIn[2], guardIn[3],
		}, []string{
			guardOut[0], `oifname "wg0" return`, `oifname "wg1" return`, guardOut[2], guardOut[3],
		}, IPv4, nil},
		{"no subnet of the family: every pod address is another node's", TunnelGuard(network, netip.Prefix{}, []string{"flannel-wg"}),
			[]string{guardIn[0], guardIn[1], guardIn[3]}, []string{guardOut[0], guardOut[1], guardOut[3]}, IPv4, nil},
		{"no device: all of it dropped", TunnelGuard(network, subnet, nil),
			[]string{guardIn[0], guardIn[2], guardIn[3]}, []string{guardOut[0], guardOut[2], guardOut[3]}, IPv4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.part
			if p.Name != PartTunnelGuard || p.Family != tc.wantFam || len(p.Chains) != 2 ||
				p.Chains[0].Name != ChainTunnelIn || p.Chains[1].Name != ChainTunnelOut ||
				!slices.Equal(p.Counters, []string{CounterTunnelIn, CounterTunnelOut}) {
				t.Fatalf("part %+v", p)
			}
			if got := chainLines(p.Chains[0]); !slices.Equal(got, tc.in) {
				t.Errorf("tunnel-in:\n got %q\nwant %q", got, tc.in)
			}
			if got := chainLines(p.Chains[1]); !slices.Equal(got, tc.out) {
				t.Errorf("tunnel-out:\n got %q\nwant %q", got, tc.out)
			}
			if _, err := Render(NewState(p), Observed{}); err != nil {
				t.Error(err)
			}
		})
	}
}

const (
	addGuard = "add counter ip weft tunnel-in-dropped\nadd counter ip weft tunnel-out-dropped\n"
	guardTx  = "add chain ip weft tunnel-in { type filter hook prerouting priority raw; policy accept; }\n" +
		"add chain ip weft tunnel-out { type filter hook postrouting priority filter; policy accept; }\n"
	guardRules = "add rule ip weft tunnel-in iifname \"flannel-wg\" return\n" +
		"add rule ip weft tunnel-in ip saddr 10.244.3.0/24 return\n" +
		"add rule ip weft tunnel-in ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter name \"tunnel-in-dropped\" drop\n" +
		"add rule ip weft tunnel-out oifname \"flannel-wg\" return\n" +
		"add rule ip weft tunnel-out ip daddr 10.244.3.0/24 return\n" +
		"add rule ip weft tunnel-out ip daddr 10.244.0.0/16 counter name \"tunnel-out-dropped\" drop\n"
)

// TestRenderTunnelGuard: the guard's counters are added before any rule
// counts into them and kept across syncs (adding one that exists is a
// no-op: it keeps its count); they are deleted after the chains whose rules
// count into them are emptied, or with the table.
func TestRenderTunnelGuard(t *testing.T) {
	guard := TunnelGuard(network, subnet, []string{"flannel-wg"})
	withGuard := NewState(Masquerade(network, subnet), Forward(network), guard)
	noGuard := NewState(Masquerade(network, subnet), Forward(network))
	for _, tc := range []struct {
		name  string
		steps []State
		want  string
	}{
		{"first sync", []State{withGuard},
			"add table ip weft\n" + addGuard + addPost + addFwd + guardTx + postRule + fwdRule + guardRules},
		{"again: counters kept, chains refilled", []State{withGuard, withGuard},
			"add table ip weft\n" + addGuard + addPost + addFwd + guardTx +
				"flush chain ip weft postrouting\n" + postRule +
				"flush chain ip weft forward\n" + fwdRule +
				"flush chain ip weft tunnel-in\n" + strings.Join(strings.SplitAfter(guardRules, "\n")[:3], "") +
				"flush chain ip weft tunnel-out\n" + strings.Join(strings.SplitAfter(guardRules, "\n")[3:], "")},
		{"guard off: chains emptied, deleted, then the counters", []State{withGuard, noGuard},
			"add table ip weft\n" + addPost + addFwd +
				"flush chain ip weft postrouting\n" + postRule +
				"flush chain ip weft forward\n" + fwdRule +
				"flush chain ip weft tunnel-in\nflush chain ip weft tunnel-out\n" +
				"delete chain ip weft tunnel-in\ndelete chain ip weft tunnel-out\n" +
				"delete counter ip weft tunnel-in-dropped\ndelete counter ip weft tunnel-out-dropped\n"},
		{"guard alone, then nothing: the table goes with its counters", []State{NewState(guard), {}},
			"delete table ip weft\n"},
		{"guard after others", []State{noGuard, withGuard},
			"add table ip weft\n" + addGuard + addPost + addFwd + guardTx +
				"flush chain ip weft postrouting\n" + postRule +
				"flush chain ip weft forward\n" + fwdRule + guardRules},
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
				var want []string
				for _, p := range s.Parts {
					want = append(want, p.Counters...)
				}
				if got := slices.Sorted(slices.Values(obs.Counters[IPv4])); !slices.Equal(got, want) {
					t.Errorf("step %d: counters %q, want %q", i, got, want)
				}
			}
			if got := tx.String(); got != tc.want {
				t.Errorf("transaction:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestRenderRejectsGuardMistakes(t *testing.T) {
	guard := TunnelGuard(network, subnet, []string{"flannel-wg"})
	noCounter := guard
	noCounter.Counters = []string{CounterTunnelIn}
	longName := TunnelGuard(network, subnet, []string{"a-name-of-16-byt"})
	twice := Part{Name: "other", Family: IPv4, Counters: []string{CounterTunnelOut}}
	ipt := Part{Name: "ipt", Family: IPv4, IPTables: []IPTablesChain{{Name: "WEFT-X", From: "FORWARD",
		Rules: []Rule{{IIf: "flannel-wg", Verdict: VerdictReturn}}}}}
	for _, tc := range []struct {
		s    State
		want string
	}{
		{NewState(noCounter), "counts into counter tunnel-out-dropped, which is not the part's"},
		{NewState(longName), `"a-name-of-16-byt" is not an interface name`},
		{NewState(guard, twice), "counter ip weft tunnel-out-dropped is already part tunnel-guard's"},
		{NewState(Part{Name: "empty", Family: IPv4, Counters: []string{""}}), "a counter has no name"},
		{NewState(ipt), "interfaces, counters and drops are nftables' only"},
	} {
		if _, err := Render(tc.s, Observed{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Render: %v, want an error with %q", err, tc.want)
		}
	}
}
