// Package firewalltest has a recording fake of firewall.Applier, for the
// unit tests of the agent: it keeps weft's tables as firewall.Render sees
// them and records each transaction as `nft -f` text.
package firewalltest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/weftnet/weft/internal/firewall"
)

// Fake is a firewall.Applier that applies nothing to the kernel: it renders
// each State against the tables it holds, records the transaction's text
// and keeps the result, as the kernel would.
type Fake struct {
	mu     sync.Mutex // guards the fields below
	tables firewall.Observed
	txs    []string
	states []firewall.State
	err    error
}

var _ firewall.Applier = (*Fake)(nil)

// Apply implements firewall.Applier. When FailWith set an error, it returns
// that error and changes nothing, as a transaction the kernel rejects.
func (f *Fake) Apply(ctx context.Context, s firewall.State) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall: apply: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tx, err := firewall.Render(s, f.tables)
	if err != nil {
		return err
	}
	if f.err != nil {
		return f.err
	}
	f.tables = f.tables.After(tx)
	f.txs = append(f.txs, tx.String())
	f.states = append(f.states, s)
	return nil
}

// FailWith makes the following Applies fail with err (nil: succeed again).
func (f *Fake) FailWith(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Transactions returns the text of every transaction applied, in order.
func (f *Fake) Transactions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.txs)
}

// State returns the last State applied, and false if none was.
func (f *Fake) State() (firewall.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return firewall.State{}, false
	}
	return f.states[len(f.states)-1], true
}

// Chains returns the sorted chains of weft's table of family fam, and
// false if that table does not exist.
func (f *Fake) Chains(fam firewall.Family) ([]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cs, ok := f.tables.Tables[fam]
	if !ok {
		return nil, false
	}
	var names []string
	for n := range cs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, true
}
