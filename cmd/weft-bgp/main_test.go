package main

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestHelp: -h says what weft-bgp is and exits 0; arguments are refused
// (the configuration comes on stdin); with no start message on stdin it
// says it is weft-agent's.
func TestHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help", "-help"} {
		var out, errOut bytes.Buffer
		if err := run([]string{h}, strings.NewReader(""), &out, &errOut); err != nil {
			t.Errorf("%s: %v", h, err)
		}
		if !strings.Contains(out.String(), "weft-bgp is the BGP speaker of weft-agent") || !strings.Contains(out.String(), "not run by hand") {
			t.Errorf("%s printed %q", h, out.String())
		}
	}
	var out bytes.Buffer
	if err := run([]string{"--version"}, strings.NewReader(""), &out, &out); err != nil || out.String() != "dev\n" {
		t.Errorf("--version: %q %v", out.String(), err)
	}
	if err := run([]string{"192.0.2.1"}, strings.NewReader(""), &out, &out); err == nil || !strings.Contains(err.Error(), "stdin") {
		t.Errorf("an argument: %v, want an error saying the configuration comes on stdin", err)
	}
	if err := run(nil, strings.NewReader(""), &out, &out); err == nil || !strings.Contains(err.Error(), "started by weft-agent") {
		t.Errorf("nothing on stdin: %v, want an error saying weft-agent starts it", err)
	}
}

// TestLinksTheSpeaker: weft-bgp is where GoBGP is linked.
func TestLinksTheSpeaker(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, want := range []string{"github.com/weftnet/weft/internal/bgp/speaker", "github.com/osrg/gobgp/v4/pkg/server"} {
		if !slices.Contains(deps, want) {
			t.Errorf("weft-bgp does not link %s", want)
		}
	}
}
