package nft

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy"
)

// Applier writes Rulesets into table inet weft-policy through the nft
// binary, one transaction (`nft -f -`) per Apply.
type Applier struct {
	log  *slog.Logger
	opts Options
	nft  string // path of the nft binary

	mu sync.Mutex // serialises Apply, Resync and Remove; guards the fields below
	// last is the table the last successful Apply wrote; nil means the
	// next Apply replaces the whole table (first Apply, after an error,
	// Resync or Remove).
	last     *tableState
	lastOps  int
	lastFull bool
}

// New returns an Applier for the caller's network namespace, or for
// opts.Namespace. It checks that nft can write the table (`nft --check`
// of its creation) and does not touch the table until Apply.
func New(opts Options) (*Applier, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftables: %w (install nftables)", err)
	}
	a := &Applier{log: log, opts: opts, nft: path}
	if _, err := a.run(context.Background(), "add table inet "+Table+"\n", "--check", "-f", "-"); err != nil {
		return nil, fmt.Errorf("nftables: check: %w", err)
	}
	return a, nil
}

// run runs nft with args and stdin in the Applier's namespace, and
// returns its output; an error carries what nft wrote to stderr.
func (a *Applier) run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	var out []byte
	err := a.do(func() error {
		cmd := exec.CommandContext(ctx, a.nft, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		var err error
		out, err = cmd.Output()
		if err != nil && stderr.Len() > 0 {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return err
	})
	return out, err
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
	var tx tx
	full := a.last == nil || !writeDiff(&tx, a.last, t)
	if full {
		tx = tx[:0]
		writeFull(&tx, t)
	}
	a.lastOps, a.lastFull = len(tx), full
	if len(tx) == 0 {
		return nil
	}
	start := time.Now()
	if _, err := a.run(ctx, tx.String(), "-f", "-"); err != nil {
		a.last = nil
		return fmt.Errorf("nftables: apply %d commands to table inet %s (full %t): %w", len(tx), Table, full, err)
	}
	a.last = t
	a.log.Debug("policy table applied", "commands", len(tx), "full", full,
		"pods", len(rs.Pods), "chains", len(rs.Chains), "groups", len(rs.Groups), "took", time.Since(start))
	return nil
}

// LastOps returns how many nft commands the last Apply sent (0: nothing
// had changed; the elements of one set go in one command, up to 1024)
// and whether it replaced the whole table.
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
	var tx tx
	tx.add(kindTable, "", "")
	tx.del(kindTable, "")
	if _, err := a.run(ctx, tx.String(), "-f", "-"); err != nil {
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
			out, err := a.run(ctx, "", "-j", "list", "set", "inet", Table, name)
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
