package nft

import (
	"fmt"
	"strings"
)

// maxBatch is the most elements one `add element` or `delete element`
// command carries; a command is one netlink message, in which the kernel
// finds the set once (by a linear scan of the table's sets), so elements
// go in as few commands as that keeps lines reasonable.
const maxBatch = 1024

// Verbs of nft commands.
const (
	verbAdd    = "add"
	verbDelete = "delete"
	verbFlush  = "flush"
)

// Kinds of objects.
const (
	kindTable   = "table"
	kindSet     = "set"
	kindMap     = "map"
	kindChain   = "chain"
	kindRule    = "rule"
	kindElement = "element"
)

// op is one nft command on table inet weft-policy.
type op struct {
	verb string
	kind string
	name string // of the set, map or chain; "" for the table
	// def: a set's, map's or base chain's definition ("{ type ... ; }");
	// a rule's text (with its comment); elements: their keys, or for a
	// map's additions "key : value".
	def   string
	elems []string
}

// String writes the command as nft reads it.
func (o op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s inet %s", o.verb, o.kind, Table)
	if o.name != "" {
		b.WriteString(" ")
		b.WriteString(o.name)
	}
	if o.def != "" {
		b.WriteString(" ")
		b.WriteString(o.def)
	}
	if o.kind == kindElement {
		b.WriteString(" { ")
		b.WriteString(strings.Join(o.elems, ", "))
		b.WriteString(" }")
	}
	return b.String()
}

// tx is an nft transaction: commands that `nft -f` applies all or none.
type tx []op

func (t *tx) add(kind, name, def string) {
	*t = append(*t, op{verb: verbAdd, kind: kind, name: name, def: def})
}

func (t *tx) del(kind, name string) { *t = append(*t, op{verb: verbDelete, kind: kind, name: name}) }

func (t *tx) flush(name string) { *t = append(*t, op{verb: verbFlush, kind: kindChain, name: name}) }

func (t *tx) rule(chain, rule string) {
	*t = append(*t, op{verb: verbAdd, kind: kindRule, name: chain, def: rule})
}

// elements adds commands for elems of set name, maxBatch per command.
func (t *tx) elements(verb, name string, elems []string) {
	for len(elems) > 0 {
		n := min(len(elems), maxBatch)
		*t = append(*t, op{verb: verb, kind: kindElement, name: name, elems: elems[:n:n]})
		elems = elems[n:]
	}
}

// String returns the transaction as `nft -f` input, a command a line.
func (t tx) String() string {
	var b strings.Builder
	for _, o := range t {
		b.WriteString(o.String())
		b.WriteString("\n")
	}
	return b.String()
}

// brief shortens nft's complaint for an error message: nft quotes the
// command it rejects, and an element command can be 50 kB long.
func brief(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	if len(lines) > 4 {
		lines = append(lines[:4], fmt.Sprintf("(%d more lines)", len(lines)-4))
	}
	return strings.Join(lines, "\n")
}
