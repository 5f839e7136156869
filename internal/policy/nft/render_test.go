package nft

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update after checking the change):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestDocExample: the package doc's example is what Render gives.
func TestDocExample(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(src), "// # Example\n")
	if !ok {
		t.Fatal("doc.go has no Example section")
	}
	var doc []string
	for _, l := range strings.Split(rest, "\n") {
		if strings.HasPrefix(l, "// # ") {
			break
		}
		if t, ok := strings.CutPrefix(l, "//\t"); ok {
			doc = append(doc, t)
		}
	}
	got, err := Render(small(), Options{LogGroup: 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(doc, "\n") + "\n"; got != want {
		t.Errorf("doc.go's example is not what Render gives:\n got:\n%s\ndoc:\n%s", got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		rs   *policy.Ruleset
		opts Options
	}{
		{"every.nft", every(), Options{}},
		{"every-log.nft", every(), Options{LogGroup: 3}},
		{"empty.nft", &policy.Ruleset{}, Options{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render(c.rs, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, got)
		})
	}
}

// TestRenderRules checks the rule forms one policy rule renders to.
func TestRenderRules(t *testing.T) {
	v4 := []policy.Range{rng("10.244.2.0", "10.244.2.255")}
	v6 := []policy.Range{rng("fd00::1", "fd00::1")}
	tcp80 := []policy.PortRange{{Protocol: policy.TCP, First: 80, Last: 80}}
	named4 := []policy.NamedPort{{Addr: a4("10.244.1.4"), Protocol: policy.TCP, Port: 8080}}
	p80 := portsName([]string{"tcp . 80"})
	for _, c := range []struct {
		name string
		dir  policy.Direction
		rule policy.Rule
		want []string // rules of chain c, and the sets they use
		sets []string
	}{
		{"allow all", policy.Ingress, policy.Rule{AnyPeer: true, AnyPort: true}, []string{"accept"}, nil},
		{"any peer, ports", policy.Ingress, policy.Rule{AnyPeer: true, Ports: tcp80},
			[]string{"meta l4proto . th dport @" + p80 + " accept"}, []string{p80}},
		{"ingress peers, any port", policy.Ingress, policy.Rule{Peers: slices.Concat(v4, v6), AnyPort: true},
			[]string{"ip saddr @c-r0-peers4 accept", "ip6 saddr @c-r0-peers6 accept"}, []string{"c-r0-peers4", "c-r0-peers6"}},
		{"egress peers match the destination", policy.Egress, policy.Rule{Peers: v4, Ports: tcp80},
			[]string{"ip daddr @c-r0-peers4 meta l4proto . th dport @" + p80 + " accept"}, []string{p80, "c-r0-peers4"}},
		{"ports and named: two rules", policy.Ingress, policy.Rule{Peers: v4, Ports: tcp80, Named: named4},
			[]string{"ip saddr @c-r0-peers4 meta l4proto . th dport @" + p80 + " accept", "ip saddr @c-r0-peers4 ip daddr . meta l4proto . th dport @c-r0-named4 accept"},
			[]string{p80, "c-r0-peers4", "c-r0-named4"}},
		{"named IPv4 with IPv6 peers only: nothing", policy.Ingress, policy.Rule{Peers: v6, Named: named4}, nil, nil},
		{"any peer, named", policy.Egress, policy.Rule{AnyPeer: true, Named: named4},
			[]string{"ip daddr . meta l4proto . th dport @c-r0-named4 accept"}, []string{"c-r0-named4"}},
		{"no peers: nothing", policy.Ingress, policy.Rule{Ports: tcp80}, nil, nil},
		{"no ports: nothing", policy.Ingress, policy.Rule{Peers: v4}, nil, nil},
		{"IPv4-only rule: no IPv6 rule", policy.Ingress, policy.Rule{Peers: v4, Ports: tcp80},
			[]string{"ip saddr @c-r0-peers4 meta l4proto . th dport @" + p80 + " accept"}, []string{p80, "c-r0-peers4"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := &policy.Ruleset{Chains: []policy.Chain{{Name: "c", Dir: c.dir, Policy: "ns/p", Rules: []policy.Rule{c.rule}}}}
			ts, err := build(rs, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range ts.chains["c"].rules {
				r, ok := strings.CutSuffix(r, ` comment "ns/p"`)
				if !ok {
					t.Errorf("rule %q: no comment ns/p", r)
				}
				got = append(got, r)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("rules:\n got %q\nwant %q", got, c.want)
			}
			var sets []string
			for _, name := range ts.setOrder {
				if strings.HasPrefix(name, "c-") || strings.HasPrefix(name, "ports-") {
					sets = append(sets, name)
				}
			}
			if !slices.Equal(sets, c.sets) {
				t.Errorf("sets: got %q, want %q", sets, c.sets)
			}
		})
	}
}

// TestPortsShared: rules with the same ports share one set; other ports,
// even in another order, have their own.
func TestPortsShared(t *testing.T) {
	tcp := func(ports ...uint16) []policy.PortRange {
		var r []policy.PortRange
		for _, p := range ports {
			r = append(r, policy.PortRange{Protocol: policy.TCP, First: p, Last: p})
		}
		return r
	}
	peers := []policy.Range{rng("10.244.2.0", "10.244.2.255")}
	rs := &policy.Ruleset{Chains: []policy.Chain{
		{Name: "a", Rules: []policy.Rule{{AnyPeer: true, Ports: tcp(80, 443)}, {Peers: peers, Ports: tcp(80, 443)}}},
		{Name: "b", Rules: []policy.Rule{{Peers: peers, Ports: tcp(80, 443)}, {Peers: peers, Ports: tcp(443, 80)}}},
	}}
	ts, err := build(rs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sets []string
	for _, name := range ts.setOrder {
		if strings.HasPrefix(name, "ports-") {
			sets = append(sets, name)
			if got := ts.sets[name].keys; !slices.Equal(got, []string{"tcp . 80", "tcp . 443"}) && !slices.Equal(got, []string{"tcp . 443", "tcp . 80"}) {
				t.Errorf("set %s: %q", name, got)
			}
		}
	}
	if len(sets) != 2 {
		t.Errorf("port sets %q, want two", sets)
	}
}

// TestRenderComment: a rule comment is cut to nft's 128 bytes.
func TestRenderComment(t *testing.T) {
	long := "ns/" + strings.Repeat("p", 250)
	rs := &policy.Ruleset{Chains: []policy.Chain{{Name: "c", Policy: long, Rules: []policy.Rule{{AnyPeer: true, AnyPort: true}}}}}
	ts, err := build(rs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, want := ts.chains["c"].rules[0], fmt.Sprintf("accept comment %q", long[:128]); r != want {
		t.Errorf("rule %q, want %q", r, want)
	}
}

// TestRenderRejects: a Ruleset that is not consistent is rejected, naming
// what is wrong, and nothing is rendered.
func TestRenderRejects(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(rs *policy.Ruleset)
		want   string
	}{
		{"pod in a missing group", func(rs *policy.Ruleset) { rs.Pods[0].Ingress = "gin-missing" }, "no ingress group gin-missing"},
		{"pod in a group of the other direction", func(rs *policy.Ruleset) { rs.Pods[0].Ingress = "geg-00000001" }, "no ingress group geg-00000001"},
		{"address twice", func(rs *policy.Ruleset) { rs.Pods[1].Addr = rs.Pods[0].Addr }, "added twice"},
		{"invalid address", func(rs *policy.Ruleset) { rs.Pods[0].Addr = netip.Addr{} }, "pod web/api-0"},
		{"group of a missing chain", func(rs *policy.Ruleset) { rs.Groups[0].Chains = []string{"eg_nope"} }, "no chain eg_nope"},
		{"group of a chain of the other direction", func(rs *policy.Ruleset) { rs.Groups[0].Chains = []string{"in_db_monitoring"} }, "chain in_db_monitoring is ingress"},
		{"chain twice", func(rs *policy.Ruleset) { rs.Chains[1].Name = rs.Chains[0].Name }, "defined twice"},
		{"group named as a chain", func(rs *policy.Ruleset) { rs.Groups[1].Name = "in_db_monitoring" }, "name of a policy chain"},
		{"reserved name", func(rs *policy.Ruleset) { rs.Chains[0].Name = "ingress" }, "reserved"},
		{"not an identifier", func(rs *policy.Ruleset) { rs.Chains[0].Name = "in ns name" }, "not an nft identifier"},
		{"too long", func(rs *policy.Ruleset) { rs.Chains[0].Name = "in_" + strings.Repeat("a", 250) }, "not an nft identifier"},
		{"range upside down", func(rs *policy.Ruleset) { rs.Chains[0].Rules[0].Peers[0] = rng("10.96.0.11", "10.96.0.10") }, "peer range"},
		{"range of two families", func(rs *policy.Ruleset) { rs.Chains[0].Rules[0].Peers[0] = rng("10.96.0.11", "fd00::1") }, "peer range"},
		{"port range upside down", func(rs *policy.Ruleset) { rs.Chains[0].Rules[0].Ports[0].First = 54 }, "upside down"},
		{"unknown protocol", func(rs *policy.Ruleset) { rs.Chains[0].Rules[0].Ports[0].Protocol = "ICMP" }, `protocol "ICMP"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := every()
			c.change(rs)
			text, err := Render(rs, Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Render: error %v, want one with %q", err, c.want)
			}
			if text != "" {
				t.Errorf("Render gave text with its error:\n%s", text)
			}
		})
	}
}

// TestDiffGolden: the transactions of small changes, as nft text.
func TestDiffGolden(t *testing.T) {
	addPod := every()
	addPod.Pods = append(addPod.Pods, policy.PodEntry{Addr: a4("10.244.1.6"), Pod: "web/api-2", Ingress: "gin-00000001", Egress: "geg-00000001"})
	slices.SortFunc(addPod.Pods, func(a, b policy.PodEntry) int { return a.Addr.Compare(b.Addr) })
	movePod := every()
	movePod.Pods[1].Ingress = "gin-00000002"
	newPort := every()
	newPort.Chains[4].Rules[0].Ports = append(newPort.Chains[4].Rules[0].Ports, policy.PortRange{Protocol: policy.TCP, First: 8443, Last: 8443})
	newPeer := every()
	newPeer.Chains[2].Rules[0].Peers[1] = rng("10.244.2.0", "10.244.3.255") // grows: delete, then add
	dropPolicy := every()
	dropPolicy.Chains = slices.Delete(dropPolicy.Chains, 3, 4) // in_db_monitoring
	dropPolicy.Groups[3].Chains = []string{"in_db_allow-api"}
	for _, c := range []struct {
		name     string
		old, cur *policy.Ruleset
		ops      int
	}{
		{"diff-same.nft", every(), every(), 0},
		{"diff-add-pod.nft", every(), addPod, 4},
		{"diff-move-pod.nft", every(), movePod, 2},
		{"diff-new-port.nft", every(), newPort, 5}, // a new ports set replaces the old
		{"diff-new-peer.nft", every(), newPeer, 2},
		{"diff-drop-policy.nft", every(), dropPolicy, 0},
		{"diff-add-policy.nft", dropPolicy, every(), 0},
		{"diff-from-empty.nft", &policy.Ruleset{}, small(), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			text, full, err := Diff(c.old, c.cur, Options{LogGroup: 3})
			if err != nil {
				t.Fatal(err)
			}
			if full {
				t.Error("full replacement, want a diff")
			}
			if n := strings.Count(text, "\n"); c.ops != 0 && n != c.ops {
				t.Errorf("%d operations, want %d:\n%s", n, c.ops, text)
			}
			golden(t, c.name, text)
			checkDiff(t, c.old, c.cur, Options{LogGroup: 3})
		})
	}
}

// sim is a model of what nft does with a transaction, strict where the
// kernel is: an object used before it exists, added twice with another
// definition, or deleted while something refers to it fails the whole
// transaction.
type sim struct {
	sets   map[string]*simSet
	chains map[string]*simChain
}

type simSet struct {
	kind, def string
	elems     map[string]string // key -> value ("" in a set)
}

type simChain struct {
	def   string
	rules []string
}

// refs returns the sets and chains a rule names.
func refs(rule string) (sets, chains []string) {
	w := strings.Fields(rule)
	for i, x := range w {
		if strings.HasPrefix(x, "@") {
			sets = append(sets, x[1:])
		}
		if (x == "jump" || x == "goto") && i+1 < len(w) {
			chains = append(chains, w[i+1])
		}
	}
	return sets, chains
}

func (m *sim) clone() *sim {
	if m == nil {
		return nil
	}
	c := &sim{sets: map[string]*simSet{}, chains: map[string]*simChain{}}
	for n, s := range m.sets {
		c.sets[n] = &simSet{kind: s.kind, def: s.def, elems: maps.Clone(s.elems)}
	}
	for n, ch := range m.chains {
		c.chains[n] = &simChain{def: ch.def, rules: slices.Clone(ch.rules)}
	}
	return c
}

// run applies t to a copy of m and returns it, or fails.
func (m *sim) run(t tx) (*sim, error) {
	c := m.clone()
	for _, o := range t {
		if o.kind == kindTable {
			switch {
			case o.verb == verbAdd && c == nil:
				c = &sim{sets: map[string]*simSet{}, chains: map[string]*simChain{}}
			case o.verb == verbDelete && c == nil:
				return nil, fmt.Errorf("%s: no table", o)
			case o.verb == verbDelete:
				c = nil
			}
			continue
		}
		if c == nil {
			return nil, fmt.Errorf("%s: no table", o)
		}
		if err := c.apply(o); err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
	}
	return c, nil
}

func (c *sim) apply(o op) error {
	switch {
	case (o.kind == kindSet || o.kind == kindMap) && o.verb == verbAdd:
		if s, ok := c.sets[o.name]; ok && (s.kind != o.kind || s.def != o.def) {
			return fmt.Errorf("exists as %s %s", s.kind, s.def)
		} else if !ok {
			c.sets[o.name] = &simSet{kind: o.kind, def: o.def, elems: map[string]string{}}
		}
	case o.kind == kindChain && o.verb == verbAdd:
		if ch, ok := c.chains[o.name]; ok && ch.def != o.def {
			return fmt.Errorf("exists as %s", ch.def)
		} else if !ok {
			c.chains[o.name] = &simChain{def: o.def}
		}
	case o.kind == kindElement:
		s, ok := c.sets[o.name]
		if !ok {
			return errors.New("no such set")
		}
		for _, e := range o.elems {
			k, v, _ := strings.Cut(e, " : ")
			_, exists := s.elems[k]
			if o.verb == verbDelete {
				if !exists {
					return fmt.Errorf("no element %s", k)
				}
				delete(s.elems, k)
				continue
			}
			if exists {
				return fmt.Errorf("element %s exists", k)
			}
			if (s.kind == kindMap) != (v != "") {
				return fmt.Errorf("element %q in a %s", e, s.kind)
			}
			if _, chains := refs(v); len(chains) > 0 && c.chains[chains[0]] == nil {
				return fmt.Errorf("element %s: no chain %s", k, chains[0])
			}
			s.elems[k] = v
		}
	case o.kind == kindRule:
		ch, ok := c.chains[o.name]
		if !ok {
			return errors.New("no such chain")
		}
		sets, chains := refs(o.def)
		for _, n := range sets {
			if c.sets[n] == nil {
				return fmt.Errorf("no set %s", n)
			}
		}
		for _, n := range chains {
			if c.chains[n] == nil {
				return fmt.Errorf("no chain %s", n)
			}
		}
		ch.rules = append(ch.rules, o.def)
	case o.kind == kindChain && o.verb == verbFlush:
		ch, ok := c.chains[o.name]
		if !ok {
			return errors.New("no such chain")
		}
		ch.rules = nil
	case o.kind == kindChain && o.verb == verbDelete:
		ch, ok := c.chains[o.name]
		if !ok {
			return errors.New("no such chain")
		}
		if len(ch.rules) > 0 {
			return errors.New("chain not empty")
		}
		for n, other := range c.chains {
			for _, r := range other.rules {
				if _, chains := refs(r); slices.Contains(chains, o.name) {
					return fmt.Errorf("chain used by a rule of %s", n)
				}
			}
		}
		for n, s := range c.sets {
			for _, v := range s.elems {
				if _, chains := refs(v); slices.Contains(chains, o.name) {
					return fmt.Errorf("chain used by an element of %s", n)
				}
			}
		}
		delete(c.chains, o.name)
	case (o.kind == kindSet || o.kind == kindMap) && o.verb == verbDelete:
		if _, ok := c.sets[o.name]; !ok {
			return errors.New("no such set")
		}
		for n, ch := range c.chains {
			for _, r := range ch.rules {
				if sets, _ := refs(r); slices.Contains(sets, o.name) {
					return fmt.Errorf("set used by a rule of %s", n)
				}
			}
		}
		delete(c.sets, o.name)
	default:
		return errors.New("unknown command")
	}
	return nil
}

// String lists the model: objects sorted by name, elements sorted, rules
// in order.
func (m *sim) String() string {
	if m == nil {
		return "no table\n"
	}
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(m.sets)) {
		s := m.sets[n]
		var elems []string
		for k, v := range s.elems {
			elems = append(elems, strings.TrimSuffix(k+" : "+v, " : "))
		}
		slices.Sort(elems)
		fmt.Fprintf(&b, "%s %s %s\n\t%s\n", s.kind, n, s.def, strings.Join(elems, "\n\t"))
	}
	for _, n := range slices.Sorted(maps.Keys(m.chains)) {
		ch := m.chains[n]
		fmt.Fprintf(&b, "chain %s %s\n\t%s\n", n, ch.def, strings.Join(ch.rules, "\n\t"))
	}
	return b.String()
}

// dump runs the transactions in the model and lists the result.
func dump(t *testing.T, txs ...func(*tx)) string {
	t.Helper()
	var m *sim
	for _, f := range txs {
		var x tx
		f(&x)
		var err error
		if m, err = m.run(x); err != nil {
			t.Fatalf("the model of nft rejects the transaction: %v\n%s", err, x)
		}
	}
	return m.String()
}

// checkDiff: the full rendering of old then the diff to cur leave what
// the full rendering of cur leaves, in the model of nft.
func checkDiff(t *testing.T, old, cur *policy.Ruleset, opts Options) {
	t.Helper()
	o, err := build(old, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := build(cur, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := dump(t, func(tx *tx) { writeFull(tx, o) }, func(tx *tx) {
		if !writeDiff(tx, o, c) {
			t.Fatal("no diff")
		}
	})
	want := dump(t, func(tx *tx) { writeFull(tx, c) })
	if got != want {
		t.Errorf("full then diff:\n%s\nfull:\n%s", got, want)
	}
}

// randomRuleset draws a Ruleset from a pool: chains from every() and a
// variant of each with other rules, groups of random subsets of them,
// pods with random groups, so that pairs of draws differ in every way a
// compilation can.
func randomRuleset(r *rand.Rand) *policy.Ruleset {
	base := every()
	rs := &policy.Ruleset{}
	present := map[policy.Direction][]string{}
	for _, ch := range base.Chains {
		switch r.IntN(3) {
		case 0:
			continue
		case 1:
			ch.Rules = slices.Clone(ch.Rules)
			ch.Rules[0].Ports = append(slices.Clone(ch.Rules[0].Ports), policy.PortRange{Protocol: policy.UDP, First: 1000, Last: uint16(1000 + r.IntN(3))})
			if !ch.Rules[0].AnyPeer {
				ch.Rules[0].Peers = append(slices.Clone(ch.Rules[0].Peers), rng("fd00:99::", fmt.Sprintf("fd00:99::%x", 1+r.IntN(3))))
			}
			ch.Rules = ch.Rules[:1+r.IntN(len(ch.Rules))]
		}
		rs.Chains = append(rs.Chains, ch)
		present[ch.Dir] = append(present[ch.Dir], ch.Name)
	}
	groups := map[policy.Direction][]string{}
	for _, dir := range []policy.Direction{policy.Egress, policy.Ingress} {
		for range 3 {
			mask := r.IntN(1 << len(present[dir]))
			g := policy.Group{Name: fmt.Sprintf("g%s-%08x", dir.String()[:2], mask), Dir: dir}
			if slices.ContainsFunc(rs.Groups, func(x policy.Group) bool { return x.Name == g.Name }) {
				continue
			}
			for i, name := range present[dir] {
				if mask&(1<<i) != 0 {
					g.Chains = append(g.Chains, name)
				}
			}
			rs.Groups = append(rs.Groups, g)
			groups[dir] = append(groups[dir], g.Name)
		}
	}
	pick := func(dir policy.Direction) string {
		if r.IntN(3) == 0 || len(groups[dir]) == 0 {
			return ""
		}
		return groups[dir][r.IntN(len(groups[dir]))]
	}
	for i := range 12 {
		for _, a := range []string{fmt.Sprintf("10.244.1.%d", 2+i), fmt.Sprintf("fd00:10:244:1::%x", 2+i)} {
			p := policy.PodEntry{Addr: a4(a), Pod: fmt.Sprintf("ns/p%d", i), Ingress: pick(policy.Ingress), Egress: pick(policy.Egress)}
			if p.Ingress != "" || p.Egress != "" {
				rs.Pods = append(rs.Pods, p)
			}
		}
	}
	return rs
}

// TestDiffRandom: between random Rulesets, diffs leave what a full
// rendering writes.
func TestDiffRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 11))
	prev := randomRuleset(r)
	for range 300 {
		cur := randomRuleset(r)
		checkDiff(t, prev, cur, Options{LogGroup: uint16(r.IntN(2))})
		if t.Failed() {
			t.FailNow()
		}
		prev = cur
	}
}

// TestDiffDefinitionChange: an object that keeps its name but changes its
// definition cannot be diffed; the caller then replaces the table.
func TestDiffDefinitionChange(t *testing.T) {
	o, err := build(small(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := build(small(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.sets["in_web_allow-web-r0-peers4"].def = "{ type ipv4_addr ; }"
	var x tx
	if writeDiff(&x, o, c) {
		t.Errorf("diffed a changed set definition:\n%s", x)
	}
	if len(x) != 0 {
		t.Errorf("%d commands added before giving up", len(x))
	}
}

func TestParseDenied(t *testing.T) {
	m := map[netip.Addr]Counts{}
	in4 := `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "denied-in4", "table": "weft-policy", "type": "ipv4_addr", "handle": 1, "elem": [{"elem": {"val": "10.244.1.2", "counter": {"packets": 3, "bytes": 180}}}, {"elem": {"val": "10.244.1.3", "counter": {"packets": 0, "bytes": 0}}}], "stmt": [{"counter": null}]}}]}`
	out6 := `{"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "denied-out6", "table": "weft-policy", "type": "ipv6_addr", "elem": [{"elem": {"val": "fd00:10:244:1::2", "counter": {"packets": 7, "bytes": 560}}}]}}]}`
	out4 := `{"nftables": [{"set": {"name": "denied-out4", "elem": [{"elem": {"val": "10.244.1.2", "counter": {"packets": 5, "bytes": 1}}}]}}]}`
	empty := `{"nftables": [{"set": {"name": "denied-in6", "type": "ipv6_addr"}}]}`
	for _, c := range []struct {
		out string
		dir policy.Direction
	}{{in4, policy.Ingress}, {out6, policy.Egress}, {out4, policy.Egress}, {empty, policy.Ingress}} {
		if err := parseDenied([]byte(c.out), c.dir, m); err != nil {
			t.Fatal(err)
		}
	}
	want := map[netip.Addr]Counts{
		a4("10.244.1.2"):       {Ingress: 3, Egress: 5},
		a4("10.244.1.3"):       {},
		a4("fd00:10:244:1::2"): {Egress: 7},
	}
	if len(m) != len(want) {
		t.Errorf("got %v, want %v", m, want)
	}
	for a, c := range want {
		if m[a] != c {
			t.Errorf("%s: got %+v, want %+v", a, m[a], c)
		}
	}
	for _, bad := range []string{`{`, `{"nftables": [{"set": {"name": "x", "elem": [{"elem": {"val": "nope", "counter": {}}}]}}]}`,
		`{"nftables": [{"set": {"name": "x", "elem": [{"elem": {"val": "10.0.0.1"}}]}}]}`} {
		if err := parseDenied([]byte(bad), policy.Ingress, map[netip.Addr]Counts{}); err == nil {
			t.Errorf("parsed %s", bad)
		}
	}
}

func TestBrief(t *testing.T) {
	long := "add element inet weft-policy ingress4 { " + strings.Repeat("10.244.1.2 : goto g, ", 1000) + "}"
	in := "/dev/stdin:3:40-49: Error: interval overlaps\n" + long + "\n" + strings.Repeat("^", 50) + "\nx\ny\nz\n"
	got := brief(in)
	if len(got) > 1000 || !strings.HasPrefix(got, "/dev/stdin:3:40-49: Error: interval overlaps\nadd element") || !strings.HasSuffix(got, "(2 more lines)") {
		t.Errorf("brief:\n%s", got)
	}
	if got := brief("Error: no such table\n"); got != "Error: no such table" {
		t.Errorf("brief of one line: %q", got)
	}
}
