package pod

import (
	"fmt"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "", want: ""},
		{in: "80", want: "serve-80-tcp 80/TCP, serve-80-udp 80/UDP"},
		{in: "80, 81/udp,53/TCP,9/sctp", want: "serve-80-tcp 80/TCP, serve-80-udp 80/UDP, serve-81-udp 81/UDP, serve-53-tcp 53/TCP, serve-9-sctp 9/SCTP"},
		{in: "0", err: `--ports "0": "0" is not a port (1-65535), PORT/tcp or PORT/udp`},
		{in: "70000", err: `"70000" is not a port`},
		{in: "80/icmp", err: `--ports "80/icmp": protocol "icmp": use tcp, udp or sctp`},
		{in: "80,80/udp", err: `--ports "80,80/udp": 80/UDP is given twice`},
	} {
		ports, err := ParsePorts(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePorts(%q) = %v, %v; want error %q", tc.in, ports, err, tc.err)
			}
			continue
		}
		var got []string
		for _, p := range ports {
			got = append(got, p.Name+" "+p.String())
		}
		if err != nil || strings.Join(got, ", ") != tc.want {
			t.Errorf("ParsePorts(%q) = %q, %v; want %q", tc.in, strings.Join(got, ", "), err, tc.want)
		}
	}
}

func TestValidatePorts(t *testing.T) {
	got, err := ValidatePorts([]Port{{Protocol: "tcp", Port: 80}, {Name: "dns", Protocol: UDP, Port: 53}})
	if err != nil || fmt.Sprintf("%+v", []any{got[0].Name, got[0].Protocol, got[0].Port, got[1].Name, got[1].Protocol, got[1].Port}) != "[serve-80-tcp TCP 80 dns UDP 53]" {
		t.Errorf("ValidatePorts = %v, %v", got, err)
	}
	for _, bad := range [][]Port{
		{{Protocol: "ICMP", Port: 1}},
		{{Protocol: TCP}},
		{{Name: "Not_A_Name", Protocol: TCP, Port: 1}},
		{{Name: "web", Protocol: TCP, Port: 80}, {Name: "web", Protocol: UDP, Port: 80}},
		{{Protocol: TCP, Port: 80}, {Name: "other", Protocol: TCP, Port: 80}},
	} {
		if got, err := ValidatePorts(bad); err == nil {
			t.Errorf("ValidatePorts(%v) = %v, want an error", bad, got)
		}
	}
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels("app=web, tier=front,k8s.io/x=y")
	if err != nil || len(got) != 3 || got["app"] != "web" || got["tier"] != "front" || got["k8s.io/x"] != "y" {
		t.Errorf("ParseLabels = %v, %v", got, err)
	}
	if got, err := ParseLabels(""); err != nil || got != nil {
		t.Errorf(`ParseLabels("") = %v, %v`, got, err)
	}
	for _, bad := range []string{"app", "app=a b", "-x=1", "app=web,app=db"} {
		if got, err := ParseLabels(bad); err == nil {
			t.Errorf("ParseLabels(%q) = %v, want an error", bad, got)
		}
	}
}

func TestNames(t *testing.T) {
	if got := NetNS("weft", "", "n1-p1"); got != "weft-n1-p1" {
		t.Errorf("default namespace: %s", got)
	}
	if got := NetNS("weft", "default", "n1-p1"); got != "weft-n1-p1" {
		t.Errorf("default namespace: %s", got)
	}
	if got := NetNS("weft", "x", "a"); got != "weft-x_a" {
		t.Errorf("namespace x: %s", got)
	}
	if err := ValidateName("x", "a.b-c"); err != nil {
		t.Error(err)
	}
	for _, bad := range [][2]string{{"X", "a"}, {"x.y", "a"}, {"x", "A"}, {"x", "a_b"}, {"", "a"}, {"x", ""}} {
		if err := ValidateName(bad[0], bad[1]); err == nil {
			t.Errorf("ValidateName(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	p := &Pod{Name: "a", NS: "weft-x_a", Namespace: "x"}
	if p.Key() != "x/a" || p.Display() != "x/a" || !p.Is("x/a") || !p.Is("weft-x_a") || p.Is("a") {
		t.Errorf("pod x/a: key %s display %s", p.Key(), p.Display())
	}
	d := &Pod{Name: "n1-p1", NS: "weft-n1-p1"}
	if d.Key() != "default/n1-p1" || d.Display() != "n1-p1" || !d.Is("n1-p1") || !d.Is("default/n1-p1") {
		t.Errorf("pod n1-p1: key %s display %s", d.Key(), d.Display())
	}
}
