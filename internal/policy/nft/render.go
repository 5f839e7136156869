package nft

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"

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
	kind string // kindSet or kindMap
	name string
	def  string   // "{ type ipv4_addr ; flags interval ; }"
	keys []string // in the order rendered
	vals map[string]string
}

// elem is the text of an element to add: "key", or "key : value" in a map.
func (s *setState) elem(key string) string {
	if s.kind == kindMap {
		return key + " : " + s.vals[key]
	}
	return key
}

func (s *setState) add(key, val string) error {
	if _, dup := s.vals[key]; dup {
		return fmt.Errorf("element %s added twice to %s", key, s.name)
	}
	s.keys = append(s.keys, key)
	s.vals[key] = val
	return nil
}

// chainState is one chain and its rules, as nft text.
type chainState struct {
	name  string
	def   string // a base chain's "{ type filter hook ... }"; "" otherwise
	rules []string
}

func (c *chainState) add(rule, comment string) {
	if comment != "" {
		rule += fmt.Sprintf(" comment %q", comment)
	}
	c.rules = append(c.rules, rule)
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

// newSet defines a set or map for about size elements.
func (t *tableState) newSet(kind, name, def string, size int) (*setState, error) {
	if _, dup := t.sets[name]; dup {
		return nil, fmt.Errorf("set %s defined twice", name)
	}
	s := &setState{kind: kind, name: name, def: def, keys: make([]string, 0, size), vals: make(map[string]string, size)}
	t.sets[name] = s
	t.setOrder = append(t.setOrder, name)
	return s, nil
}

// portsDef is the definition of a set of protocol and port intervals.
const portsDef = "{ typeof meta l4proto . th dport ; flags interval ; }"

// portsName names the set of the given protocol and port elements by their
// FNV-1a hash: "ports-0123456789abcdef". The sets a table has weigh on
// every command that names one (the kernel finds a set by a linear scan),
// and policies repeat the same few port lists.
func portsName(elems []string) string {
	h := fnv.New64a()
	for _, e := range elems {
		h.Write([]byte(e))
		h.Write([]byte{','})
	}
	return fmt.Sprintf("ports-%016x", h.Sum64())
}

// newSetOf defines a set with the given elements.
func (t *tableState) newSetOf(name, def string, elems []string) error {
	s, err := t.newSet(kindSet, name, def, len(elems))
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

func (t *tableState) newChain(name, def string) (*chainState, error) {
	if _, dup := t.chains[name]; dup {
		return nil, fmt.Errorf("chain %s defined twice", name)
	}
	c := &chainState{name: name, def: def}
	t.chains[name] = c
	t.chainOrder = append(t.chainOrder, name)
	return c, nil
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
	t := &tableState{sets: make(map[string]*setState, 8+2*len(rs.Chains)), chains: make(map[string]*chainState, 2+len(rs.Groups)+len(rs.Chains))}
	// Fixed objects: verdict maps and counted sets per direction and
	// family, and the two base chains.
	var vmaps, denied [2][2]*setState // [dir][fam]
	for _, dir := range []policy.Direction{policy.Egress, policy.Ingress} {
		for i, f := range fams {
			var err error
			vmaps[dir][i], err = t.newSet(kindMap, vmapName(dir, f), "{ type "+f.addrType+" : verdict ; }", 0)
			if err != nil {
				return nil, err
			}
			// A counter per element, that every lookup that matches
			// increments.
			denied[dir][i], err = t.newSet(kindSet, deniedName(dir, f), "{ type "+f.addrType+" ; counter ; }", 0)
			if err != nil {
				return nil, err
			}
		}
	}
	for _, b := range []struct {
		name string
		dir  policy.Direction
		pri  string
	}{
		// Egress first: its accept lets the packet on to the ingress
		// chain, at the next priority of the same hook.
		{chainEgress, policy.Egress, "-1"},
		{chainIngress, policy.Ingress, "0"},
	} {
		c, err := t.newChain(b.name, "{ type filter hook forward priority "+b.pri+" ; policy accept ; }")
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
		c, err := t.newChain(g.Name, "")
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
	c, err := t.newChain(pc.Name, "")
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
		// Ports: one set for both families, if some peer can use it, and
		// shared by every rule with the same ports.
		ports := ""
		if !r.AnyPort && len(r.Ports) > 0 && (r.AnyPeer || len(peers[0]) > 0 || len(peers[1]) > 0) {
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
			ports = portsName(elems)
			if s, ok := t.sets[ports]; !ok {
				if err := t.newSetOf(ports, portsDef, elems); err != nil {
					return err
				}
			} else if !slices.Equal(s.keys, elems) {
				return fmt.Errorf("rule %d: ports %q and %q have the same hash", i, elems, s.keys)
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
				if err := t.newSetOf(name, "{ type "+f.addrType+" ; flags interval ; }", peers[fi]); err != nil {
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
			if err := t.newSetOf(name, "{ type "+f.addrType+" . inet_proto . inet_service ; }", named[fi]); err != nil {
				return err
			}
			c.add(fmt.Sprintf("%s%s daddr . meta l4proto . th dport @%s accept", peerMatch, f.ip, name), note)
		}
	}
	return nil
}

// writeFull adds to tx the replacement of the whole table by t: the table
// is created if missing, deleted and created again, all in one
// transaction, so that packets meet either the old table or the new one,
// whatever an earlier run left in it.
func writeFull(tx *tx, t *tableState) {
	tx.add(kindTable, "", "")
	tx.del(kindTable, "")
	tx.add(kindTable, "", "")
	for _, name := range t.setOrder {
		s := t.sets[name]
		tx.add(s.kind, name, s.def)
	}
	for _, name := range t.chainOrder {
		tx.add(kindChain, name, t.chains[name].def)
	}
	for _, name := range t.setOrder {
		s := t.sets[name]
		elems := make([]string, len(s.keys))
		for i, k := range s.keys {
			elems[i] = s.elem(k)
		}
		tx.elements(verbAdd, name, elems)
	}
	for _, name := range t.chainOrder {
		for _, r := range t.chains[name].rules {
			tx.rule(name, r)
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
func writeDiff(tx *tx, old, cur *tableState) bool {
	for name, s := range cur.sets {
		if o, ok := old.sets[name]; ok && (o.kind != s.kind || o.def != s.def) {
			return false
		}
	}
	for name, c := range cur.chains {
		if o, ok := old.chains[name]; ok && o.def != c.def {
			return false
		}
	}
	for _, name := range cur.setOrder {
		if _, ok := old.sets[name]; !ok {
			s := cur.sets[name]
			tx.add(s.kind, name, s.def)
		}
	}
	for _, name := range cur.chainOrder {
		if _, ok := old.chains[name]; !ok {
			tx.add(kindChain, name, cur.chains[name].def)
		}
	}
	for _, name := range cur.setOrder {
		s, o := cur.sets[name], old.sets[name]
		if o == nil {
			continue
		}
		var gone []string
		for _, k := range o.keys {
			if v, ok := s.vals[k]; !ok || v != o.vals[k] {
				gone = append(gone, k)
			}
		}
		tx.elements(verbDelete, name, gone)
	}
	for _, name := range cur.setOrder {
		s, o := cur.sets[name], old.sets[name]
		var added []string
		for _, k := range s.keys {
			if o != nil {
				if v, ok := o.vals[k]; ok && v == s.vals[k] {
					continue
				}
			}
			added = append(added, s.elem(k))
		}
		tx.elements(verbAdd, name, added)
	}
	for _, name := range cur.chainOrder {
		c, o := cur.chains[name], old.chains[name]
		if o != nil {
			if slices.Equal(o.rules, c.rules) {
				continue
			}
			tx.flush(name)
		}
		for _, r := range c.rules {
			tx.rule(name, r)
		}
	}
	var goneChains []string
	for _, name := range old.chainOrder {
		if _, ok := cur.chains[name]; !ok {
			goneChains = append(goneChains, name)
			tx.flush(name)
		}
	}
	for _, name := range goneChains {
		tx.del(kindChain, name)
	}
	for _, name := range old.setOrder {
		if _, ok := cur.sets[name]; !ok {
			tx.del(old.sets[name].kind, name)
		}
	}
	return true
}

// Render returns the whole nft transaction that replaces table inet
// weft-policy with rs (`nft -f` text): what a full Apply sends.
func Render(rs *policy.Ruleset, opts Options) (string, error) {
	t, err := build(rs, opts)
	if err != nil {
		return "", fmt.Errorf("render policy table: %w", err)
	}
	var tx tx
	writeFull(&tx, t)
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
	var tx tx
	if !writeDiff(&tx, o, c) {
		writeFull(&tx, c)
		return tx.String(), true, nil
	}
	return tx.String(), false, nil
}
