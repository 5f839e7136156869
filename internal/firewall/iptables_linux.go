package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/weftnet/weft/internal/netns"
)

// iptables keeps the parts' iptables chains in the filter table through
// the iptables binaries: they write to whichever backend (legacy or nft)
// the host's own rules use, which netlink alone cannot know. One
// iptables-save per family and sync; an iptables-restore --noflush only
// when something differs.
type iptables struct {
	log     *slog.Logger
	enabled bool
	ns      string // named namespace to run in; "" is ours

	// The fields below are guarded by Firewall.mu.
	chosen   bool   // the backend was chosen (and the choice logged)
	found    bool   // an iptables-save/iptables-restore pair was found
	suffix   string // "", "-nft" or "-legacy": appended to iptables/ip6tables
	noted    map[Family]bool
	clean    map[Family]bool // known to hold no WEFT-* chain: no need to look again
	execs    int             // binaries run, for tests
	restores int             // iptables-restore runs, for tests
}

func newIPTables(log *slog.Logger, enabled bool, ns string) *iptables {
	return &iptables{log: log, enabled: enabled, ns: ns, noted: map[Family]bool{}, clean: map[Family]bool{}}
}

// withoutIPTables is the note for a node whose FORWARD accepts live only
// in weft's own table.
const withoutIPTables = "forward accepts are only in weft's nftables table: a FORWARD DROP policy set with iptables (Docker sets one) blocks pod traffic"

// sync makes the WEFT-* chains of iptables' filter table, per family, equal
// to those of the parts of s.
func (i *iptables) sync(ctx context.Context, s State) error {
	var errs []error
	for _, fam := range []Family{IPv4, IPv6} {
		var want []IPTablesChain
		for _, p := range s.Parts {
			if p.Family == fam {
				want = append(want, p.IPTables...)
			}
		}
		if !i.enabled {
			if len(want) > 0 && !i.noted[fam] {
				i.noted[fam] = true
				i.log.Info("firewall: iptables forward rules are off (--iptables-forward-rules=false); "+withoutIPTables, "family", fam)
			}
			continue
		}
		if len(want) == 0 && i.clean[fam] {
			continue
		}
		save, restore, ok := i.tools(ctx, fam)
		if !ok {
			continue
		}
		out, err := i.run(ctx, "", save, "-t", "filter")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		script, err := iptablesScript(want, parseSave(out))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if script != "" {
			i.restores++
			if _, err := i.run(ctx, script, restore, "--noflush", "-w"); err != nil {
				errs = append(errs, fmt.Errorf("%w; input:\n%s", err, script))
				continue
			}
			i.log.Info("firewall: wrote iptables filter rules", "binary", restore, "input", script)
		}
		i.clean[fam] = len(want) == 0
	}
	return errors.Join(errs...)
}

// tools returns the save and restore binaries of fam's iptables, choosing
// the backend on first use. When both iptables-legacy and iptables-nft are
// installed, the one that holds more rules (a DROP policy counts as one)
// wins, ties going to nft, as kubernetes-sigs/iptables-wrapper decides.
func (i *iptables) tools(ctx context.Context, fam Family) (save, restore string, ok bool) {
	if !i.chosen {
		i.chosen = true
		i.choose(ctx)
	}
	base := "iptables"
	if fam == IPv6 {
		base = "ip6tables"
	}
	save, restore = base+i.suffix+"-save", base+i.suffix+"-restore"
	if i.found && onPath(save) && onPath(restore) {
		return save, restore, true
	}
	if !i.noted[fam] {
		i.noted[fam] = true
		i.log.Warn("firewall: no "+save+" and "+restore+" on PATH; "+withoutIPTables, "family", fam)
	}
	return "", "", false
}

func (i *iptables) choose(ctx context.Context) {
	if onPath("iptables-legacy-save") && onPath("iptables-nft-save") {
		legacy, lerr := i.count(ctx, "-legacy")
		nft, nerr := i.count(ctx, "-nft")
		switch {
		case lerr == nil && (nerr != nil || legacy > nft):
			i.suffix, i.found = "-legacy", true
		case nerr == nil:
			i.suffix, i.found = "-nft", true
		}
		if i.found {
			i.log.Info("firewall: forward accepts also go into iptables' filter table", "binary", "iptables"+i.suffix,
				"rules-legacy", legacy, "rules-nft", nft, "why", "the backend that holds more rules, nft on a tie")
			return
		}
		i.log.Warn("firewall: iptables-legacy-save and iptables-nft-save both failed", "legacy", lerr, "nft", nerr)
	}
	if onPath("iptables-save") {
		i.suffix, i.found = "", true
		i.log.Info("firewall: forward accepts also go into iptables' filter table", "binary", "iptables")
	}
}

// count returns how many rules and DROP policies the backend holds in
// both families, from `iptables<suffix>-save` and `ip6tables<suffix>-save`.
func (i *iptables) count(ctx context.Context, suffix string) (int, error) {
	n := 0
	for _, base := range []string{"iptables", "ip6tables"} {
		bin := base + suffix + "-save"
		if !onPath(bin) {
			continue
		}
		out, err := i.run(ctx, "", bin)
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") || (strings.HasPrefix(l, ":") && strings.Contains(l, " DROP ")) {
				n++
			}
		}
	}
	return n, nil
}

func onPath(bin string) bool {
	_, err := exec.LookPath(bin)
	return err == nil
}

// run runs argv (in the namespace, if any) with stdin and returns stdout.
func (i *iptables) run(ctx context.Context, stdin string, argv ...string) (string, error) {
	i.execs++
	var cmd *exec.Cmd
	if i.ns != "" {
		c := netns.Command(i.ns, argv...)
		if c.Err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), c.Err)
		}
		cmd = exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	var out, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
