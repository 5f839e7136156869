package wireguard

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func key(b byte) [KeyLen]byte {
	var k [KeyLen]byte
	for i := range k {
		k[i] = b
	}
	return k
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// TestDiff: removals first, a changed key is a removal and an addition in
// one change, an unchanged peer is left alone, a changed endpoint or
// allowed IP rewrites the peer whole.
func TestDiff(t *testing.T) {
	a := Peer{Key: key(1), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: pfx("10.244.2.0/24")}
	b := Peer{Key: key(2), Endpoint: netip.MustParseAddrPort("192.0.2.3:51820"), AllowedIPs: pfx("10.244.3.0/24")}
	b2 := b
	b2.Key = key(3) // b's node got a new key
	c := Peer{Key: key(4), Endpoint: netip.MustParseAddrPort("192.0.2.4:51820"), AllowedIPs: pfx("10.244.4.0/24")}
	cMoved := c
	cMoved.Endpoint = netip.MustParseAddrPort("192.0.2.40:51820")
	have := State{PrivateKey: key(9), ListenPort: 51820, Peers: []Peer{a, b, c}}
	want := State{PrivateKey: key(9), ListenPort: 51820, Peers: []Peer{a, b2, cMoved}}
	got, added, removed := Diff(want, have)
	if got.PrivateKey != nil || got.ListenPort != nil || added != 1 || removed != 1 {
		t.Errorf("diff %+v added %d removed %d", got, added, removed)
	}
	wantChanges := []PeerChange{{Peer: Peer{Key: key(2)}, Remove: true}, {Peer: b2}, {Peer: cMoved}}
	if len(got.Peers) != len(wantChanges) {
		t.Fatalf("changes %+v, want %+v", got.Peers, wantChanges)
	}
	for i := range wantChanges {
		if got.Peers[i].Remove != wantChanges[i].Remove || !got.Peers[i].equal(wantChanges[i].Peer) {
			t.Errorf("change %d: %+v, want %+v", i, got.Peers[i], wantChanges[i])
		}
	}
	if c, _, _ := Diff(want, want); !c.empty() {
		t.Errorf("diff of a state with itself: %+v", c)
	}
	// An IPv4 endpoint read back in IPv4-mapped form is the same.
	mapped := a
	mapped.Endpoint = netip.MustParseAddrPort("[::ffff:192.0.2.2]:51820")
	if c, _, _ := Diff(State{Peers: []Peer{a}}, State{Peers: []Peer{mapped}}); !c.empty() {
		t.Errorf("a mapped endpoint differs: %+v", c)
	}
	// A new private key and port are set.
	if c, _, _ := Diff(State{PrivateKey: key(8), ListenPort: 7}, have); c.PrivateKey == nil || *c.PrivateKey != key(8) || c.ListenPort == nil || *c.ListenPort != 7 || len(c.Peers) != 3 {
		t.Errorf("key and port change: %+v", c)
	}
}

// TestUAPIRoundTrip: what Config.UAPI sets reads back (as wireguard-go's
// get prints it) to the same peers.
func TestUAPIRoundTrip(t *testing.T) {
	p := Peer{Key: key(1), PSK: key(7), Endpoint: netip.MustParseAddrPort("[2001:db8::2]:51821"), AllowedIPs: pfx("10.244.2.0/24", "2001:db8:244:2::/64"), Keepalive: 25 * time.Second}
	priv, port := key(9), 51820
	set := Config{PrivateKey: &priv, ListenPort: &port, Peers: []PeerChange{{Peer: p}, {Peer: Peer{Key: key(2)}, Remove: true}}}.UAPI()
	for _, line := range []string{"private_key=0909", "listen_port=51820\n", "endpoint=[2001:db8::2]:51821\n", "persistent_keepalive_interval=25\n", "replace_allowed_ips=true\nallowed_ip=10.244.2.0/24\nallowed_ip=2001:db8:244:2::/64\n", "public_key=0202020202020202020202020202020202020202020202020202020202020202\nremove=true\n"} {
		if !strings.Contains(set, line) {
			t.Errorf("set lacks %q:\n%s", line, set)
		}
	}
	ka := Config{Peers: []PeerChange{{Peer: Peer{Key: key(1), Keepalive: 25 * time.Second}, KeepaliveOnly: true}}}.UAPI()
	if ka != "public_key="+strings.Repeat("01", 32)+"\nupdate_only=true\npersistent_keepalive_interval=25\n" {
		t.Errorf("keepalive only: %q", ka)
	}
	get := "private_key=" + strings.Repeat("09", 32) + "\nlisten_port=51820\nfwmark=0\n" +
		"public_key=" + strings.Repeat("01", 32) + "\npreshared_key=" + strings.Repeat("07", 32) + "\nprotocol_version=1\nendpoint=[2001:db8::2]:51821\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\n" +
		"allowed_ip=2001:db8:244:2::/64\nallowed_ip=10.244.2.0/24\n" +
		"public_key=" + strings.Repeat("02", 32) + "\npreshared_key=" + strings.Repeat("00", 32) + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\npersistent_keepalive_interval=0\n"
	st, err := ParseUAPI(get)
	if err != nil {
		t.Fatal(err)
	}
	if st.PrivateKey != priv || st.ListenPort != 51820 || len(st.Peers) != 2 || !st.Peers[0].equal(p) || st.Peers[1].Key != key(2) || st.Peers[1].Endpoint.IsValid() {
		t.Errorf("read back %+v", st)
	}
	s1, s2 := st.Status[key(1)], st.Status[key(2)]
	if !s1.LastHandshake.Equal(time.Unix(1700000000, 5)) || s1.TxBytes != 10 || s1.RxBytes != 20 || !s2.LastHandshake.IsZero() {
		t.Errorf("status %+v %+v", s1, s2)
	}
	for _, bad := range []string{"private_key=zz", "listen_port=70000", "public_key=01", "novalue", "public_key=" + strings.Repeat("01", 32) + "\nallowed_ip=10.0.0.0/33"} {
		if _, err := ParseUAPI(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// FuzzParseUAPI: no panic; what parses renders (UAPI) and parses again to
// the same peers.
func FuzzParseUAPI(f *testing.F) {
	f.Add("private_key=" + strings.Repeat("09", 32) + "\nlisten_port=51820\npublic_key=" + strings.Repeat("01", 32) + "\nendpoint=192.0.2.1:1\nallowed_ip=10.0.0.0/8\npersistent_keepalive_interval=3\n")
	f.Add("public_key=" + strings.Repeat("ab", 32) + "\nendpoint=[2001:db8::1]:51820\nallowed_ip=::/0\n")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseUAPI(s)
		if err != nil {
			return
		}
		var c Config
		for _, p := range st.Peers {
			c.Peers = append(c.Peers, PeerChange{Peer: p})
		}
		again, err := ParseUAPI(c.UAPI())
		if err != nil {
			t.Fatalf("rendered peers do not parse: %v\n%s", err, c.UAPI())
		}
		if !slices.EqualFunc(st.Peers, again.Peers, Peer.equal) {
			t.Fatalf("round trip changed the peers:\n%+v\n%+v", st.Peers, again.Peers)
		}
	})
}

// TestKeepRoamed: the lease's endpoint is written to a peer when it is new
// to the device, when nothing was written to it yet (an agent restarted),
// when the lease's changed since it was written, or when the device has
// none; not when the device moved it to where the peer's packets come
// from (roaming, NAT) while the lease's stayed.
func TestKeepRoamed(t *testing.T) {
	lease := netip.MustParseAddrPort("203.0.113.2:51820")
	moved := netip.MustParseAddrPort("198.51.100.7:40000") // the peer's packets' source
	before := netip.MustParseAddrPort("203.0.113.9:51820") // the lease's before it changed
	none := netip.AddrPort{}
	for _, tc := range []struct {
		name     string
		onDevice bool
		device   netip.AddrPort
		written  netip.AddrPort
		known    bool
		want     netip.AddrPort
	}{
		{"new peer", false, none, none, false, lease},
		{"new peer, key known from a device recreated", false, none, lease, true, lease},
		{"agent restarted, the device roamed", true, moved, none, false, lease},
		{"agent restarted, the device has the lease's", true, lease, none, false, lease},
		{"roamed, the lease's unchanged", true, moved, lease, true, moved},
		{"roamed, the lease's unchanged (IPv4-mapped)", true, moved, netip.MustParseAddrPort("[::ffff:203.0.113.2]:51820"), true, moved},
		{"not roamed", true, lease, lease, true, lease},
		{"the lease's changed", true, moved, before, true, lease},
		{"the device has none", true, none, lease, true, lease},
	} {
		written := map[[KeyLen]byte]netip.AddrPort{}
		if tc.known {
			written[key(1)] = tc.written
		}
		var have []Peer
		if tc.onDevice {
			have = []Peer{{Key: key(1), Endpoint: tc.device, AllowedIPs: pfx("10.244.2.0/24")}}
		}
		want := []Peer{{Key: key(1), Endpoint: lease, AllowedIPs: pfx("10.244.2.0/24")}}
		got := keepRoamed(want, have, written)
		if len(got) != 1 || got[0].Endpoint != tc.want || got[0].Key != key(1) || len(got[0].AllowedIPs) != 1 {
			t.Errorf("%s: %+v, want endpoint %v", tc.name, got, tc.want)
		}
		if want[0].Endpoint != lease {
			t.Errorf("%s: keepRoamed changed its argument", tc.name)
		}
		// What Diff then writes: the endpoint only where it differs.
		c, _, _ := Diff(State{Peers: got}, State{Peers: have})
		wrote := len(c.Peers) == 1
		if should := !tc.onDevice || tc.device != tc.want; wrote != should {
			t.Errorf("%s: wrote %v (%+v), want %v", tc.name, wrote, c.Peers, should)
		}
	}
}
