package firewalltest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/firewall"
)

func TestFake(t *testing.T) {
	ctx := context.Background()
	n := netip.MustParsePrefix("10.244.0.0/16")
	s := netip.MustParsePrefix("10.244.3.0/24")
	var f Fake
	full := firewall.NewState(firewall.Masquerade(n, s), firewall.Forward(n))
	if err := f.Apply(ctx, full); err != nil {
		t.Fatal(err)
	}
	if cs, ok := f.Chains(firewall.IPv4); !ok || !slices.Equal(cs, []string{"forward", "postrouting"}) {
		t.Fatalf("chains %v, %v", cs, ok)
	}
	// A rejected transaction changes nothing and is not recorded.
	boom := errors.New("kernel says no")
	f.FailWith(boom)
	if err := f.Apply(ctx, firewall.NewState(firewall.Forward(n))); !errors.Is(err, boom) {
		t.Fatalf("apply while failing: %v", err)
	}
	f.FailWith(nil)
	if err := f.Apply(ctx, firewall.NewState(firewall.Forward(n))); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, firewall.State{}); err != nil {
		t.Fatal(err)
	}
	txs := f.Transactions()
	if len(txs) != 3 {
		t.Fatalf("%d transactions, want 3:\n%s", len(txs), strings.Join(txs, "--\n"))
	}
	// The second transaction started from the first one's tables: the
	// masquerade chain it removes is there although a failed Apply came in
	// between.
	if !strings.HasSuffix(txs[1], "flush chain ip weft postrouting\ndelete chain ip weft postrouting\n") {
		t.Errorf("second transaction:\n%s", txs[1])
	}
	if txs[2] != "delete table ip weft\n" {
		t.Errorf("third transaction:\n%s", txs[2])
	}
	if _, ok := f.Chains(firewall.IPv4); ok {
		t.Error("table still there after the zero State")
	}
	if st, ok := f.State(); !ok || len(st.Parts) != 0 {
		t.Errorf("last state %v, %v", st, ok)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Apply(cancelled, full); !errors.Is(err, context.Canceled) {
		t.Errorf("apply with a cancelled context: %v", err)
	}
}
