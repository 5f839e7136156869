// Package lease defines a node's subnet lease, its flannel-compatible
// encoding, the Store seam and the pure subnet allocator.
package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/config"
)

// Attrs are the attributes a node publishes with its lease. The JSON form is
// flannel's LeaseAttrs, byte for byte.
type Attrs struct {
	PublicIP      netip.Addr      // IPv4 underlay address
	PublicIPv6    netip.Addr      // invalid when absent (JSON null)
	BackendType   string          // "" for flannel's udp leases
	BackendData   json.RawMessage // backend-specific, e.g. {"VNI":1,"VtepMAC":"..."}
	BackendV6Data json.RawMessage
}

// Lease is one node's claim on a subnet.
type Lease struct {
	Subnet     netip.Prefix // IPv4 subnet; invalid in an IPv6-only network
	IPv6Subnet netip.Prefix // invalid unless IPv6 is enabled
	Attrs      Attrs
	// Expiration is when the lease lapses unless renewed; zero for a
	// reservation (a key without TTL), which never lapses.
	Expiration time.Time
	// StoreID is the store's handle of the lease (the etcd lease ID); 0 for
	// a reservation.
	StoreID int64
	// Created orders leases by age, the same on every node: the etcd
	// revision that created the key, or the Node's creation time in
	// Kubernetes mode. Lower is older; equal ones are ordered by key. When
	// two leases overlap, the older one wins (Set).
	Created int64
}

// Reservation reports whether the lease is permanent.
func (l Lease) Reservation() bool { return l.StoreID == 0 }

// Key is the lease's name in the store: "10.244.3.0-24", or for dual stack
// "10.244.3.0-24&fd00:10:244:3::-64".
func (l Lease) Key() string { return Key(l.Subnet, l.IPv6Subnet) }

// SameSubnets reports whether two leases have the same key, without
// building it.
func (l Lease) SameSubnets(o Lease) bool {
	return l.Subnet == o.Subnet && l.IPv6Subnet == o.IPv6Subnet
}

// Overlaps reports whether the two leases share addresses in a family
// that both have a subnet of.
func (l Lease) Overlaps(o Lease) bool {
	for _, f := range Families {
		p, q := *l.SubnetOf(f), *o.SubnetOf(f)
		if p.IsValid() && q.IsValid() && p.Overlaps(q) {
			return true
		}
	}
	return false
}

// Key builds a lease name from its subnets, in flannel's layout.
func Key(v4, v6 netip.Prefix) string {
	s := "0.0.0.0-0"
	if v4.IsValid() {
		s = v4.Addr().String() + "-" + strconv.Itoa(v4.Bits())
	}
	if v6.IsValid() {
		s += "&" + v6.Addr().String() + "-" + strconv.Itoa(v6.Bits())
	}
	return s
}

// ParseKey is the inverse of Key.
func ParseKey(key string) (v4, v6 netip.Prefix, err error) {
	first, second, dual := strings.Cut(key, "&")
	v4, err = parseKeyPrefix(first, true)
	if err != nil {
		return v4, v6, fmt.Errorf("lease key %q: %w", clip(key), err)
	}
	if v4.Bits() == 0 && v4.Addr().IsUnspecified() {
		v4 = netip.Prefix{}
	}
	if dual {
		v6, err = parseKeyPrefix(second, false)
		if err != nil {
			return v4, v6, fmt.Errorf("lease key %q: %w", clip(key), err)
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, fmt.Errorf("lease key %q: no subnet", clip(key))
	}
	return v4, v6, nil
}

func parseKeyPrefix(s string, want4 bool) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%q is not ADDR-LEN", clip(s))
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	if err != nil {
		return p, fmt.Errorf("%q is not ADDR-LEN", clip(s))
	}
	if p.Addr().Is4() != want4 || p.Addr().Zone() != "" {
		return p, fmt.Errorf("%q has the wrong address family", clip(s))
	}
	if p.Masked() != p {
		return p, fmt.Errorf("%q has host bits set", clip(s))
	}
	// Keys flannel's ParseSubnetKey cannot read are refused too, so that a
	// mixed cluster agrees on which leases exist: flannel reads the length
	// into 5 (IPv4) or 7 (IPv6) bits, matches lower-case hex only, and
	// writes an IPv4-mapped or ::/96 subnet's key as IPv4.
	a := p.Addr()
	switch {
	case p.Bits() == a.BitLen():
		return p, fmt.Errorf("%q is a single address, not a subnet", clip(s))
	case strings.ContainsAny(s[:i], "ABCDEF"):
		return p, fmt.Errorf("%q has upper-case hex digits (flannel writes lower case)", clip(s))
	case a.Is6() && (a.Is4In6() || [12]byte(a.AsSlice()) == [12]byte{}):
		return p, fmt.Errorf("%q is in ::ffff:0:0/96 or ::/96, which flannel writes as IPv4", clip(s))
	}
	return p, nil
}

type attrsJSON struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// MarshalJSON writes flannel's form:
// {"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{...}}
func (a Attrs) MarshalJSON() ([]byte, error) {
	j := attrsJSON{PublicIP: "0.0.0.0", BackendType: a.BackendType, BackendData: a.BackendData, BackendV6Data: a.BackendV6Data}
	if a.PublicIP.IsValid() {
		j.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		j.PublicIPv6 = &s
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads flannel's form. Unknown fields are ignored.
func (a *Attrs) UnmarshalJSON(b []byte) error {
	var j attrsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	ip, err := netip.ParseAddr(j.PublicIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("PublicIP %q is not an IPv4 address", clip(j.PublicIP))
	}
	*a = Attrs{PublicIP: ip, BackendType: j.BackendType}
	if j.PublicIPv6 != nil {
		ip6, err := netip.ParseAddr(*j.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() {
			return fmt.Errorf("PublicIPv6 %q is not an IPv6 address", clip(*j.PublicIPv6))
		}
		a.PublicIPv6 = ip6
	}
	if len(j.BackendData) > 0 && !bytes.Equal(bytes.TrimSpace(j.BackendData), []byte("null")) {
		a.BackendData = j.BackendData
	}
	if len(j.BackendV6Data) > 0 && !bytes.Equal(bytes.TrimSpace(j.BackendV6Data), []byte("null")) {
		a.BackendV6Data = j.BackendV6Data
	}
	return nil
}

// ShortKey is a record's key as logs and status pages show it: a forged key
// can be megabytes long, so only its first 64 bytes are shown.
func ShortKey(key string) string { return clip(key) }

// clip shortens untrusted text quoted in an error (a key or a field of a
// value read from the store), so that a forged record cannot fill the
// logs.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// MaxValueSize bounds a lease value read from the store. flannel's values
// are about 150 bytes; anything much larger is not a lease, and is neither
// decoded nor logged.
const MaxValueSize = 4096

// ParseValue decodes a lease value read from the store.
func ParseValue(b []byte) (Attrs, error) {
	var a Attrs
	if len(b) > MaxValueSize {
		return a, fmt.Errorf("decode lease value: %d bytes, more than the %d a lease value may have", len(b), MaxValueSize)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("decode lease value: %w", err)
	}
	return a, nil
}

// ErrNoFreeSubnet is wrapped by the error returned when a network has no
// subnet left to lease.
var ErrNoFreeSubnet = errors.New("out of subnets")

// ErrMisconfigured is wrapped by errors that retrying cannot fix, such as a
// node whose assigned subnet lies outside the network config.
var ErrMisconfigured = errors.New("misconfigured")

// ErrNoConfig is returned by Store.Config when no network config is stored.
var ErrNoConfig = errors.New("no network config")

// Request describes the lease a node asks for.
type Request struct {
	Attrs Attrs
	// Prefer lists subnets to try first, in order (e.g. the one in the node's
	// old subnet.env). A lease already held by this node's PublicIP always
	// wins over these.
	Prefer []netip.Prefix
	TTL    time.Duration
	// Reclaim says that Prefer[0] is this node's subnet and that someone
	// else changed or took its record: the store writes it back with Attrs
	// whatever it holds now, with a TTL unless Reservation. If the record
	// is gone and another lease overlaps it now, the store leases anew, as
	// without Reclaim.
	Reclaim bool
	// Reservation (with Reclaim): this node's lease was a reservation and
	// is written back as one. Whether the record holds a TTL now says
	// nothing: whoever changed it chose that.
	Reservation bool
}

// Reclaimed is the lease a Reclaim request writes back: req.Attrs on the
// first IPv4 and first IPv6 subnet of req.Prefer (every Store's reclaim
// starts from it).
func (req Request) Reclaimed() (Lease, error) {
	l := Lease{Attrs: req.Attrs}
	for _, p := range req.Prefer {
		switch {
		case p.Addr().Is4() && !l.Subnet.IsValid():
			l.Subnet = p.Masked()
		case p.Addr().Is6() && !l.IPv6Subnet.IsValid():
			l.IPv6Subnet = p.Masked()
		}
	}
	if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return Lease{}, errors.New("reclaim a lease: the request names no subnet (Prefer is empty)")
	}
	return l, nil
}

// Relist causes: why a Store's Watch sent a Reset.
const (
	CauseStart      = "start"       // the first list
	CauseWatchError = "watch-error" // the watch broke and could not resume
	CauseCompacted  = "compacted"   // the store no longer has the history to resume from
)

// Event is one step of a Store's Watch.
type Event struct {
	// Reset: Leases (and Invalid) are the whole set; everything known
	// before is replaced. Cause says why the store listed.
	Reset   bool
	Cause   string
	Leases  []Record
	Invalid []Record
	// Otherwise one record changed: Record.Lease is its new value, or
	// Deleted is set.
	Record  Record
	Deleted bool
}

// Record is one lease as a store holds it: its key in the store (etcd: the
// key under subnets/, "10.244.3.0-24"; Kubernetes: "node/NAME"), and the
// lease, or the reason it does not decode.
type Record struct {
	Key   string
	Lease Lease
	Err   error // the record does not decode; Lease is zero
}

// Store is where leases live: etcd, or (in Kubernetes mode) Node objects.
// Methods are safe for concurrent use.
type Store interface {
	// Config returns the raw network config document, or ErrNoConfig.
	Config(ctx context.Context) ([]byte, error)
	// Acquire returns this node's lease: the one already held by its
	// PublicIP (refreshed with req.Attrs and req.TTL), else a new one,
	// created only if no other node holds the subnet.
	Acquire(ctx context.Context, req Request) (Lease, error)
	// Renew extends a lease by its TTL. Renewing a reservation is a no-op.
	Renew(ctx context.Context, l Lease) (Lease, error)
	// List returns all current leases, reservations included.
	List(ctx context.Context) ([]Lease, error)
	// Watch sends the lease set to sink until ctx is done: first a Reset
	// holding every record, then each change in the store's order. After an
	// interruption it resumes where it stopped when the store still has the
	// history, and otherwise sends a new Reset whose Cause says why. sink
	// is called from one goroutine, and should return quickly.
	Watch(ctx context.Context, sink func(Event)) error
}

// SubnetChooser is a Store whose Acquire chooses the subnets it leases
// (etcd, the memory store), so that a node can lease other ones: one whose
// lease overlaps an older lease gives it up and leases again. A Store that
// is handed a node's subnets (Kubernetes: the Node's podCIDRs, assigned by
// the controller manager) is not one; its node keeps them.
type SubnetChooser interface {
	Store
	// ChoosesSubnets marks the Store; it does nothing.
	ChoosesSubnets()
}

// Family selects one address family's fields of a lease, so that code
// which does the same for IPv4 and IPv6 is written once, as a loop over
// Families.
type Family int

// The address families of a lease, in flannel's order.
const (
	IPv4 Family = iota
	IPv6
)

// Families are both families, IPv4 first.
var Families = [...]Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Has reports whether a is an address of the family (an IPv4-mapped IPv6
// address is neither).
func (f Family) Has(a netip.Addr) bool {
	if f == IPv6 {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

// Of returns the family's part of a config, and whether it is enabled.
func (f Family) Of(cfg *config.Config) (config.Family, bool) {
	if f == IPv6 {
		return cfg.IPv6, cfg.EnableIPv6
	}
	return cfg.IPv4, cfg.EnableIPv4
}

// SubnetOf is the lease's subnet of family f: Subnet or IPv6Subnet.
func (l *Lease) SubnetOf(f Family) *netip.Prefix {
	if f == IPv6 {
		return &l.IPv6Subnet
	}
	return &l.Subnet
}

// PublicIPOf is the public address of family f: PublicIP or PublicIPv6.
func (a *Attrs) PublicIPOf(f Family) *netip.Addr {
	if f == IPv6 {
		return &a.PublicIPv6
	}
	return &a.PublicIP
}

// BackendDataOf is the backend data of family f: BackendData or
// BackendV6Data.
func (a *Attrs) BackendDataOf(f Family) *json.RawMessage {
	if f == IPv6 {
		return &a.BackendV6Data
	}
	return &a.BackendData
}
