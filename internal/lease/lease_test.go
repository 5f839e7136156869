package lease

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/config"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		v4, v6 string
		key    string
	}{
		{"10.244.3.0/24", "", "10.244.3.0-24"},
		{"10.244.3.0/24", "fd00:10:244:3::/64", "10.244.3.0-24&fd00:10:244:3::-64"},
		{"", "fd00:10:244:3::/64", "0.0.0.0-0&fd00:10:244:3::-64"},
	} {
		var v4, v6 netip.Prefix
		if tc.v4 != "" {
			v4 = netip.MustParsePrefix(tc.v4)
		}
		if tc.v6 != "" {
			v6 = netip.MustParsePrefix(tc.v6)
		}
		if got := Key(v4, v6); got != tc.key {
			t.Errorf("Key = %q, want %q", got, tc.key)
		}
		g4, g6, err := ParseKey(tc.key)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Errorf("ParseKey(%q) = %v %v %v", tc.key, g4, g6, err)
		}
	}
	for _, bad := range []string{"", "10.244.3.0", "10.244.3.1-24", "10.244.3.0-33", "fd00::-64", "10.244.3.0-24&10.0.0.0-8", "0.0.0.0-0",
		// keys flannel cannot read: host lengths, upper-case hex, IPv6 it writes as IPv4
		"10.0.0.0-32", "0.0.0.0-0&fd00::-128", "10.244.3.0-24&FD00::-64", "0.0.0.0-0&::ffff:a00:0-104", "0.0.0.0-0&::a00:0-104"} {
		if _, _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

// TestOverlaps: leases overlap when a family both have a subnet of
// shares addresses, whatever the other family holds.
func TestOverlaps(t *testing.T) {
	mk := func(key string) Lease {
		v4, v6, err := ParseKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return Lease{Subnet: v4, IPv6Subnet: v6}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"10.244.3.0-24&2001:db8:244:61::-64", "10.244.4.0-24&2001:db8:244:61::-64", true},
		{"10.244.3.0-24&2001:db8:244:61::-64", "10.244.3.0-24&2001:db8:244:62::-64", true},
		{"10.244.3.0-24&2001:db8:244:61::-64", "10.244.4.0-24&2001:db8:244:62::-64", false},
		{"10.244.2.0-23", "10.244.3.0-24&2001:db8:244:62::-64", true},
		{"10.244.3.0-24", "0.0.0.0-0&2001:db8:244:61::-64", false},
		{"0.0.0.0-0&2001:db8:244::-56", "0.0.0.0-0&2001:db8:244:61::-64", true},
	} {
		a, b := mk(tc.a), mk(tc.b)
		if a.Overlaps(b) != tc.want || b.Overlaps(a) != tc.want {
			t.Errorf("%s overlaps %s: %v, want %v", tc.a, tc.b, a.Overlaps(b), tc.want)
		}
	}
}

func TestValue(t *testing.T) {
	const v = `{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
	a, err := ParseValue([]byte(v))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := a.MarshalJSON()
	if string(b) != v {
		t.Errorf("round trip:\n got %s\nwant %s", b, v)
	}
	for _, bad := range []string{`{}`, `{"PublicIP":"fd00::1"}`, `{"PublicIP":"192.0.2.1","PublicIPv6":"10.0.0.1"}`, `[]`} {
		if _, err := ParseValue([]byte(bad)); err == nil {
			t.Errorf("ParseValue(%s) accepted", bad)
		}
	}
}

func TestPick(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	taken := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	p, err := Pick(cfg.IPv4, taken, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.9.0/24")}, nil)
	if err != nil || p != netip.MustParsePrefix("10.244.2.0/24") {
		t.Fatalf("Pick = %v %v", p, err)
	}
	taken = append(taken, p)
	if _, err := Pick(cfg.IPv4, taken, nil, nil); err == nil {
		t.Fatal("full range accepted")
	} else {
		t.Log(err)
	}
}

func FuzzParseValue(f *testing.F) {
	f.Add([]byte(`{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`))
	f.Add([]byte(`{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::1"}`))
	f.Add([]byte(`{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8:1::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}}`))
	f.Add([]byte(`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::11","BackendType":"host-gw","BackendV6Data":null}`))
	f.Add([]byte(`{"PublicIP":"192.0.2.11","PublicIPv6":"::ffff:192.0.2.11"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseValue(data)
		if err != nil {
			return
		}
		b, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		a2, err := ParseValue(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if a2.PublicIP != a.PublicIP || a2.PublicIPv6 != a.PublicIPv6 || a2.BackendType != a.BackendType ||
			!sameJSON(a2.BackendData, a.BackendData) || !sameJSON(a2.BackendV6Data, a.BackendV6Data) {
			t.Fatalf("round trip changed %+v to %+v", a, a2)
		}
	})
}

// sameJSON reports whether two documents hold the same values: spacing
// and escapes may differ (encoding/json writes "&" as "\u0026", as
// flannel's values have it too).
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

func FuzzParseKey(f *testing.F) {
	f.Add("10.244.3.0-24")
	f.Add("10.244.3.0-24&fd00:10:244:3::-64")
	f.Add("0.0.0.0-0&2001:db8:244:3::-64")
	f.Add("10.244.3.0-24&2001:db8:244:3::-64")
	f.Add("10.244.3.0-24&::ffff:10.244.3.0-120")
	f.Add("0.0.0.0-0&2001:DB8::-64")
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseKey(key)
		if err != nil {
			return
		}
		if k := Key(v4, v6); k != key {
			v4b, v6b, err := ParseKey(k)
			if err != nil || v4b != v4 || v6b != v6 {
				t.Fatalf("key %q -> %q does not round trip", key, k)
			}
		}
	})
}

// Errors about a record quote at most a short piece of it: a forged key
// or value must not fill every node's logs.
func TestErrorsQuoteLittle(t *testing.T) {
	long := strings.Repeat("9", 3000)
	if _, err := ParseValue([]byte(`{"PublicIP":"` + long + `"}`)); err == nil || len(err.Error()) > 200 {
		t.Errorf("value error: %d bytes", len(fmt.Sprint(err)))
	}
	for _, key := range []string{long, "10.244.1.0-" + long, "10.244.1.0-24&" + long} {
		if _, _, err := ParseKey(key); err == nil || len(err.Error()) > 200 {
			t.Errorf("key error: %d bytes", len(fmt.Sprint(err)))
		}
	}
}
