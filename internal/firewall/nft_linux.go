package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Firewall applies rules through nftables' netlink API (no nft binary).
type Firewall struct {
	conn *nftables.Conn
}

// New returns a Firewall in the current network namespace, or in the one
// of nsFd when it is non-negative (tests).
func New(nsFd int) (*Firewall, error) {
	var opts []nftables.ConnOption
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: connect: %w", err)
	}
	return &Firewall{conn: c}, nil
}

func tableFamily(p netip.Prefix) nftables.TableFamily {
	if p.Addr().Is4() {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyIPv6
}

// Apply replaces the content of weft's table for the family of network with
// rules, in one transaction: the table is never seen half-written.
func (f *Firewall) Apply(network netip.Prefix, rules []Rule) error {
	c := f.conn
	t := c.AddTable(&nftables.Table{Family: tableFamily(network), Name: Table})
	c.FlushTable(t)
	prioNAT, prioFilter := nftables.ChainPriorityNATSource, nftables.ChainPriorityFilter
	accept := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		ChainPostrouting: c.AddChain(&nftables.Chain{Name: ChainPostrouting, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: prioNAT, Policy: &accept}),
		ChainForward:     c.AddChain(&nftables.Chain{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: prioFilter, Policy: &accept}),
	}
	for _, r := range rules {
		ch, ok := chains[r.Chain]
		if !ok {
			return fmt.Errorf("nftables: rule %q: unknown chain %q", r, r.Chain)
		}
		exprs, err := ruleExprs(r)
		if err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table %s (%d rules): %w", Table, len(rules), err)
	}
	return nil
}

// Delete removes weft's table for the family of network; a missing table
// is success.
func (f *Firewall) Delete(network netip.Prefix) error {
	tables, err := f.conn.ListTablesOfFamily(tableFamily(network))
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == Table {
			f.conn.DelTable(t)
			if err := f.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("nftables: delete table %s: %w", Table, err)
			}
		}
	}
	return nil
}

// Count returns the number of rules in weft's table (for tests and status).
func (f *Firewall) Count(network netip.Prefix) (int, error) {
	t := &nftables.Table{Family: tableFamily(network), Name: Table}
	n := 0
	for _, ch := range []string{ChainPostrouting, ChainForward} {
		rs, err := f.conn.GetRules(t, &nftables.Chain{Name: ch, Table: t})
		if err != nil {
			return 0, fmt.Errorf("nftables: list rules of %s: %w", ch, err)
		}
		n += len(rs)
	}
	return n, nil
}

func ruleExprs(r Rule) ([]expr.Any, error) {
	var e []expr.Any
	if r.Mark != 0 {
		m := binary.NativeEndian.AppendUint32(nil, r.Mark)
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
		)
	}
	for _, m := range []struct {
		dst bool
		m   Match
	}{{false, r.Src}, {true, r.Dst}} {
		if !m.m.Prefix.IsValid() {
			continue
		}
		e = append(e, addrMatch(m.m, m.dst)...)
	}
	switch r.Verdict {
	case Return:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case Accept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case Masquerade:
		e = append(e, &expr.Masq{FullyRandom: true})
	default:
		return nil, fmt.Errorf("nftables: rule %q: unknown verdict %q", r, r.Verdict)
	}
	return e, nil
}

// addrMatch is "ip saddr|daddr [!=] PREFIX" as payload load, mask, compare.
func addrMatch(m Match, dst bool) []expr.Any {
	p := m.Prefix.Masked()
	n := uint32(p.Addr().BitLen() / 8)
	var off uint32
	switch {
	case p.Addr().Is4() && !dst:
		off = 12
	case p.Addr().Is4() && dst:
		off = 16
	case !dst:
		off = 8
	default:
		off = 24
	}
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	op := expr.CmpOpEq
	if m.Not {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()},
	}
}
