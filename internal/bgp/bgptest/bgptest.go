// Package bgptest holds what the BGP speaker's tests share: a log that
// tests search, polling, free ports and route literals.
package bgptest

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
)

// LogBuffer collects a speaker's log lines; safe for concurrent writes.
type LogBuffer struct {
	mu  sync.Mutex // guards buf
	buf strings.Builder
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines returns the lines that contain every one of words.
func (b *LogBuffer) Lines(words ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for l := range strings.SplitSeq(b.buf.String(), "\n") {
		if l != "" && !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(l, w) }) {
			out = append(out, l)
		}
	}
	return out
}

// WaitFor polls cond every 100 ms and fails the test, saying what it
// waited for, when it is not true within timeout.
func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Route is the route to prefix via next hop nh.
func Route(prefix, nh string) bgp.Route {
	return bgp.Route{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nh)}
}

// FreePort is a TCP port free on 127.0.0.1 a moment ago.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// LearnedOf is the route s learned to prefix, if any.
func LearnedOf(s interface{ Learned() []bgp.Route }, prefix string) (bgp.Route, bool) {
	for _, r := range s.Learned() {
		if r.Prefix == netip.MustParsePrefix(prefix) {
			return r, true
		}
	}
	return bgp.Route{}, false
}
