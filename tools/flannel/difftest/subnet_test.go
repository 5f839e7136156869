package difftest

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/flannel-io/flannel/pkg/ip"
	flease "github.com/flannel-io/flannel/pkg/lease"
	fsubnet "github.com/flannel-io/flannel/pkg/subnet"

	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/subnetenv"
)

func ip4net(s string) ip.IP4Net {
	_, n, _ := net.ParseCIDR(s)
	return ip.FromIPNet(n)
}

func ip6net(s string) ip.IP6Net {
	if s == "" {
		return ip.IP6Net{}
	}
	_, n, _ := net.ParseCIDR(s)
	return ip.FromIP6Net(n)
}

func prefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s)
}

// TestSubnetFileEqualsFlannel: weft's subnet.env is byte for byte what
// flannel's WriteSubnetFile writes for the same inputs.
func TestSubnetFileEqualsFlannel(t *testing.T) {
	for _, tc := range []struct {
		doc, sn, sn6 string
		mtu          int
		masq         bool
	}{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "10.244.3.0/24", "", 1450, true},
		{`{"Network":"10.0.0.0/8","SubnetLen":20,"Backend":{"Type":"host-gw"}}`, "10.16.16.0/20", "", 1500, false},
		{`{"EnableIPv6":true,"Network":"10.42.0.0/16","IPv6Network":"2001:cafe:42::/56","Backend":{"Type":"vxlan"}}`, "10.42.7.0/24", "2001:cafe:42:7::/64", 1430, true},
	} {
		cfg, err := flannelParse(tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		fpath, wpath := filepath.Join(dir, "flannel.env"), filepath.Join(dir, "weft.env")
		if err := fsubnet.WriteSubnetFile(fpath, cfg, tc.masq, ip4net(tc.sn), ip6net(tc.sn6), tc.mtu); err != nil {
			t.Fatal(err)
		}
		env := subnetenv.Env{Network: prefix(cfg.Network.String()), Subnet: subnetenv.GatewayPrefix(prefix(tc.sn)), MTU: tc.mtu, IPMasq: tc.masq}
		if tc.sn6 != "" {
			env.IPv6Network = prefix(cfg.IPv6Network.String())
			env.IPv6Subnet = subnetenv.GatewayPrefix(prefix(tc.sn6))
		}
		if err := subnetenv.Write(wpath, env); err != nil {
			t.Fatal(err)
		}
		f, _ := os.ReadFile(fpath)
		w, _ := os.ReadFile(wpath)
		if string(f) != string(w) {
			t.Errorf("subnet.env differs:\nflannel:\n%s\nweft:\n%s", f, w)
		}
		back, err := subnetenv.Read(fpath) // weft-cni reads flannel's file
		if err != nil || back != env {
			t.Errorf("weft reads flannel's file as %+v, %v", back, err)
		}
	}
}

// TestSubnetKeysEqualFlannel: the etcd key of a lease is the same string.
func TestSubnetKeysEqualFlannel(t *testing.T) {
	for _, tc := range []struct{ sn, sn6 string }{
		{"10.244.3.0/24", ""}, {"10.0.16.0/20", ""}, {"10.42.7.0/24", "2001:cafe:42:7::/64"},
	} {
		fk := fsubnet.MakeSubnetKey(ip4net(tc.sn), ip6net(tc.sn6))
		wk := lease.Key(prefix(tc.sn), prefix(tc.sn6))
		if fk != wk {
			t.Errorf("key: flannel %q, weft %q", fk, wk)
		}
		v4, v6, err := lease.ParseKey(fk)
		if err != nil || v4 != prefix(tc.sn) || v6 != prefix(tc.sn6) {
			t.Errorf("weft parses flannel's key %q as %v %v %v", fk, v4, v6, err)
		}
		f4, f6 := fsubnet.ParseSubnetKey(wk)
		if f4 == nil || f4.String() != tc.sn || (tc.sn6 != "" && (f6 == nil || f6.String() != tc.sn6)) {
			t.Errorf("flannel parses weft's key %q as %v %v", wk, f4, f6)
		}
	}
}

// TestLeaseValuesDecodeBothWays: a lease record written by either side
// decodes on the other with the same fields.
func TestLeaseValuesDecodeBothWays(t *testing.T) {
	six := ip.FromIP6(net.ParseIP("2001:db8::11"))
	for _, fa := range []flease.LeaseAttrs{
		{PublicIP: ip.MustParseIP4("192.0.2.11"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)},
		{PublicIP: ip.MustParseIP4("192.0.2.12"), BackendType: "host-gw"},
		{PublicIP: ip.MustParseIP4("192.0.2.13")}, // flannel's udp
		{PublicIP: ip.MustParseIP4("192.0.2.14"), PublicIPv6: six, BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`), BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}`)},
	} {
		fj, err := json.Marshal(&fa)
		if err != nil {
			t.Fatal(err)
		}
		wa, err := lease.ParseValue(fj)
		if err != nil {
			t.Fatalf("weft cannot decode flannel's %s: %v", fj, err)
		}
		wj, err := wa.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(wj) != string(fj) {
			t.Errorf("re-encoded differently:\nflannel %s\nweft    %s", fj, wj)
		}
		var back flease.LeaseAttrs
		if err := json.Unmarshal(wj, &back); err != nil {
			t.Fatalf("flannel cannot decode weft's %s: %v", wj, err)
		}
		if back.String() != fa.String() {
			t.Errorf("flannel decodes weft's record as %s, want %s", back.String(), fa.String())
		}
	}
}
