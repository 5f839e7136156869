package kernel

import (
	"context"
	"errors"
)

// Read returns the kernel's routes, and the neighbour and FDB entries of
// scope.NeighDevs, that lie within scope.
func Read(k Kernel, scope Scope) (Plan, error) {
	var have Plan
	var err error
	if have.Routes, err = k.Routes(); err != nil {
		return Plan{}, err
	}
	for _, dev := range scope.NeighDevs {
		neighs, err := k.Neighs(dev)
		if err != nil {
			return Plan{}, err
		}
		have.Neighs = append(have.Neighs, neighs...)
		fdb, err := k.FDB(dev)
		if err != nil {
			return Plan{}, err
		}
		have.FDB = append(have.FDB, fdb...)
	}
	return scope.Filter(have), nil
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
func Apply(ctx context.Context, k Kernel, want Plan, scope Scope) (added, removed int, err error) {
	have, err := Read(k, scope)
	if err != nil {
		return 0, 0, err
	}
	add, del := Diff(want, have)
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
	var errs []error
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
