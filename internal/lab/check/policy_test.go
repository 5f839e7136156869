package check

import (
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/lab/pod"
)

func TestPlanPolicy(t *testing.T) {
	a := &Target{Name: "a", Ports: []pod.Port{{Protocol: pod.TCP, Port: 80}, {Protocol: pod.SCTP, Port: 80}}}
	b := &Target{Name: "x/b", Ports: []pod.Port{{Protocol: pod.UDP, Port: 53}}}
	c := &Target{Name: "c"} // serves nothing: only a source
	var got []string
	for _, p := range PlanPolicy([]*Target{a, b, c}, func(from, to *Target, port Port) bool { return from != c }) {
		got = append(got, p.From+">"+p.To+":"+p.Protocol+map[bool]string{true: "+", false: "-"}[p.Want])
	}
	want := "a>x/b:UDP+ x/b>a:TCP+ c>a:TCP- c>x/b:UDP-"
	if strings.Join(got, " ") != want {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestPrintPolicy(t *testing.T) {
	r := &PolicyReport{Policies: []string{"x/deny"}, Skipped: []string{"gone: no Pod object"}, Probes: []Probe{
		{From: "a", To: "x/b", Port: 80, Protocol: pod.TCP, Want: false, Got: true, Answer: "x/b"},
		{From: "x/b", To: "a", Port: 80, Protocol: pod.TCP, Want: true, Got: true, Answer: "default/a"},
		{From: "x/b", To: "a", Port: 80, Protocol: pod.UDP, Want: true, Err: "i/o timeout"},
	}, Passed: 1, Failed: 2}
	var b strings.Builder
	r.Print(&b, []string{"a", "x/b"})
	want := `NetworkPolicies: x/deny
  left out: gone: no Pod object

80/TCP expected (the policies, compiled):
from \ to  a  x/b
a          -  X
x/b        .  -

80/TCP observed:
from \ to  a  x/b
a          -  .
x/b        .  -

80/UDP expected (the policies, compiled):
from \ to  a  x/b
a          -  -
x/b        .  -

80/UDP observed:
from \ to  a  x/b
a          -  -
x/b        X  -

differences:
  a -> x/b 80/TCP: expected denied, connected (answer "x/b")
  x/b -> a 80/UDP: expected allowed, not connected: i/o timeout
1 probes as the policies say, 2 differ
`
	if b.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", b.String(), want)
	}
}
