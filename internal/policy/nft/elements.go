package nft

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A change of elements only (pods come, go, move between groups; a peer
// or named-port set changes) is most changes, and nft 1.0.6 reads back
// the elements of every interval set in the table before it sends even
// one element: a quarter of a second at 1000 policies. Such a change goes
// to the kernel as netlink messages instead, in one batch (one
// transaction, as `nft -f`), encoded here as nft would encode the same
// text.

// nlElem is one set element as the kernel takes it.
type nlElem struct {
	key         []byte
	intervalEnd bool   // the element after an interval (NFT_SET_ELEM_INTERVAL_END)
	gotoChain   string // a verdict map element's value: goto this chain
}

// nlSet is a set's elements to add or delete, in netlink form.
type nlSet struct {
	name  string
	add   bool
	elems []nlElem
}

// elementsOnly reports whether tx only adds and deletes elements.
func elementsOnly(t tx) bool {
	for _, o := range t {
		if o.kind != kindElement {
			return false
		}
	}
	return len(t) > 0
}

// encodeTx turns an elements-only transaction on table cur into netlink
// elements, or fails for an element it cannot encode (the caller sends
// the text instead).
func encodeTx(t tx, cur *tableState) ([]nlSet, error) {
	var out []nlSet
	for _, o := range t {
		s, ok := cur.sets[o.name]
		if !ok || o.kind != kindElement {
			return nil, fmt.Errorf("%s: not an element change of a known set", o)
		}
		ns := nlSet{name: o.name, add: o.verb == verbAdd}
		for _, e := range o.elems {
			els, err := encodeElem(s, e, ns.add)
			if err != nil {
				return nil, fmt.Errorf("set %s: element %s: %w", o.name, e, err)
			}
			ns.elems = append(ns.elems, els...)
		}
		out = append(out, ns)
	}
	return out, nil
}

// encodeElem encodes one element text of set s: an address (vmap key,
// denied set), "ADDR . PROTO . PORT" (named ports), or an address
// interval "FROM-TO" (peers: its start, and the address after its end
// flagged as the interval's end, unless the interval ends the family).
func encodeElem(s *setState, e string, add bool) ([]nlElem, error) {
	switch {
	case s.kind == kindMap:
		k, v, _ := strings.Cut(e, " : ")
		a, err := netip.ParseAddr(k)
		if err != nil {
			return nil, err
		}
		el := nlElem{key: a.AsSlice()}
		if add {
			chain, ok := strings.CutPrefix(v, "goto ")
			if !ok {
				return nil, fmt.Errorf("value %q is not a goto", v)
			}
			el.gotoChain = chain
		}
		return []nlElem{el}, nil
	case strings.Contains(s.def, "inet_proto . inet_service"):
		f := strings.Split(e, " . ")
		if len(f) != 3 {
			return nil, fmt.Errorf("not ADDR . PROTO . PORT")
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			return nil, err
		}
		proto, ok := protoNumbers[f[1]]
		if !ok {
			return nil, fmt.Errorf("protocol %q", f[1])
		}
		port, err := strconv.ParseUint(f[2], 10, 16)
		if err != nil {
			return nil, err
		}
		// Each field of a concatenation fills whole 32-bit registers.
		key := append(a.AsSlice(), proto, 0, 0, 0, byte(port>>8), byte(port), 0, 0)
		return []nlElem{{key: key}}, nil
	case strings.Contains(s.def, "counter"):
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, err
		}
		return []nlElem{{key: a.AsSlice()}}, nil
	case strings.HasPrefix(s.def, "{ type ipv") && strings.Contains(s.def, "flags interval"):
		from, to, isRange := strings.Cut(e, "-")
		first, err := netip.ParseAddr(from)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(to); err != nil {
				return nil, err
			}
		}
		els := []nlElem{{key: first.AsSlice()}}
		if end := last.Next(); end.IsValid() {
			els = append(els, nlElem{key: end.AsSlice(), intervalEnd: true})
		}
		return els, nil
	}
	return nil, fmt.Errorf("no netlink encoding for a set %s", s.def)
}

var protoNumbers = map[string]byte{"tcp": 6, "udp": 17, "sctp": 132}
