package policy

import (
	"net/netip"
	"slices"
)

// This file is a small interval set over netip.Addr: the peers of a rule
// are the union of pod addresses and ipBlocks minus their excepts, kept as
// disjoint sorted closed intervals, the shape an nftables interval set
// (`flags interval`) takes.

// prefixRange returns the addresses of p (its host bits ignored) as one
// interval.
func prefixRange(p netip.Prefix) Range {
	p = p.Masked()
	return Range{From: p.Addr(), To: lastAddr(p)}
}

// lastAddr returns the highest address of the masked prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b).WithZone(a.Zone())
}

func setHostBits(b []byte, bits int) {
	for i := range b {
		switch {
		case bits >= 8:
			bits -= 8
		case bits <= 0:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> bits
			bits = 0
		}
	}
}

// addrRange is the single-address interval of a.
func addrRange(a netip.Addr) Range { return Range{From: a, To: a} }

// sameFamily reports whether a and b are both IPv4 or both IPv6.
func sameFamily(a, b netip.Addr) bool { return a.Is4() == b.Is4() }

// compareRange orders by family (IPv4 first), then From, then To.
func compareRange(a, b Range) int {
	if c := a.From.Compare(b.From); c != 0 {
		return c
	}
	return a.To.Compare(b.To)
}

// normalize sorts rs and merges overlapping and adjacent intervals of one
// family, in place; it returns the disjoint sorted result. Intervals with
// From > To or invalid addresses are dropped.
func normalize(rs []Range) []Range {
	rs = slices.DeleteFunc(rs, func(r Range) bool {
		return !r.From.IsValid() || !r.To.IsValid() || !sameFamily(r.From, r.To) || r.To.Less(r.From)
	})
	if len(rs) < 2 {
		return rs
	}
	if !slices.IsSortedFunc(rs, compareRange) {
		slices.SortFunc(rs, compareRange)
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if sameFamily(last.To, r.From) {
			if r.From.Compare(last.To) <= 0 || last.To.Next() == r.From {
				if last.To.Less(r.To) {
					last.To = r.To
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// union returns the normalized union of the normalized sets a and b.
func union(a, b []Range) []Range {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	return normalize(append(slices.Clip(a), b...))
}

// subtract returns the normalized set rs minus ex; both must be normalized.
// The result is a new slice.
func subtract(rs, ex []Range) []Range {
	var out []Range
	j := 0
	for _, r := range rs {
		// Skip exclusions that end before r starts.
		for j < len(ex) && ex[j].To.Less(r.From) {
			j++
		}
		cur := r
		alive := true
		for k := j; k < len(ex) && alive; k++ {
			e := ex[k]
			if cur.To.Less(e.From) {
				break
			}
			// e overlaps cur (same family: addresses of different
			// families never compare within one another's bounds).
			if cur.From.Less(e.From) {
				out = append(out, Range{From: cur.From, To: e.From.Prev()})
			}
			if e.To.Less(cur.To) {
				cur.From = e.To.Next()
			} else {
				alive = false
			}
		}
		if alive {
			out = append(out, cur)
		}
	}
	return out
}

// contains reports whether a lies in the normalized set rs.
func contains(rs []Range, a netip.Addr) bool {
	i, _ := slices.BinarySearchFunc(rs, a, func(r Range, a netip.Addr) int {
		if r.To.Less(a) {
			return -1
		}
		if a.Less(r.From) {
			return 1
		}
		return 0
	})
	return i < len(rs) && !a.Less(rs[i].From) && !rs[i].To.Less(a)
}

// addrsRanges returns the normalized set of the addresses as.
func addrsRanges(as []netip.Addr) []Range {
	rs := make([]Range, 0, len(as))
	for _, a := range as {
		rs = append(rs, addrRange(a))
	}
	return normalize(rs)
}
