package bench

import "testing"

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
