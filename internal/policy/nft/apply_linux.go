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

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

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
	last        *tableState
	lastOps     int
	lastFull    bool
	lastNetlink bool // the last Apply sent elements through netlink
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
			return fmt.Errorf("%w: %s", err, brief(stderr.String()))
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

// Apply makes table inet weft-policy enforce rs, in one transaction: the
// difference from what the last Apply wrote (elements, chains whose rules
// changed, objects added or gone), or the whole table when there is no
// trusted last state (the first Apply, after a failed one, Resync or
// Remove). A difference of elements only goes through netlink, anything
// else through `nft -f -`. A failed transaction leaves the table as it
// was. An inconsistent Ruleset is rejected before anything is sent.
// Applying the same Ruleset again sends nothing.
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
	a.lastOps, a.lastFull, a.lastNetlink = len(tx), full, false
	if len(tx) == 0 {
		return nil
	}
	start := time.Now()
	var nl []nlSet
	if !full && elementsOnly(tx) {
		// An encoding failure is a bug; the text still applies.
		if nl, err = encodeTx(tx, t); err != nil {
			a.log.Warn("policy table: elements sent as nft text", "error", err)
		}
	}
	if nl != nil {
		a.lastNetlink = true
		err = a.sendElements(nl)
	} else {
		_, err = a.run(ctx, tx.String(), "-f", "-")
	}
	if err != nil {
		a.last = nil
		return fmt.Errorf("nftables: apply %d commands to table inet %s (full %t, netlink %t): %w", len(tx), Table, full, nl != nil, err)
	}
	a.last = t
	a.log.Debug("policy table applied", "commands", len(tx), "full", full, "netlink", nl != nil,
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

// sendElements adds and deletes elements in one netlink batch, one
// transaction as `nft -f` would make it (same as `nft add element inet
// weft-policy SET { ... }` and `nft delete element ...` in one file).
func (a *Applier) sendElements(sets []nlSet) error {
	var opts []nftables.ConnOption
	if a.opts.Namespace != "" {
		fd, err := netns.Fd(a.opts.Namespace)
		if err != nil {
			return err
		}
		defer fd.Close()
		opts = append(opts, nftables.WithNetNSFd(int(fd)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	table := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	for _, s := range sets {
		set := &nftables.Set{Table: table, Name: s.name}
		elems := make([]nftables.SetElement, len(s.elems))
		for i, e := range s.elems {
			elems[i] = nftables.SetElement{Key: e.key, IntervalEnd: e.intervalEnd}
			if e.gotoChain != "" {
				elems[i].VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.gotoChain}
			}
		}
		if s.add {
			err = c.SetAddElements(set, elems)
		} else {
			err = c.SetDeleteElements(set, elems)
		}
		if err != nil {
			return fmt.Errorf("netlink: elements of set %s: %w", s.name, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	return nil
}
