// Package config parses, defaults and validates the cluster network
// configuration (flannel's net-conf.json schema) into resolved values. The
// Backend object is kept as written: each backend's own package parses its
// options, and internal/backend/table puts the two together.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// Family is the resolved address plan of one IP family.
type Family struct {
	Network   netip.Prefix // the cluster network, host bits masked
	SubnetLen int          // prefix length of each node's subnet
	SubnetMin netip.Addr   // first subnet that may be leased
	SubnetMax netip.Addr   // last subnet that may be leased
}

// Backend is the Backend object of the document: its type, and the object
// itself for the backend's own package to parse (internal/backend/table).
type Backend struct {
	// Type is Backend.Type in lower case, as flannel picks backends; ""
	// when the object has none (the backend table says what to use).
	Type string
	// Raw is the Backend object as written; nil when the document has none.
	Raw json.RawMessage
}

// Config is a fully resolved network configuration.
type Config struct {
	EnableIPv4     bool
	EnableIPv6     bool
	IPv4           Family // valid only when EnableIPv4
	IPv6           Family // valid only when EnableIPv6
	EnableNFTables bool
	Backend        Backend
	// BackendDefaulted is true when the document had no Backend: the
	// backend table applies flannel's default.
	BackendDefaulted bool
	// BGP is the BGP object as written (nil when the document has none):
	// package bgp parses it (bgp.Parse), as a backend parses Backend.
	// flanneld ignores the key.
	BGP json.RawMessage
	// UnknownKeys lists top-level keys weft does not know (ignored).
	UnknownKeys []string
}

// Error is a validation error naming the offending key.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("net-conf.json: %s: %s", e.Key, e.Msg) }

func errorf(key, format string, args ...any) error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// raw mirrors the JSON document. encoding/json matches keys case-insensitively,
// as flannel does.
type raw struct {
	Network        *string
	IPv6Network    *string
	EnableIPv4     *bool
	EnableIPv6     *bool
	SubnetLen      *int
	SubnetMin      *string
	SubnetMax      *string
	IPv6SubnetLen  *int
	IPv6SubnetMin  *string
	IPv6SubnetMax  *string
	EnableNFTables *bool
	Backend        json.RawMessage
	BGP            json.RawMessage
}

var knownKeys = map[string]bool{
	"network": true, "ipv6network": true, "enableipv4": true, "enableipv6": true,
	"subnetlen": true, "subnetmin": true, "subnetmax": true, "ipv6subnetlen": true,
	"ipv6subnetmin": true, "ipv6subnetmax": true, "enablenftables": true, "backend": true,
	"bgp": true,
}

// Parse parses, defaults and validates a net-conf.json document.
func Parse(data []byte) (*Config, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, &Error{Key: "(document)", Msg: "not a JSON object: " + jsonMsg(err)}
	}
	var r raw
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, typeError(err, "")
	}
	c := &Config{EnableIPv4: true}
	for k := range top {
		if !knownKeys[strings.ToLower(k)] {
			c.UnknownKeys = append(c.UnknownKeys, k)
		}
	}
	sort.Strings(c.UnknownKeys)
	if r.EnableIPv4 != nil {
		c.EnableIPv4 = *r.EnableIPv4
	}
	if r.EnableIPv6 != nil {
		c.EnableIPv6 = *r.EnableIPv6
	}
	if r.EnableNFTables != nil {
		c.EnableNFTables = *r.EnableNFTables
	}
	if len(r.BGP) > 0 && !bytes.Equal(bytes.TrimSpace(r.BGP), []byte("null")) {
		c.BGP = r.BGP
	}
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return nil, errorf("EnableIPv4", "both EnableIPv4 and EnableIPv6 are false; enable at least one family")
	}
	if err := flannelSyntax(top); err != nil {
		return nil, err
	}
	var err error
	if c.EnableIPv4 {
		c.IPv4, err = resolveFamily(familySpec{
			bits: 32, maxLen: 30, defaultLen: 24, defaultUpTo: 22,
			keyNet: "Network", keyLen: "SubnetLen", keyMin: "SubnetMin", keyMax: "SubnetMax",
		}, r.Network, r.SubnetLen, r.SubnetMin, r.SubnetMax)
		if err != nil {
			return nil, err
		}
	}
	if c.EnableIPv6 {
		c.IPv6, err = resolveFamily(familySpec{
			bits: 128, maxLen: 126, defaultLen: 64, defaultUpTo: 62,
			keyNet: "IPv6Network", keyLen: "IPv6SubnetLen", keyMin: "IPv6SubnetMin", keyMax: "IPv6SubnetMax",
		}, r.IPv6Network, r.IPv6SubnetLen, r.IPv6SubnetMin, r.IPv6SubnetMax)
		if err != nil {
			return nil, err
		}
	}
	c.Backend, c.BackendDefaulted, err = parseBackend(r.Backend)
	if err != nil {
		return nil, err
	}
	return c, nil
}

type familySpec struct {
	bits, maxLen, defaultLen, defaultUpTo int
	keyNet, keyLen, keyMin, keyMax        string
}

// compatIPv6 is ::/96, the IPv4-compatible IPv6 addresses.
var compatIPv6 = netip.MustParsePrefix("::/96")

func resolveFamily(s familySpec, network *string, subnetLen *int, smin, smax *string) (Family, error) {
	var f Family
	if network == nil || *network == "" {
		return f, errorf(s.keyNet, "missing; set the cluster network, e.g. %q", example(s.bits))
	}
	p, err := parseCIDR(*network)
	if err != nil {
		return f, errorf(s.keyNet, "%q is not a CIDR (e.g. %q)", *network, example(s.bits))
	}
	if p.Bits() == 0 && p.Addr().IsUnspecified() {
		// flannel reads 0.0.0.0/0 (and ::/0) as "not set"
		return f, errorf(s.keyNet, "%q is the whole address space; set the cluster network, e.g. %q", *network, example(s.bits))
	}
	if p.Addr().BitLen() != s.bits || (s.bits == 128 && p.Addr().Is4In6()) {
		return f, errorf(s.keyNet, "%q is not an IPv%d network", *network, map[int]int{32: 4, 128: 6}[s.bits])
	}
	f.Network = p.Masked()
	if s.bits == 128 && f.Network.Overlaps(compatIPv6) {
		// flannel writes the lease key of a subnet in ::/96 as IPv4, a key
		// it cannot read back (a deliberate difference: flannel accepts it).
		return f, errorf(s.keyNet, "%q overlaps ::/96, whose lease keys flannel writes as IPv4; use a network such as %q", *network, example(s.bits))
	}
	plen := f.Network.Bits()
	if subnetLen != nil && *subnetLen > 0 {
		f.SubnetLen = *subnetLen
		if f.SubnetLen > s.maxLen {
			return f, errorf(s.keyLen, "%d is longer than /%d; use a value between %d and %d", f.SubnetLen, s.maxLen, min(plen+2, s.maxLen), s.maxLen)
		}
		if f.SubnetLen < plen+2 {
			return f, errorf(s.keyLen, "%d leaves room for fewer than four subnets in %s; use a value between %d and %d", f.SubnetLen, f.Network, plen+2, s.maxLen)
		}
	} else if subnetLen != nil && *subnetLen < 0 {
		return f, errorf(s.keyLen, "%d is negative; use a value between %d and %d", *subnetLen, plen+2, s.maxLen)
	} else {
		if plen <= s.defaultUpTo {
			f.SubnetLen = s.defaultLen
		} else {
			f.SubnetLen = plen + 2
		}
		if f.SubnetLen > s.maxLen {
			return f, errorf(s.keyNet, "%s is too small: it must hold at least four subnets of at most /%d", f.Network, s.maxLen)
		}
	}
	f.SubnetMin = NthSubnet(f.Network.Addr(), f.SubnetLen, 1)
	f.SubnetMax = lastSubnet(f.Network, f.SubnetLen)
	for _, b := range []struct {
		key string
		val *string
		dst *netip.Addr
	}{{s.keyMin, smin, &f.SubnetMin}, {s.keyMax, smax, &f.SubnetMax}} {
		if b.val == nil || *b.val == "" {
			continue
		}
		a, err := netip.ParseAddr(*b.val)
		if err != nil {
			return f, errorf(b.key, "%q is not an IP address", *b.val)
		}
		if a.IsUnspecified() {
			continue // flannel reads 0.0.0.0 and :: as "not set"
		}
		if !f.Network.Contains(a) {
			return f, errorf(b.key, "%s is outside %s", a, f.Network)
		}
		if netip.PrefixFrom(a, f.SubnetLen).Masked().Addr() != a {
			return f, errorf(b.key, "%s is not aligned to /%d (SubnetLen); use %s", a, f.SubnetLen, netip.PrefixFrom(a, f.SubnetLen).Masked().Addr())
		}
		*b.dst = a
	}
	return f, nil
}

// flannelSyntax checks every address key that is present, whatever its
// family's switch says, as flannel's types do when the document is decoded:
// the raw value with its quotes trimmed must parse, and the IPv4 keys must
// hold IPv4. (A present "" or null fails there too.)
func flannelSyntax(top map[string]json.RawMessage) error {
	for k, raw := range top {
		v := string(bytes.Trim(raw, `"`))
		var ok bool
		what := "an IP address"
		switch strings.ToLower(k) {
		case "network":
			_, n, err := net.ParseCIDR(v)
			ok, what = err == nil && n.IP.To4() != nil, "an IPv4 CIDR"
		case "subnetmin", "subnetmax":
			ip := net.ParseIP(v)
			ok, what = ip != nil && ip.To4() != nil, "an IPv4 address"
		case "ipv6network":
			_, _, err := net.ParseCIDR(v)
			ok, what = err == nil, "a CIDR"
		case "ipv6subnetmin", "ipv6subnetmax":
			ok = string(bytes.TrimSpace(raw)) == "null" || net.ParseIP(v) != nil
		default:
			continue
		}
		if !ok {
			return errorf(canonicalKey(k), "%s is not %s", raw, what)
		}
	}
	return nil
}

// canonicalKey spells a known key as the schema does.
func canonicalKey(k string) string {
	for _, c := range []string{"Network", "SubnetMin", "SubnetMax", "IPv6Network", "IPv6SubnetMin", "IPv6SubnetMax"} {
		if strings.EqualFold(c, k) {
			return c
		}
	}
	return k
}

// parseCIDR parses a CIDR as flannel does (net.ParseCIDR, which for
// instance takes "/08" for "/8"), and returns it masked.
func parseCIDR(s string) (netip.Prefix, error) {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), nil
}

// NthSubnet returns the network address of subnet n (of length subnetLen)
// counted from base. It wraps within the address family.
func NthSubnet(base netip.Addr, subnetLen int, n uint64) netip.Addr {
	b := base.AsSlice()
	v := new(big.Int).SetBytes(b)
	off := new(big.Int).Lsh(new(big.Int).SetUint64(n), uint(len(b)*8-subnetLen))
	v.Add(v, off)
	out := make([]byte, len(b))
	vb := v.Bytes()
	if len(vb) > len(out) {
		vb = vb[len(vb)-len(out):]
	}
	copy(out[len(out)-len(vb):], vb)
	a, _ := netip.AddrFromSlice(out)
	return a
}

// lastSubnet is the last subnet of length subnetLen in network: its last
// address with the host bits of subnetLen cleared (flannel's
// Network.Next() less one subnet), however many subnets the network holds.
func lastSubnet(network netip.Prefix, subnetLen int) netip.Addr {
	b := network.Masked().Addr().AsSlice()
	for i := network.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(last, subnetLen).Masked().Addr()
}

// MaxIndex is where SubnetIndex saturates: one less than the largest
// uint64, so that a count of subnets (the index of the last plus one) fits.
const MaxIndex = math.MaxUint64 - 1

// SubnetIndex is the inverse of NthSubnet: how many subnets of subnetLen lie
// between base and a (a at or after base), at most MaxIndex: an IPv6
// network may hold more than 2^64 subnets (a /48 cut into /126s).
func SubnetIndex(base, a netip.Addr, subnetLen int) uint64 {
	d := new(big.Int).Sub(new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(base.AsSlice()))
	d.Rsh(d, uint(base.BitLen()-subnetLen))
	if !d.IsUint64() || d.Uint64() > MaxIndex {
		return MaxIndex
	}
	return d.Uint64()
}

func parseBackend(data json.RawMessage) (Backend, bool, error) {
	if len(bytes.TrimSpace(data)) == 0 || string(bytes.TrimSpace(data)) == "null" {
		return Backend{}, true, nil
	}
	var r struct{ Type *string }
	if err := DecodeBackend(data, &r); err != nil {
		return Backend{}, false, err
	}
	b := Backend{Raw: data}
	if r.Type != nil {
		b.Type = strings.ToLower(*r.Type)
	}
	return b, false, nil
}

// DecodeBackend decodes the Backend object into v (a struct of pointer
// fields, matched case-insensitively as flannel does); a value of the wrong
// type is an *Error naming "Backend.<Field>".
func DecodeBackend(data json.RawMessage, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return typeError(err, "Backend.")
	}
	return nil
}

func example(bits int) string {
	if bits == 32 {
		return "10.244.0.0/16"
	}
	return "fd00:10:244::/56"
}

func typeError(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return errorf(prefix+fieldName(te.Field), "has the wrong type: %s where %s is expected", te.Value, te.Type)
	}
	return &Error{Key: "(document)", Msg: jsonMsg(err)}
}

func fieldName(f string) string {
	if i := strings.LastIndex(f, "."); i >= 0 {
		return f[i+1:]
	}
	return f
}

func jsonMsg(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

// MarshalResolved renders the config with every default filled in, in the
// net-conf.json schema; backend is the Backend object the backend's package
// resolved (its Type included).
func (c *Config) MarshalResolved(backend map[string]any) ([]byte, error) {
	m := map[string]any{
		"EnableIPv4":     c.EnableIPv4,
		"EnableIPv6":     c.EnableIPv6,
		"EnableNFTables": c.EnableNFTables,
	}
	if c.EnableIPv4 {
		m["Network"] = c.IPv4.Network.String()
		m["SubnetLen"] = c.IPv4.SubnetLen
		m["SubnetMin"] = c.IPv4.SubnetMin.String()
		m["SubnetMax"] = c.IPv4.SubnetMax.String()
	}
	if c.EnableIPv6 {
		m["IPv6Network"] = c.IPv6.Network.String()
		m["IPv6SubnetLen"] = c.IPv6.SubnetLen
		m["IPv6SubnetMin"] = c.IPv6.SubnetMin.String()
		m["IPv6SubnetMax"] = c.IPv6.SubnetMax.String()
	}
	m["Backend"] = backend
	return json.MarshalIndent(m, "", "  ")
}
