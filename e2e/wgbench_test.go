package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBenchWireGuard keeps `weft lab bench` measuring wireguard beside udp:
// a 1-second pass over both must print both rows and the line of
// wireguard's ratios to udp with their targets. It measures nothing for
// keeps (docs/benchmarks.md has the real run).
func TestBenchWireGuard(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("iperf3 missing in CI; .ci/run installs it")
		}
		t.Skip("iperf3 not installed")
	}
	out, err := exec.Command(filepath.Join(bin, "weft"), "lab", "bench", "--name", "twgbench", "--seconds", "1", "--modes", "udp:tun,wireguard").CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	for _, re := range []string{
		`(?m)^\s+udp:tun\s+[\d.]+ `,
		`(?m)^\s+wireguard\s+[\d.]+ `,
		`(?m)^wireguard / udp:tun in this run: TCP 1 stream [\d.]+x, 4 streams [\d.]+x \(target >= 0\.70x: (met|MISSED)\); CPU s/GB [\d.]+x \(target <= 1\.50x: (met|MISSED)\)`,
	} {
		if !regexp.MustCompile(re).Match(out) {
			t.Errorf("no line matching %s", re)
		}
	}
	for _, ns := range listNS() {
		if len(ns) > 9 && ns[:9] == "twgbench-" {
			t.Errorf("bench left namespace %s", ns)
		}
	}
}
