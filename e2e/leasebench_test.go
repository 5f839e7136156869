package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBenchLeasesRuns keeps `weft lab bench-leases` working: a small pass
// (20 and 40 leases, 5 single events) must print every node's column with
// ratios to flanneld, the targets, and leave no namespace or lab directory
// behind. It measures nothing for keeps.
func TestBenchLeasesRuns(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	fl := flanneld(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "tl" + hex.EncodeToString(b[:])
	registerLab(name)
	args := []string{"lab", "bench-leases", "--name", name, "--leases", "20,40", "--events", "5", "--gap", "50ms", "--idle", "2s", "--flanneld", fl}
	out, err := exec.Command(filepath.Join(bin, "weft"), args...).CombinedOutput()
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("bench-leases: %v", err)
	}
	// A ratio is "-" when flanneld's figure is 0 (CPU time is counted in 10 ms).
	weftCell, flannelCell := `[\d.]+ \((?:[\d.]+x|-)\)`, `[\d.]+`
	for _, label := range []string{
		`20 written at once: all routes in \(ms\)`,
		`add with 20 present, p50 \(ms\)`,
		`delete with 40 present, p99 \(ms\)`,
		`CPU per add with 40 \(ms\)`,
		`CPU per idle minute with 40 \(s\)`,
		`RssAnon with 40 \(MiB\)`,
		`40 deleted at once: all routes gone \(ms\)`,
	} {
		// n1 and n2 run weft: a value and its ratio; n3 flanneld's value.
		re := regexp.MustCompile(`(?m)^\s*` + label + `\s+` + weftCell + `\s+` + weftCell + `\s+` + flannelCell + `\s*$`)
		if !re.Match(out) {
			t.Errorf("no row matching %s", re)
		}
	}
	for _, want := range []string{"command: " + filepath.Join(bin, "weft") + " " + strings.Join(args, " "), "n3 flanneld", "add p99 with 40 <= 1.0x"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, ns := range listNS() {
		if strings.HasPrefix(ns, name+"-") {
			t.Errorf("bench left namespace %s", ns)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/weft-lab", name)); err == nil {
		t.Errorf("bench left /run/weft-lab/%s", name)
	}
}
