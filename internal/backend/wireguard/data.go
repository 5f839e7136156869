// Package wireguard is the wireguard backend: pod traffic between nodes
// encrypted by WireGuard, on the kernel's WireGuard where the node has the
// module and on wireguard-go (userspace, over a TUN device) where it does
// not, with flannel's devices, options and lease data, so that flannel's
// wireguard nodes and weft's share one wire format.
package wireguard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Type is the wireguard backend's Backend.Type.
const Type = "wireguard"

// KeyLen is the length of a WireGuard key (Curve25519 public and private
// keys, and the preshared key), in bytes.
const KeyLen = 32

// Data is the backend data of a wireguard lease, as flannel writes it: the
// node's public key (standard base64, as `wg` prints it) and the UDP port
// it listens on for the family (BackendData: ListenPort; BackendV6Data:
// ListenPortV6 in separate mode, ListenPort otherwise). flannel reads a
// Port of 0 as "the same port as mine" (flannel PR #2200).
type Data struct {
	PublicKey string
	Port      uint16
}

// ParseData reads a lease's backend data of one family: a JSON object with
// a PublicKey that is the base64 of a 32-byte key. It returns the decoded
// key. Unknown keys are ignored, as flannel ignores them.
func ParseData(raw json.RawMessage) (Data, [KeyLen]byte, error) {
	var d Data
	var key [KeyLen]byte
	if len(raw) == 0 || string(raw) == "null" {
		return d, key, errors.New("no backend data (PublicKey, Port)")
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, key, fmt.Errorf("backend data: %w", err)
	}
	k, err := ParseKey(d.PublicKey)
	if err != nil {
		return d, key, fmt.Errorf("backend data: PublicKey: %w", err)
	}
	return d, k, nil
}

// ParseKey decodes a WireGuard key written in standard base64 (44
// characters with padding). The message never repeats the key: a key may
// be a secret (PSK, a private key file).
func ParseKey(s string) ([KeyLen]byte, error) {
	var key [KeyLen]byte
	b, err := base64.StdEncoding.DecodeString(s)
	switch {
	case err != nil:
		return key, errors.New("not valid base64 (generate one with 'wg genkey' or 'wg genpsk')")
	case len(b) != KeyLen:
		return key, fmt.Errorf("%d bytes once decoded; a WireGuard key is %d (generate one with 'wg genkey' or 'wg genpsk')", len(b), KeyLen)
	}
	copy(key[:], b)
	return key, nil
}
