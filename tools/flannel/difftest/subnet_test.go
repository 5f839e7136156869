package difftest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannel-io/flannel/pkg/ip"
	flease "github.com/flannel-io/flannel/pkg/lease"
	fsubnet "github.com/flannel-io/flannel/pkg/subnet"
	"github.com/joho/godotenv"

	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/subnetenv"
)

func ip4net(s string) ip.IP4Net {
	if s == "" {
		return ip.IP4Net{}
	}
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

// subnetFiles are subnet.env inputs: a network config and the node's
// subnets of the families it enables.
var subnetFiles = []struct {
	doc, sn, sn6 string
	mtu          int
	masq         bool
}{
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "10.244.3.0/24", "", 1450, true},
	{`{"Network":"10.0.0.0/8","SubnetLen":20,"Backend":{"Type":"host-gw"}}`, "10.16.16.0/20", "", 1500, false},
	{`{"EnableIPv6":true,"Network":"10.42.0.0/16","IPv6Network":"2001:cafe:42::/56","Backend":{"Type":"vxlan"}}`, "10.42.7.0/24", "2001:cafe:42:7::/64", 1430, true},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","IPv6SubnetLen":80,"Backend":{"Type":"host-gw"}}`, "10.244.9.0/24", "2001:db8:244:0:9::/80", 1500, false},
	{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`, "", "2001:db8:244:3::/64", 1430, true},
	{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/120","Backend":{"Type":"host-gw"}}`, "", "2001:db8:244::c0/122", 1500, false},
}

// weftEnv is the Env weft's agent writes for a subnetFiles row: the
// networks and subnets of the families cfg enables.
func weftEnv(cfg *fsubnet.Config, sn, sn6 string, mtu int, masq bool) subnetenv.Env {
	env := subnetenv.Env{MTU: mtu, IPMasq: masq}
	if cfg.EnableIPv4 {
		env.Network = prefix(cfg.Network.String())
		env.Subnet = subnetenv.GatewayPrefix(prefix(sn))
	}
	if cfg.EnableIPv6 {
		env.IPv6Network = prefix(cfg.IPv6Network.String())
		env.IPv6Subnet = subnetenv.GatewayPrefix(prefix(sn6))
	}
	return env
}

// TestSubnetFileEqualsFlannel: weft's subnet.env is byte for byte what
// flannel's WriteSubnetFile writes for the same inputs, IPv4, dual stack
// and IPv6-only, and weft reads flannel's file back as the same Env.
func TestSubnetFileEqualsFlannel(t *testing.T) {
	for _, tc := range subnetFiles {
		cfg, err := flannelParse(tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		fpath, wpath := filepath.Join(dir, "flannel.env"), filepath.Join(dir, "weft.env")
		if err := fsubnet.WriteSubnetFile(fpath, cfg, tc.masq, ip4net(tc.sn), ip6net(tc.sn6), tc.mtu); err != nil {
			t.Fatal(err)
		}
		env := weftEnv(cfg, tc.sn, tc.sn6, tc.mtu, tc.masq)
		if err := subnetenv.Write(wpath, env); err != nil {
			t.Fatal(err)
		}
		f, _ := os.ReadFile(fpath)
		w, _ := os.ReadFile(wpath)
		if string(f) != string(w) {
			t.Errorf("subnet.env differs:\nflannel:\n%s\nweft:\n%s", f, w)
		}
		back, err := subnetenv.Read(fpath) // weft-cni reads flannel's file
		env.HasIPMasq = true               // flannel writes FLANNEL_IPMASQ
		if err != nil || back != env {
			t.Errorf("weft reads flannel's file as %+v, %v", back, err)
		}
	}
}

// flanneldPrevious is what flanneld reads back from subnet.env when it
// starts, to ask for the same subnets again (main.go's
// ReadCIDRFromSubnetFile and ReadIP6CIDRFromSubnetFile, package main and so
// not importable: the same library, godotenv, and net.ParseCIDR of each
// comma-separated value, as there).
func flanneldPrevious(t *testing.T, path string) (network, subnet ip.IP4Net, network6, subnet6 ip.IP6Net) {
	t.Helper()
	vals, err := godotenv.Read(path)
	if err != nil {
		t.Fatalf("flanneld cannot read %s: %v", path, err)
	}
	cidrs := func(key string) []*net.IPNet {
		var out []*net.IPNet
		if v, ok := vals[key]; ok {
			for _, c := range strings.Split(v, ",") {
				_, n, err := net.ParseCIDR(c)
				if err != nil {
					t.Errorf("flanneld cannot parse %s=%s: %v", key, v, err)
					continue
				}
				out = append(out, n)
			}
		}
		if len(out) > 1 {
			t.Errorf("%s has %d values; flanneld takes one", key, len(out))
		}
		return out
	}
	if n := cidrs("FLANNEL_NETWORK"); len(n) == 1 {
		network = ip.FromIPNet(n[0])
	}
	if n := cidrs("FLANNEL_SUBNET"); len(n) == 1 {
		subnet = ip.FromIPNet(n[0])
	}
	if n := cidrs("FLANNEL_IPV6_NETWORK"); len(n) == 1 {
		network6 = ip.FromIP6Net(n[0])
	}
	if n := cidrs("FLANNEL_IPV6_SUBNET"); len(n) == 1 {
		subnet6 = ip.FromIP6Net(n[0])
	}
	return network, subnet, network6, subnet6
}

// TestFlanneldReadsWeftSubnetFile: a node moving from weft back to
// flanneld keeps its subnets: flanneld reads weft's subnet.env as the
// networks and the node's subnets of each family (its previous lease).
func TestFlanneldReadsWeftSubnetFile(t *testing.T) {
	for _, tc := range subnetFiles {
		cfg, err := flannelParse(tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "subnet.env")
		if err := subnetenv.Write(path, weftEnv(cfg, tc.sn, tc.sn6, tc.mtu, tc.masq)); err != nil {
			t.Fatal(err)
		}
		n, sn, n6, sn6 := flanneldPrevious(t, path)
		if !cfg.EnableIPv4 {
			// flanneld's zero value when the key is absent
			cfg.Network = ip.IP4Net{}
		}
		for _, c := range []struct{ what, got, want string }{
			{"FLANNEL_NETWORK", n.String(), cfg.Network.String()},
			{"FLANNEL_SUBNET", sn.String(), ip4net(tc.sn).String()},
			{"FLANNEL_IPV6_NETWORK", n6.String(), ip6net(map[bool]string{true: cfg.IPv6Network.String()}[cfg.EnableIPv6]).String()},
			{"FLANNEL_IPV6_SUBNET", sn6.String(), ip6net(tc.sn6).String()},
		} {
			if c.got != c.want {
				t.Errorf("%s: flanneld reads weft's %s as %s, want %s", tc.doc, c.what, c.got, c.want)
			}
		}
	}
}

// TestSubnetKeysEqualFlannel: the etcd key of a lease is the same string,
// IPv4, dual stack and IPv6-only (flannel's "0.0.0.0-0&<v6>-<len>"), and
// each side parses the other's key to the same subnets.
func TestSubnetKeysEqualFlannel(t *testing.T) {
	for _, tc := range []struct{ sn, sn6, key string }{
		{"10.244.3.0/24", "", "10.244.3.0-24"},
		{"10.0.16.0/20", "", "10.0.16.0-20"},
		{"10.42.7.0/24", "2001:cafe:42:7::/64", "10.42.7.0-24&2001:cafe:42:7::-64"},
		{"10.244.9.0/24", "2001:db8:244:0:9::/80", "10.244.9.0-24&2001:db8:244:0:9::-80"},
		{"10.244.255.252/30", "2001:db8:244:ffff:ffff:ffff:ffff:fffc/126", "10.244.255.252-30&2001:db8:244:ffff:ffff:ffff:ffff:fffc-126"},
		{"", "2001:db8:244:3::/64", "0.0.0.0-0&2001:db8:244:3::-64"},
		{"", "2001:db8:244::c0/122", "0.0.0.0-0&2001:db8:244::c0-122"},
		{"", "fd00::/64", "0.0.0.0-0&fd00::-64"},
	} {
		fk := fsubnet.MakeSubnetKey(ip4net(tc.sn), ip6net(tc.sn6))
		wk := lease.Key(prefix(tc.sn), prefix(tc.sn6))
		if fk != wk || wk != tc.key {
			t.Errorf("key: flannel %q, weft %q, want %q", fk, wk, tc.key)
		}
		v4, v6, err := lease.ParseKey(fk)
		if err != nil || v4 != prefix(tc.sn) || v6 != prefix(tc.sn6) {
			t.Errorf("weft parses flannel's key %q as %v %v %v", fk, v4, v6, err)
		}
		f4, f6 := fsubnet.ParseSubnetKey(wk)
		if f4 == nil || f4.String() != ip4net(tc.sn).String() || (tc.sn6 == "") != (f6 == nil) || (f6 != nil && f6.String() != tc.sn6) {
			t.Errorf("flannel parses weft's key %q as %v %v", wk, f4, f6)
		}
	}
}

// FuzzSubnetKeyAgainstFlannel: whatever key weft accepts, flannel reads
// as the same subnets, and weft's key for them is
// the one flannel makes.
func FuzzSubnetKeyAgainstFlannel(f *testing.F) {
	for _, k := range []string{"10.244.3.0-24", "10.42.7.0-24&2001:cafe:42:7::-64", "0.0.0.0-0&fd00::-64", "10.244.3.0-24&FD00::-64", "10.0.0.0-32", "0.0.0.0-0&fd00::-128", "0.0.0.0-0&::a00:0-104", "0.0.0.0-0&::ffff:a00:0-104"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := lease.ParseKey(key)
		if err != nil {
			return
		}
		f4, f6 := fsubnet.ParseSubnetKey(key)
		if f4 == nil {
			t.Fatalf("weft reads key %q as %v %v; flannel does not read it", key, v4, v6)
		}
		if want := ip4net(map[bool]string{true: v4.String()}[v4.IsValid()]); *f4 != want {
			t.Fatalf("key %q: IPv4 subnet: weft %v, flannel %v", key, v4, f4)
		}
		if v6.IsValid() != (f6 != nil) || (f6 != nil && netip.PrefixFrom(addr6(f6.IP), int(f6.PrefixLen)) != v6) {
			t.Fatalf("key %q: IPv6 subnet: weft %v, flannel %v", key, v6, f6)
		}
		var ff6 ip.IP6Net
		if f6 != nil {
			ff6 = *f6
		}
		if fk, wk := fsubnet.MakeSubnetKey(*f4, ff6), lease.Key(v4, v6); fk != wk {
			t.Fatalf("key %q made again: weft %q, flannel %q", key, wk, fk)
		}
	})
}

// TestLeaseValuesDecodeBothWays: a lease record written by flannel
// decodes in weft with the same fields and encodes again to the same
// bytes, and flannel decodes weft's encoding to what it wrote.
func TestLeaseValuesDecodeBothWays(t *testing.T) {
	six := ip.FromIP6(net.ParseIP("2001:db8::11"))
	for _, fa := range []flease.LeaseAttrs{
		{PublicIP: ip.MustParseIP4("192.0.2.11"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)},
		{PublicIP: ip.MustParseIP4("192.0.2.12"), BackendType: "host-gw"},
		{PublicIP: ip.MustParseIP4("192.0.2.13")}, // flannel's udp
		{PublicIP: ip.MustParseIP4("192.0.2.14"), PublicIPv6: six, BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`), BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}`)},
		// dual-stack host-gw, IPv6-only vxlan and host-gw (PublicIP 0.0.0.0)
		{PublicIP: ip.MustParseIP4("192.0.2.15"), PublicIPv6: ip.FromIP6(net.ParseIP("2001:db8:0:1::15")), BackendType: "host-gw"},
		{PublicIPv6: ip.FromIP6(net.ParseIP("2001:db8:0:1::16")), BackendType: "vxlan", BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:47"}`)},
		{PublicIPv6: ip.FromIP6(net.ParseIP("2001:db8:0:1::17")), BackendType: "host-gw"},
	} {
		fj, err := json.Marshal(&fa)
		if err != nil {
			t.Fatal(err)
		}
		wa, err := lease.ParseValue(fj)
		if err != nil {
			t.Fatalf("weft cannot decode flannel's %s: %v", fj, err)
		}
		if d := attrsDiff(fa, wa); d != "" {
			t.Errorf("weft decodes flannel's %s with %s", fj, d)
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

// TestWeftLeaseValuesDecodeInFlannel: the other way round, from weft's
// attributes: what weft's agent publishes for each family's backends,
// flannel decodes with the same fields and encodes again to weft's bytes.
func TestWeftLeaseValuesDecodeInFlannel(t *testing.T) {
	a4, a6 := netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("2001:db8:0:1::21")
	v4 := json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}`)
	v6 := json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:01"}`)
	for _, wa := range []lease.Attrs{
		{PublicIP: a4, BackendType: "vxlan", BackendData: v4},
		{PublicIP: a4, PublicIPv6: a6, BackendType: "vxlan", BackendData: v4, BackendV6Data: v6},
		{PublicIP: a4, PublicIPv6: a6, BackendType: "host-gw"},
		{PublicIPv6: a6, BackendType: "vxlan", BackendV6Data: v6},
		{PublicIPv6: a6, BackendType: "host-gw"},
		{PublicIP: a4, BackendType: "udp"},
	} {
		wj, err := wa.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var fa flease.LeaseAttrs
		if err := json.Unmarshal(wj, &fa); err != nil {
			t.Fatalf("flannel cannot decode weft's %s: %v", wj, err)
		}
		if d := attrsDiff(fa, wa); d != "" {
			t.Errorf("flannel decodes weft's %s with %s", wj, d)
		}
		fj, err := json.Marshal(&fa)
		if err != nil {
			t.Fatal(err)
		}
		if string(fj) != string(wj) {
			t.Errorf("flannel re-encodes weft's record differently:\nweft    %s\nflannel %s", wj, fj)
		}
		back, err := lease.ParseValue(fj)
		if err != nil {
			t.Fatalf("weft cannot decode flannel's %s: %v", fj, err)
		}
		if d := attrsDiff(fa, back); d != "" {
			t.Errorf("weft decodes flannel's re-encoding %s with %s", fj, d)
		}
	}
}

// attrsDiff compares flannel's attributes with weft's field by field; an
// absent address is 0.0.0.0 (IPv4) or nil (IPv6) on flannel's side and
// unspecified or invalid on weft's.
func attrsDiff(fa flease.LeaseAttrs, wa lease.Attrs) string {
	var diffs []string
	eq := func(what, f, w string) {
		if f != w {
			diffs = append(diffs, fmt.Sprintf("%s: flannel %s, weft %s", what, f, w))
		}
	}
	w4 := "0.0.0.0"
	if wa.PublicIP.IsValid() {
		w4 = wa.PublicIP.String()
	}
	eq("PublicIP", fa.PublicIP.String(), w4)
	f6 := "none"
	if fa.PublicIPv6 != nil {
		f6 = fa.PublicIPv6.String()
	}
	w6 := "none"
	if wa.PublicIPv6.IsValid() {
		w6 = wa.PublicIPv6.String()
	}
	eq("PublicIPv6", f6, w6)
	eq("BackendType", fa.BackendType, wa.BackendType)
	eq("BackendData", string(fa.BackendData), string(wa.BackendData))
	eq("BackendV6Data", string(fa.BackendV6Data), string(wa.BackendV6Data))
	return strings.Join(diffs, "; ")
}
