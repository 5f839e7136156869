// Package netnstest gives privileged tests a fresh, uniquely named network
// namespace that is removed when the test ends, even on failure.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/weftnet/weft/internal/netns"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

// New creates a namespace named wt-<random> and schedules its removal.
func New(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "wt-" + hex.EncodeToString(b[:])
	if err := netns.Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name
}
