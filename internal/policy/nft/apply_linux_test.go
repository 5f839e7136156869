package nft

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
	"github.com/weftnet/weft/internal/policy"
)

func TestMain(m *testing.M) {
	netns.HandleExec()
	os.Exit(m.Run())
}

// newApplier returns an Applier in a fresh namespace, logging to the test.
func newApplier(t *testing.T, opts Options) (*Applier, string) {
	t.Helper()
	name := netnstest.New(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	var logs bytes.Buffer
	opts.Namespace = name
	opts.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("applier log:\n%s", logs.String())
		}
	})
	return a, name
}

// nft runs the nft binary in the namespace and returns its output.
func nft(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	out, err := netns.Command(ns, append([]string{"nft"}, args...)...).CombinedOutput()
	return string(out), err
}

// listTable returns `nft list table inet weft-policy`, "" if there is none.
func listTable(t *testing.T, ns string) string {
	t.Helper()
	out, err := nft(t, ns, "list", "table", "inet", Table)
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return ""
		}
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	return out
}

// TestRenderLoads: nft accepts the full rendering of a Ruleset with every
// feature, with and without NFLOG, twice in a row (the second replaces the
// first), and lists it back with every set and chain.
func TestRenderLoads(t *testing.T) {
	_, ns := newApplier(t, Options{})
	for _, opts := range []Options{{}, {LogGroup: 7}, {}} {
		text, err := Render(every(), opts)
		if err != nil {
			t.Fatal(err)
		}
		cmd := netns.Command(ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f rejects the rendering: %v\n%s\n%s", err, out, text)
		}
		got := listTable(t, ns)
		for _, want := range []string{"chain in_db_allow-api {", "set in_db_allow-api-r0-named6 {", "ip6 saddr @in_db_allow-api-r0-peers6 ip6 daddr . meta l4proto . th dport @in_db_allow-api-r0-named6 accept comment \"db/allow-api\"",
			"elements = { 10.244.1.2 : goto gin-00000001"} {
			if !strings.Contains(got, want) {
				t.Errorf("table lacks %q:\n%s", want, got)
			}
		}
		if hasLog := strings.Contains(got, "log prefix"); hasLog != (opts.LogGroup != 0) {
			t.Errorf("LogGroup %d, table has log: %t\n%s", opts.LogGroup, hasLog, got)
		}
	}
}

// normalize makes two listings of the same table comparable: the kernel
// lists objects in the order they were created, and a set's elements in
// an order that may depend on their history, so both are sorted (rules
// keep their order).
func normalize(listing string) string {
	var out []string
	lines := strings.Split(listing, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "elements = {") {
			out = append(out, l)
			continue
		}
		block := strings.TrimPrefix(l, "elements = {")
		for !strings.HasSuffix(strings.TrimSpace(block), "}") && i+1 < len(lines) {
			i++
			block += " " + strings.TrimSpace(lines[i])
		}
		block = strings.TrimSuffix(strings.TrimSpace(block), "}")
		var elems []string
		for _, e := range strings.Split(block, ",") {
			elems = append(elems, strings.TrimSpace(e))
		}
		slices.Sort(elems)
		out = append(out, "elements = { "+strings.Join(elems, ", ")+" }")
	}
	var blocks []string
	cur := ""
	for _, l := range out {
		if l == "" || strings.HasPrefix(l, "table ") {
			continue
		}
		cur += l + "\n"
		if l == "}" {
			blocks = append(blocks, cur)
			cur = ""
		}
	}
	slices.Sort(blocks)
	return strings.Join(blocks, "") + cur
}

// TestIncrementalEqualsFull: from every Ruleset of a sequence, the table
// that incremental Applies leave is the one a full Apply of the same
// Ruleset writes, as nft lists them.
func TestIncrementalEqualsFull(t *testing.T) {
	inc, incNS := newApplier(t, Options{LogGroup: 5})
	full, fullNS := newApplier(t, Options{LogGroup: 5})
	ctx := context.Background()
	seq := []*policy.Ruleset{small(), every(), small(), {}, every()}
	for i, rs := range seq {
		if err := inc.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: incremental: %v", i, err)
		}
		ops, wasFull := inc.LastOps()
		if wasFull != (i == 0) {
			t.Errorf("step %d: full %t (%d operations)", i, wasFull, ops)
		}
		full.Resync()
		if err := full.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: full: %v", i, err)
		}
		if got, want := normalize(listTable(t, incNS)), normalize(listTable(t, fullNS)); got != want {
			t.Fatalf("step %d: incremental table:\n%s\nfull table:\n%s", i, got, want)
		}
	}
}

// TestIncrementalRandom: the same over random Rulesets, in the kernel.
func TestIncrementalRandom(t *testing.T) {
	inc, incNS := newApplier(t, Options{LogGroup: 5})
	full, fullNS := newApplier(t, Options{LogGroup: 5})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(2, 11))
	for i := range 15 {
		rs := randomRuleset(r)
		if err := inc.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: incremental: %v", i, err)
		}
		if _, wasFull := inc.LastOps(); wasFull != (i == 0) {
			t.Errorf("step %d: full %t", i, wasFull)
		}
		full.Resync()
		if err := full.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: full: %v", i, err)
		}
		if got, want := normalize(listTable(t, incNS)), normalize(listTable(t, fullNS)); got != want {
			t.Fatalf("step %d: incremental table:\n%s\nfull table:\n%s", i, got, want)
		}
	}
	// Nothing changed: nothing sent.
	if err := inc.Apply(ctx, randomRuleset(rand.New(rand.NewPCG(2, 11)))); err != nil {
		t.Fatal(err)
	}
	prev := listTable(t, incNS)
	rs := randomRuleset(rand.New(rand.NewPCG(2, 11)))
	if err := inc.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if ops, wasFull := inc.LastOps(); ops != 0 || wasFull {
		t.Errorf("the same Ruleset again: %d operations, full %t", ops, wasFull)
	}
	if got := listTable(t, incNS); got != prev {
		t.Errorf("the table changed:\n%s\nwas:\n%s", got, prev)
	}
}

// overlapping returns every() with a new pod and peers that overlap: nft
// rejects the transaction at its last element, after the pod's.
func overlapping() *policy.Ruleset {
	rs := every()
	rs.Pods = append(rs.Pods, policy.PodEntry{Addr: a4("10.244.1.9"), Pod: "web/api-9", Ingress: "gin-00000001"})
	rs.Chains[2].Rules[0].Peers = append(rs.Chains[2].Rules[0].Peers, rng("10.244.2.7", "10.244.2.7"))
	return rs
}

// TestFailedApply: a transaction nft rejects leaves the table as it was,
// whether it was incremental or full, and the next Apply replaces the
// whole table.
func TestFailedApply(t *testing.T) {
	a, ns := newApplier(t, Options{})
	ctx := context.Background()
	// A table left by an earlier run, with an object weft does not write:
	// the first Apply replaces it all.
	if out, err := nft(t, ns, "add table inet weft-policy; add chain inet weft-policy stale"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := a.Apply(ctx, small()); err != nil {
		t.Fatal(err)
	}
	if got := listTable(t, ns); strings.Contains(got, "stale") {
		t.Errorf("the first Apply kept an earlier run's chain:\n%s", got)
	}
	if err := a.Apply(ctx, every()); err != nil {
		t.Fatal(err)
	}
	before := normalize(listTable(t, ns))
	// Overlapping peers and a changed rule: the text transaction.
	withRule := overlapping()
	withRule.Chains[4].Rules[0].Ports = tcpPorts(8080)
	for i, c := range []struct {
		rs            *policy.Ruleset
		full, netlink bool
	}{
		{overlapping(), false, true}, // elements only: netlink
		{every(), true, false},       // after the failure: full, succeeds
		{withRule, false, false},     // incremental text
		{withRule, true, false},      // full text
	} {
		err := a.Apply(ctx, c.rs)
		if _, wasFull := a.LastOps(); wasFull != c.full || a.lastNetlink != c.netlink {
			t.Errorf("attempt %d: full %t, netlink %t; want %t, %t", i, wasFull, a.lastNetlink, c.full, c.netlink)
		}
		if i == 1 {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("attempt %d: overlapping intervals accepted", i)
		}
		t.Logf("rejected as expected: %v", err)
		if got := normalize(listTable(t, ns)); got != before {
			t.Fatalf("attempt %d: the failed transaction changed the table:\n%s\nwas:\n%s", i, got, before)
		}
	}
	if err := a.Apply(ctx, small()); err != nil {
		t.Fatal(err)
	}
	if _, wasFull := a.LastOps(); !wasFull {
		t.Error("the Apply after a failure was not full")
	}
}

// TestRemove: Remove deletes the table, twice is fine, and the next Apply
// writes it whole.
func TestRemove(t *testing.T) {
	a, ns := newApplier(t, Options{})
	ctx := context.Background()
	if err := a.Remove(ctx); err != nil {
		t.Fatalf("Remove with no table: %v", err)
	}
	if err := a.Apply(ctx, every()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := a.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if got := listTable(t, ns); got != "" {
			t.Fatalf("table left after Remove:\n%s", got)
		}
	}
	if _, err := a.Denied(ctx); err == nil {
		t.Error("Denied without a table: no error")
	}
	if err := a.Apply(ctx, every()); err != nil {
		t.Fatal(err)
	}
	if _, wasFull := a.LastOps(); !wasFull {
		t.Error("the Apply after Remove was not full")
	}
	if !strings.Contains(listTable(t, ns), "chain in_db_allow-api") {
		t.Error("the Apply after Remove wrote no policy chain")
	}
}

// TestIncrementalElements: changes of pods and peers only go through
// netlink, and leave the table a full Apply writes: vmap elements added,
// removed and moved between groups, counted pods, peer intervals (single
// addresses, ranges, a range to the end of the family) and named ports of
// both families.
func TestIncrementalElements(t *testing.T) {
	inc, incNS := newApplier(t, Options{LogGroup: 5})
	full, fullNS := newApplier(t, Options{LogGroup: 5})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 11))
	groups := []string{"gin-00000001", "gin-00000002"}
	ranges := []policy.Range{rng("10.244.2.0", "10.244.2.255"), rng("10.244.3.7", "10.244.3.7"), rng("10.244.5.0", "10.244.5.9"),
		rng("200.0.0.0", "255.255.255.255"), rng("0.0.0.0", "9.255.255.255")}
	ranges6 := []policy.Range{rng("fd00:10:244:1::2", "fd00:10:244:1::2"), rng("fd00:10:244:2::", "fd00:10:244:2::ff"), rng("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
	for i := range 20 {
		rs := every()
		for j := range 6 { // pods: some in, some out, some moved
			if r.IntN(3) == 0 {
				continue
			}
			for _, a := range []string{fmt.Sprintf("10.244.1.%d", 10+j), fmt.Sprintf("fd00:10:244:1::%x", 10+j)} {
				rs.Pods = append(rs.Pods, policy.PodEntry{Addr: a4(a), Pod: fmt.Sprintf("ns/p%d", j), Ingress: groups[r.IntN(2)]})
			}
		}
		pick := func(from []policy.Range) []policy.Range {
			var out []policy.Range
			for _, x := range from {
				if r.IntN(2) == 0 {
					out = append(out, x)
				}
			}
			return out
		}
		// in_db_allow-api rule 0 keeps at least one peer of each family
		// (an empty one would remove its set and rule: not an element
		// change).
		rs.Chains[2].Rules[0].Peers = slices.Concat([]policy.Range{rng("10.244.1.2", "10.244.1.3")}, pick(ranges), []policy.Range{rng("fd00:10:244:1::1", "fd00:10:244:1::1")}, pick(ranges6))
		slices.SortFunc(rs.Chains[2].Rules[0].Peers, func(a, b policy.Range) int { return a.From.Compare(b.From) })
		rs.Chains[2].Rules[0].Named = append(rs.Chains[2].Rules[0].Named, policy.NamedPort{Addr: a4("10.244.1.4"), Protocol: policy.UDP, Port: uint16(1000 + r.IntN(3))},
			policy.NamedPort{Addr: a4("fd00:10:244:1::4"), Protocol: policy.SCTP, Port: uint16(1000 + r.IntN(3))})
		if err := inc.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: incremental: %v", i, err)
		}
		if ops, wasFull := inc.LastOps(); i > 0 && (wasFull || ops > 0 && !inc.lastNetlink) {
			t.Errorf("step %d: %d commands, full %t, netlink %t; want elements through netlink", i, ops, wasFull, inc.lastNetlink)
		}
		full.Resync()
		if err := full.Apply(ctx, rs); err != nil {
			t.Fatalf("step %d: full: %v", i, err)
		}
		if got, want := normalize(listTable(t, incNS)), normalize(listTable(t, fullNS)); got != want {
			t.Fatalf("step %d: incremental table:\n%s\nfull table:\n%s", i, got, want)
		}
	}
}

func tcpPorts(ports ...uint16) []policy.PortRange {
	var r []policy.PortRange
	for _, p := range ports {
		r = append(r, policy.PortRange{Protocol: policy.TCP, First: p, Last: p})
	}
	return r
}
