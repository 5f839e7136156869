package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckIPv6 checks that `weft config check` prints every value
// resolved for dual stack and IPv6-only: the families' switches, the IPv6
// network and its subnets' length, first and last (IPv4's only when
// enabled).
func TestConfigCheckIPv6(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      map[string]any
	}{
		{"dual", `{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`, map[string]any{
			"EnableIPv4": true, "EnableIPv6": true, "EnableNFTables": false,
			"Network": "10.244.0.0/16", "SubnetLen": 24.0, "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.255.0",
			"IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 64.0, "IPv6SubnetMin": "2001:db8:244:1::", "IPv6SubnetMax": "2001:db8:244:ffff::",
		}},
		{"ipv6", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/120","IPv6SubnetMax":"2001:db8:244::80","Backend":{"Type":"host-gw","MTU":1280}}`, map[string]any{
			"EnableIPv4": false, "EnableIPv6": true, "EnableNFTables": false,
			"IPv6Network": "2001:db8:244::/120", "IPv6SubnetLen": 122.0, "IPv6SubnetMin": "2001:db8:244::40", "IPv6SubnetMax": "2001:db8:244::80",
		}},
	} {
		path := filepath.Join(t.TempDir(), "net-conf.json")
		if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{"config", "check", path}, &out, &errb); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got map[string]any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("%s: output is not JSON: %v\n%s", tc.name, err, out.String())
		}
		delete(got, "Backend")
		if !maps.Equal(got, tc.want) {
			t.Errorf("%s: resolved\n%v\nwant\n%v", tc.name, got, tc.want)
		}
	}
}

// TestConfigCheckRefusesBounds: a Backend.MTU too small for the enabled
// families, and udp with IPv6, fail `weft config check` with one line.
func TestConfigCheckRefusesBounds(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":10}}`,
			"net-conf.json: Backend.MTU: 10 is below 68, the least MTU of an IPv4 link; use 0 (derive from the interface) or at least 68"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw","MTU":1000}}`,
			"net-conf.json: Backend.MTU: 1000 is below 1280, the least MTU of an IPv6 link, and EnableIPv6 is true; use 0 (derive from the interface) or at least 1280"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"udp"}}`,
			"net-conf.json: EnableIPv6: the udp backend is IPv4-only, as flannel's: use vxlan or host-gw for IPv6, or set EnableIPv6 false"},
	} {
		path := filepath.Join(t.TempDir(), "net-conf.json")
		if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"config", "check", path}, &out, &errb)
		if err == nil || err.Error() != tc.want || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s:\n got %v\nwant %s", tc.doc, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("%s: printed a config it refused:\n%s", tc.doc, out.String())
		}
	}
}
