package bench

import (
	"strings"
	"testing"
)

func TestMedianResult(t *testing.T) {
	rs := []Result{
		{Mode: "udp", Gbps1: 5, P50us: 70, CPUPerGB: 2.5},
		{Mode: "udp", Gbps1: 2, P50us: 150, CPUPerGB: 2.4},
		{Mode: "udp", Gbps1: 6, P50us: 60, CPUPerGB: 2.2},
	}
	m := medianResult(rs)
	if m.Mode != "udp" || m.Gbps1 != 5 || m.P50us != 70 || m.CPUPerGB != 2.4 {
		t.Errorf("median of three: %+v", m)
	}
	m = medianResult(rs[:2])
	if m.Gbps1 != 3.5 || m.P50us != 110 {
		t.Errorf("median of two: %+v", m)
	}
}

// TestTargets: the ratios of a mode to its base and whether they meet the
// target, printed only when both modes ran.
func TestTargets(t *testing.T) {
	tg := Target{Mode: "wireguard", Base: "udp", MinThroughput: 0.7, MaxCPUPerGB: 1.5}
	udp := Result{Mode: "udp", Gbps1: 2, Gbps4: 4, CPUPerGB: 2, P50us: 100, P99us: 200}
	for _, tc := range []struct {
		wg      Result
		tp, cpu bool
		line    string
	}{
		{Result{Mode: "wireguard", Gbps1: 1.6, Gbps4: 3, CPUPerGB: 2.8, P50us: 120, P99us: 300}, true, true,
			"wireguard / udp in this run: TCP 1 stream 0.80x, 4 streams 0.75x (target >= 0.70x: met); CPU s/GB 1.40x (target <= 1.50x: met); RR p50 1.20x, p99 1.50x\n"},
		{Result{Mode: "wireguard", Gbps1: 1.6, Gbps4: 2.6, CPUPerGB: 3.2}, false, false,
			"wireguard / udp in this run: TCP 1 stream 0.80x, 4 streams 0.65x (target >= 0.70x: MISSED); CPU s/GB 1.60x (target <= 1.50x: MISSED); RR p50 0.00x, p99 0.00x\n"},
	} {
		tp, cpu := tg.Met(ratios(tc.wg, udp))
		if tp != tc.tp || cpu != tc.cpu {
			t.Errorf("%+v: throughput met %v, cpu met %v; want %v, %v", tc.wg, tp, cpu, tc.tp, tc.cpu)
		}
		var b strings.Builder
		printTargets(&b, []Result{udp, tc.wg}, []Target{tg})
		if b.String() != tc.line {
			t.Errorf("printed %q\nwant    %q", b.String(), tc.line)
		}
	}
	var b strings.Builder
	printTargets(&b, []Result{udp}, []Target{tg})
	if b.Len() != 0 {
		t.Errorf("printed %q without wireguard in the run", b.String())
	}
}
