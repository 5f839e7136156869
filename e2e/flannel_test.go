package e2e

import (
	"os"
	"strings"
	"testing"
)

// flanneld returns the reference flanneld that test.sh builds from
// tools/flannel, or skips (fails in CI) without it.
func flanneld(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WEFT_FLANNELD")
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("WEFT_FLANNELD is not set in CI; test.sh builds the reference flanneld")
		}
		t.Skip("no reference flanneld (set WEFT_FLANNELD; test.sh builds it)")
	}
	return p
}

// TestMixedWithFlanneld runs the real flanneld on one node and weft on the
// others, sharing one etcd: every pod must reach every other pod both ways.
func TestMixedWithFlanneld(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	fl := flanneld(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"vxlan", nil, "36 passed, 0 failed"},
		{"host-gw", []string{"--backend", "host-gw"}, "36 passed, 0 failed"},
		{"udp", []string{"--backend", "udp"}, "36 passed, 0 failed"},
		{"vxlan-DirectRouting-l3", []string{"--topology", "l3", "--direct-routing", "--nodes", "4"}, "64 passed, 0 failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out := newLab(t, append([]string{"--flannel-nodes", "n3", "--flanneld", fl}, tc.args...)...)
			if !strings.Contains(out, tc.want) {
				t.Fatalf("mixed lab (%s) with flanneld on n3:\n%s", tc.name, out)
			}
		})
	}
}
