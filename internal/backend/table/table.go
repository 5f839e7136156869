// Package table is the backend table: the one place that maps a
// net-conf.json Backend.Type to the package that implements it. The agent,
// the lab, `weft store init` and `weft config check` all read it. Adding a
// backend is its package plus one line in kinds.
package table

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/hostgw"
	"github.com/weftnet/weft/internal/backend/udp"
	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/config"
)

// kinds are the backends weft implements, in the order users see them.
var kinds = []backend.Kind{
	vxlan.Kind,
	hostgw.Kind,
	udp.Kind,
	wireguard.Kind,
}

// Recommended is the backend weft suggests and the lab runs by default.
const Recommended = vxlan.Type

// Default is the backend of a net-conf.json without Backend: udp, as in
// flannel.
const Default = udp.Type

// flannelOnly are flannel's backends that weft does not implement (yet);
// named so that the error says so.
var flannelOnly = []string{"ipip", "ipsec", "alloc", "gce", "aws-vpc", "ali-vpc", "tencent-vpc", "extension"}

// Types lists the backend types weft implements.
func Types() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Type
	}
	return out
}

// choices is "vxlan, host-gw, udp", for messages.
func choices() string { return strings.Join(Types(), ", ") }

// Lookup returns the backend of a type (case-insensitive); an unknown type
// is a *config.Error naming Backend.Type that lists the choices.
func Lookup(typ string) (backend.Kind, error) {
	t := strings.ToLower(typ)
	for _, k := range kinds {
		if k.Type == t {
			return k, nil
		}
	}
	switch {
	case typ == "":
		return backend.Kind{}, &config.Error{Key: "Backend.Type", Msg: "missing; use one of " + choices()}
	case slices.Contains(flannelOnly, t):
		return backend.Kind{}, &config.Error{Key: "Backend.Type", Msg: fmt.Sprintf("%q is a flannel backend weft does not implement; use one of %s", typ, choices())}
	}
	return backend.Kind{}, &config.Error{Key: "Backend.Type", Msg: fmt.Sprintf("unknown backend %q; use one of %s", typ, choices())}
}

// Resolve finds cfg's backend and parses its options; a document without
// Backend gets Default, as in flannel.
func Resolve(cfg *config.Config) (backend.Kind, backend.Options, error) {
	typ, raw := cfg.Backend.Type, cfg.Backend.Raw
	if cfg.BackendDefaulted {
		typ, raw = Default, nil
	}
	k, err := Lookup(typ)
	if err != nil {
		return k, nil, err
	}
	opts, err := k.Parse(raw)
	return k, opts, err
}

// Parse parses, defaults and validates a whole net-conf.json: the envelope
// (config.Parse), the backend's options (its own package), and what needs
// both (Check).
func Parse(doc []byte) (*config.Config, backend.Kind, backend.Options, error) {
	cfg, err := config.Parse(doc)
	if err != nil {
		return nil, backend.Kind{}, nil, err
	}
	k, opts, err := Resolve(cfg)
	if err != nil {
		return nil, backend.Kind{}, nil, err
	}
	if err := Check(cfg, k); err != nil {
		return nil, backend.Kind{}, nil, err
	}
	cfg.Backend.Type = k.Type
	if o, ok := opts.(wireguard.Options); ok {
		// Its Path names the devices of the families the network enables.
		opts = o.ForNetwork(cfg.EnableIPv4, cfg.EnableIPv6)
	}
	return cfg, k, opts, nil
}

// MinMTU and MinMTU6 are the smallest Backend.MTU weft takes: the least
// MTU of an IPv4 link (RFC 791) and of an IPv6 link (RFC 8200), which
// applies when the network enables IPv6. flannel takes any value (MTU 10
// makes a network that carries nothing); weft refuses it when the config
// is read, a deliberate difference.
const (
	MinMTU  = 68
	MinMTU6 = 1280
)

// Check validates what depends on both the network and the backend k the
// config resolved to: Backend.MTU against the enabled families (0 derives
// it from the interface and is always valid), udp with IPv6 (udp's New
// refuses it too; here `weft config check` says so), and wireguard's
// ports with IPv6 (two devices, two ports).
func Check(cfg *config.Config, k backend.Kind) error {
	if cfg.EnableIPv6 && k.Type == udp.Type {
		return &config.Error{Key: "EnableIPv6", Msg: udp.ErrIPv6.Error()}
	}
	if cfg.EnableIPv6 && k.Type == wireguard.Type {
		opts, err := k.Parse(cfg.Backend.Raw)
		if err != nil {
			return err
		}
		if err := opts.(wireguard.Options).CheckIPv6(); err != nil {
			return err
		}
	}
	var r struct{ backend.RawCommon }
	if cfg.Backend.Raw != nil {
		if err := config.DecodeBackend(cfg.Backend.Raw, &r); err != nil {
			return err
		}
	}
	if r.MTU == nil || *r.MTU == 0 {
		return nil
	}
	least, why := MinMTU, "the least MTU of an IPv4 link"
	switch {
	case cfg.EnableIPv6 && k.Type == vxlan.Type:
		// flannel-v6.<VNI> gets the MTU less vxlan.Overhead6, and the pods'
		// IPv6 needs 1280 on it.
		least, why = MinMTU6+vxlan.Overhead6, fmt.Sprintf("the least MTU of an IPv6 link (%d) plus what VXLAN over IPv6 adds (%d), and EnableIPv6 is true", MinMTU6, vxlan.Overhead6)
	case cfg.EnableIPv6 && k.Type == wireguard.Type:
		// every wireguard device gets the MTU less wireguard.Overhead, and
		// carries IPv6 (flannel-wg-v6, or flannel-wg in the single-device
		// modes).
		least, why = MinMTU6+wireguard.Overhead, fmt.Sprintf("the least MTU of an IPv6 link (%d) plus what WireGuard adds (%d), and EnableIPv6 is true", MinMTU6, wireguard.Overhead)
	case k.Type == wireguard.Type:
		least, why = MinMTU+wireguard.Overhead, fmt.Sprintf("the least MTU of an IPv4 link (%d) plus what WireGuard adds (%d)", MinMTU, wireguard.Overhead)
	case cfg.EnableIPv6:
		least, why = MinMTU6, "the least MTU of an IPv6 link, and EnableIPv6 is true"
	}
	if *r.MTU < least {
		return &config.Error{Key: "Backend.MTU", Msg: fmt.Sprintf("%d is below %d, %s; use 0 (derive from the interface) or at least %d", *r.MTU, least, why, least)}
	}
	return nil
}

// Document is a net-conf.json for network with a backend of typ and the
// given extra Backend options (e.g. DirectRouting); `weft store init` and
// the lab write it. It is checked with Parse.
func Document(network, typ string, subnetLen int, extra map[string]any) ([]byte, error) {
	be := map[string]any{"Type": typ}
	for k, v := range extra {
		be[k] = v
	}
	m := map[string]any{"Network": network, "Backend": be}
	if subnetLen > 0 {
		m["SubnetLen"] = subnetLen
	}
	doc, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if _, _, _, err := Parse(doc); err != nil {
		return nil, err
	}
	return doc, nil
}
