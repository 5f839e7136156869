package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/lab/router"
)

// TestBenchBGPRuns keeps `weft lab bench-bgp` working: one node added to
// the BGP lab (BIRD) must print the spreads and the memory rows with
// their ratio, and leave neither lab behind. It measures nothing for
// keeps.
func TestBenchBGPRuns(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	requireRouter(t, router.BIRD)
	out, err := exec.Command(filepath.Join(bin, "weft"), "lab", "bench-bgp", "--name", "tbgpb", "--rounds", "1", "--settle", "1s").CombinedOutput()
	if err != nil {
		t.Fatalf("bench-bgp: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	for _, row := range []string{
		`(?m)^  round 1: n3 10\.244\.\d+\.0/24: lease -> BGP session up \d+ ms, -> route at the router \d+ ms, -> pod addressed \d+ ms, -> ext's first reply \d+ ms`,
		`(?m)^  lease -> route at the router: +min \d+ ms, median \d+ ms, max \d+ ms$`,
		`(?m)^  lease -> ext's first ping reply: +min \d+ ms, median \d+ ms, max \d+ ms$`,
		`(?m)^ +VmRSS mean +[\d.]+ +[\d.]+ +[\d.]+x$`,
		`(?m)^ +VmHWM max +[\d.]+ +[\d.]+ +[\d.]+x$`,
	} {
		if !regexp.MustCompile(row).Match(out) {
			t.Errorf("no line matching %s", row)
		}
	}
	for _, ns := range listNS() {
		if strings.HasPrefix(ns, "tbgpbon-") || strings.HasPrefix(ns, "tbgpbof-") {
			t.Errorf("bench-bgp left namespace %s", ns)
		}
	}
}
