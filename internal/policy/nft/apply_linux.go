package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy"
)

// Applier writes Rulesets into table inet weft-policy through the nft
// binary (knftables), one transaction per Apply.
type Applier struct {
	log  *slog.Logger
	opts Options
	nft  knftables.Interface

	mu sync.Mutex // serialises Apply, Resync and Remove; guards the fields below
	// last is the table the last successful Apply wrote; nil means the
	// next Apply replaces the whole table (first Apply, after an error,
	// Resync or Remove).
	last     *tableState
	lastOps  int
	lastFull bool
}

// New returns an Applier for the caller's network namespace, or for
// opts.Namespace. It checks that nft runs (`nft --version`, `nft --check`)
// and does not touch the table until Apply.
func New(opts Options) (*Applier, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Applier{log: log, opts: opts}
	err := a.do(func() error {
		var err error
		a.nft, err = knftables.New(knftables.InetFamily, Table)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return a, nil
}

// do runs fn, which starts nft, in the Applier's namespace: nft inherits
// the namespace of the thread that starts it (the same as `ip netns exec
// NS nft ...`). The agent itself runs in its node's namespace and never
// switches: Namespace is for tests.
func (a *Applier) do(fn func() error) error {
	if a.opts.Namespace == "" {
		return fn()
	}
	return netns.Do(a.opts.Namespace, fn)
}

// Apply makes table inet weft-policy enforce rs, in one nft transaction:
// the difference from what the last Apply wrote (elements, chains whose
// rules changed, objects added or gone), or the whole table when there is
// no trusted last state (the first Apply, after a failed one, Resync or
// Remove). A failed transaction leaves the table as it was. An
// inconsistent Ruleset is rejected before anything is sent. Applying the
// same Ruleset again sends nothing.
func (a *Applier) Apply(ctx context.Context, rs *policy.Ruleset) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nftables: apply policy: %w", err)
	}
	t, err := build(rs, a.opts)
	if err != nil {
		return fmt.Errorf("nftables: apply policy: %w", err)
	}
	tx := a.nft.NewTransaction()
	full := a.last == nil || !writeDiff(tx, a.last, t)
	if full {
		tx = a.nft.NewTransaction()
		writeFull(tx, t)
	}
	a.lastOps, a.lastFull = tx.NumOperations(), full
	if tx.NumOperations() == 0 {
		return nil
	}
	start := time.Now()
	err = a.do(func() error { return a.nft.Run(ctx, tx) })
	if err != nil {
		a.last = nil
		return fmt.Errorf("nftables: apply %d operations to table inet %s (full %t): %w", tx.NumOperations(), Table, full, err)
	}
	a.last = t
	a.log.Debug("policy table applied", "operations", tx.NumOperations(), "full", full,
		"pods", len(rs.Pods), "chains", len(rs.Chains), "groups", len(rs.Groups), "took", time.Since(start))
	return nil
}

// LastOps returns how many nft operations the last Apply sent (0: nothing
// had changed) and whether it replaced the whole table.
func (a *Applier) LastOps() (ops int, full bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastOps, a.lastFull
}

// Resync makes the next Apply replace the whole table, whatever it holds
// then (someone may have changed it by hand).
func (a *Applier) Resync() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = nil
}

// Remove deletes table inet weft-policy (enforcement turned off), the same
// as `nft add table inet weft-policy; nft delete table inet weft-policy`
// in one transaction: a missing table is success.
func (a *Applier) Remove(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = nil
	tx := a.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := a.do(func() error { return a.nft.Run(ctx, tx) }); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", Table, err)
	}
	return nil
}

// Denied returns the packets dropped so far per local pod address and
// direction, read from the counters of the denied-in/out sets (`nft -j
// list set inet weft-policy denied-in4`, ...). A pod's counts start at
// zero when its address enters the table, and again after a full Apply.
func (a *Applier) Denied(ctx context.Context) (map[netip.Addr]Counts, error) {
	m := map[netip.Addr]Counts{}
	for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
		for _, f := range fams {
			name := deniedName(dir, f)
			var out []byte
			err := a.do(func() error {
				var err error
				out, err = exec.CommandContext(ctx, "nft", "-j", "list", "set", "inet", Table, name).Output()
				if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && len(ee.Stderr) > 0 {
					return fmt.Errorf("%w: %s", err, ee.Stderr)
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("nftables: list set %s: %w", name, err)
			}
			if err := parseDenied(out, dir, m); err != nil {
				return nil, fmt.Errorf("nftables: list set %s: %w", name, err)
			}
		}
	}
	return m, nil
}
