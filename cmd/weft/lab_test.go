package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestLabHelp: `weft lab --help`, `-h` and `help`, and -h or --help on
// every lab command, print the usage on stdout and succeed (exit 0),
// without root and without a lab; a command's usage shows its synopsis
// and its flags.
func TestLabHelp(t *testing.T) {
	ctx := context.Background()
	for _, h := range []string{"--help", "-h", "help"} {
		var out, errb bytes.Buffer
		if err := run(ctx, []string{"lab", h}, &out, &errb); err != nil || !strings.Contains(out.String(), "weft lab up [--name NAME]") || errb.Len() > 0 {
			t.Errorf("weft lab %s: %v\nstdout:\n%s\nstderr:\n%s", h, err, out.String(), errb.String())
		}
	}
	cmds := []string{"kubectl"}
	for c := range labCommands {
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		for _, h := range []string{"-h", "--help"} {
			var out, errb bytes.Buffer
			err := run(ctx, []string{"lab", c, h}, &out, &errb)
			if err != nil || errb.Len() > 0 {
				t.Errorf("weft lab %s %s: %v, stderr %q", c, h, err, errb.String())
			}
			if c != "serve" && !strings.Contains(out.String(), "weft lab "+c) {
				t.Errorf("weft lab %s %s does not show the command:\n%s", c, h, out.String())
			}
			if c != "kubectl" && !strings.Contains(out.String(), "-name") {
				t.Errorf("weft lab %s %s does not list the flags:\n%s", c, h, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"lab", "up", "-h"}, &out, &errb); err != nil || !strings.Contains(out.String(), "-ip-family") {
		t.Errorf("weft lab up -h lacks --ip-family: %v\n%s", err, out.String())
	}
	if err := run(ctx, []string{"lab", "up", "--no-such-flag"}, &out, &errb); err == nil {
		t.Error("an unknown flag of weft lab up is accepted")
	}
}

// TestLabSynopsis: a command's lines of the usage, continuation lines
// included, and nothing of the next command.
func TestLabSynopsis(t *testing.T) {
	up := labSynopsis("up")
	if !strings.HasPrefix(up, "  weft lab up ") || !strings.Contains(up, "--ip-family") || !strings.Contains(up, "--pod-ports") || strings.Contains(up, "weft lab status") {
		t.Errorf("synopsis of up:\n%s", up)
	}
	if n := strings.Count(labSynopsis("agent"), "\n"); n != 2 {
		t.Errorf("synopsis of agent has %d lines, want 2:\n%s", n, labSynopsis("agent"))
	}
}
