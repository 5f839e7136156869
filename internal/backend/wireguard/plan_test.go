package wireguard

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// planBackend is a backend for pure tests: no kernel, a fixed key.
func planBackend(t *testing.T, raw string, dual bool) *Backend {
	t.Helper()
	opts, err := Parse(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{cfg: opts.(Options), u: kernel.Underlay{Name: "eth0", Addr: netip.MustParseAddr("192.0.2.1"), MTU: 1500}, priv: key(9), links: map[string]link{}}
	b.pub = PublicKey(b.priv)
	b.fams = []backend.Family{{}}
	if dual {
		b.fams = append(b.fams, backend.Family{Is6: true})
		b.u.Addr6 = netip.MustParseAddr("2001:db8:0:1::1")
	}
	return b
}

func data(k [KeyLen]byte, port int) json.RawMessage {
	d, _ := json.Marshal(Data{PublicKey: keyString(k), Port: uint16(port)})
	return d
}

// peerLease is node n's lease: 10.244.n.0/24, 2001:db8:244:n::/64 when
// dual, at 192.0.2.n and 2001:db8:0:1::n (or v4, v6 when given).
func peerLease(n int, k [KeyLen]byte, dual bool) lease.Lease {
	l := lease.Lease{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", n)),
		Attrs: lease.Attrs{BackendType: Type, PublicIP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", n)), BackendData: data(k, 51820)}}
	if dual {
		l.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("2001:db8:244:%d::/64", n))
		l.Attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:0:1::%d", n))
		l.Attrs.BackendV6Data = data(k, 51821)
	}
	return l
}

func state(b *Backend, dual bool, peers ...lease.Lease) backend.NodeState {
	st := backend.NodeState{Network: netip.MustParsePrefix("10.244.0.0/16"), Own: peerLease(1, b.pub, dual), Peers: peers}
	if dual {
		st.IPv6Network = netip.MustParsePrefix("2001:db8:244::/48")
	}
	return st
}

func endpoints(ps []Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s %v %v", p.Endpoint, p.AllowedIPs, p.Keepalive))
	}
	return out
}

// TestPlanSeparate: flannel-wg for IPv4 and flannel-wg-v6 for IPv6, each
// with the peer's subnet of its family at the peer's address and port of
// that family; the routes of the networks to them.
func TestPlanSeparate(t *testing.T) {
	b := planBackend(t, `{"PersistentKeepaliveInterval":25,"PSK":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}`, true)
	st := state(b, true, peerLease(2, key(2), true))
	d := b.Plan(st)
	if len(d.Devices) != 2 || d.Devices[0].Name != DeviceName || d.Devices[1].Name != DeviceName6 ||
		fmt.Sprint(d.Devices[0].Addrs) != "[10.244.1.0/32]" || fmt.Sprint(d.Devices[1].Addrs) != "[2001:db8:244:1::/128]" ||
		d.Devices[0].MTU != 1420 || d.Devices[0].Kind != KindWireGuard || !d.Devices[0].NoIPv6AddrGen {
		t.Errorf("devices %+v", d.Devices)
	}
	want := []kernel.Route{{Dst: netip.MustParsePrefix("10.244.0.0/16"), Dev: DeviceName}, {Dst: netip.MustParsePrefix("2001:db8:244::/48"), Dev: DeviceName6}}
	if !slices.Equal(d.Entries.Routes, want) || len(d.Skipped) != 0 {
		t.Errorf("routes %v skipped %v", d.Entries.Routes, d.Skipped)
	}
	peers, _ := b.Peers(st)
	if got := endpoints(peers[DeviceName]); !slices.Equal(got, []string{"192.0.2.2:51820 [10.244.2.0/24] 25s"}) {
		t.Errorf("flannel-wg peers %v", got)
	}
	if got := endpoints(peers[DeviceName6]); !slices.Equal(got, []string{"[2001:db8:0:1::2]:51821 [2001:db8:244:2::/64] 25s"}) {
		t.Errorf("flannel-wg-v6 peers %v", got)
	}
	if p := peers[DeviceName][0]; p.PSK != b.cfg.PSK || p.Key != key(2) {
		t.Errorf("peer %+v", p)
	}
	// The lease data: ListenPort for IPv4, ListenPortV6 for IPv6.
	a := b.LeaseAttrs()
	if a.BackendType != Type || string(a.BackendData) != string(data(b.pub, 51820)) || string(a.BackendV6Data) != string(data(b.pub, 51821)) {
		t.Errorf("lease attrs %+v", a)
	}
}

// TestPlanSharedModes: one device with both families' subnets per peer;
// the endpoint's family by Mode (auto: flannel's rule).
func TestPlanSharedModes(t *testing.T) {
	public := peerLease(3, key(3), true)
	public.Attrs.PublicIP = netip.MustParseAddr("203.0.113.3") // not RFC 1918
	private := peerLease(4, key(4), true)
	private.Attrs.PublicIP = netip.MustParseAddr("10.0.0.4")
	v4only := peerLease(5, key(5), false)
	for mode, want := range map[string][]string{
		"auto": { // by key: 3, 4, 5
			"203.0.113.3:51820 [10.244.3.0/24 2001:db8:244:3::/64] 0s",       // public IPv4: IPv4
			"[2001:db8:0:1::4]:51820 [10.244.4.0/24 2001:db8:244:4::/64] 0s", // private IPv4, public IPv6 both sides: IPv6
			"192.0.2.5:51820 [10.244.5.0/24] 0s",                             // no IPv6: IPv4
		},
		"ipv4": {"203.0.113.3:51820 [10.244.3.0/24 2001:db8:244:3::/64] 0s", "10.0.0.4:51820 [10.244.4.0/24 2001:db8:244:4::/64] 0s", "192.0.2.5:51820 [10.244.5.0/24] 0s"},
		"ipv6": {"[2001:db8:0:1::3]:51820 [10.244.3.0/24 2001:db8:244:3::/64] 0s", "[2001:db8:0:1::4]:51820 [10.244.4.0/24 2001:db8:244:4::/64] 0s"},
	} {
		b := planBackend(t, `{"Mode":"`+mode+`"}`, true)
		// Single-device peers publish ListenPort in both data (weft's
		// LeaseAttrs): the IPv6 endpoint uses the IPv6 data's port.
		public.Attrs.BackendV6Data, private.Attrs.BackendV6Data = data(key(3), 51820), data(key(4), 51820)
		st := state(b, true, public, private, v4only)
		d := b.Plan(st)
		if len(d.Devices) != 1 || fmt.Sprint(d.Devices[0].Addrs) != "[10.244.1.0/32 2001:db8:244:1::/128]" || len(d.Entries.Routes) != 2 || d.Entries.Routes[1].Dev != DeviceName {
			t.Errorf("%s: devices %+v routes %v", mode, d.Devices, d.Entries.Routes)
		}
		peers, skipped := b.Peers(st)
		if got := endpoints(peers[DeviceName]); !slices.Equal(got, want) {
			t.Errorf("%s: peers\n%v\nwant\n%v", mode, got, want)
		}
		if mode == "ipv6" && (len(skipped) != 1 || !strings.Contains(skipped[0], "10.244.5.0/24: no IPv6 public address in its lease for Mode ipv6")) {
			t.Errorf("ipv6: skipped %v", skipped)
		}
		if a := b.LeaseAttrs(); string(a.BackendV6Data) != string(data(b.pub, 51820)) {
			t.Errorf("%s: IPv6 data %s, want ListenPort", mode, a.BackendV6Data)
		}
	}
}

// TestPlanPeers: port 0 is this device's own; bad data, a lease without
// a public address, a peer holding this node's key or another's are
// skipped with the reason; other types are not peers; a changed key and a
// departed peer change the set.
func TestPlanPeers(t *testing.T) {
	b := planBackend(t, `{"ListenPort":7000}`, false)
	zero := peerLease(2, key(2), false)
	zero.Attrs.BackendData = data(key(2), 0)
	bad := peerLease(3, key(3), false)
	bad.Attrs.BackendData = json.RawMessage(`{"PublicKey":"short"}`)
	noAddr := peerLease(4, key(4), false)
	noAddr.Attrs.PublicIP = netip.Addr{}
	mine := peerLease(5, b.pub, false)
	twin := peerLease(6, key(2), false)
	vx := peerLease(7, key(7), false)
	vx.Attrs.BackendType = "vxlan"
	st := state(b, false, zero, bad, noAddr, mine, twin, vx)
	peers, skipped := b.Peers(st)
	if got := endpoints(peers[DeviceName]); !slices.Equal(got, []string{"192.0.2.2:7000 [10.244.2.0/24] 0s"}) {
		t.Errorf("peers %v", got)
	}
	wantSkipped := []string{
		"10.244.3.0/24 (192.0.2.3): BackendData: backend data: PublicKey: not valid base64",
		"10.244.4.0/24: no IPv4 public address in its lease",
		"10.244.5.0/24 (192.0.2.5): its public key is this node's own",
		"10.244.6.0/24 (192.0.2.6): public key " + keyString(key(2)) + " is another lease's too",
	}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped %q", skipped)
	}
	for i := range wantSkipped {
		if !strings.HasPrefix(skipped[i], wantSkipped[i]) {
			t.Errorf("skipped[%d] = %q, want %q", i, skipped[i], wantSkipped[i])
		}
	}
	if d := b.Plan(st); !slices.Equal(d.Skipped, skipped) {
		t.Errorf("Plan skipped %v", d.Skipped)
	}
	if err := b.CheckPeer(bad); err == nil || !strings.Contains(err.Error(), "BackendData") {
		t.Errorf("CheckPeer(bad) = %v", err)
	}
	if err := b.CheckPeer(zero); err != nil {
		t.Errorf("CheckPeer(good) = %v", err)
	}
	if err := b.CheckPeer(lease.Lease{Subnet: vx.Subnet, Attrs: lease.Attrs{BackendType: "vxlan"}}); err != nil {
		t.Errorf("CheckPeer(vxlan) = %v", err)
	}

	// Node 2 gets a new key; node 8 comes; then everyone leaves. Diff
	// against the previous set: the old key out, the new in.
	moved := peerLease(2, key(12), false)
	prev := peers[DeviceName]
	now, _ := b.Peers(state(b, false, moved, peerLease(8, key(8), false)))
	c, added, removed := Diff(State{PrivateKey: b.priv, ListenPort: 7000, Peers: now[DeviceName]}, State{PrivateKey: b.priv, ListenPort: 7000, Peers: prev})
	if added != 2 || removed != 1 || len(c.Peers) != 3 || !c.Peers[0].Remove || c.Peers[0].Key != key(2) {
		t.Errorf("key change: %+v (added %d removed %d)", c, added, removed)
	}
	empty, _ := b.Peers(state(b, false))
	if len(empty[DeviceName]) != 0 {
		t.Errorf("no peers: %v", empty)
	}
}

// TestPlanFamilies: an IPv6-only network has flannel-wg-v6 only (Mode
// separate); a node without its subnet of a family has no device for it.
func TestPlanFamilies(t *testing.T) {
	b := planBackend(t, `{}`, true)
	b.fams = []backend.Family{{Is6: true}}
	st := state(b, true, peerLease(2, key(2), true))
	st.Network = netip.Prefix{}
	d := b.Plan(st)
	if len(d.Devices) != 1 || d.Devices[0].Name != DeviceName6 || len(d.Entries.Routes) != 1 || d.Entries.Routes[0].Dev != DeviceName6 {
		t.Errorf("IPv6 only: %+v %v", d.Devices, d.Entries.Routes)
	}
	b = planBackend(t, `{}`, true)
	st = state(b, true)
	st.Own.IPv6Subnet = netip.Prefix{}
	d = b.Plan(st)
	if len(d.Devices) != 1 || d.Devices[0].Name != DeviceName || len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], "has no IPv6 subnet") {
		t.Errorf("own lease without IPv6: %+v %v", d.Devices, d.Skipped)
	}
}

// TestPlanAutoFallback: in Mode auto, flannel's rule picks IPv4 unless
// both nodes' IPv6 addresses are public; weft takes the other family when
// the chosen one lacks an address on this node's underlay or in the
// peer's lease and the other has both (an IPv6-only cluster on a ULA
// underlay, where flannel's choice, IPv4, skips every peer).
func TestPlanAutoFallback(t *testing.T) {
	const ula6, ulaPeer = "fd00:1::1", "fd00:1::2" // ULA: private, as flannel reads it
	for _, tc := range []struct {
		name          string
		own4, own6    string // this node's underlay addresses ("": none)
		peer4, peer6  string // the peer's lease ("": none, "0.0.0.0": unspecified)
		v6only        bool   // IPv6-only cluster: the device carries IPv6 only
		want, skipped string
	}{
		{"IPv6-only cluster on ULA", "", ula6, "", ulaPeer, true, "[fd00:1::2]:51820 [2001:db8:244:2::/64] 0s", ""},
		{"peer publishes 0.0.0.0", "", ula6, "0.0.0.0", ulaPeer, true, "[fd00:1::2]:51820 [2001:db8:244:2::/64] 0s", ""},
		{"this node has no IPv4", "", ula6, "10.0.0.2", ulaPeer, false, "[fd00:1::2]:51820 [10.244.2.0/24 2001:db8:244:2::/64] 0s", ""},
		{"the peer has no IPv4", "10.0.0.1", ula6, "", ulaPeer, false, "[fd00:1::2]:51820 [10.244.2.0/24 2001:db8:244:2::/64] 0s", ""},
		{"both families on both sides: flannel's IPv4", "10.0.0.1", ula6, "10.0.0.2", ulaPeer, false, "10.0.0.2:51820 [10.244.2.0/24 2001:db8:244:2::/64] 0s", ""},
		{"public IPv6 both sides: flannel's IPv6", "", "2001:db8:0:1::1", "", "2001:db8:0:1::2", true, "[2001:db8:0:1::2]:51820 [2001:db8:244:2::/64] 0s", ""},
		{"this node has no IPv6: IPv4 kept", "10.0.0.1", "", "", ulaPeer, false, "", "no IPv4 public address in its lease for Mode auto"},
		{"neither family on both sides", "", ula6, "10.0.0.2", "", false, "10.0.0.2:51820 [10.244.2.0/24] 0s", ""},
	} {
		b := planBackend(t, `{"Mode":"auto"}`, true)
		b.u.Addr, b.u.Addr6 = addrOrZero(tc.own4), addrOrZero(tc.own6)
		if tc.v6only {
			b.fams = []backend.Family{{Is6: true}}
		}
		peer := peerLease(2, key(2), tc.peer6 != "")
		peer.Attrs.PublicIP, peer.Attrs.PublicIPv6 = addrOrZero(tc.peer4), addrOrZero(tc.peer6)
		if tc.v6only {
			peer.Subnet, peer.Attrs.BackendData = netip.Prefix{}, nil
		}
		if peer.Attrs.BackendV6Data != nil {
			peer.Attrs.BackendV6Data = data(key(2), 51820) // single-device data
		}
		st := state(b, true, peer)
		if tc.v6only {
			st.Network, st.Own.Subnet = netip.Prefix{}, netip.Prefix{}
		}
		peers, skipped := b.Peers(st)
		got := endpoints(peers[DeviceName])
		switch {
		case tc.want != "" && !slices.Equal(got, []string{tc.want}):
			t.Errorf("%s: peers %v, want %s (skipped %v)", tc.name, got, tc.want, skipped)
		case tc.skipped != "" && (len(got) != 0 || len(skipped) != 1 || !strings.Contains(skipped[0], tc.skipped)):
			t.Errorf("%s: peers %v skipped %v, want skipped %q", tc.name, got, skipped, tc.skipped)
		case tc.skipped == "" && len(skipped) != 0:
			t.Errorf("%s: skipped %v", tc.name, skipped)
		}
	}
}

// addrOrZero parses s, or is the zero Addr for "".
func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}
