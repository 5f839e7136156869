// Package sysctl reads and sets the kernel's knobs under /proc/sys for the
// calling thread's network namespace. A knob is named by its path
// elements (net, ipv4, ip_forward), so that interface names with dots stay
// one element, and shown in sysctl's dotted form.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// root is where the knobs are; tests point it elsewhere.
var root = "/proc/sys"

// Name is the knob's dotted name, as `sysctl` shows it:
// net.ipv4.ip_forward.
func Name(path ...string) string { return strings.Join(path, ".") }

// Get reads a knob, without its trailing newline.
func Get(path ...string) (string, error) {
	b, err := os.ReadFile(filepath.Join(append([]string{root}, path...)...))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", Name(path...), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Ensure sets a knob to value (`sysctl -w NAME=VALUE`) unless it has that
// value already: in a container /proc/sys is often read-only while the
// node has the value set. It reports whether it wrote.
func Ensure(value string, path ...string) (bool, error) {
	if v, err := Get(path...); err == nil && v == value {
		return false, nil
	}
	if err := os.WriteFile(filepath.Join(append([]string{root}, path...)...), []byte(value), 0o644); err != nil {
		return false, fmt.Errorf("set %s=%s: %w", Name(path...), value, err)
	}
	return true, nil
}

// Forwarding is the path of the knob that turns on forwarding for IPv4
// (net.ipv4.ip_forward) or, when ipv6, for IPv6
// (net.ipv6.conf.all.forwarding).
func Forwarding(ipv6 bool) []string {
	if ipv6 {
		return []string{"net", "ipv6", "conf", "all", "forwarding"}
	}
	return []string{"net", "ipv4", "ip_forward"}
}
