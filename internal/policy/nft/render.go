package nft

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/weftnet/weft/internal/policy"
)

// Table is the name of weft's policy table: `table inet weft-policy`.
const Table = "weft-policy"

// Names of the objects every rendering has, whatever the Ruleset.
const (
	chainEgress  = "egress"
	chainIngress = "ingress"
)

// logRate limits the NFLOG lines of one group chain; the drops themselves
// are all counted.
const logRate = "limit rate 10/second burst 20 packets"

// maxComment is nft's limit on a rule comment, in bytes.
const maxComment = 128

// Options configure an Applier, and Render.
type Options struct {
	// Namespace is a named network namespace (see internal/netns) whose
	// table the Applier writes, for tests and the lab; "" is the caller's
	// own. The nft binary is then started from a thread inside it.
	Namespace string
	// Log receives a line per transaction; nil discards.
	Log *slog.Logger
	// LogGroup, when not 0, logs denied packets to this NFLOG group
	// (rate-limited) before they are dropped.
	LogGroup uint16
}

// fam is what differs between IPv4 and IPv6 in the rule set.
type fam struct {
	suffix   string // of set and map names: "4", "6"
	ip       string // payload protocol in rules: "ip", "ip6"
	addrType string // nft type of an address
}

var fams = [2]fam{
	{suffix: "4", ip: "ip", addrType: "ipv4_addr"},
	{suffix: "6", ip: "ip6", addrType: "ipv6_addr"},
}

func famOf(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// vmapName is the verdict map from a local pod's address to its group
// chain: ingress4, ingress6, egress4, egress6.
func vmapName(dir policy.Direction, f fam) string {
	return dir.String() + f.suffix
}

// deniedName is the set of the local pods isolated in dir, with a counter
// per element: denied-in4, denied-in6, denied-out4, denied-out6.
func deniedName(dir policy.Direction, f fam) string {
	if dir == policy.Egress {
		return "denied-out" + f.suffix
	}
	return "denied-in" + f.suffix
}

// podAddr is the packet's local pod address in a base or group chain of
// dir: the destination of an ingress packet, the source of an egress one.
func podAddr(dir policy.Direction) string {
	if dir == policy.Egress {
		return "saddr"
	}
	return "daddr"
}

// peerAddr is the other end: what a Rule's Peers match.
func peerAddr(dir policy.Direction) string {
	if dir == policy.Egress {
		return "daddr"
	}
	return "saddr"
}

// setState is one set or map: its definition and its elements, keyed by
// their nft text ("10.244.1.0-10.244.1.255", "tcp . 80-81").
type setState struct {
	obj  knftables.Object // *knftables.Set or *knftables.Map
	keys []string         // in the order rendered
	vals map[string]string
}

func (s *setState) element(key string) *knftables.Element {
	switch o := s.obj.(type) {
	case *knftables.Map:
		return &knftables.Element{Map: o.Name, Key: []string{key}, Value: []string{s.vals[key]}}
	case *knftables.Set:
		return &knftables.Element{Set: o.Name, Key: []string{key}}
	}
	panic(fmt.Sprintf("set state of %T", s.obj))
}

func (s *setState) add(key, val string) error {
	if _, dup := s.vals[key]; dup {
		return fmt.Errorf("element %s added twice to %s", key, setName(s.obj))
	}
	s.keys = append(s.keys, key)
	s.vals[key] = val
	return nil
}

func setName(o knftables.Object) string {
	switch o := o.(type) {
	case *knftables.Map:
		return o.Name
	case *knftables.Set:
		return o.Name
	}
	return ""
}

// chainState is one chain and its rules.
type chainState struct {
	obj   *knftables.Chain
	rules []*knftables.Rule
}

func (c *chainState) add(rule, comment string) {
	r := &knftables.Rule{Chain: c.obj.Name, Rule: rule}
	if comment != "" {
		r.Comment = &comment
	}
	c.rules = append(c.rules, r)
}

// sameRules reports whether a and b hold the same rules in the same order.
func sameRules(a, b []*knftables.Rule) bool {
	return slices.EqualFunc(a, b, func(x, y *knftables.Rule) bool {
		return x.Rule == y.Rule && (x.Comment == nil) == (y.Comment == nil) && (x.Comment == nil || *x.Comment == *y.Comment)
	})
}

// tableState is the whole content of table inet weft-policy that a
// Ruleset renders to: the input of a full transaction, and of the diff
// against the previous one.
type tableState struct {
	sets       map[string]*setState
	setOrder   []string
	chains     map[string]*chainState
	chainOrder []string
}

func (t *tableState) newSet(o knftables.Object) (*setState, error) {
	name := setName(o)
	if _, dup := t.sets[name]; dup {
		return nil, fmt.Errorf("set %s defined twice", name)
	}
	s := &setState{obj: o, vals: map[string]string{}}
	t.sets[name] = s
	t.setOrder = append(t.setOrder, name)
	return s, nil
}

// newSetOf defines a set with the given elements.
func (t *tableState) newSetOf(o *knftables.Set, elems []string) error {
	s, err := t.newSet(o)
	if err != nil {
		return err
	}
	for _, e := range elems {
		if err := s.add(e, ""); err != nil {
			return err
		}
	}
	return nil
}

func (t *tableState) newChain(c *knftables.Chain) (*chainState, error) {
	if _, dup := t.chains[c.Name]; dup {
		return nil, fmt.Errorf("chain %s defined twice", c.Name)
	}
	s := &chainState{obj: c}
	t.chains[c.Name] = s
	t.chainOrder = append(t.chainOrder, c.Name)
	return s, nil
}

// identRE is what nft's scanner reads as a name unquoted (its "string"
// token); policy.chainName and policy.groupName produce only these.
var identRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_./-]*$`)

// checkName rejects a chain or group name nft would not parse as one, or
// that is one of the fixed names of the table.
func checkName(kind, name string) error {
	if !identRE.MatchString(name) || len(name) > policy.MaxNameLen {
		return fmt.Errorf("%s name %q: not an nft identifier of at most %d bytes", kind, name, policy.MaxNameLen)
	}
	switch name {
	case chainEgress, chainIngress:
		return fmt.Errorf("%s name %q: reserved for a base chain", kind, name)
	}
	return nil
}

func protoName(p policy.Protocol) (string, error) {
	switch p {
	case policy.TCP, policy.UDP, policy.SCTP:
		return strings.ToLower(string(p)), nil
	}
	return "", fmt.Errorf("protocol %q: not TCP, UDP or SCTP", p)
}

func portText(first, last uint16) string {
	if first == last {
		return fmt.Sprint(first)
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// comment makes s a rule comment nft takes: at most 128 bytes, no quote
// or backslash (a policy key has neither; this is a guard).
func comment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '"' || c == '\\' || c < 0x20 || c >= 0x7f {
			b[i] = '_'
		}
	}
	if len(b) > maxComment {
		b = b[:maxComment]
	}
	return string(b)
}

// build computes the table's content for rs. It fails, naming the object,
// on a Ruleset that is not consistent (a pod in a group that is not
// there, a group of a chain that is not there, an address or port range
// upside down): nothing of such a Ruleset can be applied safely.
func build(rs *policy.Ruleset, opts Options) (*tableState, error) {
	t := &tableState{sets: map[string]*setState{}, chains: map[string]*chainState{}}
	// Fixed objects: verdict maps and counted sets per direction and
	// family, and the two base chains.
	var vmaps, denied [2][2]*setState // [dir][fam]
	for _, dir := range []policy.Direction{policy.Egress, policy.Ingress} {
		for i, f := range fams {
			var err error
			vmaps[dir][i], err = t.newSet(&knftables.Map{Name: vmapName(dir, f), Type: f.addrType + " : verdict"})
			if err != nil {
				return nil, err
			}
			// knftables has no field for a set's stateful expressions:
			// "counter" rides in the type, rendering
			// `{ type ipv4_addr ; counter ; }`, a counter per element that
			// every lookup that matches increments.
			denied[dir][i], err = t.newSet(&knftables.Set{Name: deniedName(dir, f), Type: f.addrType + " ; counter"})
			if err != nil {
				return nil, err
			}
		}
	}
	for _, b := range []struct {
		name string
		dir  policy.Direction
		pri  knftables.BaseChainPriority
	}{
		// Egress first: its accept lets the packet on to the ingress
		// chain, at the next priority of the same hook.
		{chainEgress, policy.Egress, knftables.FilterPriority + "-1"},
		{chainIngress, policy.Ingress, knftables.FilterPriority},
	} {
		c, err := t.newChain(&knftables.Chain{
			Name: b.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(b.pri),
		})
		if err != nil {
			return nil, err
		}
		c.add("ct state established,related ct direction reply accept", "")
		c.add("ct state related accept", "")
		for _, f := range fams {
			c.add(fmt.Sprintf("%s %s vmap @%s", f.ip, podAddr(b.dir), vmapName(b.dir, f)), "")
		}
	}

	// Groups are chains too; their rules need the policy chains' names
	// only, so both are defined before either is filled.
	chainDir := map[string]policy.Direction{}
	for _, c := range rs.Chains {
		if err := checkName("chain", c.Name); err != nil {
			return nil, err
		}
		if _, dup := chainDir[c.Name]; dup {
			return nil, fmt.Errorf("chain %s defined twice", c.Name)
		}
		chainDir[c.Name] = c.Dir
	}
	groupDir := map[string]policy.Direction{}
	for _, g := range rs.Groups {
		if err := checkName("group", g.Name); err != nil {
			return nil, err
		}
		if _, dup := chainDir[g.Name]; dup {
			return nil, fmt.Errorf("group %s has the name of a policy chain", g.Name)
		}
		groupDir[g.Name] = g.Dir
		c, err := t.newChain(&knftables.Chain{Name: g.Name})
		if err != nil {
			return nil, err
		}
		for _, name := range g.Chains {
			d, ok := chainDir[name]
			if !ok {
				return nil, fmt.Errorf("group %s: no chain %s", g.Name, name)
			}
			if d != g.Dir {
				return nil, fmt.Errorf("group %s (%s): chain %s is %s", g.Name, g.Dir, name, d)
			}
			c.add("jump "+name, "")
		}
		if opts.LogGroup != 0 {
			prefix := "weft-deny-in "
			if g.Dir == policy.Egress {
				prefix = "weft-deny-out "
			}
			c.add(fmt.Sprintf("%s log group %d prefix %q", logRate, opts.LogGroup, prefix), "")
		}
		for _, f := range fams {
			c.add(fmt.Sprintf("%s %s @%s drop", f.ip, podAddr(g.Dir), deniedName(g.Dir, f)), "")
		}
		c.add("drop", "")
	}
	for _, c := range rs.Chains {
		if err := addPolicyChain(t, c); err != nil {
			return nil, fmt.Errorf("chain %s (%s): %w", c.Name, c.Policy, err)
		}
	}

	for _, p := range rs.Pods {
		if !p.Addr.IsValid() || p.Addr.Zone() != "" {
			return nil, fmt.Errorf("pod %s: address %q", p.Pod, p.Addr)
		}
		f := famOf(p.Addr)
		for _, gd := range []struct {
			group string
			dir   policy.Direction
		}{{p.Ingress, policy.Ingress}, {p.Egress, policy.Egress}} {
			if gd.group == "" {
				continue
			}
			if d, ok := groupDir[gd.group]; !ok || d != gd.dir {
				return nil, fmt.Errorf("pod %s (%s): no %s group %s", p.Pod, p.Addr, gd.dir, gd.group)
			}
			if err := vmaps[gd.dir][f].add(p.Addr.String(), "goto "+gd.group); err != nil {
				return nil, fmt.Errorf("pod %s: %w", p.Pod, err)
			}
			if err := denied[gd.dir][f].add(p.Addr.String(), ""); err != nil {
				return nil, fmt.Errorf("pod %s: %w", p.Pod, err)
			}
		}
	}
	return t, nil
}

// addPolicyChain renders a policy chain: for each rule, its sets and one
// rule per family and kind of port match, so that a packet any of them
// accepts is allowed. A rule whose peer or port list is empty matches
// nothing and renders nothing.
func addPolicyChain(t *tableState, pc policy.Chain) error {
	c, err := t.newChain(&knftables.Chain{Name: pc.Name})
	if err != nil {
		return err
	}
	note := comment(pc.Policy)
	for i, r := range pc.Rules {
		base := fmt.Sprintf("%s-r%d-", pc.Name, i)
		// Peers and named ports, per family.
		var peers, named [2][]string
		if !r.AnyPeer {
			for _, rg := range r.Peers {
				if !rg.From.IsValid() || !rg.To.IsValid() || rg.From.Is4() != rg.To.Is4() || rg.To.Less(rg.From) {
					return fmt.Errorf("rule %d: peer range %s-%s", i, rg.From, rg.To)
				}
				e := rg.From.String()
				if rg.From != rg.To {
					e += "-" + rg.To.String()
				}
				f := famOf(rg.From)
				peers[f] = append(peers[f], e)
			}
		}
		if !r.AnyPort {
			for _, n := range r.Named {
				proto, err := protoName(n.Protocol)
				if err != nil {
					return fmt.Errorf("rule %d: %w", i, err)
				}
				if !n.Addr.IsValid() {
					return fmt.Errorf("rule %d: named port on address %q", i, n.Addr)
				}
				f := famOf(n.Addr)
				named[f] = append(named[f], fmt.Sprintf("%s . %s . %d", n.Addr, proto, n.Port))
			}
		}
		// Ports: one set for both families, if some peer can use it.
		ports := ""
		if !r.AnyPort && len(r.Ports) > 0 && (r.AnyPeer || len(peers[0]) > 0 || len(peers[1]) > 0) {
			ports = base + "ports"
			var elems []string
			for _, p := range r.Ports {
				proto, err := protoName(p.Protocol)
				if err != nil {
					return fmt.Errorf("rule %d: %w", i, err)
				}
				if p.First > p.Last {
					return fmt.Errorf("rule %d: port range %d-%d upside down", i, p.First, p.Last)
				}
				elems = append(elems, proto+" . "+portText(p.First, p.Last))
			}
			if err := t.newSetOf(&knftables.Set{Name: ports, TypeOf: "meta l4proto . th dport", Flags: []knftables.SetFlag{knftables.IntervalFlag}}, elems); err != nil {
				return err
			}
		}
		if r.AnyPeer && r.AnyPort {
			c.add("accept", note)
			continue
		}
		if r.AnyPeer && ports != "" {
			c.add("meta l4proto . th dport @"+ports+" accept", note)
		}
		for fi, f := range fams {
			if !r.AnyPort && ports == "" && len(named[fi]) == 0 {
				continue // no port of this family: matches nothing
			}
			peerMatch := ""
			if !r.AnyPeer {
				if len(peers[fi]) == 0 {
					continue
				}
				name := base + "peers" + f.suffix
				if err := t.newSetOf(&knftables.Set{Name: name, Type: f.addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}}, peers[fi]); err != nil {
					return err
				}
				peerMatch = fmt.Sprintf("%s %s @%s ", f.ip, peerAddr(pc.Dir), name)
				if r.AnyPort {
					c.add(peerMatch+"accept", note)
					continue
				}
				if ports != "" {
					c.add(peerMatch+"meta l4proto . th dport @"+ports+" accept", note)
				}
			}
			if len(named[fi]) == 0 {
				continue
			}
			name := base + "named" + f.suffix
			if err := t.newSetOf(&knftables.Set{Name: name, Type: f.addrType + " . inet_proto . inet_service"}, named[fi]); err != nil {
				return err
			}
			c.add(fmt.Sprintf("%s%s daddr . meta l4proto . th dport @%s accept", peerMatch, f.ip, name), note)
		}
	}
	return nil
}

// newTx returns an empty transaction on table inet weft-policy, without an
// nft binary (for Render and the tests).
func newTx() *knftables.Transaction {
	return knftables.NewFake(knftables.InetFamily, Table).NewTransaction()
}

// writeFull adds to tx the replacement of the whole table by t: the table
// is created if missing, deleted and created again, all in one
// transaction, so that packets meet either the old table or the new one,
// whatever an earlier run left in it.
func writeFull(tx *knftables.Transaction, t *tableState) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	for _, name := range t.setOrder {
		tx.Add(t.sets[name].obj)
	}
	for _, name := range t.chainOrder {
		tx.Add(t.chains[name].obj)
	}
	for _, name := range t.setOrder {
		s := t.sets[name]
		for _, k := range s.keys {
			tx.Add(s.element(k))
		}
	}
	for _, name := range t.chainOrder {
		for _, r := range t.chains[name].rules {
			tx.Add(r)
		}
	}
}

// writeDiff adds to tx what turns the table from old into cur, in an
// order nft accepts in one transaction: new sets and chains; element
// deletions, then additions (a changed interval may overlap its old self);
// changed chains flushed and refilled, new ones filled; then the chains
// and sets that are gone, flushed first (a chain may jump to another that
// goes too). It returns false, having added nothing, if an object kept
// its name but changed its definition: the caller replaces the table.
func writeDiff(tx *knftables.Transaction, old, cur *tableState) bool {
	for name, s := range cur.sets {
		if o, ok := old.sets[name]; ok && !sameDef(o.obj, s.obj) {
			return false
		}
	}
	for name, c := range cur.chains {
		if o, ok := old.chains[name]; ok && !sameDef(o.obj, c.obj) {
			return false
		}
	}
	for _, name := range cur.setOrder {
		if _, ok := old.sets[name]; !ok {
			tx.Add(cur.sets[name].obj)
		}
	}
	for _, name := range cur.chainOrder {
		if _, ok := old.chains[name]; !ok {
			tx.Add(cur.chains[name].obj)
		}
	}
	for _, name := range cur.setOrder {
		s, o := cur.sets[name], old.sets[name]
		if o == nil {
			continue
		}
		for _, k := range o.keys {
			if v, ok := s.vals[k]; !ok || v != o.vals[k] {
				tx.Delete(o.element(k))
			}
		}
	}
	for _, name := range cur.setOrder {
		s, o := cur.sets[name], old.sets[name]
		for _, k := range s.keys {
			if o != nil {
				if v, ok := o.vals[k]; ok && v == s.vals[k] {
					continue
				}
			}
			tx.Add(s.element(k))
		}
	}
	for _, name := range cur.chainOrder {
		c, o := cur.chains[name], old.chains[name]
		if o != nil {
			if sameRules(o.rules, c.rules) {
				continue
			}
			tx.Flush(c.obj)
		}
		for _, r := range c.rules {
			tx.Add(r)
		}
	}
	var goneChains []string
	for _, name := range old.chainOrder {
		if _, ok := cur.chains[name]; !ok {
			goneChains = append(goneChains, name)
			tx.Flush(old.chains[name].obj)
		}
	}
	for _, name := range goneChains {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range old.setOrder {
		if _, ok := cur.sets[name]; !ok {
			tx.Delete(old.sets[name].obj)
		}
	}
	return true
}

// sameDef reports whether two sets, maps or chains are defined alike.
func sameDef(a, b knftables.Object) bool {
	ta, tb := newTx(), newTx()
	ta.Add(a)
	tb.Add(b)
	return ta.String() == tb.String()
}

// Render returns the whole nft transaction that replaces table inet
// weft-policy with rs (`nft -f` text): what a full Apply sends.
func Render(rs *policy.Ruleset, opts Options) (string, error) {
	t, err := build(rs, opts)
	if err != nil {
		return "", fmt.Errorf("render policy table: %w", err)
	}
	tx := newTx()
	writeFull(tx, t)
	return tx.String(), nil
}

// Diff returns the nft transaction that an incremental Apply sends to
// turn the table rendered from old into the one of cur; full reports that
// the two cannot be diffed and the text is a full replacement.
func Diff(old, cur *policy.Ruleset, opts Options) (text string, full bool, err error) {
	o, err := build(old, opts)
	if err != nil {
		return "", false, fmt.Errorf("render old policy table: %w", err)
	}
	c, err := build(cur, opts)
	if err != nil {
		return "", false, fmt.Errorf("render policy table: %w", err)
	}
	tx := newTx()
	if !writeDiff(tx, o, c) {
		writeFull(tx, c)
		return tx.String(), true, nil
	}
	return tx.String(), false, nil
}
