package leasebench

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lease"
)

func TestPercentileNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 50; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 25 * time.Millisecond}, {99, 50 * time.Millisecond}, {100, 50 * time.Millisecond}, {1, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v of 1..50 ms = %v, want %v", tc.p, got, tc.want)
		}
	}
	if ds[0] != 50*time.Millisecond {
		t.Error("percentile sorted its input in place")
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestParseStatus(t *testing.T) {
	doc := "Name:\tweft-agent\nVmHWM:\t   40000 kB\nVmRSS:\t   30720 kB\nRssAnon:\t   10240 kB\nRssFile:\t   20480 kB\n"
	if got, want := parseStatus(doc), (Memory{RSS: 30, Anon: 10}); got != want {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
}

// TestPoolLeases checks the synthetic leases: free /29s inside the network
// (never a node's, never the first or last), each once, and values that
// decode as flannel vxlan leases with a unicast, locally administered MAC
// and a documentation-range PublicIP.
func TestPoolLeases(t *testing.T) {
	node := netip.MustParsePrefix("10.244.0.16/29") // the 2nd subnet
	p := newPool([]netip.Prefix{node})
	ls, err := p.take(8000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Prefix]bool{}
	macs := map[string]bool{}
	netw := netip.MustParsePrefix(network)
	for _, l := range ls {
		if l.Subnet.Bits() != subnetLen || !netw.Contains(l.Subnet.Addr()) || l.Subnet.Masked() != l.Subnet {
			t.Fatalf("subnet %s is not a /%d of %s", l.Subnet, subnetLen, netw)
		}
		if l.Subnet == node || l.Subnet.Addr() == netw.Addr() || l.Subnet.Addr() == netip.MustParseAddr("10.244.255.248") {
			t.Fatalf("subnet %s handed out", l.Subnet)
		}
		if seen[l.Subnet] {
			t.Fatalf("subnet %s handed out twice", l.Subnet)
		}
		seen[l.Subnet] = true
		var a lease.Attrs
		if err := json.Unmarshal(l.Value, &a); err != nil {
			t.Fatalf("value of %s: %v: %s", l.Key(), err, l.Value)
		}
		var bd struct {
			VNI     int
			VtepMAC string
		}
		if err := json.Unmarshal(a.BackendData, &bd); err != nil || a.BackendType != "vxlan" || bd.VNI != 1 {
			t.Fatalf("value of %s is not a vxlan lease with VNI 1: %s", l.Key(), l.Value)
		}
		mac, err := net.ParseMAC(bd.VtepMAC)
		if err != nil || mac[0]&1 != 0 || mac[0]&2 == 0 || macs[bd.VtepMAC] {
			t.Fatalf("VtepMAC %q of %s: not a unique unicast local MAC (%v)", bd.VtepMAC, l.Key(), err)
		}
		macs[bd.VtepMAC] = true
		if !netip.MustParsePrefix("198.51.100.0/24").Contains(a.PublicIP) && !netip.MustParsePrefix("203.0.113.0/24").Contains(a.PublicIP) {
			t.Fatalf("PublicIP %s of %s is outside 198.51.100.0/24 and 203.0.113.0/24", a.PublicIP, l.Key())
		}
	}
	if _, err := p.take(190); err == nil {
		t.Error("took more /29s than the network holds")
	}
	p.give(ls[:2])
	again, err := p.take(2)
	if err != nil || again[0].Subnet != ls[0].Subnet || again[1].Subnet != ls[1].Subnet {
		t.Errorf("subnets handed back are not reused: %v %v", again, err)
	}
}

func TestPrintRatiosAndTargets(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	r := &Result{Counts: []int{1000}, Nodes: []*NodeResult{
		{Name: "n1", Agent: "weft", Mem0: Memory{RSS: 20, Anon: 5}, At: map[int]*Phase{1000: {
			Bulk: 300 * time.Millisecond, Add: ms(10, 20, 30), Del: ms(5, 5, 50), AddCPU: 0.3, DelCPU: 0.03, IdleCPU: 0.5, Mem: Memory{RSS: 30, Anon: 12},
		}}},
		{Name: "n3", Agent: "flanneld", Mem0: Memory{RSS: 40, Anon: 10}, At: map[int]*Phase{1000: {
			Bulk: 2000 * time.Millisecond, Add: ms(3, 3, 60), Del: ms(2, 2, 25), AddCPU: 0.03, DelCPU: 0, IdleCPU: 0.1, Mem: Memory{RSS: 40, Anon: 10},
		}}},
	}}
	var b strings.Builder
	r.Print(&b)
	r.PrintTargets(&b)
	out := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"300 (0.15x)",  // bulk 1000
		"30.0 (0.50x)", // add p99 30 vs 60
		"100.0 (10.00x)",
		"10.0 (-)", // CPU per delete against flanneld's 0
		"0.50 (5.00x)",
		"12.0 (1.20x)",
		"add p99 with 1000 <= 1.0x 0.50x met",
		"delete p99 with 1000 <= 1.0x 2.00x MISSED",
		"1000 written at once <= 0.3x 0.15x met",
		"RssAnon with 1000 <= 1.0x 1.20x MISSED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
