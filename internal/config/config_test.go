package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		doc            string
		len            int
		min, max, typ  string
		defaultBackend bool
	}{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, 24, "10.244.1.0", "10.244.255.0", "vxlan", false},
		{`{"network":"10.244.0.0/16","backend":{"type":"host-gw"}}`, 24, "10.244.1.0", "10.244.255.0", "host-gw", false},
		{`{"Network":"10.244.0.0/22","Backend":{"Type":"vxlan"}}`, 24, "10.244.1.0", "10.244.3.0", "vxlan", false},
		{`{"Network":"10.244.0.0/23","Backend":{"Type":"vxlan"}}`, 25, "10.244.0.128", "10.244.1.128", "vxlan", false},
		{`{"Network":"10.244.7.9/16"}`, 24, "10.244.1.0", "10.244.255.0", "", true},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","VNI":7}}`, 24, "10.244.1.0", "10.244.255.0", "vxlan", false},
		{`{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.16.0.0","SubnetMax":"10.32.0.0","Backend":{"Type":"vxlan"}}`, 20, "10.16.0.0", "10.32.0.0", "vxlan", false},
		{`{"Network":"10.244.0.0/28","Backend":{"Type":"vxlan"}}`, 30, "10.244.0.4", "10.244.0.12", "vxlan", false},
		{`{"Network":"10.244.0.0/16","SubnetMin":"0.0.0.0","Backend":{"Type":"vxlan"}}`, 24, "10.244.1.0", "10.244.255.0", "vxlan", false},
	} {
		c, err := Parse([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		if c.IPv4.SubnetLen != tc.len || c.IPv4.SubnetMin.String() != tc.min || c.IPv4.SubnetMax.String() != tc.max {
			t.Errorf("%s: got len %d min %s max %s, want %d %s %s", tc.doc, c.IPv4.SubnetLen, c.IPv4.SubnetMin, c.IPv4.SubnetMax, tc.len, tc.min, tc.max)
		}
		if c.Backend.Type != tc.typ || c.BackendDefaulted != tc.defaultBackend {
			t.Errorf("%s: backend %q defaulted=%v", tc.doc, c.Backend.Type, c.BackendDefaulted)
		}
	}
}

func TestBackendKeptForItsPackage(t *testing.T) {
	c, err := Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","DirectRouting":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend.Type != "vxlan" || string(c.Backend.Raw) != `{"Type":"VXLAN","DirectRouting":true}` {
		t.Errorf("backend: %+v", c.Backend)
	}
	var r struct{ DirectRouting *bool }
	if err := DecodeBackend(c.Backend.Raw, &r); err != nil || r.DirectRouting == nil || !*r.DirectRouting {
		t.Errorf("DecodeBackend: %v %+v", err, r)
	}
	err = DecodeBackend([]byte(`{"DirectRouting":"yes"}`), &r)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "Backend.DirectRouting" {
		t.Errorf("wrong type: %v", err)
	}
}

func TestIPv6(t *testing.T) {
	c, err := Parse([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv6.SubnetLen != 64 || c.IPv6.SubnetMin != netip.MustParseAddr("fd00:10:244:1::") || c.IPv6.SubnetMax != netip.MustParseAddr("fd00:10:244:ff::") {
		t.Errorf("ipv6: %+v", c.IPv6)
	}
	c, err = Parse([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv6.SubnetLen != 122 || c.IPv6.SubnetMax != netip.MustParseAddr("fd00::c0") {
		t.Errorf("ipv6 small: %+v", c.IPv6)
	}
	// More than 2^64 subnets: the last is the network's last /126, as
	// flannel's (it was the 2^63-1st, 2001:db8:244:1:ffff:ffff:ffff:fffc).
	c, err = Parse([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","IPv6SubnetLen":126,"Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv6.SubnetMin != netip.MustParseAddr("2001:db8:244::4") || c.IPv6.SubnetMax != netip.MustParseAddr("2001:db8:244:ffff:ffff:ffff:ffff:fffc") {
		t.Errorf("ipv6 /126 in /48: %+v", c.IPv6)
	}
	if got := SubnetIndex(c.IPv6.SubnetMin, c.IPv6.SubnetMax, 126); got != MaxIndex {
		t.Errorf("SubnetIndex over 2^78 subnets = %d, want MaxIndex (saturated)", got)
	}
}

func TestUnknownKeys(t *testing.T) {
	c, err := Parse([]byte(`{"Network":"10.244.0.0/16","Frobnicate":1,"Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.UnknownKeys) != 1 || c.UnknownKeys[0] != "Frobnicate" {
		t.Errorf("unknown keys: %v", c.UnknownKeys)
	}
}

// TestInvalid lists invalid documents; each must fail with a one-line error
// naming the key. Invalid Backend objects are the backend table's tests.
func TestInvalid(t *testing.T) {
	for _, tc := range []struct{ doc, key string }{
		{`not json`, "(document)"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":7}}`, "Backend.Type"},
		{`{"Network":"10.244.0.0/16","Backend":"vxlan"}`, "(document)"},
		{`[1,2]`, "(document)"},
		{`{"Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0/33","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"fd00::/64","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0/30","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}`, "SubnetLen"},
		{`{"Network":"10.244.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}`, "SubnetLen"},
		{`{"Network":"10.244.0.0/16","SubnetLen":-4,"Backend":{"Type":"vxlan"}}`, "SubnetLen"},
		{`{"Network":"10.244.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}`, "SubnetLen"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0","Backend":{"Type":"vxlan"}}`, "SubnetMin"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.7","Backend":{"Type":"vxlan"}}`, "SubnetMin"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"bogus","Backend":{"Type":"vxlan"}}`, "SubnetMin"},
		{`{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.128","Backend":{"Type":"vxlan"}}`, "SubnetMax"},
		{`{"Network":"10.244.0.0/16","SubnetMax":"11.0.0.0","Backend":{"Type":"vxlan"}}`, "SubnetMax"},
		{`{"EnableIPv4":false,"EnableIPv6":false,"Backend":{"Type":"vxlan"}}`, "EnableIPv4"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"Backend":{"Type":"vxlan"}}`, "IPv6Network"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`, "IPv6Network"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}`, "IPv6SubnetLen"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:1::1","Backend":{"Type":"vxlan"}}`, "IPv6SubnetMin"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","Network":"garbage","Backend":{"Type":"vxlan"}}`, "Network"},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil {
			t.Errorf("%s: accepted", tc.doc)
			continue
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%s: error %q does not name key %s", tc.doc, err, tc.key)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.doc, err)
		}
	}
}

func TestNthSubnet(t *testing.T) {
	base := netip.MustParseAddr("10.244.0.0")
	for n, want := range map[uint64]string{0: "10.244.0.0", 1: "10.244.1.0", 255: "10.244.255.0", 256: "10.245.0.0"} {
		if got := NthSubnet(base, 24, n); got.String() != want {
			t.Errorf("NthSubnet(%d) = %s, want %s", n, got, want)
		}
		if got := SubnetIndex(base, netip.MustParseAddr(want), 24); got != n {
			t.Errorf("SubnetIndex(%s) = %d, want %d", want, got, n)
		}
	}
	if got := NthSubnet(netip.MustParseAddr("fd00::"), 64, 3); got.String() != "fd00:0:0:3::" {
		t.Errorf("v6: %s", got)
	}
	if got := SubnetIndex(netip.MustParseAddr("fd00::"), netip.MustParseAddr("fd00:0:0:ffff::"), 64); got != 0xffff {
		t.Errorf("SubnetIndex v6 = %d", got)
	}
	for _, tc := range []struct {
		to  string
		len int
		n   uint64
	}{{"fd00::ffff:ffff:ffff:fffd", 128, MaxIndex - 1}, {"fd00::ffff:ffff:ffff:fffe", 128, MaxIndex}, {"fd00::ffff:ffff:ffff:ffff", 128, MaxIndex}, {"fd00:0:0:1::", 128, MaxIndex}} {
		if got := SubnetIndex(netip.MustParseAddr("fd00::"), netip.MustParseAddr(tc.to), tc.len); got != tc.n {
			t.Errorf("SubnetIndex(fd00::, %s, %d) = %d, want %d", tc.to, tc.len, got, tc.n)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.16.0.0","Backend":{"Type":"host-gw"}}`,
		`{"EnableIPv6":true,"IPv6Network":"fd00::/56","Network":"10.1.0.0/16"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, fam := range []struct {
			on bool
			f  Family
		}{{c.EnableIPv4, c.IPv4}, {c.EnableIPv6, c.IPv6}} {
			if !fam.on {
				continue
			}
			f := fam.f
			if !f.Network.Contains(f.SubnetMin) || !f.Network.Contains(f.SubnetMax) || f.SubnetLen < f.Network.Bits()+2 {
				t.Fatalf("resolved config out of bounds: %+v", f)
			}
		}
		out, err := c.MarshalResolved(map[string]any{"Type": c.Backend.Type})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("resolved config does not parse again: %v\n%s", err, out)
		}
		if c2.IPv4 != c.IPv4 || c2.IPv6 != c.IPv6 || c2.Backend.Type != c.Backend.Type {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
		}
	})
}
