package firewall

import (
	"fmt"
	"slices"
	"strings"
)

// Observed is what weft's tables hold now, as far as Render needs it: for
// each family whose table exists, its chains and their hooks (nil Base for
// a regular chain).
type Observed struct {
	Tables map[Family]map[string]*Base
	// Counters are the named counters of each family's table.
	Counters map[Family][]string
}

// Verb is what an operation does.
type Verb string

// Verbs of a transaction, as nft spells them.
const (
	Add    Verb = "add"
	Flush  Verb = "flush"
	Delete Verb = "delete"
)

// Op is one operation of a transaction, on weft's table of Family: the
// table itself when Chain and Counter are empty, a named counter, a chain,
// or (Add with a Rule) a rule appended to Chain.
type Op struct {
	Verb    Verb
	Family  Family
	Chain   string
	Counter string
	Base    *Base // Add of a base chain
	Rule    *Rule // Add of a rule
}

// String renders the operation as a line of `nft -f` input.
func (o Op) String() string {
	t := fmt.Sprintf("%s %s", o.Family, Table)
	switch {
	case o.Counter != "":
		return fmt.Sprintf("%s counter %s %s", o.Verb, t, o.Counter)
	case o.Chain == "":
		return fmt.Sprintf("%s table %s", o.Verb, t)
	case o.Rule != nil:
		return fmt.Sprintf("%s rule %s %s %s", o.Verb, t, o.Chain, o.Rule)
	case o.Base != nil:
		return fmt.Sprintf("%s chain %s %s { %s }", o.Verb, t, o.Chain, o.Base)
	default:
		return fmt.Sprintf("%s chain %s %s", o.Verb, t, o.Chain)
	}
}

// Transaction is a list of operations the kernel applies all or nothing.
type Transaction []Op

// String renders the transaction as `nft -f` input, one operation a line.
func (t Transaction) String() string {
	var b strings.Builder
	for _, o := range t {
		b.WriteString(o.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// families returns the families of s and o in a stable order: ip, ip6,
// then any other.
func families(s State, o Observed) []Family {
	var fs []Family
	for _, p := range s.Parts {
		fs = append(fs, p.Family)
	}
	for f := range o.Tables {
		fs = append(fs, f)
	}
	for f := range o.Counters {
		fs = append(fs, f)
	}
	rank := func(f Family) int {
		switch f {
		case IPv4:
			return 0
		case IPv6:
			return 1
		}
		return 2
	}
	slices.SortFunc(fs, func(a, b Family) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(string(a), string(b))
	})
	return slices.Compact(fs)
}

// Render returns the one transaction that turns the observed tables into
// s. Per family: with no parts, weft's table is deleted if it exists.
// Otherwise the table is added (a no-op when it exists), then the parts'
// named counters (a no-op for one that exists: it keeps its count); a
// chain whose hook changed is flushed and deleted first; every chain of a
// part is added and, if it existed, flushed, then filled; chains of the
// table that belong to no part are flushed and deleted, then counters
// that belong to no part, last. The table itself is never flushed, so a
// part's chains are rewritten only by that part.
func Render(s State, o Observed) (Transaction, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	var tx Transaction
	for _, f := range families(s, o) {
		have, exists := o.Tables[f]
		var chains []Chain
		var counters []string
		for _, p := range s.Parts {
			if p.Family == f {
				chains = append(chains, p.Chains...)
				counters = append(counters, p.Counters...)
			}
		}
		if len(chains) == 0 && len(counters) == 0 {
			if exists {
				tx = append(tx, Op{Verb: Delete, Family: f})
			}
			continue
		}
		tx = append(tx, Op{Verb: Add, Family: f})
		for _, c := range counters { // before any rule that counts into one
			tx = append(tx, Op{Verb: Add, Family: f, Counter: c})
		}
		want := map[string]bool{}
		refilled := map[string]bool{}
		for _, c := range chains {
			want[c.Name] = true
			b, ok := have[c.Name]
			switch {
			case !ok:
			case sameBase(b, c.Base):
				refilled[c.Name] = true
			default: // the hook cannot be changed in place
				tx = append(tx, Op{Verb: Flush, Family: f, Chain: c.Name}, Op{Verb: Delete, Family: f, Chain: c.Name})
			}
		}
		for _, c := range chains { // all chains before any rule, for jumps
			tx = append(tx, Op{Verb: Add, Family: f, Chain: c.Name, Base: c.Base})
		}
		for _, c := range chains {
			if refilled[c.Name] {
				tx = append(tx, Op{Verb: Flush, Family: f, Chain: c.Name})
			}
			for i := range c.Rules {
				tx = append(tx, Op{Verb: Add, Family: f, Chain: c.Name, Rule: &c.Rules[i]})
			}
		}
		var stale []string
		for name := range have {
			if !want[name] {
				stale = append(stale, name)
			}
		}
		slices.Sort(stale)
		for _, name := range stale { // every stale chain is empty before any is deleted
			tx = append(tx, Op{Verb: Flush, Family: f, Chain: name})
		}
		for _, name := range stale {
			tx = append(tx, Op{Verb: Delete, Family: f, Chain: name})
		}
		// Last: no rule counts into a stale counter any more.
		for _, name := range slices.Sorted(slices.Values(o.Counters[f])) {
			if !slices.Contains(counters, name) {
				tx = append(tx, Op{Verb: Delete, Family: f, Counter: name})
			}
		}
	}
	return tx, nil
}

func sameBase(a, b *Base) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// After returns what the tables hold once tx has been applied to o, for
// fakes and for checking that applying Render's transaction reaches s.
func (o Observed) After(tx Transaction) Observed {
	n := Observed{Tables: map[Family]map[string]*Base{}, Counters: map[Family][]string{}}
	for f, cs := range o.Tables {
		m := map[string]*Base{}
		for name, b := range cs {
			m[name] = b
		}
		n.Tables[f] = m
	}
	for f, cs := range o.Counters {
		n.Counters[f] = slices.Clone(cs)
	}
	for _, op := range tx {
		switch {
		case op.Counter != "" && op.Verb == Add:
			if !slices.Contains(n.Counters[op.Family], op.Counter) {
				n.Counters[op.Family] = append(n.Counters[op.Family], op.Counter)
			}
		case op.Counter != "" && op.Verb == Delete:
			n.Counters[op.Family] = slices.DeleteFunc(n.Counters[op.Family], func(c string) bool { return c == op.Counter })
		case op.Chain == "" && op.Verb == Add:
			if n.Tables[op.Family] == nil {
				n.Tables[op.Family] = map[string]*Base{}
			}
		case op.Chain == "" && op.Verb == Delete:
			delete(n.Tables, op.Family)
			delete(n.Counters, op.Family)
		case op.Rule == nil && op.Verb == Add:
			if _, ok := n.Tables[op.Family][op.Chain]; !ok {
				n.Tables[op.Family][op.Chain] = op.Base
			}
		case op.Rule == nil && op.Verb == Delete:
			delete(n.Tables[op.Family], op.Chain)
		}
	}
	return n
}
