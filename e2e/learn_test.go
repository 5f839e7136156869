package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// tourStep is a command of docs/learn.md and the output the text shows.
type tourStep struct {
	cmd  string
	want []string
}

// tourSteps reads the ```console blocks of the tour: "$ " lines are
// commands, the lines after each its output.
func tourSteps(t *testing.T, path string) []tourStep {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []tourStep
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```console":
			in = true
		case in && line == "```":
			in = false
		case in && strings.HasPrefix(line, "$ "):
			steps = append(steps, tourStep{cmd: strings.TrimPrefix(line, "$ ")})
		case in && len(steps) > 0:
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps
}

// What differs from run to run, and how the comparison spells it.
var tourVariable = []struct {
	re  *regexp.Regexp
	new string
}{
	{regexp.MustCompile(`([0-9a-f]{2}:){5}[0-9a-f]{2}`), "<mac>"},
	{regexp.MustCompile(`veth[0-9a-f]{8}`), "<veth>"},
	{regexp.MustCompile(`10\.244\.\d+\.`), "10.244.<n>."},
	{regexp.MustCompile(`\b(REACHABLE|STALE|DELAY|PROBE)\b`), "<state>"},
	{regexp.MustCompile(`\+\d+`), "+<n>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ms|s)\b`), "<t>"},
	{regexp.MustCompile(`^\d+: `), "<n>: "},
	{regexp.MustCompile(`\bqdisc \S+`), "qdisc <qdisc>"},
	// A neighbour entry the kernel has, or one ARP would find: either.
	{regexp.MustCompile(`neighbour (\S+) lladdr <mac> <state> on (\S+)`), "neighbour $1 on $2: <mac>"},
	{regexp.MustCompile(`no neighbour entry for (\S+) on (\S+) yet: ARP finds <mac> \([^)]*\)`), "neighbour $1 on $2: <mac>"},
	{regexp.MustCompile(`\s+`), " "},
}

func tourLine(s string) string {
	for _, v := range tourVariable {
		s = v.re.ReplaceAllString(s, v.new)
	}
	return strings.TrimSpace(s)
}

// TestLearnTour runs every command of docs/learn.md, in order, on a lab
// of its own, and checks that each output still has every line the text
// shows (what changes from run to run aside; a line the text ends with
// " ..." only as far as it goes), and the exit status the text implies
// (1 where a trace stops, else 0).
func TestLearnTour(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	steps := tourSteps(t, "../docs/learn.md")
	if len(steps) < 10 {
		t.Fatalf("docs/learn.md: %d commands, want the tour's", len(steps))
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "l" + hex.EncodeToString(b[:])
	registerLab(name)
	weft := filepath.Join(bin, "weft")
	t.Cleanup(func() {
		if out, err := exec.Command(weft, "lab", "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	for i, st := range steps {
		args := strings.Fields(st.cmd)
		if len(args) < 3 || args[0] != "bin/weft" || args[1] != "lab" || !strings.Contains(st.cmd, "--name learn") {
			t.Fatalf("docs/learn.md command %d %q: the tour runs `bin/weft lab ... --name learn` only", i+1, st.cmd)
		}
		args[0] = weft
		for j := range args {
			if j > 0 && args[j] == "learn" && args[j-1] == "--name" {
				args[j] = name
			}
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		text := strings.ReplaceAll(string(out), name, "learn")
		wantRC := 0
		if strings.Contains(strings.Join(st.want, "\n"), "STOPPED at hop") {
			wantRC = 1
		}
		rc := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			rc = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", st.cmd, err)
		}
		if rc != wantRC {
			t.Fatalf("%s: exit status %d, want %d\n%s", st.cmd, rc, wantRC, text)
		}
		got := map[string]int{}
		for _, l := range strings.Split(text, "\n") {
			got[tourLine(l)]++
		}
		var missing []string
		for _, l := range st.want {
			n := tourLine(l)
			if n == "" {
				continue
			}
			// "LINE ..." in the text: a line that starts so (the rest
			// varies with the kernel and iproute2).
			if prefix, ok := strings.CutSuffix(n, " ..."); ok {
				found := false
				for g, c := range got {
					if c > 0 && strings.HasPrefix(g, prefix+" ") {
						got[g]--
						found = true
						break
					}
				}
				if !found {
					missing = append(missing, l)
				}
				continue
			}
			if got[n] == 0 {
				missing = append(missing, l)
				continue
			}
			got[n]--
		}
		if len(missing) > 0 {
			t.Errorf("docs/learn.md: %s: the output lacks %d line(s) the text shows:\n  %s\noutput:\n%s", st.cmd, len(missing), strings.Join(missing, "\n  "), text)
		}
	}
}
