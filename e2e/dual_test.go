package e2e

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
)

// checkReport is `weft lab check --json`, the fields these tests read.
type checkReport struct {
	Results []struct {
		From, To   string
		Family     int
		Dst        netip.Addr
		SeenAs     string
		WantSource string
		ICMP, TCP  bool
	}
	Passed, Failed int
}

func (l *lab) check() checkReport {
	l.t.Helper()
	var rep checkReport
	out := l.must("check", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		l.t.Fatalf("check --json: %v\n%s", err, out)
	}
	return rep
}

// TestDualStack: `weft lab check` passes over both families (ICMP and
// ICMPv6, TCP over IPv4 and IPv6, every pod to every other across nodes
// both ways and to ext) in dual-stack and IPv6-only labs, vxlan and
// host-gw on l2, vxlan across the l3 router, etcd and Kubernetes stores.
// ext sees a pod's IPv6 traffic from the pod's node's IPv6 address
// (IPv6 masquerade), and pods of an IPv6-only lab have no IPv4 address.
func TestDualStack(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // the check's summary line
		kube bool
	}{
		{"dual-vxlan-l2", []string{"--ip-family", "dual"}, "72 passed, 0 failed", false},
		{"ipv6-host-gw-l2", []string{"--ip-family", "ipv6", "--backend", "host-gw"}, "36 passed, 0 failed", false},
		{"dual-host-gw-l2", []string{"--ip-family", "dual", "--backend", "host-gw", "--nodes", "2"}, "32 passed, 0 failed", false},
		{"ipv6-vxlan-l2", []string{"--ip-family", "ipv6", "--nodes", "2"}, "16 passed, 0 failed", false},
		{"dual-vxlan-l3", []string{"--ip-family", "dual", "--topology", "l3", "--nodes", "4"}, "128 passed, 0 failed", false},
		{"ipv6-vxlan-l3", []string{"--ip-family", "ipv6", "--topology", "l3", "--nodes", "2"}, "16 passed, 0 failed", false},
		{"dual-vxlan-kube", []string{"--ip-family", "dual"}, "72 passed, 0 failed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.kube {
				args = append(args, "--store", "kube", "--kube-apiserver", kubeapitest.Binary(t))
			}
			l, out := newLab(t, args...)
			if !strings.Contains(out, tc.want) {
				t.Fatalf("lab up %s:\n%s", strings.Join(args, " "), out)
			}
			v6only := strings.Contains(strings.Join(tc.args, " "), "ipv6")
			if v6only {
				for _, p := range l.status().Pods {
					if a := netip.MustParseAddr(p.Addr); !a.Is6() {
						t.Errorf("pod %s of an IPv6-only lab has %s", p.Name, a)
					}
				}
			}
			assertMasquerade6(t, l)
			if strings.Contains(tc.name, "vxlan") {
				if _, err := l.handle("n1").LinkByName("flannel-v6.1"); err != nil {
					t.Errorf("n1 has no flannel-v6.1: %v", err)
				}
				if _, err := l.handle("n1").LinkByName("flannel.1"); (err == nil) == v6only {
					t.Errorf("n1's flannel.1 in an IPv6-only lab: %v", err)
				}
			}
		})
	}
}

// assertMasquerade6 reads the check's results: every pod reached ext over
// IPv6 and ext saw it come from its node's IPv6 address (the node's
// underlay address, inside 2001:db8::/32, not the pod's own).
func assertMasquerade6(t *testing.T, l *lab) {
	t.Helper()
	nodeOf, addr6 := map[string]string{}, map[string]string{}
	var st struct {
		Nodes []struct{ Name, Addr6 string }
		Pods  []struct {
			Name, Node string
			Addrs      []string
		}
	}
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		addr6[n.Name] = n.Addr6
	}
	for _, p := range st.Pods {
		nodeOf[p.Name] = p.Node
	}
	seen := 0
	for _, r := range l.check().Results {
		if r.To != "ext" || r.Family != 6 {
			continue
		}
		seen++
		if want := addr6[nodeOf[r.From]]; want == "" || r.SeenAs != want || !r.ICMP || !r.TCP {
			t.Errorf("%s -> ext over IPv6: icmp %v tcp %v, ext saw %q, want its node's IPv6 address %q", r.From, r.ICMP, r.TCP, r.SeenAs, want)
		}
	}
	if seen != len(st.Pods) {
		t.Errorf("%d IPv6 probes to ext for %d pods", seen, len(st.Pods))
	}
}
