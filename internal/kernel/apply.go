package kernel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Read returns the kernel's routes, and the neighbour and FDB entries of
// scope.NeighDevs, that lie within scope.
func Read(k Kernel, scope Scope) (Plan, error) {
	all, err := readAll(k, scope)
	if err != nil {
		return Plan{}, err
	}
	return scope.Filter(all), nil
}

// readAll returns every main-table route and the neighbour and FDB entries
// of scope.NeighDevs: the routes outside the scope too, which Apply's
// guard needs.
func readAll(k Kernel, scope Scope) (Plan, error) {
	var all Plan
	var err error
	if all.Routes, err = k.Routes(); err != nil {
		return Plan{}, err
	}
	for _, dev := range scope.NeighDevs {
		neighs, err := k.Neighs(dev)
		if err != nil {
			return Plan{}, err
		}
		all.Neighs = append(all.Neighs, neighs...)
		fdb, err := k.FDB(dev)
		if err != nil {
			return Plan{}, err
		}
		all.FDB = append(all.FDB, fdb...)
	}
	return all, nil
}

// ConflictError is a wanted route that Apply did not write because the
// kernel routes its destination through something the scope does not own:
// the node's own old subnet on its CNI bridge (proto kernel), a route the
// administrator added. weft never takes such a destination over.
type ConflictError struct {
	Want Route // the route weft wanted
	Have Route // the kernel's route to the same destination
}

func (e *ConflictError) Error() string {
	how := "by dev " + e.Have.Dev
	if e.Have.Gw.IsValid() {
		how = "via " + e.Have.Gw.String() + " dev " + e.Have.Dev
	}
	return fmt.Sprintf("%s is routed %s (proto %s), not weft's: not replaced", e.Have.Dst, how, e.Have.Protocol)
}

// Conflicts returns the ConflictErrors within err (Apply joins them with
// its other failures), to count them.
func Conflicts(err error) []*ConflictError {
	var out []*ConflictError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *ConflictError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// WithoutConflicts returns err without the ConflictErrors it joins (nil
// if they were all it held): a conflict is reported, not retried, since
// retrying cannot resolve it.
func WithoutConflicts(err error) error {
	if _, ok := err.(*ConflictError); ok || err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var rest []error
		for _, x := range j.Unwrap() {
			if x = WithoutConflicts(x); x != nil {
				rest = append(rest, x)
			}
		}
		if len(rest) == len(j.Unwrap()) {
			return err
		}
		return errors.Join(rest...)
	}
	if inner := errors.Unwrap(err); inner != nil && len(Conflicts(inner)) > 0 && WithoutConflicts(inner) == nil {
		return nil // a wrapper around conflicts only
	}
	return err
}

// conflicts takes out of add the routes to destinations that all, the
// kernel's routes, routes through something scope does not own, and
// returns them as ConflictErrors.
func conflicts(all Plan, scope Scope, add *Plan) []error {
	if len(add.Routes) == 0 {
		return nil
	}
	foreign := map[netip.Prefix]Route{}
	for _, r := range all.Routes {
		if !scope.Owns(r) {
			foreign[r.Dst] = r
		}
	}
	var errs []error
	routes := add.Routes[:0:0]
	for _, r := range add.Routes {
		if f, ok := foreign[r.Dst]; ok {
			errs = append(errs, &ConflictError{Want: r, Have: f})
			continue
		}
		routes = append(routes, r)
	}
	add.Routes = routes
	return errs
}

// mirrored is a Kernel that can diff a plan against its memory of the
// kernel in place (*Cached, or a type that embeds it).
type mirrored interface {
	diffInPlace(want Plan, scope Scope) (add, del Plan, conflicts []error, ok bool)
}

// Apply makes the kernel's entries within scope match want: it reads them,
// writes the added and changed ones first (FDB, neighbours, then routes, so
// a route never points at a neighbour that is not there yet; a changed
// entry is replaced in place) and deletes the others after, so that traffic
// to a peer that stays never sees a gap. A failed write does not stop the
// others: every failure is returned, joined, and the caller retries the
// whole sync. When ctx ends, Apply stops before the next write and returns
// ctx's error with the failures so far. added and removed count the writes
// that succeeded.
//
// A wanted route to a destination that the kernel routes through a route
// the scope does not own is not written: Apply returns a *ConflictError
// for it among its failures (Conflicts counts them), and writes the rest.
//
// With a Cached kernel the reads come from its mirror, so a sync that
// finds nothing to change makes no system call.
func Apply(ctx context.Context, k Kernel, want Plan, scope Scope) (added, removed int, err error) {
	c, cached := k.(mirrored)
	var add, del Plan
	var errs []error
	inPlace := false
	if cached {
		add, del, errs, inPlace = c.diffInPlace(want, scope)
	}
	if inPlace { // the mirror's order is a map's: deletions go in a stable order
		slices.SortFunc(del.Routes, compareRoutes)
		slices.SortFunc(del.Neighs, func(a, b Neigh) int { return cmp.Or(strings.Compare(a.Dev, b.Dev), a.IP.Compare(b.IP)) })
		slices.SortFunc(del.FDB, func(a, b FDB) int { return cmp.Or(strings.Compare(a.Dev, b.Dev), strings.Compare(a.MAC, b.MAC)) })
	} else {
		all, err := readAll(k, scope)
		if err != nil {
			return 0, 0, err
		}
		add, del = Diff(want, scope.Filter(all))
		errs = conflicts(all, scope, &add)
	}
	type write struct {
		count *int
		do    func() error
	}
	var writes []write
	for _, f := range add.FDB {
		writes = append(writes, write{&added, func() error { return k.ReplaceFDB(f) }})
	}
	for _, n := range add.Neighs {
		writes = append(writes, write{&added, func() error { return k.ReplaceNeigh(n) }})
	}
	for _, r := range add.Routes {
		writes = append(writes, write{&added, func() error { return k.ReplaceRoute(r) }})
	}
	// Deletions in the reverse order: routes before the neighbours they use.
	for _, r := range del.Routes {
		writes = append(writes, write{&removed, func() error { return k.DeleteRoute(r) }})
	}
	for _, n := range del.Neighs {
		writes = append(writes, write{&removed, func() error { return k.DeleteNeigh(n) }})
	}
	for _, f := range del.FDB {
		writes = append(writes, write{&removed, func() error { return k.DeleteFDB(f) }})
	}
	for _, w := range writes {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := w.do(); err != nil {
			errs = append(errs, err)
		} else {
			*w.count++
		}
	}
	return added, removed, errors.Join(errs...)
}
