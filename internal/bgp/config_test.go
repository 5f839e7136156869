package bgp

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/weftnet/weft/internal/config"
)

const fullDoc = `{"Enabled": true, "LocalAS": 64512, "RouterID": "192.0.2.11", "ListenPort": 1179,
	"Peers": [{"Address": "192.0.2.1", "AS": 64500, "Password": "s3cret", "Port": 1790, "Multihop": 2, "HoldTime": 30},
	          {"Address": "2001:db8:0:1::1", "AS": 4200000000}],
	"HoldTime": 9, "GracefulRestart": false, "RestartTime": 30, "Import": true,
	"RoutableNetworks": ["203.0.113.0/24", "2001:db8:0:f::/64"]}`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      Config
	}{
		{"absent", ``, Config{}},
		{"null", `null`, Config{}},
		{"empty object: on, with every default", `{}`, Config{Enabled: true, ListenPort: 179, HoldTime: 90 * time.Second,
			GracefulRestart: true, RestartTime: 120 * time.Second}},
		{"full", fullDoc, Config{Enabled: true, LocalAS: 64512, RouterID: netip.MustParseAddr("192.0.2.11"), ListenPort: 1179,
			Peers: []Peer{
				{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Password: "s3cret", Port: 1790, Multihop: 2, HoldTime: 30 * time.Second},
				{Address: netip.MustParseAddr("2001:db8:0:1::1"), AS: 4200000000, Port: 179},
			},
			HoldTime: 9 * time.Second, RestartTime: 30 * time.Second, Import: true,
			RoutableNetworks: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:0:f::/64")}}},
		{"keys in any case, nulls are no value, 0 ports are 179, a mapped address is IPv4",
			`{"enabled":false,"localas":4294967294,"LISTENPORT":0,"HoldTime":null,"peers":[{"address":"::ffff:192.0.2.1","as":1,"port":0,"holdtime":0,"password":""}]}`,
			Config{LocalAS: 4294967294, ListenPort: 179, HoldTime: 90 * time.Second, GracefulRestart: true, RestartTime: 120 * time.Second,
				Peers: []Peer{{Address: netip.MustParseAddr("192.0.2.1"), AS: 1, Port: 179}}}},
		{"connect out only; the limits", `{"ListenPort":-1,"HoldTime":3,"RestartTime":4095,"Peers":[{"Address":"198.51.100.1","AS":65534,"Multihop":255,"HoldTime":65535}]}`,
			Config{Enabled: true, ListenPort: -1, HoldTime: 3 * time.Second, GracefulRestart: true, RestartTime: 4095 * time.Second,
				Peers: []Peer{{Address: netip.MustParseAddr("198.51.100.1"), AS: 65534, Port: 179, Multihop: 255, HoldTime: 65535 * time.Second}}}},
	} {
		got, err := Parse(json.RawMessage(tc.doc))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

// TestPasswords: any printable text up to 80 bytes is a password, kept
// as written.
func TestPasswords(t *testing.T) {
	for _, pw := range []string{"s3cret", "with spaces  inside ", `quo"te'single`, "com,ma=eq", `back\slash`,
		"ünïcödé ✓ 密码 🔑", strings.Repeat("x", 80), strings.Repeat("é", 40), "{}[]#;!$%^&*()"} {
		doc, _ := json.Marshal(map[string]any{"Peers": []any{map[string]any{"Address": "192.0.2.1", "AS": 64500, "Password": pw}}})
		c, err := Parse(doc)
		if err != nil {
			t.Errorf("password %q: %v", pw, err)
			continue
		}
		if c.Peers[0].Password != pw {
			t.Errorf("password %q read as %q", pw, c.Peers[0].Password)
		}
		if got := c.Resolved()["Peers"].([]map[string]any)[0]["Password"]; got != "(set)" {
			t.Errorf("Resolved shows the password as %v", got)
		}
	}
}

func TestParseErrors(t *testing.T) {
	peer := func(fields string) string {
		return `{"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"hunter2hunter2"},{` + fields + `}]}`
	}
	for _, tc := range []struct{ doc, key, msg string }{
		{`[]`, "BGP", "is a list, not an object"},
		{`true`, "BGP", "true is not an object"},
		{`"on"`, "BGP", "is a string, not an object"},
		// A value of the wrong type is named by its type, never shown:
		// it may be, or hold, a password.
		{`"hunter2"`, "BGP", "is a string, not an object; write {"},
		{`["hunter2"]`, "BGP", "is a list, not an object"},
		{`{"Peers":{"AS":64500,"Password":"hunter2"}}`, "BGP.Peers", "is an object, not a list; write a list of peers such as"},
		{`{"Peers":"hunter2"}`, "BGP.Peers", "is a string, not a list"},
		{`{"Peers":["hunter2"]}`, "BGP.Peers[0]", "is a string, not an object"},
		{`{"Peers":[["192.0.2.1",64500,"hunter2"]]}`, "BGP.Peers[0]", "is a list, not an object"},
		{`{"Peers":[{"Address":"192.0.2.1","AS":64500},"hunter2"]}`, "BGP.Peers[1]", "is a string, not an object"},
		{`{"Enabled":{"Password":"hunter2"}}`, "BGP.Enabled", "is an object, not a boolean"},
		{`{"LocalAS":"hunter2"}`, "BGP.LocalAS", "is a string; write the number without quotes"},
		{`{"RouterID":["hunter2"]}`, "BGP.RouterID", "is a list, not a string"},
		{`{"HoldTime":{"hunter2":1}}`, "BGP.HoldTime", "is an object, not a number"},
		{`{"RoutableNetworks":{"Password":"hunter2"}}`, "BGP.RoutableNetworks", "is an object, not a list"},
		{`{"RoutableNetworks":[["hunter2"]]}`, "BGP.RoutableNetworks[0]", "is a list, not a string"},
		{`{"HoldTme":9}`, "BGP.HoldTme", "unknown key; the keys are Enabled, LocalAS,"},
		{`{"Hold Time":9}`, `BGP."Hold Time"`, "unknown key"},
		{`{"LocalAS":1,"localas":2}`, "BGP.LocalAS", `given twice, as "LocalAS" and "localas"`},
		{`{"Enabled":"yes"}`, "BGP.Enabled", "is a string, not a boolean; write true or false"},
		{`{"GracefulRestart":1}`, "BGP.GracefulRestart", "1 is not a boolean"},
		{`{"Import":"true"}`, "BGP.Import", "is a string, not a boolean"},
		// LocalAS
		{`{"LocalAS":0}`, "BGP.LocalAS", "0 is reserved (RFC 7607); use your AS number"},
		{`{"LocalAS":23456}`, "BGP.LocalAS", "23456 is AS_TRANS (RFC 6793)"},
		{`{"LocalAS":65535}`, "BGP.LocalAS", "65535 is reserved (RFC 7300)"},
		{`{"LocalAS":4294967295}`, "BGP.LocalAS", "4294967295 is reserved (RFC 7300)"},
		{`{"LocalAS":4294967296}`, "BGP.LocalAS", "4294967296 is larger than 4294967294, the largest AS number (32 bits)"},
		{`{"LocalAS":99999999999999999999999}`, "BGP.LocalAS", "99999999999999999999999 is larger than 4294967294"},
		{`{"LocalAS":-64512}`, "BGP.LocalAS", "-64512 is negative"},
		{`{"LocalAS":"64512"}`, "BGP.LocalAS", "is a string; write the number without quotes"},
		{`{"LocalAS":64512.5}`, "BGP.LocalAS", "64512.5 is not a whole number in plain digits"},
		{`{"LocalAS":6.4512e4}`, "BGP.LocalAS", "6.4512e4 is not a whole number in plain digits"},
		{`{"LocalAS":[64512]}`, "BGP.LocalAS", "is a list, not a number"},
		{`{"LocalAS":true}`, "BGP.LocalAS", "true is not a number"},
		// RouterID
		{`{"RouterID":"2001:db8::11"}`, "BGP.RouterID", `"2001:db8::11" is not an IPv4 address`},
		{`{"RouterID":"node1"}`, "BGP.RouterID", `"node1" is not an IPv4 address`},
		{`{"RouterID":"::ffff:192.0.2.11"}`, "BGP.RouterID", "is not an IPv4 address"},
		{`{"RouterID":"0.0.0.0"}`, "BGP.RouterID", "0.0.0.0 is not a BGP identifier (RFC 6286"},
		{`{"RouterID":3221226027}`, "BGP.RouterID", "3221226027 is not a string"},
		// ListenPort, times
		{`{"ListenPort":-2}`, "BGP.ListenPort", "-2 is out of range; use a TCP port, or -1 to only connect out (0 or none: 179)"},
		{`{"ListenPort":65536}`, "BGP.ListenPort", "65536 is out of range"},
		{`{"ListenPort":"179"}`, "BGP.ListenPort", "is a string"},
		{`{"HoldTime":0}`, "BGP.HoldTime", "0 is out of range; use 3 to 65535 seconds (RFC 4271"},
		{`{"HoldTime":2}`, "BGP.HoldTime", "2 is out of range"},
		{`{"HoldTime":65536}`, "BGP.HoldTime", "65536 is out of range"},
		{`{"HoldTime":"90s"}`, "BGP.HoldTime", "is a string; write the number without quotes"},
		{`{"HoldTime":90.5}`, "BGP.HoldTime", "90.5 is not a whole number"},
		{`{"RestartTime":0}`, "BGP.RestartTime", "0 is out of range; use 1 to 4095 seconds, the 12 bits of RFC 4724"},
		{`{"RestartTime":4096}`, "BGP.RestartTime", "4096 is out of range"},
		// RoutableNetworks
		{`{"RoutableNetworks":"203.0.113.0/24"}`, "BGP.RoutableNetworks", "is a string, not a list; write a list of CIDRs"},
		{`{"RoutableNetworks":["203.0.113.7/24"]}`, "BGP.RoutableNetworks[0]", `"203.0.113.7/24" has host bits set; write the network, "203.0.113.0/24"`},
		{`{"RoutableNetworks":["203.0.113.0/24","2001:db8:0:f::1/64"]}`, "BGP.RoutableNetworks[1]", `write the network, "2001:db8:0:f::/64"`},
		{`{"RoutableNetworks":["203.0.113.0"]}`, "BGP.RoutableNetworks[0]", "is not a CIDR"},
		{`{"RoutableNetworks":[24]}`, "BGP.RoutableNetworks[0]", "24 is not a string"},
		// Peers
		{`{"Peers":{"Address":"192.0.2.1"}}`, "BGP.Peers", "is an object, not a list"},
		{`{"Peers":["192.0.2.1"]}`, "BGP.Peers[0]", "is a string, not an object"},
		{peer(`"AS":64500`), "BGP.Peers[1].Address", "missing; give the peer's IP address"},
		{peer(`"Address":"router1","AS":64500`), "BGP.Peers[1].Address", `"router1" is not an IP address`},
		{peer(`"Address":"0.0.0.0","AS":64500`), "BGP.Peers[1].Address", "0.0.0.0 is the unspecified address"},
		{peer(`"Address":"::","AS":64500`), "BGP.Peers[1].Address", ":: is the unspecified address"},
		{peer(`"Address":"224.0.0.5","AS":64500`), "BGP.Peers[1].Address", "224.0.0.5 is not a unicast address"},
		{peer(`"Address":"ff02::5","AS":64500`), "BGP.Peers[1].Address", "ff02::5 is not a unicast address"},
		{peer(`"Address":"255.255.255.255","AS":64500`), "BGP.Peers[1].Address", "is not a unicast address"},
		{peer(`"Address":"fe80::1%eth0","AS":64500`), "BGP.Peers[1].Address", `"fe80::1%eth0" has a zone`},
		{peer(`"Address":"192.0.2.1","AS":64501`), "BGP.Peers[1].Address", "192.0.2.1 is also Peers[0]; list each peer once"},
		{peer(`"Address":"::ffff:192.0.2.1","AS":64501`), "BGP.Peers[1].Address", "192.0.2.1 is also Peers[0]"},
		{peer(`"Address":"192.0.2.2"`), "BGP.Peers[1].AS", "missing; give the peer's AS number"},
		{peer(`"Address":"192.0.2.2","AS":0`), "BGP.Peers[1].AS", "0 is reserved"},
		{peer(`"Address":"192.0.2.2","AS":23456`), "BGP.Peers[1].AS", "AS_TRANS"},
		{peer(`"Address":"192.0.2.2","AS":"x"`), "BGP.Peers[1].AS", "is a string; write the number without quotes"},
		{peer(`"Address":{"Password":"hunter2"},"AS":1`), "BGP.Peers[1].Address", "is an object, not a string"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":["hunter2"]`), "BGP.Peers[1].Password", "is not a string; write the password in double quotes"},
		{peer(`"Address":"192.0.2.2","AS":1,"Port":"hunter2"`), "BGP.Peers[1].Port", "is a string; write the number without quotes"},
		{peer(`"Address":"192.0.2.2","AS":1,"Multihop":{"Password":"hunter2"}`), "BGP.Peers[1].Multihop", "is an object, not a number"},
		{peer(`"Address":"192.0.2.2","AS":1,"Port":65536`), "BGP.Peers[1].Port", "65536 is out of range; use a TCP port from 1 to 65535"},
		{peer(`"Address":"192.0.2.2","AS":1,"Port":-1`), "BGP.Peers[1].Port", "-1 is out of range"},
		{peer(`"Address":"192.0.2.2","AS":1,"Multihop":256`), "BGP.Peers[1].Multihop", "256 is out of range; use a TTL from 1 to 255"},
		{peer(`"Address":"192.0.2.2","AS":1,"Multihop":-1`), "BGP.Peers[1].Multihop", "-1 is out of range"},
		{peer(`"Address":"192.0.2.2","AS":1,"HoldTime":2`), "BGP.Peers[1].HoldTime", "2 is below 3 seconds (RFC 4271)"},
		{peer(`"Address":"192.0.2.2","AS":1,"HoldTime":65536`), "BGP.Peers[1].HoldTime", "65536 is out of range"},
		{peer(`"Address":"192.0.2.2","AS":1,"Passwd":"hunter2hunter2"`), "BGP.Peers[1].Passwd", "unknown key; the keys are Address, AS, Password, Port, Multihop, HoldTime"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":12345678`), "BGP.Peers[1].Password", "is not a string; write the password in double quotes"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"` + strings.Repeat("hunter2", 12) + `"`), "BGP.Peers[1].Password",
			"is 84 bytes long; Linux takes at most 80 (TCP_MD5SIG_MAXKEYLEN)"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"` + strings.Repeat("é", 41) + `"`), "BGP.Peers[1].Password", "is 82 bytes long"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"hunter2\nhunter2"`), "BGP.Peers[1].Password", "has a control character at byte 7; use printable characters"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"hunter2\u0000"`), "BGP.Peers[1].Password", "has a control character at byte 7"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"hunter2\u007f"`), "BGP.Peers[1].Password", "has a control character"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"hunter2\u0085"`), "BGP.Peers[1].Password", "has a control character"},
		{peer(`"Address":"192.0.2.2","AS":1,"Password":"hunter2hunter2","Port":"x"`), "BGP.Peers[1].Port", "is a string"},
	} {
		_, err := Parse(json.RawMessage(tc.doc))
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: got %v, want a *config.Error", tc.doc, err)
			continue
		}
		if ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
			t.Errorf("%s:\n got %s: %s\nwant %s: ...%s...", tc.doc, ce.Key, ce.Msg, tc.key, tc.msg)
		}
		if s := err.Error(); strings.Contains(s, "\n") || strings.Contains(s, "hunter2") || !strings.HasPrefix(s, "net-conf.json: BGP") {
			t.Errorf("%s: not one line naming the key without the password: %s", tc.doc, s)
		}
	}
}

func TestParseAnnotations(t *testing.T) {
	got, err := ParseAnnotations(map[string]string{
		AnnotationLocalAS: "64513", AnnotationRouterID: "192.0.2.12",
		AnnotationPeers:                      `[{"Address":"192.0.2.1","AS":64500,"Password":"a b,c\"d"},{"address":"2001:db8:0:1::1","as":64500,"holdtime":9}]`,
		"flannel.alpha.coreos.com/public-ip": "not looked at",
	})
	want := NodeSettings{LocalAS: 64513, RouterID: netip.MustParseAddr("192.0.2.12"), PeersSet: true, Peers: []Peer{
		{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Password: `a b,c"d`, Port: 179},
		{Address: netip.MustParseAddr("2001:db8:0:1::1"), AS: 64500, Port: 179, HoldTime: 9 * time.Second},
	}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v %v\nwant %+v", got, err, want)
	}
	if got, err := ParseAnnotations(map[string]string{AnnotationPeers: " [] ", AnnotationLocalAS: ""}); err != nil || !got.PeersSet || len(got.Peers) != 0 || got.LocalAS != 0 {
		t.Errorf("an empty list sets no peers on purpose: %+v %v", got, err)
	}
	if got, err := ParseAnnotations(nil); err != nil || !reflect.DeepEqual(got, NodeSettings{}) {
		t.Errorf("no annotations: %+v %v", got, err)
	}
	for _, tc := range []struct {
		name, value, want string
	}{
		{AnnotationLocalAS, "AS64513", `annotation bgp.weft.io/local-as: "AS64513" is not an AS number; write it in decimal, e.g. 64512`},
		{AnnotationLocalAS, "1.10", `annotation bgp.weft.io/local-as: "1.10" is not an AS number`},
		{AnnotationLocalAS, "0", "annotation bgp.weft.io/local-as: 0 is reserved (RFC 7607)"},
		{AnnotationLocalAS, "23456", "annotation bgp.weft.io/local-as: 23456 is AS_TRANS"},
		{AnnotationLocalAS, "65535", "annotation bgp.weft.io/local-as: 65535 is reserved (RFC 7300)"},
		{AnnotationLocalAS, "4294967295", "annotation bgp.weft.io/local-as: 4294967295 is reserved"},
		{AnnotationLocalAS, "4294967296", "annotation bgp.weft.io/local-as: 4294967296 is larger than 4294967294"},
		{AnnotationLocalAS, "-1", "annotation bgp.weft.io/local-as: -1 is negative"},
		{AnnotationRouterID, "2001:db8::12", `annotation bgp.weft.io/router-id: "2001:db8::12" is not an IPv4 address`},
		{AnnotationRouterID, "0.0.0.0", "annotation bgp.weft.io/router-id: 0.0.0.0 is not a BGP identifier"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":64500,"Password":"hunter2` + "\n", "annotation bgp.weft.io/peers: is not valid JSON (at byte"},
		{AnnotationPeers, `{"Address":"192.0.2.1","AS":64500}`, "annotation bgp.weft.io/peers: is an object, not a list; write a list of peers such as"},
		{AnnotationPeers, `{"AS":64500,"Password":"hunter2"}`, "annotation bgp.weft.io/peers: is an object, not a list"},
		{AnnotationPeers, `"hunter2"`, "annotation bgp.weft.io/peers: is a string, not a list"},
		{AnnotationPeers, `["hunter2"]`, "annotation bgp.weft.io/peers: [0]: is a string, not an object"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":64500},["hunter2"]]`, "annotation bgp.weft.io/peers: [1]: is a list, not an object"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":"hunter2"}]`, "annotation bgp.weft.io/peers: [0].AS: is a string; write the number without quotes"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","Password":"hunter2"}]`, "annotation bgp.weft.io/peers: [0].AS: missing"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":64500,"Password":"hunter2\t"}]`, "annotation bgp.weft.io/peers: [0].Password: has a control character at byte 7"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":64500},{"Address":"192.0.2.1","AS":64501,"Password":"hunter2"}]`,
			"annotation bgp.weft.io/peers: [1].Address: 192.0.2.1 is also [0]; list each peer once"},
		{AnnotationPeers, `[{"Address":"192.0.2.1","AS":64500,"Pasword":"hunter2"}]`, "annotation bgp.weft.io/peers: [0].Pasword: unknown key"},
	} {
		_, err := ParseAnnotations(map[string]string{tc.name: tc.value})
		var se *SettingError
		if !errors.As(err, &se) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s=%q:\n got %v\nwant %s...", tc.name, tc.value, err, tc.want)
			continue
		}
		if s := err.Error(); strings.Contains(s, "\n") || strings.Contains(s, "hunter2") {
			t.Errorf("%s=%q: not one line without the password: %s", tc.name, tc.value, s)
		}
	}
}

func TestParsePeerFlag(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := file("pw", "s3 cr,et\"ü\n")
	pwCRLF := file("crlf", "hunter2\r\n")
	for _, tc := range []struct {
		flag string
		want Peer
	}{
		{"192.0.2.1,as=64500", Peer{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Port: 179}},
		{"2001:db8:0:1::1,as=4200000000,port=1179,multihop=3,hold-time=30,password-file=" + pw,
			Peer{Address: netip.MustParseAddr("2001:db8:0:1::1"), AS: 4200000000, Port: 1179, Multihop: 3, HoldTime: 30 * time.Second, Password: `s3 cr,et"ü`}},
		{" 192.0.2.1 , as = 64500 ,hold-time=1m30s,password-file=" + pwCRLF, Peer{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Port: 179, HoldTime: 90 * time.Second, Password: "hunter2"}},
		{"192.0.2.1,port=0,as=64500,multihop=0", Peer{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Port: 179}},
	} {
		got, err := ParsePeerFlag(tc.flag, os.ReadFile)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v %v, want %+v", tc.flag, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ flag, want string }{
		{"", "--bgp-peer: no address: start with the peer's address, e.g. 192.0.2.1,as=64500"},
		{"as=64500", "--bgp-peer: the first field must be the peer's address"},
		{"password=hunter2,192.0.2.1", "--bgp-peer: the first field must be the peer's address"},
		{"router1,as=64500", `--bgp-peer: address "router1" is not an IP address`},
		{"224.0.0.5,as=64500", "--bgp-peer: address 224.0.0.5 is not a unicast address"},
		{"192.0.2.1", "--bgp-peer 192.0.2.1: as: missing; give the peer's AS number"},
		{"192.0.2.1,as=0", "--bgp-peer 192.0.2.1: as: 0 is reserved"},
		{"192.0.2.1,as=65535", "--bgp-peer 192.0.2.1: as: 65535 is reserved"},
		{"192.0.2.1,as=x", `--bgp-peer 192.0.2.1: as: "x" is not an AS number`},
		{"192.0.2.1,as=", "--bgp-peer 192.0.2.1: as: no value; write as=VALUE"},
		{"192.0.2.1,as", "--bgp-peer 192.0.2.1: as: no value"},
		{"192.0.2.1,as=1,as=2", "--bgp-peer 192.0.2.1: as: given twice"},
		{"192.0.2.1,,as=1", "--bgp-peer 192.0.2.1: field 2 is empty; separate fields with one comma"},
		{"192.0.2.1,as=1,port=65536", `--bgp-peer 192.0.2.1: port: "65536": use a TCP port from 1 to 65535`},
		{"192.0.2.1,as=1,multihop=256", `--bgp-peer 192.0.2.1: multihop: "256": use a TTL from 1 to 255`},
		{"192.0.2.1,as=1,hold-time=2", `--bgp-peer 192.0.2.1: hold-time: "2": use 3 to 65535 seconds`},
		{"192.0.2.1,as=1,hold-time=1.5s", `--bgp-peer 192.0.2.1: hold-time: "1.5s": use 3 to 65535 seconds`},
		{"192.0.2.1,as=1,hold-time=99999999999999999999", `--bgp-peer 192.0.2.1: hold-time:`},
		{"192.0.2.1,as=1,password=hunter2", "--bgp-peer 192.0.2.1: password: not taken on the command line"},
		// A field that is not one of --bgp-peer's is named by its
		// position: its text may be the password.
		{"192.0.2.1,as=1,md5=hunter2", "--bgp-peer 192.0.2.1: field 3 is not a field of --bgp-peer; the fields are as, port, multihop, hold-time and password-file"},
		{"192.0.2.1,as=64500,hunter2", "--bgp-peer 192.0.2.1: field 3 is not KEY=VALUE; after the address come as=N, port=N,"},
		{"192.0.2.1,hunter2,as=64500", "--bgp-peer 192.0.2.1: field 2 is not KEY=VALUE"},
		{"192.0.2.1,as=1,hunter2=x", "--bgp-peer 192.0.2.1: field 3 is not a field of --bgp-peer"},
		{"192.0.2.1,as=1,hunter2=", "--bgp-peer 192.0.2.1: field 3 is not a field of --bgp-peer"},
		{"192.0.2.1,as=1, =hunter2", "--bgp-peer 192.0.2.1: field 3 is not a field of --bgp-peer"},
		{"192.0.2.1,as=1,Password=hunter2", "--bgp-peer 192.0.2.1: field 3 is a password, which is not taken on the command line"},
		{"192.0.2.1,AS=64500", "--bgp-peer 192.0.2.1: field 2 names a field in capitals; write as="},
		{"192.0.2.1,as=1,password-file=", "--bgp-peer 192.0.2.1: password-file: no path"},
		{"192.0.2.1,as=1,password-file=" + filepath.Join(dir, "none"), "--bgp-peer 192.0.2.1: password-file: open " + filepath.Join(dir, "none") + ": no such file"},
		{"192.0.2.1,as=1,password-file=" + file("empty", "\n"), "--bgp-peer 192.0.2.1: password-file: " + `"` + filepath.Join(dir, "empty") + `" is empty`},
		{"192.0.2.1,as=1,password-file=" + file("two", "hunter2\nhunter2\n"), "--bgp-peer 192.0.2.1: password-file: the password in " + `"` + filepath.Join(dir, "two") + `" has a control character at byte 7`},
		{"192.0.2.1,as=1,password-file=" + file("long", strings.Repeat("hunter2", 12)), "--bgp-peer 192.0.2.1: password-file: the password in " + `"` + filepath.Join(dir, "long") + `" is 84 bytes long; Linux takes at most 80`},
		{"192.0.2.1,as=1,password-file=" + file("latin1", "hunter2\xe9"), "--bgp-peer 192.0.2.1: password-file: the password in " + `"` + filepath.Join(dir, "latin1") + `" is not UTF-8 text`},
	} {
		_, err := ParsePeerFlag(tc.flag, os.ReadFile)
		var se *SettingError
		if !errors.As(err, &se) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s...", tc.flag, err, tc.want)
			continue
		}
		if s := err.Error(); strings.Contains(s, "\n") || strings.Contains(s, "hunter2") {
			t.Errorf("%q: not one line without the password: %s", tc.flag, s)
		}
	}
}

func TestWithNodeAndValidate(t *testing.T) {
	cluster, err := Parse(json.RawMessage(`{"Peers":[{"Address":"192.0.2.1","AS":64500}],"RoutableNetworks":["203.0.113.0/24"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Validate(); err == nil || err.Error() != "BGP: this node has no local AS: set BGP.LocalAS in net-conf.json, the Node annotation bgp.weft.io/local-as or --bgp-local-as" {
		t.Errorf("no local AS: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("off is valid: %v", err)
	}
	router2 := Peer{Address: netip.MustParseAddr("198.51.100.1"), AS: 64501, Port: 179}
	node := cluster.WithNode(NodeSettings{LocalAS: 64513, RouterID: netip.MustParseAddr("192.0.2.13"), Peers: []Peer{router2}, PeersSet: true})
	if node.LocalAS != 64513 || node.RouterID != netip.MustParseAddr("192.0.2.13") || !reflect.DeepEqual(node.Peers, []Peer{router2}) {
		t.Errorf("WithNode: %+v", node)
	}
	if err := node.Validate(); err != nil {
		t.Errorf("merged: %v", err)
	}
	node.Peers[0].AS = 1
	node.RoutableNetworks[0] = netip.Prefix{}
	if cluster.RoutableNetworks[0] != netip.MustParsePrefix("203.0.113.0/24") || router2.AS != 64501 {
		t.Error("WithNode shares slices with its inputs")
	}
	keep := cluster.WithNode(NodeSettings{LocalAS: 64514})
	if !reflect.DeepEqual(keep.Peers, cluster.Peers) || keep.RouterID.IsValid() {
		t.Errorf("unset node settings keep the cluster's: %+v", keep)
	}
	none := cluster.WithNode(NodeSettings{LocalAS: 64514, PeersSet: true})
	if len(none.Peers) != 0 || none.Validate() != nil {
		t.Errorf("no peers on purpose is valid: %+v %v", none.Peers, none.Validate())
	}
	if w := none.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "BGP.Peers is empty") {
		t.Errorf("warnings: %q", w)
	}
	good := cluster.WithNode(NodeSettings{LocalAS: 64514})
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.LocalAS = 23456 }, "BGP: local AS 23456 is AS_TRANS"},
		{func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, `BGP: router ID "2001:db8::1" is not an IPv4 address`},
		{func(c *Config) { c.ListenPort = 70000 }, "BGP: listen port 70000"},
		{func(c *Config) { c.HoldTime = 0 }, "BGP: hold time 0s: use 3 to 65535"},
		{func(c *Config) { c.RestartTime = 5000 * time.Second }, "BGP: restart time 1h23m20s"},
		{func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "BGP: peer 192.0.2.1 is given twice"},
		{func(c *Config) { c.Peers[0].AS = 0 }, "BGP: peer 192.0.2.1: AS 0 is reserved"},
		{func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("ff02::1") }, "BGP: peer ff02::1: address ff02::1 is not a unicast address"},
		{func(c *Config) { c.Peers[0].Password = "hunter2\x00" }, "BGP: peer 192.0.2.1: the password has a control character at byte 7"},
		{func(c *Config) { c.Peers[0].HoldTime = time.Second }, "BGP: peer 192.0.2.1: hold time 1s"},
		{func(c *Config) { c.RoutableNetworks[0] = netip.MustParsePrefix("203.0.113.9/24") }, "BGP: routable network 203.0.113.9/24 is not a network address; write 203.0.113.0/24"},
	} {
		c := good.WithNode(NodeSettings{})
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("got %v, want %s...", err, tc.want)
		}
	}
	if (Config{Enabled: true}).Warnings()[0] != "BGP.LocalAS is not set: every node must set its own (annotation bgp.weft.io/local-as or --bgp-local-as), or its agent refuses to start BGP" {
		t.Errorf("warnings: %q", (Config{Enabled: true}).Warnings())
	}
}

func TestResolved(t *testing.T) {
	c, err := Parse(json.RawMessage(fullDoc))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c.Resolved())
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"Enabled":true,"GracefulRestart":false,"HoldTime":9,"Import":true,"ListenPort":1179,"LocalAS":64512,` +
		`"Peers":[{"AS":64500,"Address":"192.0.2.1","HoldTime":30,"Multihop":2,"Password":"(set)","Port":1790},` +
		`{"AS":4200000000,"Address":"2001:db8:0:1::1","HoldTime":9,"Multihop":0,"Port":179}],` +
		`"RestartTime":30,"RoutableNetworks":["203.0.113.0/24","2001:db8:0:f::/64"],"RouterID":"192.0.2.11"}`
	if string(b) != want {
		t.Errorf("resolved:\n%s\nwant\n%s", b, want)
	}
	if strings.Contains(string(b), "s3cret") {
		t.Error("the password is shown")
	}
	if (Config{}).Resolved() != nil {
		t.Error("the zero Config resolves to something")
	}
	b, _ = json.Marshal(Config{Enabled: true, HoldTime: 90 * time.Second}.Resolved())
	if strings.Contains(string(b), "LocalAS") || strings.Contains(string(b), "RouterID") {
		t.Errorf("unset LocalAS and RouterID are shown: %s", b)
	}
	checkRoundTrip(t, c)
}

// checkRoundTrip: c's resolved form parses back to c, with passwords
// "(set)" and each peer's hold time the one it runs with.
func checkRoundTrip(t testing.TB, c Config) {
	t.Helper()
	b, err := json.Marshal(c.Resolved())
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("resolved %s does not parse: %v", b, err)
	}
	if want := redacted(c); !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip through %s:\n got %+v\nwant %+v", b, back, want)
	}
}

func redacted(c Config) Config {
	if c.isZero() {
		return c
	}
	peers := []Peer{}
	for _, p := range c.Peers {
		p.HoldTime = c.PeerHoldTime(p)
		if p.Password != "" {
			p.Password = "(set)"
		}
		peers = append(peers, p)
	}
	c.Peers = peers
	if c.RoutableNetworks == nil {
		c.RoutableNetworks = []netip.Prefix{}
	}
	return c
}

// TestCheckPassword: the rules of a peer's Password in net-conf.json, for
// a password given elsewhere (the lab's --bgp-password); a newline, which
// would end a line of a router's config, is refused without showing it.
func TestCheckPassword(t *testing.T) {
	for _, pw := range []string{"", "s3cret", "with spaces", `quo"te\`, strings.Repeat("x", 80), "密码 🔑"} {
		if err := CheckPassword(pw); err != nil {
			t.Errorf("%q: %v", pw, err)
		}
	}
	for _, tc := range []struct{ pw, want string }{
		{"hunter2\nprotocol bgp evil {", "the password has a control character at byte 7; use printable characters"},
		{"hunter2\r", "the password has a control character at byte 7"},
		{"hunter2\x00", "the password has a control character at byte 7"},
		{"hunter2\xe9", "the password is not UTF-8 text"},
		{strings.Repeat("hunter2", 12), "the password is 84 bytes long; Linux takes at most 80 (TCP_MD5SIG_MAXKEYLEN)"},
	} {
		err := CheckPassword(tc.pw)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: got %v, want %s...", tc.pw, err, tc.want)
		}
		if !utf8.ValidString(tc.pw) {
			continue // json.Marshal would make it valid
		}
		// The same rules as Password in net-conf.json.
		doc, _ := json.Marshal(map[string]any{"Peers": []any{map[string]any{"Address": "192.0.2.1", "AS": 64500, "Password": tc.pw}}})
		if _, perr := Parse(doc); perr == nil || !strings.HasSuffix(perr.Error(), strings.TrimPrefix(err.Error(), "the password ")) {
			t.Errorf("%q: net-conf.json says %v, CheckPassword %v", tc.pw, perr, err)
		}
	}
}
