package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBenchRuns keeps `weft lab bench` working: a 1-second pass over vxlan
// and udp must print both rows with ratios. It measures nothing for keeps.
func TestBenchRuns(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("iperf3 missing in CI; .ci/run installs it")
		}
		t.Skip("iperf3 not installed")
	}
	out, err := exec.Command(filepath.Join(bin, "weft"), "lab", "bench", "--name", "tbench", "--seconds", "1", "--modes", "vxlan,udp").CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	for _, row := range []string{`(?m)^\s+vxlan\s+[\d.]+ \(1\.00x\)`, `(?m)^\s+udp\s+[\d.]+ \([\d.]+x\)`} {
		if !regexp.MustCompile(row).Match(out) {
			t.Errorf("no row matching %s", row)
		}
	}
	for _, ns := range listNS() {
		if len(ns) > 7 && ns[:7] == "tbench-" {
			t.Errorf("bench left namespace %s", ns)
		}
	}
}
