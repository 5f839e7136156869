package udp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/config"
)

// Type is the udp backend's Backend.Type; flannel's default when
// net-conf.json has no Backend.
const Type = "udp"

// Kind is the udp row of the backend table.
var Kind = backend.Kind{Type: Type, Parse: Parse, New: newIPv4}

// ErrIPv6 refuses a network with IPv6: the udp backend carries IPv4
// packets only, as flannel's.
var ErrIPv6 = errors.New("the udp backend is IPv4-only, as flannel's: use vxlan or host-gw for IPv6, or set EnableIPv6 false")

// newIPv4 is Kind.New: newBackend, once the network is known to be IPv4
// only.
func newIPv4(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	if env.IPv6Network.IsValid() {
		return nil, ErrIPv6
	}
	return newBackend(ctx, env, opts)
}

// Options are the resolved udp options.
type Options struct {
	backend.Common
	// Datapath is how packets are carried: DatapathBPF (in the kernel),
	// DatapathTUN (through the agent) or DatapathAuto (the kernel's where
	// the node supports it, else the agent's).
	Datapath string
}

// The data paths of Options.Datapath.
const (
	DatapathAuto = "auto"
	DatapathBPF  = "bpf"
	DatapathTUN  = "tun"
)

// The kernel names of bpf/udp.c's programs: how an agent finds the ones an
// earlier agent attached, and how `weft lab trace` recognizes them.
const (
	EncapProgram = "weft_udp_encap"
	DecapProgram = "weft_udp_decap"
)

// DefaultPort is flannel's udp port.
const DefaultPort = 8285

// Parse reads udp's Backend object: Port (default 8285), MTU and Datapath
// (weft's own; flannel ignores it).
func Parse(raw json.RawMessage) (backend.Options, error) {
	var r struct {
		backend.RawCommon
		Datapath *string
	}
	c, err := backend.DecodeOptions(raw, &r)
	if err != nil {
		return nil, err
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	o := Options{Common: c, Datapath: DatapathAuto}
	if r.Datapath != nil {
		switch d := strings.ToLower(*r.Datapath); d {
		case DatapathAuto, DatapathBPF, DatapathTUN:
			o.Datapath = d
		case "":
		default:
			return nil, &config.Error{Key: "Backend.Datapath", Msg: fmt.Sprintf("unknown data path %q; use auto (the default: bpf where the node supports it, else tun), bpf or tun", *r.Datapath)}
		}
	}
	return o, nil
}

// Type implements backend.Options.
func (o Options) Type() string { return Type }

// Resolved implements backend.Options.
func (o Options) Resolved() map[string]any {
	return map[string]any{"Type": Type, "Port": o.Port, "MTU": o.MTU, "Datapath": o.Datapath}
}

// Path implements backend.Options.
func (o Options) Path(onLink bool) string {
	switch o.Datapath {
	case DatapathBPF:
		return fmt.Sprintf("udp/%d via %s (in the kernel, BPF)", o.Port, DeviceName)
	case DatapathTUN:
		return fmt.Sprintf("udp/%d via %s (userspace)", o.Port, DeviceName)
	}
	return fmt.Sprintf("udp/%d via %s (BPF, or userspace where the node lacks it)", o.Port, DeviceName)
}
