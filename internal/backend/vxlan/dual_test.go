package vxlan

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

var (
	network4 = netip.MustParsePrefix("10.244.0.0/16")
	network6 = netip.MustParsePrefix("2001:db8:244::/48")
)

// dualFake is a fake kernel with eth0 (MTU 1500) holding 192.0.2.1/24 and
// 2001:db8:0:1::1/64, and the underlay of both families over it.
func dualFake(t *testing.T) (*kerneltest.Fake, kernel.Underlay) {
	t.Helper()
	f := kerneltest.New()
	u, err := f.AddUnderlay("192.0.2.1/24", "2001:db8:0:1::1/64")
	if err != nil {
		t.Fatal(err)
	}
	return f, u
}

// dualPeer is a vxlan lease of both families (v4 "" for IPv6-only, with
// PublicIP 0.0.0.0 as flannel writes it).
func dualPeer(v4, v6, ip, ip6, mac, mac6 string) lease.Lease {
	l := lease.Lease{IPv6Subnet: netip.MustParsePrefix(v6), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip),
		PublicIPv6: netip.MustParseAddr(ip6), BackendType: Type}}
	if v4 != "" {
		l.Subnet = netip.MustParsePrefix(v4)
	}
	if mac != "" {
		l.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
	}
	if mac6 != "" {
		l.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac6 + `"}`)
	}
	return l
}

// TestApplyDualOnFake: both devices over their underlay addresses, flannel-
// v6.1 holding the own IPv6 subnet's network address /128 with MTU 1430
// (the kernel's IPv6 headroom), each peer's neighbour, FDB entry and onlink
// route per family, DirectRouting per family; flannel's lease attributes.
func TestApplyDualOnFake(t *testing.T) {
	f, u := dualFake(t)
	prev := lease.Attrs{BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:01:01"}`),
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:06:01"}`)}
	b, err := New(backend.Env{Kernel: f, Underlay: u, Network: network4, IPv6Network: network6, Previous: prev, Log: quiet},
		Options{Common: backend.Common{Port: 8472}, VNI: 1, DirectRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	own := dualPeer("10.244.1.0/24", "2001:db8:244:1::/64", "192.0.2.1", "2001:db8:0:1::1", "", "")
	st := backend.NodeState{Network: network4, IPv6Network: network6, Own: own, Peers: []lease.Lease{own,
		// on-link in IPv4 and IPv6: direct routes
		dualPeer("10.244.2.0/24", "2001:db8:244:2::/64", "192.0.2.2", "2001:db8:0:1::2", "02:00:00:00:01:02", "02:00:00:00:06:02"),
		// routed: vxlan in both families
		dualPeer("10.244.3.0/24", "2001:db8:244:3::/64", "198.51.100.3", "2001:db8:0:3::3", "02:00:00:00:01:03", "02:00:00:00:06:03"),
		// an IPv6 VTEP MAC that is not unicast: skipped in IPv6 only
		dualPeer("10.244.4.0/24", "2001:db8:244:4::/64", "198.51.100.4", "2001:db8:0:3::4", "02:00:00:00:01:04", "01:00:5e:00:00:01"),
	}}
	d := b.Plan(st)
	if len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], "2001:db8:244:4::/64") || !strings.Contains(d.Skipped[0], "BackendV6Data") {
		t.Errorf("skipped %q", d.Skipped)
	}
	wantScope := kernel.Scope{Networks: []netip.Prefix{network4, network6}, Own: []netip.Prefix{own.Subnet, own.IPv6Subnet},
		RouteDevs: []string{"flannel.1", "flannel-v6.1", "eth0"}, NeighDevs: []string{"flannel.1", "flannel-v6.1"}}
	if !equalScope(d.Scope, wantScope) {
		t.Errorf("scope %+v, want %+v", d.Scope, wantScope)
	}
	if _, err := b.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	transcript(t, "first apply", f.Writes(), `ip link add flannel.1 address 02:00:00:00:01:01 mtu 1450 type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning
ip addr replace 10.244.1.0/32 dev flannel.1
ip link set flannel.1 up
ip link add flannel-v6.1 address 02:00:00:00:06:01 mtu 1430 type vxlan id 1 local 2001:db8:0:1::1 dev eth0 dstport 8472 nolearning
ip addr replace 2001:db8:244:1::/128 dev flannel-v6.1
ip link set flannel-v6.1 up
bridge fdb replace 02:00:00:00:01:03 dev flannel.1 dst 198.51.100.3 self permanent
bridge fdb replace 02:00:00:00:01:04 dev flannel.1 dst 198.51.100.4 self permanent
bridge fdb replace 02:00:00:00:06:03 dev flannel-v6.1 dst 2001:db8:0:3::3 self permanent
ip neigh replace 10.244.3.0 lladdr 02:00:00:00:01:03 dev flannel.1 nud permanent
ip neigh replace 10.244.4.0 lladdr 02:00:00:00:01:04 dev flannel.1 nud permanent
ip neigh replace 2001:db8:244:3:: lladdr 02:00:00:00:06:03 dev flannel-v6.1 nud permanent
ip route replace 10.244.2.0/24 via 192.0.2.2 dev eth0
ip route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink
ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink
ip route replace 2001:db8:244:2::/64 via 2001:db8:0:1::2 dev eth0
ip route replace 2001:db8:244:3::/64 via 2001:db8:244:3:: dev flannel-v6.1 onlink
`)
	if _, err := b.Apply(context.Background(), b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	transcript(t, "second apply", f.Writes(), "")
	if b.MTU() != 1430 {
		t.Errorf("pods' MTU %d, want 1430: the smaller of the devices'", b.MTU())
	}
	got, _ := json.Marshal(b.LeaseAttrs())
	want := `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:01:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:06:01"}}`
	if string(got) != want {
		t.Errorf("lease attributes %s\nwant %s", got, want)
	}
	// The peers leave: their entries of both families go (the last one
	// had IPv4 entries only).
	st.Peers = st.Peers[:2]
	rep, err := b.Apply(context.Background(), b.Plan(st))
	if err != nil || rep.Removed != 9 || rep.Added != 0 {
		t.Errorf("after the peer left: %+v, %v\n%s", rep, err, f.Writes())
	}
}

func equalScope(a, b kernel.Scope) bool {
	return strings.Join(strs(a.Networks), ",") == strings.Join(strs(b.Networks), ",") &&
		strings.Join(strs(a.Own), ",") == strings.Join(strs(b.Own), ",") &&
		strings.Join(a.RouteDevs, ",") == strings.Join(b.RouteDevs, ",") && strings.Join(a.NeighDevs, ",") == strings.Join(b.NeighDevs, ",")
}

func strs(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// TestApplyIPv6OnlyOnFake: flannel-v6.1 alone, leases with PublicIP
// 0.0.0.0 as flannel writes them, no BackendData; the IPv4 underlay
// address is not needed.
func TestApplyIPv6OnlyOnFake(t *testing.T) {
	f, u := dualFake(t)
	u.Addr = netip.Addr{}
	b, err := New(backend.Env{Kernel: f, Underlay: u, IPv6Network: network6, Log: quiet},
		Options{Common: backend.Common{Port: 8472}, VNI: 1})
	if err != nil {
		t.Fatal(err)
	}
	own := dualPeer("", "2001:db8:244:1::/64", "0.0.0.0", "2001:db8:0:1::1", "", "")
	st := backend.NodeState{IPv6Network: network6, Own: own, Peers: []lease.Lease{own,
		dualPeer("", "2001:db8:244:2::/64", "0.0.0.0", "2001:db8:0:1::2", "", "02:00:00:00:06:02"),
		dualPeer("", "2001:db8:244:3::/64", "0.0.0.0", "2001:db8:0:3::3", "", "02:00:00:00:06:03"),
	}}
	if _, err := b.Apply(context.Background(), b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	mac := b.fams[0].mac
	transcript(t, "apply", f.Writes(), `ip link add flannel-v6.1 address `+mac+` mtu 1430 type vxlan id 1 local 2001:db8:0:1::1 dev eth0 dstport 8472 nolearning
ip addr replace 2001:db8:244:1::/128 dev flannel-v6.1
ip link set flannel-v6.1 up
bridge fdb replace 02:00:00:00:06:02 dev flannel-v6.1 dst 2001:db8:0:1::2 self permanent
bridge fdb replace 02:00:00:00:06:03 dev flannel-v6.1 dst 2001:db8:0:3::3 self permanent
ip neigh replace 2001:db8:244:2:: lladdr 02:00:00:00:06:02 dev flannel-v6.1 nud permanent
ip neigh replace 2001:db8:244:3:: lladdr 02:00:00:00:06:03 dev flannel-v6.1 nud permanent
ip route replace 2001:db8:244:2::/64 via 2001:db8:244:2:: dev flannel-v6.1 onlink
ip route replace 2001:db8:244:3::/64 via 2001:db8:244:3:: dev flannel-v6.1 onlink
`)
	a := b.LeaseAttrs()
	if a.BackendData != nil || string(a.BackendV6Data) != `{"VNI":1,"VtepMAC":"`+mac+`"}` {
		t.Errorf("lease attributes %+v", a)
	}
	// A peer whose BackendV6Data is not usable is refused where it
	// enters; one without an IPv6 subnet is not judged by IPv6.
	bad := dualPeer("", "2001:db8:244:5::/64", "0.0.0.0", "2001:db8:0:1::5", "", "")
	bad.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"zz"}`)
	if err := b.CheckPeer(bad); err == nil || !strings.Contains(err.Error(), "BackendV6Data: bad VtepMAC") {
		t.Errorf("CheckPeer of a bad BackendV6Data: %v", err)
	}
	if err := b.CheckPeer(peer("10.244.2.0/24", "192.0.2.2", "vxlan", "")); err != nil {
		t.Errorf("CheckPeer of an IPv4-only lease in an IPv6-only cluster: %v", err)
	}
	if b.MTU() != 1430 {
		t.Errorf("MTU %d", b.MTU())
	}
	// IPv6 on, no IPv6 underlay address: refused in one line.
	u.Addr6 = netip.Addr{}
	if _, err := New(backend.Env{Kernel: f, Underlay: u, IPv6Network: network6}, Options{VNI: 1}); err == nil ||
		err.Error() != "vxlan: flannel-v6.1: the underlay eth0 has no IPv6 address; set --public-ipv6 or choose another --iface" {
		t.Errorf("no IPv6 underlay address: %v", err)
	}
}

// TestNewRestoresThePreviousMAC (flannel PR #1829): a device New will
// create gets the VTEP MAC this node published before, per family, if it
// is a unicast MAC; an existing device keeps its own; an unusable one
// gives a random MAC.
func TestNewRestoresThePreviousMAC(t *testing.T) {
	f, u := dualFake(t)
	env := backend.Env{Kernel: f, Underlay: u, Network: network4, IPv6Network: network6, Log: quiet,
		Previous: lease.Attrs{BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:aa:00:00:00:04"}`),
			BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"02:aa:00:00:00:06"}`)}}
	b, err := New(env, Options{VNI: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b.fams[0].mac != "02:aa:00:00:00:04" || b.fams[1].mac != "02:aa:00:00:00:06" {
		t.Errorf("restored MACs %s, %s", b.fams[0].mac, b.fams[1].mac)
	}
	// An existing device keeps its MAC, whatever was published.
	if _, err := f.AddLink(kernel.Link{Name: "flannel-v6.1", Kind: kernel.KindVXLAN, MAC: "02:bb:00:00:00:06",
		VXLAN: kernel.VXLAN{VNI: 1, Local: u.Addr6, Dev: u.LinkIndex, Port: 8472}}); err != nil {
		t.Fatal(err)
	}
	if b, err = New(env, Options{VNI: 1}); err != nil {
		t.Fatal(err)
	}
	if b.fams[0].mac != "02:aa:00:00:00:04" || b.fams[1].mac != "02:bb:00:00:00:06" {
		t.Errorf("with flannel-v6.1 present: MACs %s, %s", b.fams[0].mac, b.fams[1].mac)
	}
	// Unusable published data: a fresh locally administered unicast MAC.
	env.Previous = lease.Attrs{BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`)}
	if b, err = New(env, Options{VNI: 1}); err != nil {
		t.Fatal(err)
	}
	if m := b.fams[0].mac; m == "ff:ff:ff:ff:ff:ff" || m[1] != '2' && m[1] != '6' && m[1] != 'a' && m[1] != 'e' {
		t.Errorf("MAC %s from unusable data", m)
	}
	// Read-only: derived from the addresses, published data ignored.
	env.ReadOnly = true
	if b, err = New(env, Options{VNI: 1}); err != nil {
		t.Fatal(err)
	}
	if b.fams[0].mac != "0e:77:c0:00:02:01" || b.fams[1].mac != MACFor(u.Addr6) || !strings.HasPrefix(b.fams[1].mac, "0e:76:") {
		t.Errorf("derived MACs %s, %s", b.fams[0].mac, b.fams[1].mac)
	}
	if MACFor(netip.MustParseAddr("2001:db8:0:1::1")) == MACFor(netip.MustParseAddr("2001:db8:0:2::1")) {
		t.Error("IPv6 addresses that end alike share a derived MAC")
	}
}
