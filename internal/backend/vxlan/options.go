package vxlan

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/config"
)

// Type is the vxlan backend's Backend.Type.
const Type = "vxlan"

// Kind is the vxlan row of the backend table.
var Kind = backend.Kind{Type: Type, Parse: Parse, New: newBackend}

// Options are the resolved vxlan options.
type Options struct {
	backend.Common
	VNI           int
	GBP           bool
	Learning      bool
	DirectRouting bool
}

// Parse reads vxlan's Backend object: VNI (default 1), Port (default 8472,
// the kernel's, as flannel), MTU, GBP, Learning, DirectRouting.
func Parse(raw json.RawMessage) (backend.Options, error) {
	var r struct {
		backend.RawCommon
		VNI           *int
		GBP           *bool
		Learning      *bool
		DirectRouting *bool
	}
	c, err := backend.DecodeOptions(raw, &r)
	if err != nil {
		return nil, err
	}
	o := Options{Common: c, VNI: 1}
	if r.VNI != nil {
		if *r.VNI < 0 || *r.VNI > 1<<24-1 {
			return nil, &config.Error{Key: "Backend.VNI", Msg: fmt.Sprintf("%d is out of range; use 0-16777215", *r.VNI)}
		}
		o.VNI = *r.VNI
	}
	o.GBP = r.GBP != nil && *r.GBP
	o.Learning = r.Learning != nil && *r.Learning
	o.DirectRouting = r.DirectRouting != nil && *r.DirectRouting
	if o.Port == 0 {
		o.Port = 8472
	}
	return o, nil
}

// Type implements backend.Options.
func (o Options) Type() string { return Type }

// Resolved implements backend.Options.
func (o Options) Resolved() map[string]any {
	return map[string]any{"Type": Type, "VNI": o.VNI, "Port": o.Port, "GBP": o.GBP,
		"Learning": o.Learning, "DirectRouting": o.DirectRouting, "MTU": o.MTU}
}

// Path implements backend.Options.
func (o Options) Path(onLink bool) string {
	if o.DirectRouting && onLink {
		return "direct route (same segment)"
	}
	return fmt.Sprintf("vxlan VNI %d udp/%d via %s", o.VNI, o.Port, DeviceName(o.VNI))
}
