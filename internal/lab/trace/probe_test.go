package trace

import (
	"errors"
	"testing"
)

// counts is a Counters whose reads come from a list: before, then after.
type counts struct {
	reads []map[string]map[string]Stats // by read: namespace -> device -> stats
	n     map[string]int                // reads so far, by namespace
}

func (c *counts) Stats(ns string) (map[string]Stats, error) {
	i := c.n[ns]
	c.n[ns]++
	if i >= len(c.reads) {
		return nil, errors.New("read too often")
	}
	return c.reads[i][ns], nil
}

func TestRunProbe(t *testing.T) {
	r := &Result{Hops: []Hop{
		{NS: "p1", Name: "n1-p1", OutDev: "eth0"},
		{NS: "n1", Name: "n1", InDev: "veth1", OutDev: "flannel.1"},
		{NS: "n2", Name: "n2", InDev: "flannel.1", OutDev: "veth2"},
		{NS: "p2", Name: "n2-p1", InDev: "eth0"},
	}}
	before := map[string]map[string]Stats{
		"p1": {"eth0": {Tx: 100}}, "n1": {"veth1": {Rx: 50}, "flannel.1": {Tx: 7}},
		"n2": {"flannel.1": {Rx: 7}, "veth2": {Tx: 3}}, "p2": {"eth0": {Rx: 3}},
	}
	// n1 sent all 10 through flannel.1 (and 2 more of its own); n2's
	// flannel.1 received only 4: the probe stops at hop 3.
	after := map[string]map[string]Stats{
		"p1": {"eth0": {Tx: 110}}, "n1": {"veth1": {Rx: 60}, "flannel.1": {Tx: 19}},
		"n2": {"flannel.1": {Rx: 11}, "veth2": {Tx: 7}}, "p2": {"eth0": {Rx: 7}},
	}
	k := &counts{reads: []map[string]map[string]Stats{before, after}, n: map[string]int{}}
	if err := RunProbe(k, r, func() (int, int, error) { return 10, 4, nil }); err != nil {
		t.Fatal(err)
	}
	p := r.Probe
	if p.Sent != 10 || p.Received != 4 || p.StoppedAt != 2 {
		t.Fatalf("probe %+v, want 10 sent, 4 received, stopped at hop 3", p)
	}
	want := []HopCount{{-1, 10, true}, {10, 12, true}, {4, 4, false}, {4, -1, false}}
	for i, c := range p.Hops {
		if c != want[i] {
			t.Errorf("hop %d: %+v, want %+v", i+1, c, want[i])
		}
	}
	// Nothing sent confirms nothing.
	k = &counts{reads: []map[string]map[string]Stats{before, before}, n: map[string]int{}}
	if err := RunProbe(k, r, func() (int, int, error) { return 0, 0, nil }); err != nil {
		t.Fatal(err)
	}
	if r.Probe.StoppedAt != 0 {
		t.Errorf("nothing sent: stopped at %d, want hop 1", r.Probe.StoppedAt+1)
	}
}
