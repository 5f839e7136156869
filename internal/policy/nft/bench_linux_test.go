package nft

import (
	"context"
	"testing"

	"github.com/weftnet/weft/internal/netns/netnstest"
)

func newBenchApplier(b *testing.B) *Applier {
	b.Helper()
	ns := netnstest.New(b)
	a, err := New(Options{Namespace: ns})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkApplyFull: the whole table of 1000 chains and 5000 pods
// replaced in one transaction (the first Apply, or after Resync).
func BenchmarkApplyFull(b *testing.B) {
	a := newBenchApplier(b)
	rs := large(1000, 5000)
	ctx := context.Background()
	for b.Loop() {
		a.Resync()
		if err := a.Apply(ctx, rs); err != nil {
			b.Fatal(err)
		}
	}
	ops, _ := a.LastOps()
	b.ReportMetric(float64(ops), "ops")
}

// BenchmarkApplyOnePod: a pod comes and goes at 1000 chains and 5000
// pods: a few element operations, whatever the size of the table.
func BenchmarkApplyOnePod(b *testing.B) {
	a := newBenchApplier(b)
	rs := large(1000, 5000)
	more := withPod(rs)
	ctx := context.Background()
	if err := a.Apply(ctx, rs); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		next := more
		if i%2 == 1 {
			next = rs
		}
		i++
		if err := a.Apply(ctx, next); err != nil {
			b.Fatal(err)
		}
		if _, full := a.LastOps(); full {
			b.Fatal("full Apply")
		}
	}
	ops, _ := a.LastOps()
	b.ReportMetric(float64(ops), "ops")
}
