package firewall

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec()
	os.Exit(m.Run())
}

// newFirewall returns a Firewall in a fresh namespace, logging to the test.
func newFirewall(t *testing.T, ipt bool) (*Firewall, string, *bytes.Buffer) {
	t.Helper()
	name := netnstest.New(t)
	var logs bytes.Buffer
	fw, err := New(Options{Namespace: name, IPTablesForward: ipt, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("firewall log:\n%s", logs.String())
		}
	})
	return fw, name, &logs
}

// inNS runs argv in the namespace and returns its output.
func inNS(t *testing.T, name string, argv ...string) string {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Skipf("no %s: %v", argv[0], err)
	}
	out, err := netns.Command(name, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// tableOf reads weft's table with the nft binary, so the kernel's own
// rendering is compared: chain -> its spec line (if a base chain) and rules.
// It returns nil if the table does not exist.
func tableOf(t *testing.T, name string, fam Family) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	out, err := netns.Command(name, "nft", "list", "table", string(fam), Table).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return nil
		}
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	m := map[string][]string{}
	chain := ""
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "chain "):
			chain = strings.Fields(l)[1]
			m[chain] = []string{}
		case l == "}" || l == "" || strings.HasPrefix(l, "table "):
		case chain != "":
			m[chain] = append(m[chain], l)
		}
	}
	return m
}

// want returns what tableOf should read for s's parts of family fam.
func want(s State, fam Family) map[string][]string {
	m := map[string][]string{}
	for _, p := range s.Parts {
		if p.Family != fam {
			continue
		}
		for _, c := range p.Chains {
			var lines []string
			if c.Base != nil {
				lines = append(lines, c.Base.String())
			}
			for _, r := range c.Rules {
				lines = append(lines, r.String())
			}
			m[c.Name] = lines
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// nftCheck has nft check (nft -c) the text of the transaction Render
// gives from o to s, against the namespace's live tables.
func nftCheck(t *testing.T, name string, s State, o Observed) {
	t.Helper()
	tx, err := Render(s, o)
	if err != nil {
		t.Fatal(err)
	}
	cmd := netns.Command(name, "nft", "-c", "-f", "/dev/stdin")
	cmd.Stdin = strings.NewReader(tx.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("nft -c rejects the rendered transaction: %v\n%s\n%s", err, out, tx)
	}
}

func checkTable(t *testing.T, name string, s State) {
	t.Helper()
	for _, fam := range []Family{IPv4, IPv6} {
		got, w := tableOf(t, name, fam), want(s, fam)
		if !maps.EqualFunc(got, w, slices.Equal) || (got == nil) != (w == nil) {
			t.Errorf("table %s %s:\n got %q\nwant %q", fam, Table, got, w)
		}
	}
}

// TestApplyInNamespace writes the table into a fresh namespace and reads it
// back with the nft binary.
func TestApplyInNamespace(t *testing.T) {
	fw, name, _ := newFirewall(t, false)
	ctx := context.Background()
	full := NewState(Masquerade(network, subnet), Forward(network), policy())
	for range 2 { // applying twice must not duplicate rules
		if err := fw.Apply(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	checkTable(t, name, full)
	// The golden text is nft's own language: nft checks both the first
	// transaction and a resync's against the live table.
	obs, err := fw.observe()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Observed{{}, obs} {
		nftCheck(t, name, full, o)
	}
	// Masquerade off: its chain goes, the others keep theirs.
	rest := NewState(Forward(network), policy())
	if err := fw.Apply(ctx, rest); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, rest)
	// Dual stack: an ip6 table beside the ip one.
	v6 := NewState(Forward(network), Forward(netip.MustParsePrefix("fd00:10:244::/56")), Masquerade(netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd00:10:244:3::/64")))
	if err := fw.Apply(ctx, v6); err != nil {
		t.Fatal(err)
	}
	checkTable(t, name, v6)
	for range 2 { // the zero State removes everything; twice is fine
		if err := fw.Apply(ctx, State{}); err != nil {
			t.Fatal(err)
		}
	}
	checkTable(t, name, State{})
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply(ctx, full); err == nil {
		t.Error("Apply after Close: no error")
	}
}

// TestFailedTransaction: the kernel rejects a transaction midway (a
// masquerade rule in a filter chain, after valid operations): nothing of it
// is applied, and the next valid transaction applies cleanly and alone.
func TestFailedTransaction(t *testing.T) {
	fw, name, _ := newFirewall(t, false)
	ctx := context.Background()
	first := NewState(Masquerade(network, subnet), Forward(network))
	if err := fw.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	bad := NewState(Masquerade(network, netip.MustParsePrefix("10.244.9.0/24")), Part{
		Name: "bad", Family: IPv4, Chains: []Chain{{
			Name:  "bad",
			Base:  &Base{Type: TypeFilter, Hook: HookForward, Priority: PriorityFilter},
			Rules: []Rule{{Src: in(network), Verdict: VerdictMasquerade}},
		}},
	})
	if err := fw.Apply(ctx, bad); err == nil {
		t.Fatal("the kernel accepted masquerade in a filter chain")
	} else {
		t.Logf("rejected as expected: %v", err)
	}
	checkTable(t, name, first) // untouched: not one operation of the failed batch
	next := NewState(Masquerade(network, netip.MustParsePrefix("10.244.5.0/24")))
	if err := fw.Apply(ctx, next); err != nil {
		t.Fatalf("apply after a failed transaction: %v", err)
	}
	checkTable(t, name, next) // exactly: no "bad" chain, no forward chain, no old subnet
}

func TestCancelledContext(t *testing.T) {
	fw, name, _ := newFirewall(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := fw.Apply(ctx, NewState(Forward(network))); err == nil {
		t.Fatal("apply with a cancelled context: no error")
	}
	checkTable(t, name, State{})
}
