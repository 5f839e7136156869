package check

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestRunDual runs the probes over a dual-stack l2 underlay of fresh
// namespaces: two "pods" and ext, each with an IPv4 and an IPv6 address.
// With the sources ext must see set to the pods' own addresses every
// probe of both families passes; with node addresses that nobody uses
// (as if masquerade were missing) the probes to ext fail on the source,
// per family. Ping counts ICMPv6 replies as it does ICMP's.
func TestRunDual(t *testing.T) {
	ul := netnstest.New(t)
	if err := topology.BuildUnderlay(ul, topology.L2, topology.Dual); err != nil {
		t.Fatal(err)
	}
	var eps []Endpoint
	for i, name := range []string{"p1", "p2", "ext"} {
		addr, side := topology.NodeAddr(topology.L2, i+1, 3)
		h := topology.Host{Name: name, NS: netnstest.New(t), Addr: addr, Side: side}.WithIPv6()
		if err := topology.Attach(ul, topology.L2, h); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, Endpoint{Name: name, NS: h.NS, Addrs: h.Addrs(), Node: h.Addrs()})
	}
	pods, ext := eps[:2], eps[2]
	noCNI := func(context.Context, string) error { return nil }
	rep, err := Run(context.Background(), pods, ext, noCNI)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 8 || rep.Failed != 0 {
		t.Errorf("own sources: %d passed, %d failed, want 8 and 0: %+v", rep.Passed, rep.Failed, rep.Results)
	}
	for i := range pods {
		pods[i].Node = []netip.Addr{topology.Nth(topology.SideA, 99), topology.Nth(topology.SideA6, 99)}
	}
	rep, err = Run(context.Background(), pods, ext, noCNI)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]bool{}
	for _, r := range rep.Results {
		if !r.OK() {
			bad[fmt.Sprintf("%s>%s/%d", r.From, r.To, r.Family)] = r.ICMP && r.TCP
		}
	}
	if len(bad) != 4 || !bad["p1>ext/6"] || !bad["p2>ext/4"] {
		t.Errorf("unused node addresses: failed %v, want the 4 probes to ext, reachable but with the wrong source", bad)
	}
	st, err := Ping(context.Background(), pods[0].NS, pods[1].Addrs[1], 5, 20*time.Millisecond)
	if err != nil || st.Sent != 5 || st.Received != 5 {
		t.Errorf("ping over IPv6: %v %v", st, err)
	}
	st, err = Ping(context.Background(), pods[0].NS, topology.Nth(topology.SideA6, 99), 3, 20*time.Millisecond)
	if err != nil || st.Received != 0 || st.FirstLost != 1 {
		t.Errorf("ping of an IPv6 address nobody has: %v %v", st, err)
	}
}
