package hostgw

import (
	"encoding/json"

	"github.com/weftnet/weft/internal/backend"
)

// Type is the host-gw backend's Backend.Type.
const Type = "host-gw"

// Kind is the host-gw row of the backend table.
var Kind = backend.Kind{Type: Type, Parse: Parse, New: newBackend}

// Options are host-gw's options: none of its own. MTU and Port are
// validated as for every backend and otherwise unused (no encapsulation).
type Options struct{}

// Parse reads host-gw's Backend object.
func Parse(raw json.RawMessage) (backend.Options, error) {
	var r struct{ backend.RawCommon }
	if _, err := backend.DecodeOptions(raw, &r); err != nil {
		return nil, err
	}
	return Options{}, nil
}

// Type implements backend.Options.
func (Options) Type() string { return Type }

// Resolved implements backend.Options.
func (Options) Resolved() map[string]any { return map[string]any{"Type": Type} }

// Path implements backend.Options.
func (Options) Path(onLink bool) string { return "direct route (host-gw)" }
