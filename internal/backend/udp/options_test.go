package udp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
)

// TestKindRefusesIPv6: with IPv6 on (dual stack or IPv6-only) the udp
// backend is refused in one line that says what to use instead, before it
// touches anything.
func TestKindRefusesIPv6(t *testing.T) {
	opts, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := kerneltest.New()
	for _, env := range []backend.Env{
		{Kernel: f, Network: netip.MustParsePrefix("10.244.0.0/16"), IPv6Network: netip.MustParsePrefix("2001:db8:244::/48")},
		{Kernel: f, IPv6Network: netip.MustParsePrefix("2001:db8:244::/48")},
	} {
		be, err := Kind.New(t.Context(), env, opts)
		if !errors.Is(err, ErrIPv6) || be != nil {
			t.Errorf("IPv6 network %v: backend %v, error %v", env.IPv6Network, be, err)
		}
	}
	if want := "the udp backend is IPv4-only, as flannel's: use vxlan or host-gw for IPv6, or set EnableIPv6 false"; ErrIPv6.Error() != want {
		t.Errorf("message %q", ErrIPv6)
	}
	if got := f.Writes(); got != "" {
		t.Errorf("wrote:\n%s", got)
	}
}

// TestParseDatapath: Datapath defaults to auto, takes auto, bpf and tun in
// any case, and refuses anything else naming the key and the choices.
func TestParseDatapath(t *testing.T) {
	for raw, want := range map[string]string{
		`{"Type":"udp"}`:                   DatapathAuto,
		`{"Type":"udp","Datapath":""}`:     DatapathAuto,
		`{"Type":"udp","Datapath":"BPF"}`:  DatapathBPF,
		`{"Type":"udp","Datapath":"tun"}`:  DatapathTUN,
		`{"Type":"udp","Datapath":"auto"}`: DatapathAuto,
	} {
		o, err := Parse([]byte(raw))
		if err != nil || o.(Options).Datapath != want {
			t.Errorf("%s: %+v, %v; want %s", raw, o, err, want)
		}
	}
	_, err := Parse([]byte(`{"Type":"udp","Datapath":"xdp"}`))
	if err == nil || !strings.Contains(err.Error(), "Backend.Datapath") || !strings.Contains(err.Error(), `unknown data path "xdp"; use auto`) {
		t.Errorf("Datapath xdp: %v", err)
	}
}
