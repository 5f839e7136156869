package wireguard

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/config"
)

// Kind is the wireguard row of the backend table.
var Kind = backend.Kind{Type: Type, Parse: Parse, New: newBackend}

// Overhead is what WireGuard adds to each packet, as flannel counts it
// (the larger IPv6 header): 40 IP + 8 UDP + 4 type + 4 key index + 8
// nonce + 16 authentication tag. The device's MTU is the underlay's (or
// Backend.MTU) less Overhead.
const Overhead = 80

// Default listen ports, flannel's.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
)

// MaxKeepalive is the largest PersistentKeepaliveInterval WireGuard takes
// (a 16-bit number of seconds).
const MaxKeepalive = 65535

// Mode says which devices carry which families, as flannel's Mode.
type Mode string

const (
	// Separate: flannel-wg carries IPv4 and flannel-wg-v6 IPv6, each
	// reaching peers over its own family (flannel's default).
	Separate Mode = "separate"
	// Auto: flannel-wg carries both families; each peer's endpoint family
	// is chosen by flannel's rule (Backend.selectFamily).
	Auto Mode = "auto"
	// IPv4: flannel-wg carries both families and reaches every peer at its
	// IPv4 address.
	IPv4 Mode = "ipv4"
	// IPv6: flannel-wg carries both families and reaches every peer at its
	// IPv6 address.
	IPv6 Mode = "ipv6"
)

// modes are the valid Modes, in the order messages list them.
var modes = []Mode{Separate, Auto, IPv4, IPv6}

// Options are the resolved wireguard options.
type Options struct {
	// MTU is Backend.MTU: the underlay MTU the device's is derived from (0:
	// the underlay interface's).
	MTU          int
	ListenPort   int
	ListenPortV6 int
	// PSK is the preshared key every peer gets, when HasPSK.
	PSK    [KeyLen]byte
	HasPSK bool
	// Keepalive is PersistentKeepaliveInterval (0: off).
	Keepalive time.Duration
	Mode      Mode
	// net are the network's families, when ForNetwork told them (Parse
	// reads only the Backend object).
	net netFamilies
}

// netFamilies are the families a network enables, when known.
type netFamilies struct{ known, ipv4, ipv6 bool }

// ForNetwork returns o for a network that enables IPv4 and IPv6 as
// net-conf.json's EnableIPv4 and EnableIPv6 say: Path then names only the
// devices of those families. Options from Parse alone do not know them.
func (o Options) ForNetwork(ipv4, ipv6 bool) Options {
	o.net = netFamilies{known: true, ipv4: ipv4, ipv6: ipv6}
	return o
}

// Parse reads wireguard's Backend object with flannel's keys and
// defaults: ListenPort (51820), ListenPortV6 (51821), PSK (none), MTU (the
// underlay's), PersistentKeepaliveInterval (0, whole seconds) and Mode
// (separate). Keys are matched case-insensitively and unknown keys are
// ignored, as flannel does. Backend.Port is validated like every
// backend's and otherwise unused (flannel's wireguard reads ListenPort).
func Parse(raw json.RawMessage) (backend.Options, error) {
	var r struct {
		backend.RawCommon
		ListenPort                  *int
		ListenPortV6                *int
		PSK                         *string
		PersistentKeepaliveInterval *int64
		Mode                        *string
	}
	c, err := backend.DecodeOptions(raw, &r)
	if err != nil {
		return nil, err
	}
	o := Options{MTU: c.MTU, ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, Mode: Separate}
	port := func(key string, p *int, dst *int) error {
		if p == nil {
			return nil
		}
		if *p < 1 || *p > 65535 {
			return &config.Error{Key: "Backend." + key, Msg: fmt.Sprintf("%d is not a UDP port; use 1-65535", *p)}
		}
		*dst = *p
		return nil
	}
	if err := port("ListenPort", r.ListenPort, &o.ListenPort); err != nil {
		return nil, err
	}
	if err := port("ListenPortV6", r.ListenPortV6, &o.ListenPortV6); err != nil {
		return nil, err
	}
	if r.PSK != nil && *r.PSK != "" {
		psk, err := ParseKey(*r.PSK)
		if err != nil {
			// ParseKey never repeats the key: the PSK is a secret.
			return nil, &config.Error{Key: "Backend.PSK", Msg: err.Error()}
		}
		o.PSK, o.HasPSK = psk, true
	}
	if k := r.PersistentKeepaliveInterval; k != nil {
		if *k < 0 || *k > MaxKeepalive {
			return nil, &config.Error{Key: "Backend.PersistentKeepaliveInterval", Msg: fmt.Sprintf("%d is out of range; use whole seconds from 0 (off) to %d", *k, MaxKeepalive)}
		}
		o.Keepalive = time.Duration(*k) * time.Second
	}
	if r.Mode != nil && *r.Mode != "" {
		m := Mode(strings.ToLower(*r.Mode))
		if !slices.Contains(modes, m) {
			names := make([]string, len(modes))
			for i, m := range modes {
				names[i] = string(m)
			}
			return nil, &config.Error{Key: "Backend.Mode", Msg: fmt.Sprintf("%q is not a mode; use one of %s", *r.Mode, strings.Join(names, ", "))}
		}
		o.Mode = m
	}
	return o, nil
}

// CheckIPv6 validates what depends on the network enabling IPv6: in Mode
// separate, flannel-wg and flannel-wg-v6 each bind their own port, so
// ListenPort and ListenPortV6 must differ.
func (o Options) CheckIPv6() error {
	if o.Mode == Separate && o.ListenPort == o.ListenPortV6 {
		return &config.Error{Key: "Backend.ListenPortV6", Msg: fmt.Sprintf("%d is ListenPort too; with IPv6 in Mode separate, %s and %s need a port each", o.ListenPortV6, DeviceName, DeviceName6)}
	}
	return nil
}

// Type implements backend.Options.
func (o Options) Type() string { return Type }

// Resolved implements backend.Options. The PSK is never rendered: it says
// "(set)" when there is one.
func (o Options) Resolved() map[string]any {
	psk := ""
	if o.HasPSK {
		psk = "(set)"
	}
	return map[string]any{"Type": Type, "ListenPort": o.ListenPort, "ListenPortV6": o.ListenPortV6,
		"PSK": psk, "MTU": o.MTU, "PersistentKeepaliveInterval": int64(o.Keepalive / time.Second), "Mode": string(o.Mode)}
}

// Path implements backend.Options. In Mode separate it names the device
// of each family the network enables (ForNetwork); not told, both, the
// IPv6 one as "for IPv6".
func (o Options) Path(onLink bool) string {
	if o.Mode != Separate {
		return fmt.Sprintf("wireguard udp/%d via %s (mode %s)", o.ListenPort, DeviceName, o.Mode)
	}
	v4 := fmt.Sprintf("udp/%d via %s", o.ListenPort, DeviceName)
	v6 := fmt.Sprintf("udp/%d via %s", o.ListenPortV6, DeviceName6)
	switch {
	case o.net.known && !o.net.ipv6:
		return "wireguard " + v4
	case o.net.known && !o.net.ipv4:
		return "wireguard " + v6
	}
	return fmt.Sprintf("wireguard %s (%s for IPv6)", v4, v6)
}

// DeviceName and DeviceName6 are the wireguard devices, flannel's names:
// DeviceName carries IPv4 (and IPv6 too in the single-device modes),
// DeviceName6 IPv6 in Mode separate.
const (
	DeviceName  = "flannel-wg"
	DeviceName6 = "flannel-wg-v6"
)
