package lease

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Check reports why a lease cannot be used in a cluster whose networks
// are v4 and v6 (either invalid when its family is off), or nil. It looks
// at the lease alone: for each family the cluster runs and the lease has a
// subnet of, the subnet is inside the network (and smaller than it), and
// the public address of the family (PublicIP, PublicIPv6) is one a packet
// can be sent to (unicast, not unspecified, loopback, broadcast or inside
// the network). A lease needs a subnet of one of the cluster's families; a
// subnet of a family the cluster does not run is not looked at, as flannel
// programs only the families it runs.
func Check(v4, v6 netip.Prefix, l Lease) error {
	nets := [...]netip.Prefix{IPv4: v4, IPv6: v6}
	var runs []string
	found := false
	for _, f := range Families {
		n, s := nets[f], *l.SubnetOf(f)
		if !n.IsValid() {
			continue
		}
		runs = append(runs, f.String())
		if !s.IsValid() {
			continue
		}
		if !n.Contains(s.Addr()) || s.Bits() <= n.Bits() {
			return fmt.Errorf("subnet %s is outside the network %s", s, n)
		}
		field := "PublicIP"
		if f == IPv6 {
			field = "PublicIPv6"
		}
		switch ip := *l.Attrs.PublicIPOf(f); {
		case !f.Has(ip) || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("%s %s is not a unicast address", field, ip)
		case n.Contains(ip):
			return fmt.Errorf("%s %s is inside the cluster network %s", field, ip, n)
		}
		found = true
	}
	if !found {
		return fmt.Errorf("no %s subnet", strings.Join(runs, " or "))
	}
	return nil
}

// Set is the validated view of a store's leases, maintained from its Watch
// events: every record is checked where it enters (Check, then the
// backend's check), and of leases whose subnets of one family overlap the
// older one wins (lower Created, then lower key), so every node that sees
// the same records accepts the same leases. Each family is decided on its
// own; a lease that loses in either family is rejected. A change costs what
// it changes: only the leases that overlap the changed one are decided
// again. A Set is not safe for concurrent use.
type Set struct {
	nets  [2]netip.Prefix // by Family; invalid when the family is off
	check func(Lease) error
	recs  map[string]*entry
	// order holds, per family the cluster runs, the usable entries with a
	// subnet of that family, by that subnet (address, then length, then
	// key): Leases need not sort at every sync, and a change finds the
	// leases it overlaps by binary search (the leases inside a prefix are
	// a run of it) without looking at the others.
	order    [2][]*entry
	bulk     bool // a Reset is filling the set: put leaves order alone
	rejected int  // entries whose reason is not ""
}

// compareEntries orders entries by their subnet of family f, then key.
func compareEntries(f Family) func(a, b *entry) int {
	return func(a, b *entry) int {
		pa, pb := a.subnet(f), b.subnet(f)
		return cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits()), strings.Compare(a.rec.Key, b.rec.Key))
	}
}

type entry struct {
	rec    Record
	err    error     // why the record is unusable on its own; nil: usable
	over   [2]string // by Family: the key of the older lease it overlaps, or ""
	reason string    // "" accepted; else why rejected (err, or an overlap)
}

func (e *entry) usable() bool { return e.err == nil }

func (e *entry) subnet(f Family) netip.Prefix { return *e.rec.Lease.SubnetOf(f) }

// indexed reports whether e is in order[f].
func (s *Set) indexed(e *entry, f Family) bool {
	return e.usable() && s.nets[f].IsValid() && e.subnet(f).IsValid()
}

// Verdict is a record whose acceptance changed: it was rejected (Reason
// says why), accepted again after a rejection, or deleted while rejected.
type Verdict struct {
	Key    string
	Reason string // "" when accepted (or deleted)
	// Was is the reason it was rejected before; "" if it was accepted.
	Was     string
	Deleted bool
}

// NewSet returns an empty set for a cluster whose networks are v4 and v6
// (either invalid when its family is off). check, if not nil, is the
// backend's own check of a lease it would program (e.g. a usable VTEP
// MAC); a lease it refuses is rejected.
func NewSet(v4, v6 netip.Prefix, check func(Lease) error) *Set {
	return &Set{nets: [2]netip.Prefix{IPv4: v4, IPv6: v6}, check: check, recs: map[string]*entry{}}
}

// put stores e under its key (replacing what was there) and indexes it.
func (s *Set) put(e *entry) {
	s.remove(e.rec.Key)
	s.recs[e.rec.Key] = e
	if s.bulk {
		return
	}
	for _, f := range Families {
		if s.indexed(e, f) {
			i, _ := slices.BinarySearchFunc(s.order[f], e, compareEntries(f))
			s.order[f] = slices.Insert(s.order[f], i, e)
		}
	}
}

// remove forgets the entry under key, if any.
func (s *Set) remove(key string) {
	e, ok := s.recs[key]
	if !ok {
		return
	}
	delete(s.recs, key)
	for _, f := range Families {
		if !s.indexed(e, f) {
			continue
		}
		if i, ok := slices.BinarySearchFunc(s.order[f], e, compareEntries(f)); ok {
			s.order[f] = slices.Delete(s.order[f], i, i+1)
		}
	}
}

// reasonLimit bounds a reason, which quotes untrusted input (a decode
// error may quote a value).
const reasonLimit = 200

func (s *Set) newEntry(r Record) *entry {
	e := &entry{rec: r, err: r.Err}
	if e.err == nil {
		e.err = Check(s.nets[IPv4], s.nets[IPv6], r.Lease)
	}
	if e.err == nil && s.check != nil {
		e.err = s.check(r.Lease)
	}
	if e.err != nil {
		e.reason = e.err.Error()
		if len(e.reason) > reasonLimit {
			e.reason = e.reason[:reasonLimit] + "..."
		}
	}
	return e
}

// Apply takes one event of a store's Watch and returns the verdicts that
// changed, in key order.
func (s *Set) Apply(ev Event) []Verdict {
	before := map[string]string{}
	note := func(key string) {
		if _, ok := before[key]; ok {
			return
		}
		if e, ok := s.recs[key]; ok {
			before[key] = e.reason
		} else {
			before[key] = "\x00absent"
		}
	}
	if ev.Reset {
		for k := range s.recs {
			note(k)
		}
		s.recs = make(map[string]*entry, len(ev.Leases)+len(ev.Invalid))
		s.order = [2][]*entry{}
		s.bulk = true // order is sorted once, below
		for _, r := range slices.Concat(ev.Leases, ev.Invalid) {
			note(r.Key)
			s.put(s.newEntry(r))
		}
		s.bulk = false
		for _, e := range s.recs {
			for _, f := range Families {
				if s.indexed(e, f) {
					s.order[f] = append(s.order[f], e)
				}
			}
		}
		for _, f := range Families {
			slices.SortFunc(s.order[f], compareEntries(f))
			s.decide(slices.Clone(s.order[f]), f)
		}
	} else {
		key := ev.Record.Key
		var touched [2][]netip.Prefix // by Family
		if old, ok := s.recs[key]; ok {
			for _, f := range Families {
				if s.indexed(old, f) {
					touched[f] = append(touched[f], old.subnet(f))
				}
			}
		}
		s.noteComponents(touched, note)
		note(key)
		if ev.Deleted {
			s.remove(key)
		} else {
			e := s.newEntry(ev.Record)
			s.put(e)
			for _, f := range Families {
				if s.indexed(e, f) {
					touched[f] = append(touched[f], e.subnet(f))
				}
			}
		}
		s.noteComponents(touched, note)
		for _, f := range Families {
			for _, p := range touched[f] {
				s.decide(s.component(p, f), f)
			}
		}
	}
	var out []Verdict
	for key, was := range before {
		e, ok := s.recs[key]
		if was != "" && was != "\x00absent" {
			s.rejected--
		}
		if ok && e.reason != "" {
			s.rejected++
		}
		switch {
		case !ok && was == "\x00absent":
		case !ok:
			if was != "" {
				out = append(out, Verdict{Key: key, Was: was, Deleted: true})
			}
		case was == "\x00absent":
			if e.reason != "" {
				out = append(out, Verdict{Key: key, Reason: e.reason})
			}
		case was != e.reason:
			out = append(out, Verdict{Key: key, Reason: e.reason, Was: was})
		}
	}
	slices.SortFunc(out, func(a, b Verdict) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// noteComponents records the verdicts of every lease that a change to the
// subnets ps (by family) could affect.
func (s *Set) noteComponents(ps [2][]netip.Prefix, note func(string)) {
	for _, f := range Families {
		for _, p := range ps[f] {
			for _, e := range s.component(p, f) {
				note(e.rec.Key)
			}
		}
	}
}

// component returns the entries of order[f] whose verdicts in family f
// depend on those overlapping p: every usable lease inside the largest
// usable lease that contains p (or inside p). Overlapping prefixes nest, so
// nothing outside that root overlaps anything inside it.
func (s *Set) component(p netip.Prefix, f Family) []*entry {
	root := p
	for b := s.nets[f].Bits() + 1; b < p.Bits(); b++ {
		if a := netip.PrefixFrom(p.Addr(), b).Masked(); s.has(a, f) {
			root = a // the largest lease that holds p
			break
		}
	}
	// The leases inside root (root's own included) are the run of order
	// from the first at or after root's address and length while root
	// holds their address: a prefix that starts inside root and is no
	// longer than root is root itself.
	var out []*entry
	for _, e := range s.order[f][s.first(root, f):] {
		if !root.Contains(e.subnet(f).Addr()) {
			break
		}
		out = append(out, e)
	}
	return out
}

// first is the index in order[f] of the first entry at or after p
// (address, then length).
func (s *Set) first(p netip.Prefix, f Family) int {
	i, _ := slices.BinarySearchFunc(s.order[f], p, func(e *entry, p netip.Prefix) int {
		q := e.subnet(f)
		return cmp.Or(q.Addr().Compare(p.Addr()), cmp.Compare(q.Bits(), p.Bits()))
	})
	return i
}

// has reports whether a usable lease has exactly the subnet p of family f.
func (s *Set) has(p netip.Prefix, f Family) bool {
	i := s.first(p, f)
	return i < len(s.order[f]) && s.order[f][i].subnet(f) == p
}

// decide sets the verdict in family f of entries, which must hold every
// entry of order[f] that overlaps any of them: oldest first, each lease is
// accepted unless its subnet of f overlaps one already accepted. A lease
// is rejected when it loses in either family.
func (s *Set) decide(entries []*entry, f Family) {
	slices.SortFunc(entries, func(a, b *entry) int {
		return olderFirst(a.rec.Lease.Created, a.rec.Key, b.rec.Lease.Created, b.rec.Key)
	})
	subnets := make([]netip.Prefix, len(entries))
	for i, e := range entries {
		subnets[i] = e.subnet(f)
	}
	for i, w := range overlapWinners(subnets, s.nets[f].Bits()) {
		e := entries[i]
		e.over[f] = ""
		if w >= 0 {
			e.over[f] = entries[w].rec.Key
		}
		e.reason = ""
		if older := cmp.Or(e.over[IPv4], e.over[IPv6]); older != "" {
			e.reason = "overlaps the older lease " + older
		}
	}
}

// olderFirst orders two leases by age as every node does: lower Created,
// then lower key.
func olderFirst(createdA int64, keyA string, createdB int64, keyB string) int {
	return cmp.Or(cmp.Compare(createdA, createdB), strings.Compare(keyA, keyB))
}

// overlapWinners applies the overlap rule of one family to subnets given
// oldest first: each is accepted unless it overlaps one accepted before
// it. It returns, for each subnet, the index of an accepted one it
// overlaps, or -1 when it is accepted itself. Every subnet must be longer
// than floor bits (the network's length), which bounds the walk over a
// subnet's ancestors.
func overlapWinners(subnets []netip.Prefix, floor int) []int {
	out := make([]int, len(subnets))
	accepted := map[netip.Prefix]int{} // subnet -> its index
	covers := map[netip.Prefix]int{}   // every strict ancestor of an accepted subnet -> the index of one under it
	for i, p := range subnets {
		winner, ok := accepted[p]
		if !ok {
			winner, ok = covers[p]
		}
		for b := p.Bits() - 1; !ok && b > floor; b-- {
			winner, ok = accepted[netip.PrefixFrom(p.Addr(), b).Masked()]
		}
		if ok {
			out[i] = winner
			continue
		}
		out[i] = -1
		accepted[p] = i
		for b := p.Bits() - 1; b > floor; b-- {
			covers[netip.PrefixFrom(p.Addr(), b).Masked()] = i
		}
	}
	return out
}

// OlderOverlaps decides, as a Set of a cluster whose networks are v4 and
// v6 decides, which of ls lose to an older lease they overlap: of the
// leases that pass Check, oldest first (lower Created, then lower Key), a
// lease loses when its subnet of either family overlaps one accepted
// before it. It returns the index in ls of each loser, with the index of
// an older lease it overlaps. (A Set also applies the backend's check,
// which a store cannot; and it orders by the store's key, which is Key
// unless someone wrote it by hand otherwise.)
func OlderOverlaps(v4, v6 netip.Prefix, ls []Lease) map[int]int {
	nets := [...]netip.Prefix{IPv4: v4, IPv6: v6}
	keys := make([]string, len(ls))
	var idx []int
	for i, l := range ls {
		if Check(v4, v6, l) == nil {
			keys[i] = l.Key()
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(a, b int) int { return olderFirst(ls[a].Created, keys[a], ls[b].Created, keys[b]) })
	out := map[int]int{}
	for _, f := range Families {
		if !nets[f].IsValid() {
			continue
		}
		var of []int // indexes in ls of the leases with a subnet of f, oldest first
		var subnets []netip.Prefix
		for _, i := range idx {
			if p := *ls[i].SubnetOf(f); p.IsValid() {
				of, subnets = append(of, i), append(subnets, p)
			}
		}
		for j, w := range overlapWinners(subnets, nets[f].Bits()) {
			if _, lost := out[of[j]]; w >= 0 && !lost {
				out[of[j]] = of[w]
			}
		}
	}
	return out
}

// Leases returns the accepted leases, ordered by subnet.
func (s *Set) Leases() []Lease { return s.LeasesWhere(nil) }

// LeasesWhere returns the accepted leases for which keep is true (nil:
// all), ordered by IPv4 subnet, then those without one (IPv6-only) by
// IPv6 subnet.
func (s *Set) LeasesWhere(keep func(Lease) bool) []Lease {
	out := make([]Lease, 0, len(s.recs))
	for _, f := range Families {
		for _, e := range s.order[f] {
			if f == IPv6 && s.indexed(e, IPv4) {
				continue // listed with IPv4
			}
			if e.reason == "" && (keep == nil || keep(e.rec.Lease)) {
				out = append(out, e.rec.Lease)
			}
		}
	}
	return out
}

// RejectedCount is how many records are rejected.
func (s *Set) RejectedCount() int { return s.rejected }

// Rejected returns every rejected record's key with the reason.
func (s *Set) Rejected() map[string]string {
	out := map[string]string{}
	for k, e := range s.recs {
		if e.reason != "" {
			out[k] = e.reason
		}
	}
	return out
}

// Overlapped returns the key of an older lease that the record under key
// is rejected for overlapping, or "" when it is not rejected for an
// overlap (accepted, unusable on its own, or absent).
func (s *Set) Overlapped(key string) string {
	e, ok := s.recs[key]
	if !ok || !e.usable() {
		return ""
	}
	return cmp.Or(e.over[IPv4], e.over[IPv6])
}

// Record returns the record stored under key, accepted or not.
func (s *Set) Record(key string) (Record, bool) {
	e, ok := s.recs[key]
	if !ok {
		return Record{}, false
	}
	return e.rec, true
}

// Find returns a record for which match is true, if any (in no
// particular order; it looks at every record).
func (s *Set) Find(match func(Record) bool) (Record, bool) {
	for _, e := range s.recs {
		if match(e.rec) {
			return e.rec, true
		}
	}
	return Record{}, false
}

// Len is the number of records, accepted or not.
func (s *Set) Len() int { return len(s.recs) }
