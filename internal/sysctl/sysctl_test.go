package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnsure: a knob already at the value is not written (a read-only
// /proc/sys must not fail then); another is written; a knob that cannot be
// written is named in sysctl's form.
func TestEnsure(t *testing.T) {
	root = t.TempDir()
	t.Cleanup(func() { root = "/proc/sys" })
	knob := func(path []string, v string, mode os.FileMode) {
		p := filepath.Join(append([]string{root}, path...)...)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(p, 0o644) // written again below
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	v4, v6 := Forwarding(false), Forwarding(true)
	knob(v4, "1", 0o444)
	knob(v6, "0", 0o644)
	if wrote, err := Ensure("1", v4...); err != nil || wrote {
		t.Errorf("ip_forward already 1: wrote %t, %v", wrote, err)
	}
	if wrote, err := Ensure("1", v6...); err != nil || !wrote {
		t.Errorf("IPv6 forwarding 0: wrote %t, %v", wrote, err)
	}
	if v, err := Get(v6...); err != nil || v != "1" {
		t.Errorf("IPv6 forwarding reads %q, %v", v, err)
	}
	if os.Geteuid() != 0 { // root writes a 0444 file anyway
		knob(v4, "0", 0o444)
		if _, err := Ensure("1", v4...); err == nil || !strings.Contains(err.Error(), "set net.ipv4.ip_forward=1: ") {
			t.Errorf("a read-only knob: %v", err)
		}
	}
	if _, err := Get("net", "ipv6", "conf", "eth0.100", "accept_ra"); err == nil || !strings.Contains(err.Error(), "read net.ipv6.conf.eth0.100.accept_ra: ") {
		t.Errorf("a missing knob: %v", err)
	}
}
