package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/internal/firewall"
)

type fakeCounters struct {
	c   map[firewall.Family]map[string]firewall.Count
	err error
}

func (f fakeCounters) Counters() (map[firewall.Family]map[string]firewall.Count, error) {
	return f.c, f.err
}

// TestGuardCollector: the guard's two counters of each family with a table
// become series by family and direction; other counters, and families
// without the guard, make none.
func TestGuardCollector(t *testing.T) {
	g := guardCollector{fakeCounters{c: map[firewall.Family]map[string]firewall.Count{
		firewall.IPv4: {firewall.CounterTunnelIn: {Packets: 20, Bytes: 900}, firewall.CounterTunnelOut: {Packets: 3}, "other": {Packets: 7}},
		firewall.IPv6: {firewall.CounterTunnelIn: {Packets: 1}},
	}}}
	if n := testutil.CollectAndCount(g); n != 3 {
		t.Errorf("%d series, want 3", n)
	}
	exp := `
# TYPE weft_tunnel_guard_dropped_packets_total counter
weft_tunnel_guard_dropped_packets_total{direction="in",family="IPv4"} 20
weft_tunnel_guard_dropped_packets_total{direction="in",family="IPv6"} 1
weft_tunnel_guard_dropped_packets_total{direction="out",family="IPv4"} 3
`
	if err := testutil.CollectAndCompare(g, strings.NewReader("# HELP weft_tunnel_guard_dropped_packets_total "+guardHelp+exp)); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(guardCollector{fakeCounters{err: errors.New("no netlink")}}); n != 0 {
		t.Errorf("a failed read: %d series, want none", n)
	}
}
