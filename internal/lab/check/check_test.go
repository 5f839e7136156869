package check

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	a := netip.MustParseAddr
	pods := []Endpoint{
		{Name: "n1-p1", Addrs: []netip.Addr{a("10.244.1.2")}, Node: []netip.Addr{a("192.0.2.11")}},
		{Name: "n2-p1", Addrs: []netip.Addr{a("10.244.2.2")}, Node: []netip.Addr{a("192.0.2.12")}},
	}
	ext := Endpoint{Name: "ext", Addrs: []netip.Addr{a("192.0.2.254")}}
	var got []string
	for _, r := range plan(pods, ext) {
		got = append(got, r.From+">"+r.To+"="+r.Want)
	}
	want := "n1-p1>n2-p1=10.244.1.2 n1-p1>ext=192.0.2.11 n2-p1>n1-p1=10.244.2.2 n2-p1>ext=192.0.2.12"
	if strings.Join(got, " ") != want {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

// TestPlanDual: a probe per family both ends have, IPv4 first; to ext
// the source wanted is the node's address of the probe's family (IPv6
// masquerade to the node's IPv6 address); an IPv6-only pod is probed
// over IPv6 alone.
func TestPlanDual(t *testing.T) {
	a := netip.MustParseAddr
	pods := []Endpoint{
		{Name: "n1-p1", Addrs: []netip.Addr{a("10.244.1.2"), a("2001:db8:244:1::2")}, Node: []netip.Addr{a("192.0.2.11"), a("2001:db8:0:a::b")}},
		{Name: "n2-p1", Addrs: []netip.Addr{a("2001:db8:244:2::2")}, Node: []netip.Addr{a("192.0.2.12"), a("2001:db8:0:a::c")}},
	}
	ext := Endpoint{Name: "ext", Addrs: []netip.Addr{a("192.0.2.254"), a("2001:db8:0:a::fe")}}
	var got []string
	for _, r := range plan(pods, ext) {
		got = append(got, r.From+">"+r.To+"/"+r.Dst.String()+"="+r.Want)
	}
	want := []string{
		"n1-p1>n2-p1/2001:db8:244:2::2=2001:db8:244:1::2",
		"n1-p1>ext/192.0.2.254=192.0.2.11",
		"n1-p1>ext/2001:db8:0:a::fe=2001:db8:0:a::b",
		"n2-p1>n1-p1/2001:db8:244:1::2=2001:db8:244:2::2",
		"n2-p1>ext/2001:db8:0:a::fe=2001:db8:0:a::c",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func TestPrintMatrix(t *testing.T) {
	r := &Report{Results: []Result{
		{From: "n1-p1", To: "n2-p1", Family: 4, ICMP: true, TCP: true, SeenAs: "10.244.1.2", Want: "10.244.1.2"},
		{From: "n1-p1", To: "ext", Family: 4, ICMP: true, TCP: true, SeenAs: "10.244.1.2", Want: "192.0.2.11", Err: "ext saw source 10.244.1.2, want 192.0.2.11"},
		{From: "n2-p1", To: "n1-p1", Family: 4, TCP: true, SeenAs: "10.244.2.2", Want: "10.244.2.2", Err: "no echo reply from 10.244.1.2"},
		{From: "n2-p1", To: "ext", Family: 4, Want: "192.0.2.12", Err: "no echo reply from 192.0.2.254"},
	}, CNICheck: map[string]string{"n1-p1": "", "n2-p1": "no route"}, Passed: 1, Failed: 4}
	var b strings.Builder
	r.PrintMatrix(&b, []string{"n1-p1", "n2-p1"})
	want := `from \ to  n1-p1    n2-p1  ext
n1-p1      -        ok     bad-src
n2-p1      no-icmp  -      FAIL
  n1-p1 -> ext: ext saw source 10.244.1.2, want 192.0.2.11
  n2-p1 -> n1-p1: no echo reply from 10.244.1.2
  n2-p1 -> ext: no echo reply from 192.0.2.254
  CNI CHECK n2-p1: no route
CNI CHECK: 1 of 2 pods pass
1 passed, 4 failed
`
	if b.String() != want {
		t.Errorf("matrix:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestPrintMatrixDual: one grid, each cell IPv4's mark then IPv6's; a
// failure names its family.
func TestPrintMatrixDual(t *testing.T) {
	ok := func(from, to string, fam int) Result {
		return Result{From: from, To: to, Family: fam, ICMP: true, TCP: true, SeenAs: "x", Want: "x"}
	}
	r := &Report{Results: []Result{
		ok("n1-p1", "n2-p1", 4), ok("n1-p1", "n2-p1", 6), ok("n1-p1", "ext", 4),
		{From: "n1-p1", To: "ext", Family: 6, ICMP: true, TCP: true, SeenAs: "2001:db8:244:1::2", Want: "2001:db8:0:a::b",
			Err: "ext saw source 2001:db8:244:1::2, want 2001:db8:0:a::b"},
		ok("n2-p1", "n1-p1", 4), {From: "n2-p1", To: "n1-p1", Family: 6, Err: "no echo reply from 2001:db8:244:1::2"},
		ok("n2-p1", "ext", 4), ok("n2-p1", "ext", 6),
	}, CNICheck: map[string]string{}, Passed: 6, Failed: 2}
	var b strings.Builder
	r.PrintMatrix(&b, []string{"n1-p1", "n2-p1"})
	want := `each cell: IPv4/IPv6
from \ to  n1-p1    n2-p1  ext
n1-p1      -        ok/ok  ok/bad-src
n2-p1      ok/FAIL  -      ok/ok
  n1-p1 -> ext over IPv6: ext saw source 2001:db8:244:1::2, want 2001:db8:0:a::b
  n2-p1 -> n1-p1 over IPv6: no echo reply from 2001:db8:244:1::2
CNI CHECK: 2 of 2 pods pass
6 passed, 2 failed
`
	if b.String() != want {
		t.Errorf("matrix:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestPlanRouted: with a routed ext (BGP), pods reach ext wanting their
// own addresses, and ext probes every pod, per family, wanting its own.
func TestPlanRouted(t *testing.T) {
	a := netip.MustParseAddr
	pods := []Endpoint{
		{Name: "n1-p1", Addrs: []netip.Addr{a("10.244.1.2"), a("2001:db8:244:1::2")}, Node: []netip.Addr{a("192.0.2.11"), a("2001:db8:0:a::b")}},
		{Name: "n3-p1", Addrs: []netip.Addr{a("10.244.3.2")}, Node: []netip.Addr{a("198.51.100.13")}},
	}
	ext := Endpoint{Name: "ext", Addrs: []netip.Addr{a("203.0.113.10"), a("2001:db8:0:f::a")}, Routed: true}
	var got []string
	for _, r := range plan(pods, ext) {
		got = append(got, r.From+">"+r.To+"/"+r.Dst.String()+"="+r.Want)
	}
	want := []string{
		"n1-p1>n3-p1/10.244.3.2=10.244.1.2",
		"n1-p1>ext/203.0.113.10=10.244.1.2",
		"n1-p1>ext/2001:db8:0:f::a=2001:db8:244:1::2",
		"n3-p1>n1-p1/10.244.1.2=10.244.3.2",
		"n3-p1>ext/203.0.113.10=10.244.3.2",
		"ext>n1-p1/10.244.1.2=203.0.113.10",
		"ext>n1-p1/2001:db8:244:1::2=2001:db8:0:f::a",
		"ext>n3-p1/10.244.3.2=203.0.113.10",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestPrintMatrixRouted: ext's probes make a last row, explained above
// the grid.
func TestPrintMatrixRouted(t *testing.T) {
	r := &Report{Results: []Result{
		{From: "n1-p1", To: "ext", Family: 4, ICMP: true, TCP: true, SeenAs: "10.244.1.2", Want: "10.244.1.2"},
		{From: "ext", To: "n1-p1", Family: 4, ICMP: true, TCP: false, Want: "203.0.113.10", Err: "dial tcp 10.244.1.2:7777: i/o timeout"},
	}, CNICheck: map[string]string{"n1-p1": ""}, Passed: 1, Failed: 1}
	var b strings.Builder
	r.PrintMatrix(&b, []string{"n1-p1"})
	want := `ext is routed (BGP): pods reach it with their own addresses; row ext: ext reaches the pod by its own address
from \ to  n1-p1   ext
n1-p1      -       ok
ext        no-tcp  -
  ext -> n1-p1: dial tcp 10.244.1.2:7777: i/o timeout
CNI CHECK: 1 of 1 pods pass
1 passed, 1 failed
`
	if b.String() != want {
		t.Errorf("matrix:\n%s\nwant:\n%s", b.String(), want)
	}
}
