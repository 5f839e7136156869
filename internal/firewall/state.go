package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ifNameSize is the kernel's IFNAMSIZ: an interface name and its NUL.
const ifNameSize = 16

// State is the whole firewall weft wants on a node: every part, of every
// family. A part absent from the State is removed by the next Apply; a
// family with no parts has no weft table. The zero State removes everything
// weft created.
type State struct {
	Parts []Part
}

// NewState returns a State of the given parts.
func NewState(parts ...Part) State { return State{Parts: parts} }

// Has reports whether s holds a part of that name and family.
func (s State) Has(name string, f Family) bool {
	for _, p := range s.Parts {
		if p.Name == name && p.Family == f {
			return true
		}
	}
	return false
}

// Part is one named piece of the firewall (masquerade, forward, policy).
// It owns its chains: no other part may name the same chain in the same
// family, and syncing one part never touches another's chains.
type Part struct {
	Name   string
	Family Family
	// Chains live in table <Family> weft.
	Chains []Chain
	// Counters are named counters of table <Family> weft that the part's
	// rules count into (Rule.Counter). A counter is created once and kept
	// while its part is in the State, so it keeps counting across the
	// refills of the chains; it is deleted with the last part that has it.
	Counters []string
	// IPTables are chains the part also wants in iptables' filter table of
	// its family, each jumped to from a built-in chain, for the rules that
	// iptables' own base chains would otherwise overrule.
	IPTables []IPTablesChain
}

// Chain is a chain of weft's table. A Base chain is attached to a hook;
// other chains are reached by jumps.
type Chain struct {
	Name  string
	Base  *Base
	Rules []Rule
}

// Base is the hook of a base chain. Its policy is always accept: what
// weft drops, it drops with a rule, and a drop in any base chain at a hook
// is final whatever the others say.
type Base struct {
	Type     string // TypeFilter or TypeNAT
	Hook     string // HookPostrouting, HookForward, ...
	Priority int32
}

// Chain types, hooks and priorities, as nft names them.
const (
	TypeFilter = "filter"
	TypeNAT    = "nat"

	HookPrerouting  = "prerouting"
	HookInput       = "input"
	HookForward     = "forward"
	HookOutput      = "output"
	HookPostrouting = "postrouting"

	PriorityFilter int32 = 0
	PrioritySrcNAT int32 = 100
)

// stdPriorities are nft's names for priorities of the ip and ip6 families;
// dstnat and srcnat name a priority only at their own hook.
var stdPriorities = []struct {
	name string
	prio int32
	hook string
}{{"raw", -300, ""}, {"mangle", -150, ""}, {"dstnat", -100, HookPrerouting}, {"filter", 0, ""}, {"security", 50, ""}, {"srcnat", 100, HookPostrouting}}

// String renders the chain's spec as `nft list` prints it:
// "type nat hook postrouting priority srcnat; policy accept;". Like nft, a
// priority within 10 of a named one is written relative to it
// ("filter - 10").
func (b Base) String() string {
	prio := strconv.Itoa(int(b.Priority))
	for _, p := range stdPriorities {
		d := b.Priority - p.prio
		if (p.hook != "" && p.hook != b.Hook) || d < -10 || d > 10 {
			continue
		}
		switch {
		case d == 0:
			prio = p.name
		case d > 0:
			prio = fmt.Sprintf("%s + %d", p.name, d)
		default:
			prio = fmt.Sprintf("%s - %d", p.name, -d)
		}
		break
	}
	return fmt.Sprintf("type %s hook %s priority %s; policy accept;", b.Type, b.Hook, prio)
}

// IPTablesChain is a chain in iptables' filter table, jumped to from the
// end of built-in chain From with the same comment as its rules.
type IPTablesChain struct {
	Name    string // must start with "WEFT-": such chains are weft's own
	From    string // built-in chain that jumps to it: "FORWARD"
	Comment string
	Rules   []Rule
}

// IPTablesPrefix starts the name of every iptables chain weft owns.
const IPTablesPrefix = "WEFT-"

// Applier makes the node's firewall equal to a State.
type Applier interface {
	// Apply makes weft's firewall equal to s, all of it: it creates or
	// refills the chains of the parts in s and removes the chains (and the
	// tables and iptables chains) weft created that belong to no part in s.
	// It never touches what weft did not create. It is idempotent: applying
	// the same State again changes nothing the packets can see, and may be
	// called on every sync. The nftables side is one transaction: on error
	// nothing of it was applied and nothing is left pending for the next
	// call. Apply with the zero State removes everything weft created.
	Apply(ctx context.Context, s State) error
}

// validate checks what the kernel would otherwise reject with a less
// helpful error, or worse accept: unnamed or duplicate parts, two parts
// claiming one chain, addresses of another family than the part's.
func (s State) validate() error {
	type key struct {
		f    Family
		name string
	}
	parts := map[key]bool{}
	chains := map[key]string{}
	ipt := map[key]string{}
	counters := map[key]string{}
	for _, p := range s.Parts {
		if p.Name == "" {
			return errors.New("firewall state: a part has no name")
		}
		if p.Family != IPv4 && p.Family != IPv6 {
			return fmt.Errorf("firewall part %s: unknown family %q", p.Name, p.Family)
		}
		if parts[key{p.Family, p.Name}] {
			return fmt.Errorf("firewall part %s (%s): given twice", p.Name, p.Family)
		}
		parts[key{p.Family, p.Name}] = true
		for _, c := range p.Counters {
			if c == "" {
				return fmt.Errorf("firewall part %s: a counter has no name", p.Name)
			}
			if o, ok := counters[key{p.Family, c}]; ok {
				return fmt.Errorf("firewall part %s: counter %s %s %s is already part %s's", p.Name, p.Family, Table, c, o)
			}
			counters[key{p.Family, c}] = p.Name
		}
		for _, c := range p.Chains {
			if c.Name == "" {
				return fmt.Errorf("firewall part %s: a chain has no name", p.Name)
			}
			if o, ok := chains[key{p.Family, c.Name}]; ok {
				return fmt.Errorf("firewall part %s: chain %s %s %s is already part %s's", p.Name, p.Family, Table, c.Name, o)
			}
			chains[key{p.Family, c.Name}] = p.Name
			if b := c.Base; b != nil && (!slices.Contains([]string{TypeFilter, TypeNAT}, b.Type) ||
				!slices.Contains([]string{HookPrerouting, HookInput, HookForward, HookOutput, HookPostrouting}, b.Hook)) {
				return fmt.Errorf("firewall part %s: chain %s: type %q hook %q: use type %s or %s at hook prerouting, input, forward, output or postrouting", p.Name, c.Name, b.Type, b.Hook, TypeFilter, TypeNAT)
			}
			if err := checkRules(p, c.Name, c.Rules); err != nil {
				return err
			}
		}
		for _, c := range p.IPTables {
			if len(c.Name) <= len(IPTablesPrefix) || c.Name[:len(IPTablesPrefix)] != IPTablesPrefix {
				return fmt.Errorf("firewall part %s: iptables chain %q must be named %s...", p.Name, c.Name, IPTablesPrefix)
			}
			if c.From == "" {
				return fmt.Errorf("firewall part %s: iptables chain %s: no chain jumps to it", p.Name, c.Name)
			}
			if o, ok := ipt[key{p.Family, c.Name}]; ok {
				return fmt.Errorf("firewall part %s: iptables chain %s is already part %s's", p.Name, c.Name, o)
			}
			ipt[key{p.Family, c.Name}] = p.Name
			if err := checkRules(p, c.Name, c.Rules); err != nil {
				return err
			}
			for _, r := range c.Rules {
				if r.IIf != "" || r.OIf != "" || r.Counter != "" || r.Verdict == VerdictDrop {
					return fmt.Errorf("firewall part %s: iptables chain %s: rule %q: interfaces, counters and drops are nftables' only", p.Name, c.Name, r)
				}
			}
		}
	}
	return nil
}

func checkRules(p Part, chain string, rules []Rule) error {
	for _, r := range rules {
		for _, m := range []Match{r.Src, r.Dst} {
			if m.Prefix.IsValid() && FamilyOf(m.Prefix) != p.Family {
				return fmt.Errorf("firewall part %s: chain %s: rule %q matches %s addresses in an %s table", p.Name, chain, r, FamilyOf(m.Prefix), p.Family)
			}
		}
		for _, name := range []string{r.IIf, r.OIf} {
			if len(name) >= ifNameSize || strings.ContainsRune(name, 0) {
				return fmt.Errorf("firewall part %s: chain %s: rule %q: %q is not an interface name (at most %d bytes)", p.Name, chain, r, name, ifNameSize-1)
			}
		}
		if r.Counter != "" && !slices.Contains(p.Counters, r.Counter) {
			return fmt.Errorf("firewall part %s: chain %s: rule %q counts into counter %s, which is not the part's", p.Name, chain, r, r.Counter)
		}
		switch r.Verdict {
		case VerdictReturn, VerdictAccept, VerdictDrop, VerdictMasquerade, VerdictMasqueradeNotRandom:
		default:
			return fmt.Errorf("firewall part %s: chain %s: rule %q: unknown verdict %q", p.Name, chain, r, r.Verdict)
		}
	}
	return nil
}
