package vxlan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

// testBackend is New over an empty fake kernel with the IPv4 network
// 10.244.0.0/16 and, when prev is set, the VTEP MAC in prev's BackendData.
func testBackend(t *testing.T, cfg Options, u kernel.Underlay, derived bool, prev string) *Backend {
	t.Helper()
	b, err := New(backend.Env{Kernel: kerneltest.New(), Underlay: u, Network: netip.MustParsePrefix("10.244.0.0/16"),
		ReadOnly: derived, Previous: lease.Attrs{BackendData: []byte(prev)}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func peer(subnet, ip, typ, data string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ, BackendData: []byte(data)}}
}

func TestPlan(t *testing.T) {
	u := kernel.Underlay{Name: "eth0", LinkIndex: 2, MTU: 1500, Addr: netip.MustParseAddr("192.0.2.1"), OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	st := backend.NodeState{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Own:     peer("10.244.1.0/24", "192.0.2.1", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`),
	}
	st.Peers = []lease.Lease{
		st.Own,
		peer("10.244.2.0/24", "192.0.2.2", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`),
		peer("10.244.3.0/24", "198.51.100.3", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}`),
		peer("10.244.4.0/24", "192.0.2.4", "host-gw", ``),
		peer("10.244.5.0/24", "192.0.2.5", "vxlan", `{"VNI":1,"VtepMAC":"zz"}`),
	}
	b := testBackend(t, Options{Common: backend.Common{Port: 8472}, VNI: 7}, u, false, `{"VNI":7,"VtepMAC":"02:00:00:00:00:01"}`)
	d := b.Plan(st)
	p, skipped := d.Entries, d.Skipped
	if len(p.Routes) != 2 || len(p.Neighs) != 2 || len(p.FDB) != 2 || len(skipped) != 1 {
		t.Fatalf("plan %+v skipped %v", p, skipped)
	}
	want := kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), Dev: "flannel.7", OnLink: true}
	if p.Routes[0] != want {
		t.Errorf("route %v, want %v", p.Routes[0], want)
	}
	if p.Neighs[0] != (kernel.Neigh{IP: netip.MustParseAddr("10.244.2.0"), MAC: "02:00:00:00:00:02", Dev: "flannel.7"}) {
		t.Errorf("neigh %v", p.Neighs[0])
	}
	if p.FDB[1] != (kernel.FDB{MAC: "02:00:00:00:00:03", Dst: netip.MustParseAddr("198.51.100.3"), Dev: "flannel.7"}) {
		t.Errorf("fdb %v", p.FDB[1])
	}
	// The device, and the scope: routes on the device and the underlay,
	// neighbour and FDB entries on the device.
	wantDev := kernel.Device{Name: "flannel.7", Kind: kernel.KindVXLAN,
		VXLAN: kernel.VXLAN{VNI: 7, Local: u.Addr, Dev: 2, Port: 8472}, MTU: 1450, MAC: "02:00:00:00:00:01",
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/32")}}
	if len(d.Devices) != 1 || !reflect.DeepEqual(d.Devices[0], wantDev) {
		t.Errorf("devices %+v, want [%+v]", d.Devices, wantDev)
	}
	wantScope := kernel.Scope{Networks: []netip.Prefix{st.Network}, Own: []netip.Prefix{st.Own.Subnet}, RouteDevs: []string{"flannel.7", "eth0"}, NeighDevs: []string{"flannel.7"}}
	if !reflect.DeepEqual(d.Scope, wantScope) || !reflect.DeepEqual(d.Node, st) {
		t.Errorf("scope %+v, want %+v; node state %+v", d.Scope, wantScope, d.Node)
	}
	// DirectRouting: the on-link peer gets a plain route, the other stays on vxlan.
	b.cfg.DirectRouting = true
	p = b.Plan(st).Entries
	// (the peer with a bad MAC is on-link, so it needs no MAC)
	if len(p.Routes) != 3 || p.Routes[0] != (kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.0.2.2"), Dev: "eth0"}) {
		t.Errorf("direct routing: %v", p.Routes)
	}
	if len(p.Neighs) != 1 || p.Neighs[0].IP != netip.MustParseAddr("10.244.3.0") {
		t.Errorf("direct routing neighs: %v", p.Neighs)
	}
}

func TestPlanDerivedMAC(t *testing.T) {
	if got := MACFor(netip.MustParseAddr("192.0.2.12")); got != "0e:77:c0:00:02:0c" {
		t.Fatalf("MACFor = %s", got)
	}
	u := kernel.Underlay{Name: "eth0", LinkIndex: 2, Addr: netip.MustParseAddr("192.0.2.1")}
	st := backend.NodeState{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Own:     peer("10.244.1.0/24", "192.0.2.1", "vxlan", ``),
		Peers:   []lease.Lease{peer("10.244.2.0/24", "192.0.2.12", "vxlan", ``)}, // nothing published
	}
	b := testBackend(t, Options{VNI: 7}, u, false, "")
	d := b.Plan(st)
	p, skipped := d.Entries, d.Skipped
	if len(p.FDB) != 0 || len(skipped) != 1 {
		t.Errorf("without DerivedMAC a peer without data is skipped: plan %+v skipped %v", p, skipped)
	}
	d = testBackend(t, Options{VNI: 7}, u, true, "").Plan(st)
	p, skipped = d.Entries, d.Skipped
	if len(skipped) != 0 || len(p.FDB) != 1 || p.FDB[0].MAC != "0e:77:c0:00:02:0c" || p.Neighs[0].MAC != "0e:77:c0:00:02:0c" {
		t.Errorf("derived: plan %+v skipped %v", p, skipped)
	}
}

// A vxlan lease whose VTEP MAC is not a unicast MAC is refused where it
// enters (the kernel would reject its neighbour entry at every sync);
// other types and derived MACs are not judged.
func TestCheckPeer(t *testing.T) {
	u := kernel.Underlay{Name: "eth0", LinkIndex: 2, Addr: netip.MustParseAddr("192.0.2.1")}
	b := testBackend(t, Options{VNI: 1}, u, false, "")
	for data, want := range map[string]string{
		`{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`: "",
		`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`: "not a unicast MAC",
		`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`: "not a unicast MAC",
		`{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}`: "not a unicast MAC",
		`{"VNI":1,"VtepMAC":"banana"}`:            "bad VtepMAC",
		`not json`:                                "bad vxlan BackendData",
	} {
		err := b.CheckPeer(peer("10.244.2.0/24", "192.0.2.2", "vxlan", data))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckPeer(%s) = %v, want %q", data, err, want)
		}
	}
	if err := b.CheckPeer(peer("10.244.2.0/24", "192.0.2.2", "host-gw", "")); err != nil {
		t.Errorf("a host-gw lease judged by vxlan: %v", err)
	}
	if err := testBackend(t, Options{VNI: 1}, u, true, "").CheckPeer(peer("10.244.2.0/24", "192.0.2.2", "vxlan", "")); err != nil {
		t.Errorf("derived MACs: %v", err)
	}
}
