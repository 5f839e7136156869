package pod

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// TestServe serves TCP and UDP ports in a fresh namespace and asks them
// from there; a port not served is refused.
func TestServe(t *testing.T) {
	ns := netnstest.New(t)
	if err := loUp(ns); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- netns.Do(ns, func() error {
			return Serve(ctx, "x/a", []Port{{Protocol: TCP, Port: 80}, {Protocol: UDP, Port: 80}, {Protocol: UDP, Port: 53}, {Protocol: SCTP, Port: 9}})
		})
	}()
	lo := netip.MustParseAddr("127.0.0.1")
	deadline := time.Now().Add(5 * time.Second)
	for _, tc := range []struct {
		proto string
		port  uint16
	}{{TCP, 80}, {UDP, 80}, {UDP, 53}} {
		for {
			got, err := Ask(ns, tc.proto, netip.AddrPortFrom(lo, tc.port), 500*time.Millisecond)
			if err == nil && got == "x/a" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ask %d/%s: %q, %v", tc.port, tc.proto, got, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got, err := Ask(ns, TCP, netip.AddrPortFrom(lo, 53), time.Second); err == nil {
		t.Errorf("53/TCP is not served but answered %q", got)
	}
	if got, err := Ask(ns, UDP, netip.AddrPortFrom(lo, 81), time.Second); err == nil {
		t.Errorf("81/UDP is not served but answered %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// loUp brings up lo in the namespace: a fresh one has it down.
func loUp(ns string) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo) // same as `ip link set lo up`
}
