package policy

import (
	"strings"
	"testing"
)

func TestAllowed(t *testing.T) {
	c := baseCluster(
		mkPol("x/deny", ""),
		mkPol("x/from-y", "pod=a", ingress(ports(port("", "http", 0)), nsPeer("ns=y"))),
		mkPol("y/eg", "pod=a", types(tEg), egress(nil, nsPeer("ns=x"))),
	)
	e, err := Allowed(c, "y/a", "x/a", TCP, 8080)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Allowed || !e.Egress.Isolated || !e.Ingress.Isolated {
		t.Fatalf("explanation %+v", e)
	}
	if e.Egress.Node != "n1" || e.Ingress.Node != "n1" || e.Src.String() != "10.244.1.20" || e.Dst.String() != "10.244.1.10" {
		t.Errorf("nodes or addresses wrong: %+v", e)
	}
	if got := strings.Join(e.Ingress.Selecting, ","); got != "x/deny,x/from-y" {
		t.Errorf("ingress selecting %s", got)
	}
	if got := strings.Join(e.Ingress.Policies, ","); got != "x/from-y" {
		t.Errorf("ingress allowed by %s", got)
	}
	if got := strings.Join(e.Egress.Policies, ","); got != "y/eg" {
		t.Errorf("egress allowed by %s", got)
	}
	s := e.String()
	for _, want := range []string{"y/a (10.244.1.20) -> x/a (10.244.1.10) 8080/TCP: allowed",
		"ingress x/a on n1: isolated by x/deny, x/from-y; allowed by x/from-y",
		"egress  y/a on n1: isolated by y/eg; allowed by y/eg"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}

	// The named port "http" is 9090 on x/b, but x/from-y selects only x/a.
	e, err = Allowed(c, "y/a", "x/b", TCP, 9090)
	if err != nil {
		t.Fatal(err)
	}
	if e.Allowed || e.Ingress.Allowed || !e.Egress.Allowed || e.Ingress.Node != "n2" {
		t.Errorf("explanation %+v", e)
	}
	if s := e.String(); !strings.Contains(s, ": denied\n") || !strings.Contains(s, "isolated by x/deny; allowed by none: denied") {
		t.Errorf("String():\n%s", s)
	}

	// An outside address.
	e, err = Allowed(c, "192.0.2.7", "y/b", UDP, 81)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Allowed || e.Egress.Pod != "" || e.Ingress.Isolated {
		t.Errorf("explanation %+v", e)
	}
	if s := e.String(); !strings.Contains(s, "egress  outside the cluster's pods: not policed") || !strings.Contains(s, "not isolated") {
		t.Errorf("String():\n%s", s)
	}
	e, err = Allowed(c, "y/a", "192.0.2.7", UDP, 53)
	if err != nil || e.Allowed {
		t.Errorf("egress to the outside: %+v, %v", e, err)
	}
}

func TestAllowedErrors(t *testing.T) {
	c := baseCluster()
	c.Namespaces = append(c.Namespaces, mkNS("empty", ""))
	pending := mkPod("y/pending", "n1", "", "")
	c.Pods = append(c.Pods, pending)
	for _, tt := range []struct{ from, to, want string }{
		{"x/a", "q/a", "no namespace q"},
		{"x/nope", "x/a", "no pod x/nope in the cluster"},
		{"x/a", "empty/a", "no pod empty/a in the cluster"},
		{"x/a", "y/pending", "pod y/pending has no IP address yet"},
		{"x/a", "garbage", `"garbage" is neither namespace/pod nor an IP address`},
	} {
		_, err := Allowed(c, tt.from, tt.to, TCP, 80)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Allowed(%s, %s): %v, want %q", tt.from, tt.to, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error on more than one line: %q", err)
		}
	}
}

func TestAllowedProblems(t *testing.T) {
	c := baseCluster(mkPol("x/bad", "pod=a", ingress(nil, ipPeer("nonsense"))))
	e, err := Allowed(c, "y/a", "x/a", TCP, 80)
	if err != nil {
		t.Fatal(err)
	}
	if e.Allowed || len(e.Problems) != 1 {
		t.Fatalf("explanation %+v", e)
	}
	if s := e.String(); !strings.Contains(s, "problem: policy x/bad: ingress rule 0: peer 0: ipBlock cidr") {
		t.Errorf("String():\n%s", s)
	}
	// Problems are shown between two outside addresses too.
	e, err = Allowed(c, "192.0.2.1", "192.0.2.2", TCP, 80)
	if err != nil || len(e.Problems) != 1 || !e.Allowed {
		t.Errorf("%+v, %v", e, err)
	}
}
