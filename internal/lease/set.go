package lease

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Check reports why a lease cannot be used in a cluster whose IPv4 network
// is network, or nil. It looks at the lease alone: a subnet inside the
// network (and smaller than it), and a PublicIP that a packet can be sent
// to (unicast, not unspecified, loopback, broadcast or inside the network).
func Check(network netip.Prefix, l Lease) error {
	s := l.Subnet
	switch {
	case !s.IsValid():
		return fmt.Errorf("no IPv4 subnet")
	case !network.Contains(s.Addr()) || s.Bits() <= network.Bits():
		return fmt.Errorf("subnet %s is outside the network %s", s, network)
	}
	ip := l.Attrs.PublicIP
	switch {
	case !ip.Is4() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("PublicIP %s is not a unicast address", ip)
	case network.Contains(ip):
		return fmt.Errorf("PublicIP %s is inside the cluster network %s", ip, network)
	}
	return nil
}

// Set is the validated view of a store's leases, maintained from its Watch
// events: every record is checked where it enters (Check, then the
// backend's check), and of leases whose subnets overlap the older one wins
// (lower Created, then lower key), so every node that sees the same records
// accepts the same leases. A change costs what it changes: only the leases
// that overlap the changed one are decided again. A Set is not safe for
// concurrent use.
type Set struct {
	network netip.Prefix
	check   func(Lease) error
	recs    map[string]*entry
	// order holds the usable entries by subnet (address, then length,
	// then key): Leases need not sort at every sync, and a change finds
	// the leases it overlaps by binary search (the leases inside a prefix
	// are a run of it) without looking at the others.
	order    []*entry
	bulk     bool // a Reset is filling the set: put leaves order alone
	rejected int  // entries whose reason is not ""
}

// compareEntries orders entries by subnet, then key.
func compareEntries(a, b *entry) int {
	pa, pb := a.rec.Lease.Subnet, b.rec.Lease.Subnet
	return cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits()), strings.Compare(a.rec.Key, b.rec.Key))
}

type entry struct {
	rec    Record
	err    error  // why the record is unusable on its own; nil: usable
	reason string // "" accepted; else why rejected (err, or the overlap)
}

func (e *entry) usable() bool { return e.err == nil }

// Verdict is a record whose acceptance changed: it was rejected (Reason
// says why), accepted again after a rejection, or deleted while rejected.
type Verdict struct {
	Key    string
	Reason string // "" when accepted (or deleted)
	// Was is the reason it was rejected before; "" if it was accepted.
	Was     string
	Deleted bool
}

// NewSet returns an empty set for a cluster whose IPv4 network is network.
// check, if not nil, is the backend's own check of a lease it would
// program (e.g. a usable VTEP MAC); a lease it refuses is rejected.
func NewSet(network netip.Prefix, check func(Lease) error) *Set {
	return &Set{network: network, check: check, recs: map[string]*entry{}}
}

// put stores e under its key (replacing what was there) and indexes it.
func (s *Set) put(e *entry) {
	s.remove(e.rec.Key)
	s.recs[e.rec.Key] = e
	if !e.usable() {
		return
	}
	if !s.bulk {
		i, _ := slices.BinarySearchFunc(s.order, e, compareEntries)
		s.order = slices.Insert(s.order, i, e)
	}
}

// remove forgets the entry under key, if any.
func (s *Set) remove(key string) {
	e, ok := s.recs[key]
	if !ok {
		return
	}
	delete(s.recs, key)
	if !e.usable() {
		return
	}
	if i, ok := slices.BinarySearchFunc(s.order, e, compareEntries); ok {
		s.order = slices.Delete(s.order, i, i+1)
	}
}

// reasonLimit bounds a reason, which quotes untrusted input (a decode
// error may quote a value).
const reasonLimit = 200

func (s *Set) newEntry(r Record) *entry {
	e := &entry{rec: r, err: r.Err}
	if e.err == nil {
		e.err = Check(s.network, r.Lease)
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
		s.order = nil
		s.bulk = true // order is sorted once, below
		for _, r := range slices.Concat(ev.Leases, ev.Invalid) {
			note(r.Key)
			s.put(s.newEntry(r))
		}
		s.bulk = false
		for _, e := range s.recs {
			if e.usable() {
				s.order = append(s.order, e)
			}
		}
		slices.SortFunc(s.order, compareEntries)
		all := make([]*entry, 0, len(s.recs))
		for _, e := range s.recs {
			all = append(all, e)
		}
		s.decide(all)
	} else {
		key := ev.Record.Key
		var touched []netip.Prefix
		if old, ok := s.recs[key]; ok && old.usable() {
			touched = append(touched, old.rec.Lease.Subnet)
		}
		s.noteComponents(touched, note)
		note(key)
		if ev.Deleted {
			s.remove(key)
		} else {
			e := s.newEntry(ev.Record)
			s.put(e)
			if e.usable() {
				touched = append(touched, e.rec.Lease.Subnet)
			}
		}
		s.noteComponents(touched, note)
		for _, p := range touched {
			s.decide(s.component(p))
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
// subnets ps could affect.
func (s *Set) noteComponents(ps []netip.Prefix, note func(string)) {
	for _, p := range ps {
		for _, e := range s.component(p) {
			note(e.rec.Key)
		}
	}
}

// component returns the usable entries whose verdicts depend on those
// overlapping p: every usable lease inside the largest usable lease that
// contains p (or inside p). Overlapping prefixes nest, so nothing outside
// that root overlaps anything inside it.
func (s *Set) component(p netip.Prefix) []*entry {
	root := p
	for b := s.network.Bits() + 1; b < p.Bits(); b++ {
		if a := netip.PrefixFrom(p.Addr(), b).Masked(); s.has(a) {
			root = a // the largest lease that holds p
			break
		}
	}
	// The leases inside root (root's own included) are the run of order
	// from the first at or after root's address and length while root
	// holds their address: a prefix that starts inside root and is no
	// longer than root is root itself.
	var out []*entry
	for _, e := range s.order[s.first(root):] {
		if !root.Contains(e.rec.Lease.Subnet.Addr()) {
			break
		}
		out = append(out, e)
	}
	return out
}

// first is the index in order of the first entry at or after p (address,
// then length).
func (s *Set) first(p netip.Prefix) int {
	i, _ := slices.BinarySearchFunc(s.order, p, func(e *entry, p netip.Prefix) int {
		q := e.rec.Lease.Subnet
		return cmp.Or(q.Addr().Compare(p.Addr()), cmp.Compare(q.Bits(), p.Bits()))
	})
	return i
}

// has reports whether a usable lease has exactly the subnet p.
func (s *Set) has(p netip.Prefix) bool {
	i := s.first(p)
	return i < len(s.order) && s.order[i].rec.Lease.Subnet == p
}

// decide sets the verdict of entries, which must hold every usable entry
// that overlaps any of them: oldest first, each usable lease is accepted
// unless it overlaps one already accepted.
func (s *Set) decide(entries []*entry) {
	slices.SortFunc(entries, func(a, b *entry) int {
		return cmp.Or(cmp.Compare(a.rec.Lease.Created, b.rec.Lease.Created), strings.Compare(a.rec.Key, b.rec.Key))
	})
	accepted := map[netip.Prefix]string{} // subnet -> key
	covers := map[netip.Prefix]string{}   // every strict ancestor of an accepted subnet -> a key under it
	for _, e := range entries {
		if !e.usable() {
			continue
		}
		p := e.rec.Lease.Subnet
		winner, ok := accepted[p]
		if !ok {
			winner, ok = covers[p]
		}
		for b := p.Bits() - 1; !ok && b > s.network.Bits(); b-- {
			winner, ok = accepted[netip.PrefixFrom(p.Addr(), b).Masked()]
		}
		if ok {
			e.reason = fmt.Sprintf("overlaps the older lease %s", winner)
			continue
		}
		e.reason = ""
		accepted[p] = e.rec.Key
		for b := p.Bits() - 1; b > s.network.Bits(); b-- {
			covers[netip.PrefixFrom(p.Addr(), b).Masked()] = e.rec.Key
		}
	}
}

// Leases returns the accepted leases, ordered by subnet.
func (s *Set) Leases() []Lease { return s.LeasesWhere(nil) }

// LeasesWhere returns the accepted leases for which keep is true (nil:
// all), ordered by subnet.
func (s *Set) LeasesWhere(keep func(Lease) bool) []Lease {
	out := make([]Lease, 0, len(s.order))
	for _, e := range s.order {
		if e.reason == "" && (keep == nil || keep(e.rec.Lease)) {
			out = append(out, e.rec.Lease)
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
