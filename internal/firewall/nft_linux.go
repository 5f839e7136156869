package firewall

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	vns "github.com/vishvananda/netns"

	"github.com/weftnet/weft/internal/netns"
)

// Options configure a Firewall.
type Options struct {
	// Log receives the one-time notes on where forward accepts go and a
	// line for each change written to iptables. Nil discards.
	Log *slog.Logger
	// IPTablesForward places the parts' iptables chains (the Forward part's
	// WEFT-FWD) through the iptables binaries, and removes them when no
	// part has them. The agent always sets it: its --iptables-forward-rules
	// decides whether the state has a Forward part at all. Off (tests of
	// the nftables side alone), weft never runs iptables and leaves its
	// chains as they are.
	IPTablesForward bool
	// Namespace is a named network namespace (see internal/netns) to work
	// in, for tests and the lab; "" is the caller's own. The iptables
	// binaries then run through netns.Command, so the binary must call
	// netns.HandleExec first.
	Namespace string
}

// Firewall is the Applier of a node: nftables through netlink (no nft
// binary) and, when asked, iptables' filter table through the iptables
// binaries.
type Firewall struct {
	log *slog.Logger
	ns  vns.NsHandle // -1: the caller's namespace

	mu     sync.Mutex // serialises Apply and Close; guards the fields below
	ipt    *iptables
	closed bool
}

var _ Applier = (*Firewall)(nil)

// New returns a Firewall for the caller's network namespace, or for
// opts.Namespace. It does not touch the firewall until Apply.
func New(opts Options) (*Firewall, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Firewall{log: log, ns: -1}
	if opts.Namespace != "" {
		fd, err := netns.Fd(opts.Namespace)
		if err != nil {
			return nil, fmt.Errorf("firewall: %w", err)
		}
		f.ns = fd
	}
	f.ipt = newIPTables(log, opts.IPTablesForward, opts.Namespace)
	return f, nil
}

// Close releases the namespace handle; Apply fails after it. It leaves the firewall as it is
// (flannel stopped tearing its rules down on exit: a restarting agent must
// not cut pods off); Apply with the zero State removes it.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.ns >= 0 {
		return f.ns.Close()
	}
	return nil
}

// conn returns a fresh nftables connection. Each transaction gets its own:
// a Conn queues messages until Flush, and keeps the first serialisation
// error for good, so a Conn reused after a failure could send (or fail
// with) the leftovers of the transaction before.
func (f *Firewall) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if f.ns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(f.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: connect: %w", err)
	}
	return c, nil
}

// Apply implements Applier: it reads weft's tables, sends Render's
// transaction in one netlink batch (same as `nft -f` of
// Render(...).String()), and syncs the iptables chains of each family.
func (f *Firewall) Apply(ctx context.Context, s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall: apply: %w", err)
	}
	if f.closed {
		return errors.New("firewall: apply after Close")
	}
	if err := s.validate(); err != nil {
		return err
	}
	// The two sides are independent: iptables' accepts are still synced
	// when the nftables transaction fails, and the reverse.
	return errors.Join(f.applyNFT(s), f.ipt.sync(ctx, s))
}

func (f *Firewall) applyNFT(s State) error {
	obs, err := f.observe()
	if err != nil {
		return err
	}
	tx, err := Render(s, obs)
	if err != nil {
		return err
	}
	return f.send(tx)
}

// observe lists the chains and named counters of weft's tables, same as
// `nft list chains ip`, `nft list chains ip6` filtered to table weft and
// `nft list counters table ip weft`.
func (f *Firewall) observe() (Observed, error) {
	c, err := f.conn()
	if err != nil {
		return Observed{}, err
	}
	o := Observed{Tables: map[Family]map[string]*Base{}, Counters: map[Family][]string{}}
	for _, fam := range []Family{IPv4, IPv6} {
		nf := nftFamily(fam)
		tables, err := c.ListTablesOfFamily(nf)
		if err != nil {
			return Observed{}, fmt.Errorf("nftables: list %s tables: %w", fam, err)
		}
		found := false
		for _, t := range tables {
			found = found || t.Name == Table
		}
		if !found {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(nf)
		if err != nil {
			return Observed{}, fmt.Errorf("nftables: list chains of %s %s: %w", fam, Table, err)
		}
		m := map[string]*Base{}
		for _, ch := range chains {
			if ch.Table == nil || ch.Table.Name != Table {
				continue
			}
			m[ch.Name] = baseOf(ch)
		}
		o.Tables[fam] = m
		objs, err := c.GetNamedObjects(&nftables.Table{Family: nf, Name: Table})
		if err != nil {
			return Observed{}, fmt.Errorf("nftables: list counters of %s %s: %w", fam, Table, err)
		}
		for _, obj := range objs {
			if n, ok := obj.(*nftables.NamedObj); ok && n.Type == nftables.ObjTypeCounter {
				o.Counters[fam] = append(o.Counters[fam], n.Name)
			}
		}
	}
	return o, nil
}

// Count is what a named counter has counted.
type Count struct {
	Packets, Bytes uint64
}

// Counters reads the named counters of weft's tables, by family and name,
// same as `nft list counters table ip weft` (and ip6). A family without a
// table has no entry.
func (f *Firewall) Counters() (map[Family]map[string]Count, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("firewall: counters after Close")
	}
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	out := map[Family]map[string]Count{}
	for _, fam := range []Family{IPv4, IPv6} {
		tables, err := c.ListTablesOfFamily(nftFamily(fam))
		if err != nil {
			return nil, fmt.Errorf("nftables: list %s tables: %w", fam, err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == Table }) {
			continue
		}
		objs, err := c.GetNamedObjects(&nftables.Table{Family: nftFamily(fam), Name: Table})
		if err != nil {
			return nil, fmt.Errorf("nftables: list counters of %s %s: %w", fam, Table, err)
		}
		for _, obj := range objs {
			n, ok := obj.(*nftables.NamedObj)
			if !ok || n.Type != nftables.ObjTypeCounter {
				continue
			}
			if ctr, ok := n.Obj.(*expr.Counter); ok {
				if out[fam] == nil {
					out[fam] = map[string]Count{}
				}
				out[fam][n.Name] = Count{Packets: ctr.Packets, Bytes: ctr.Bytes}
			}
		}
	}
	return out, nil
}

// send queues tx on a fresh connection and flushes it as one batch.
func (f *Firewall) send(tx Transaction) error {
	if len(tx) == 0 {
		return nil
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	for _, op := range tx {
		t := &nftables.Table{Family: nftFamily(op.Family), Name: Table}
		ch := &nftables.Chain{Name: op.Chain, Table: t}
		switch {
		case op.Counter != "" && op.Verb == Add:
			c.AddObj(&nftables.NamedObj{Table: t, Name: op.Counter, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
		case op.Counter != "" && op.Verb == Delete:
			c.DeleteObject(&nftables.NamedObj{Table: t, Name: op.Counter, Type: nftables.ObjTypeCounter})
		case op.Chain == "" && op.Verb == Add:
			c.AddTable(t)
		case op.Chain == "" && op.Verb == Delete:
			c.DelTable(t)
		case op.Rule != nil && op.Verb == Add:
			e, err := ruleExprs(*op.Rule)
			if err != nil {
				return fmt.Errorf("nftables: %s: %w", op, err)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
		case op.Verb == Add:
			if op.Base != nil {
				hook, err := nftHook(op.Base.Hook)
				if err != nil {
					return fmt.Errorf("nftables: %s: %w", op, err)
				}
				ch.Type = nftables.ChainType(op.Base.Type)
				ch.Hooknum = hook
				ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(op.Base.Priority))
				ch.Policy = &accept
			}
			c.AddChain(ch)
		case op.Verb == Flush:
			c.FlushChain(ch)
		case op.Verb == Delete:
			c.DelChain(ch)
		default:
			return fmt.Errorf("nftables: %s: unknown operation", op)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply %d operations on table %s: %w", len(tx), Table, err)
	}
	return nil
}

func nftFamily(f Family) nftables.TableFamily {
	if f == IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

var hooks = map[string]nftables.ChainHook{
	HookPrerouting:  *nftables.ChainHookPrerouting,
	HookInput:       *nftables.ChainHookInput,
	HookForward:     *nftables.ChainHookForward,
	HookOutput:      *nftables.ChainHookOutput,
	HookPostrouting: *nftables.ChainHookPostrouting,
}

func nftHook(name string) (*nftables.ChainHook, error) {
	h, ok := hooks[name]
	if !ok {
		return nil, fmt.Errorf("unknown hook %q", name)
	}
	return nftables.ChainHookRef(h), nil
}

// baseOf returns the Base of a listed chain, nil for a regular chain.
func baseOf(ch *nftables.Chain) *Base {
	if ch.Hooknum == nil {
		return nil
	}
	b := &Base{Type: string(ch.Type), Hook: fmt.Sprint(*ch.Hooknum)}
	for name, h := range hooks {
		if h == *ch.Hooknum {
			b.Hook = name
		}
	}
	if ch.Priority != nil {
		b.Priority = int32(*ch.Priority)
	}
	return b
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
		key  expr.MetaKey
		name string
	}{{expr.MetaKeyIIFNAME, r.IIf}, {expr.MetaKeyOIFNAME, r.OIf}} {
		if m.name == "" {
			continue
		}
		// nft compares the whole IFNAMSIZ buffer: the name, NUL-padded.
		name := make([]byte, ifNameSize)
		copy(name, m.name)
		e = append(e,
			&expr.Meta{Key: m.key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
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
	if r.Counter != "" {
		e = append(e, &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: r.Counter})
	}
	switch r.Verdict {
	case VerdictReturn:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case VerdictAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case VerdictDrop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case VerdictMasquerade, VerdictMasqueradeNotRandom:
		e = append(e, &expr.Masq{FullyRandom: r.Verdict == VerdictMasquerade})
	default:
		return nil, fmt.Errorf("rule %q: unknown verdict %q", r, r.Verdict)
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
