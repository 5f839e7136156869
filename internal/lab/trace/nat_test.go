package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/firewall"
)

// weftNAT is weft's postrouting chain for node subnet 10.244.3.0/24 as
// nft prints it: the rules firewall.Masquerade writes, one per line.
func weftNAT(t *testing.T) []string {
	t.Helper()
	p := firewall.Masquerade(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24"))
	lines := []string{"table ip weft {", "\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;"}
	for _, r := range p.Chains[0].Rules {
		lines = append(lines, "\t\t"+r.String())
	}
	return append(lines, "\t}", "}")
}

func TestNAT(t *testing.T) {
	rules, err := parseNAT(weftNAT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 6 {
		t.Fatalf("%d rules, want 6: %+v", len(rules), rules)
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		src, dst string
		verdict  string
		rule     int
	}{
		{"10.244.3.2", "10.244.7.2", "return", 1},       // pod to a remote pod
		{"10.244.7.2", "10.244.3.2", "return", 2},       // a remote pod to a local one
		{"192.0.2.9", "10.244.3.2", "return", 3},        // the outside to a local pod
		{"10.244.3.2", "203.0.113.10", "masquerade", 4}, // pod to the outside
		{"10.244.3.2", "224.0.0.5", "", -1},             // multicast: no rule
		{"192.0.2.11", "10.244.7.2", "masquerade", 5},   // the host to a remote pod
	} {
		got := -1
		for i, r := range rules {
			if r.match(a(tc.src), a(tc.dst)) {
				got = i
				break
			}
		}
		if got != tc.rule || (got >= 0 && rules[got].verdict != tc.verdict) {
			t.Errorf("%s -> %s: rule %d, want %d (%s)", tc.src, tc.dst, got, tc.rule, tc.verdict)
		}
	}
	// The masquerade step names the rule and the new source.
	tr := &tracer{c: &Cluster{}}
	s := &Snapshot{NAT: weftNAT(t)}
	out := &Link{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24")}}
	st, to, ok := tr.masquerade(s, a("10.244.3.2"), a("203.0.113.10"), out, Route{})
	if !ok || to != a("192.0.2.11") || st.Kind != "masquerade" || !strings.Contains(st.Text, "masquerade fully-random") {
		t.Errorf("masquerade step %+v to %s", st, to)
	}
}

func TestParseNATRejects(t *testing.T) {
	for _, l := range []string{
		"ip saddr 10.244.0.0/16 jump elsewhere",
		"ip saddr != ",
		"ip saddr 10.244.0.0/33 return",
		"tcp dport 80 masquerade",
		"ip saddr 10.244.0.0/16",
		"ip saddr 10.244.0.0/16 snat to 192.0.2.1",
	} {
		if _, err := parseNAT([]string{l}); err == nil {
			t.Errorf("%q: parsed, want an error", l)
		}
	}
}

// FuzzParseNAT: nft's output is outside input: any text parses or is
// refused, without a panic, and what parses evaluates.
func FuzzParseNAT(f *testing.F) {
	f.Add("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random")
	f.Add("meta mark & 0x00004000 == 0x00004000 return")
	f.Add("ip6 saddr 2001:db8:244::/48 ip6 daddr != ff00::/8 counter packets 3 bytes 180 masquerade # handle 7")
	f.Fuzz(func(t *testing.T, line string) {
		rules, err := parseNAT(strings.Split(line, "\n"))
		if err != nil {
			return
		}
		for _, r := range rules {
			r.match(netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("2001:db8::1"))
		}
	})
}
