package check

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	a := netip.MustParseAddr
	pods := []Endpoint{
		{Name: "n1-p1", Addr: a("10.244.1.2"), Node: a("192.0.2.11")},
		{Name: "n2-p1", Addr: a("10.244.2.2"), Node: a("192.0.2.12")},
	}
	ext := Endpoint{Name: "ext", Addr: a("192.0.2.254")}
	var got []string
	for _, r := range plan(pods, ext) {
		got = append(got, r.From+">"+r.To+"="+r.Want)
	}
	want := "n1-p1>n2-p1=10.244.1.2 n1-p1>ext=192.0.2.11 n2-p1>n1-p1=10.244.2.2 n2-p1>ext=192.0.2.12"
	if strings.Join(got, " ") != want {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestPrintMatrix(t *testing.T) {
	r := &Report{Results: []Result{
		{From: "n1-p1", To: "n2-p1", ICMP: true, TCP: true, SeenAs: "10.244.1.2", Want: "10.244.1.2"},
		{From: "n1-p1", To: "ext", ICMP: true, TCP: true, SeenAs: "10.244.1.2", Want: "192.0.2.11", Err: "ext saw source 10.244.1.2, want 192.0.2.11"},
		{From: "n2-p1", To: "n1-p1", TCP: true, SeenAs: "10.244.2.2", Want: "10.244.2.2", Err: "no echo reply from 10.244.1.2"},
		{From: "n2-p1", To: "ext", Want: "192.0.2.12", Err: "no echo reply from 192.0.2.254"},
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
