package wireguard

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Peer is a WireGuard peer as a device holds it (`wg set DEV peer KEY
// preshared-key FILE endpoint IP:PORT persistent-keepalive N allowed-ips
// A,B`).
type Peer struct {
	Key        [KeyLen]byte
	PSK        [KeyLen]byte // all zero: none
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix // sorted
	Keepalive  time.Duration  // whole seconds; 0: off
}

// String names the peer by its public key, as `wg` prints it.
func (p Peer) String() string { return keyString(p.Key) }

// keyString is a key in standard base64.
func keyString(k [KeyLen]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

// equal reports whether a device holding p needs no change to hold q.
func (p Peer) equal(q Peer) bool {
	return p.Key == q.Key && p.PSK == q.PSK && p.Keepalive == q.Keepalive &&
		unmap(p.Endpoint) == unmap(q.Endpoint) && slices.Equal(p.AllowedIPs, q.AllowedIPs)
}

// keepRoamed returns want (the peers the leases ask for), where a peer the
// device has already keeps the endpoint the device has now, unless the
// lease's endpoint is not the one last written to it (written, by key).
// WireGuard moves a peer's endpoint to the source address of its
// authenticated packets (roaming; wireguard-go's receive.go): behind NAT,
// or with a public IP that is not the packets' source, that is not the
// lease's, and writing the lease's back at every sync would make the two
// flap and send to a dead address until the peer speaks again. So, as
// flannel, the lease's endpoint is written when it changed since it was
// last written, or the peer is new to the device, or nothing was written
// to it yet (a restarted agent writes it once), or the device has none.
func keepRoamed(want, have []Peer, written map[[KeyLen]byte]netip.AddrPort) []Peer {
	haveBy := make(map[[KeyLen]byte]netip.AddrPort, len(have))
	for _, p := range have {
		haveBy[p.Key] = p.Endpoint
	}
	out := slices.Clone(want)
	for i, p := range out {
		now, ok := haveBy[p.Key]
		last, known := written[p.Key]
		if ok && known && now.IsValid() && unmap(last) == unmap(p.Endpoint) {
			out[i].Endpoint = now
		}
	}
	return out
}

// unmap drops an IPv4-mapped IPv6 form (the kernel reports an IPv4
// endpoint of a dual-stack socket so).
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// PeerStatus is what a device reports of a peer beyond its configuration.
type PeerStatus struct {
	LastHandshake    time.Time // zero: never
	RxBytes, TxBytes uint64
}

// State is a device's configuration as read back from it (`wg show DEV`).
type State struct {
	PrivateKey [KeyLen]byte
	ListenPort int
	Peers      []Peer
	Status     map[[KeyLen]byte]PeerStatus
}

// Config is a change to a device (`wg set`): the private key and the
// listen port when not nil, then the peers' changes in order. A peer that
// is not removed is set whole: its allowed IPs replace the ones it had.
type Config struct {
	PrivateKey *[KeyLen]byte
	ListenPort *int
	Peers      []PeerChange
}

// PeerChange is one peer of a Config.
type PeerChange struct {
	Peer
	Remove bool
	// KeepaliveOnly sets only the keepalive of the peer, if the device
	// has it (`update_only`): nothing else is changed, and a peer removed
	// meanwhile is not added back.
	KeepaliveOnly bool
}

// empty reports whether c changes nothing.
func (c Config) empty() bool { return c.PrivateKey == nil && c.ListenPort == nil && len(c.Peers) == 0 }

// Diff is the change that makes a device in state have makes it hold the
// private key, the listen port and exactly the peers want, by public key:
// removals first (a peer whose key changed is removed and its successor
// added in the same change, so its allowed IPs move over at once), then
// the peers that are new or differ. added counts new keys.
func Diff(want State, have State) (c Config, added, removed int) {
	if want.PrivateKey != have.PrivateKey {
		k := want.PrivateKey
		c.PrivateKey = &k
	}
	if want.ListenPort != have.ListenPort {
		p := want.ListenPort
		c.ListenPort = &p
	}
	wantBy := make(map[[KeyLen]byte]Peer, len(want.Peers))
	for _, p := range want.Peers {
		wantBy[p.Key] = p
	}
	haveBy := make(map[[KeyLen]byte]Peer, len(have.Peers))
	for _, p := range have.Peers {
		haveBy[p.Key] = p
		if _, ok := wantBy[p.Key]; !ok {
			c.Peers = append(c.Peers, PeerChange{Peer: Peer{Key: p.Key}, Remove: true})
			removed++
		}
	}
	for _, p := range want.Peers {
		h, ok := haveBy[p.Key]
		if !ok {
			added++
		}
		if !ok || !h.equal(p) {
			c.Peers = append(c.Peers, PeerChange{Peer: p})
		}
	}
	return c, added, removed
}

// UAPI renders c in WireGuard's configuration protocol (the "set"
// operation's body, without "set=1" and the final empty line), as
// wireguard-go's IpcSet reads it:
// https://www.wireguard.com/xplatform/#configuration-protocol.
func (c Config) UAPI() string {
	var b strings.Builder
	line := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	if c.PrivateKey != nil {
		line("private_key", hex.EncodeToString(c.PrivateKey[:]))
	}
	if c.ListenPort != nil {
		line("listen_port", strconv.Itoa(*c.ListenPort))
	}
	for _, p := range c.Peers {
		line("public_key", hex.EncodeToString(p.Key[:]))
		if p.Remove {
			line("remove", "true")
			continue
		}
		if p.KeepaliveOnly {
			line("update_only", "true")
			line("persistent_keepalive_interval", strconv.Itoa(int(p.Keepalive/time.Second)))
			continue
		}
		line("preshared_key", hex.EncodeToString(p.PSK[:]))
		if p.Endpoint.IsValid() {
			line("endpoint", p.Endpoint.String())
		}
		line("persistent_keepalive_interval", strconv.Itoa(int(p.Keepalive/time.Second)))
		line("replace_allowed_ips", "true")
		for _, a := range p.AllowedIPs {
			line("allowed_ip", a.String())
		}
	}
	return b.String()
}

// ParseUAPI reads the answer to the configuration protocol's "get"
// operation (wireguard-go's IpcGet; without the final errno line): the
// device's private key and listen port, then each peer from its
// public_key line on. Unknown keys are ignored, as the protocol asks.
func ParseUAPI(s string) (State, error) {
	st := State{Status: map[[KeyLen]byte]PeerStatus{}}
	var cur *Peer
	var status PeerStatus
	var secs, nsecs int64
	flush := func() {
		if cur == nil {
			return
		}
		if secs != 0 || nsecs != 0 {
			status.LastHandshake = time.Unix(secs, nsecs)
		}
		slices.SortFunc(cur.AllowedIPs, comparePrefix)
		st.Peers = append(st.Peers, *cur)
		st.Status[cur.Key] = status
		cur, status, secs, nsecs = nil, PeerStatus{}, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return st, fmt.Errorf("wireguard UAPI line %d: no key=value", n)
		}
		bad := func(err error) error { return fmt.Errorf("wireguard UAPI line %d: %s: %w", n, k, err) }
		var err error
		switch {
		case k == "private_key" && cur == nil:
			st.PrivateKey, err = hexKey(v)
		case k == "listen_port" && cur == nil:
			st.ListenPort, err = strconv.Atoi(v)
			if err == nil && (st.ListenPort < 0 || st.ListenPort > 65535) {
				err = errors.New("out of range")
			}
		case k == "public_key":
			flush()
			cur = &Peer{}
			cur.Key, err = hexKey(v)
		case cur == nil:
			// device keys weft does not read (fwmark), or errno
		case k == "preshared_key":
			cur.PSK, err = hexKey(v)
		case k == "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(v)
		case k == "persistent_keepalive_interval":
			var s uint64
			s, err = strconv.ParseUint(v, 10, 16)
			cur.Keepalive = time.Duration(s) * time.Second
		case k == "allowed_ip":
			var p netip.Prefix
			if p, err = netip.ParsePrefix(v); err == nil {
				cur.AllowedIPs = append(cur.AllowedIPs, p.Masked())
			}
		case k == "last_handshake_time_sec":
			secs, err = strconv.ParseInt(v, 10, 64)
		case k == "last_handshake_time_nsec":
			nsecs, err = strconv.ParseInt(v, 10, 64)
		case k == "rx_bytes":
			status.RxBytes, err = strconv.ParseUint(v, 10, 64)
		case k == "tx_bytes":
			status.TxBytes, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return st, bad(err)
		}
	}
	flush()
	return st, nil
}

// hexKey decodes a key in hex, as the configuration protocol writes keys.
func hexKey(s string) ([KeyLen]byte, error) {
	var k [KeyLen]byte
	if len(s) != 2*KeyLen {
		return k, fmt.Errorf("a key is %d hex digits, not %d", 2*KeyLen, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, errors.New("not hex")
	}
	return k, nil
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
