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

// TestConfigCheckBGP: the BGP object is printed resolved, every default
// filled in and the password shown as "(set)"; legal but likely unintended
// states are warned on stderr; a bad object is refused in one line naming
// the key, without the password; no object, no BGP section.
func TestConfigCheckBGP(t *testing.T) {
	check := func(doc string) (map[string]any, string, error) {
		path := filepath.Join(t.TempDir(), "net-conf.json")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"config", "check", path}, &out, &errb)
		if strings.Contains(out.String()+errb.String(), "hunter2") {
			t.Errorf("%s: the password is printed:\n%s%s", doc, out.String(), errb.String())
		}
		if err != nil {
			if out.Len() != 0 {
				t.Errorf("%s: printed a config it refused:\n%s", doc, out.String())
			}
			return nil, errb.String(), err
		}
		var got map[string]any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out.String())
		}
		return got, errb.String(), nil
	}
	got, warnings, err := check(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"LocalAS":64512,"HoldTime":9,"RestartTime":30,"Import":true,
		"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"hunter2 with spaces"}],"RoutableNetworks":["203.0.113.0/24"]}}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got["BGP"])
	const want = `{"Enabled":true,"GracefulRestart":true,"HoldTime":9,"Import":true,"ListenPort":179,"LocalAS":64512,` +
		`"Peers":[{"AS":64500,"Address":"192.0.2.1","HoldTime":9,"Multihop":0,"Password":"(set)","Port":179}],` +
		`"RestartTime":30,"RoutableNetworks":["203.0.113.0/24"]}`
	if string(b) != want || got["Network"] != "10.244.0.0/16" || warnings != "" {
		t.Errorf("BGP resolved\n%s\nwant\n%s\n(network %v, warnings %q)", b, want, got["Network"], warnings)
	}
	_, warnings, err = check(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{}}`)
	if err != nil || !strings.Contains(warnings, "warning: BGP.LocalAS is not set") || !strings.Contains(warnings, "warning: BGP.Peers is empty") {
		t.Errorf("warnings %q %v", warnings, err)
	}
	if got, _, err := check(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil || got["BGP"] != nil {
		t.Errorf("no BGP object: %v %v", got["BGP"], err)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"Peers":[{"Address":"192.0.2.1","AS":23456,"Password":"hunter2"}]}}`,
			"net-conf.json: BGP.Peers[0].AS: 23456 is AS_TRANS (RFC 6793), the placeholder for a 4-byte AS number; use your AS number, e.g. a private one from 64512 to 65534 or 4200000000 to 4294967294"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"HoldTme":9}}`,
			"net-conf.json: BGP.HoldTme: unknown key; the keys are Enabled, LocalAS, RouterID, ListenPort, Peers, HoldTime, GracefulRestart, RestartTime, Import, RoutableNetworks"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"BGP":{"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"hunter2\u0007"}]}}`,
			"net-conf.json: BGP.Peers[0].Password: has a control character at byte 7; use printable characters (spaces are fine)"},
	} {
		if _, _, err := check(tc.doc); err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.doc, err, tc.want)
		}
	}
}
