package wireguard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/config"
)

func TestParseDefaults(t *testing.T) {
	for _, raw := range []string{"", `{"Type":"wireguard"}`} {
		var data json.RawMessage
		if raw != "" {
			data = json.RawMessage(raw)
		}
		opts, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		o := opts.(Options)
		if o.ListenPort != 51820 || o.ListenPortV6 != 51821 || o.HasPSK || o.MTU != 0 || o.Keepalive != 0 || o.Mode != Separate {
			t.Errorf("%q: defaults %+v", raw, o)
		}
	}
}

func TestParse(t *testing.T) {
	psk := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	opts, err := Parse(json.RawMessage(`{"type":"wireguard","listenport":7000,"LISTENPORTV6":7001,"psk":"` + psk + `","mtu":1400,"persistentKeepaliveInterval":25,"mode":"Auto","Unknown":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	o := opts.(Options)
	if o.ListenPort != 7000 || o.ListenPortV6 != 7001 || !o.HasPSK || string(o.PSK[:]) != "0123456789abcdef0123456789abcdef" ||
		o.MTU != 1400 || o.Keepalive != 25*time.Second || o.Mode != Auto {
		t.Errorf("options %+v", o)
	}
	r := o.Resolved()
	if r["PSK"] != "(set)" || r["Mode"] != "auto" || r["PersistentKeepaliveInterval"] != int64(25) || r["Type"] != Type {
		t.Errorf("resolved %v", r)
	}
	if p := o.Path(false); p != "wireguard udp/7000 via flannel-wg (mode auto)" {
		t.Errorf("path %q", p)
	}
}

// TestPath: in Mode separate the path names the devices of the families
// the network enables; not told, both.
func TestPath(t *testing.T) {
	opts, _ := Parse(json.RawMessage(`{"ListenPort":7000,"ListenPortV6":7001}`))
	o := opts.(Options)
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{o, "wireguard udp/7000 via flannel-wg (udp/7001 via flannel-wg-v6 for IPv6)"},
		{o.ForNetwork(true, false), "wireguard udp/7000 via flannel-wg"},
		{o.ForNetwork(false, true), "wireguard udp/7001 via flannel-wg-v6"},
		{o.ForNetwork(true, true), "wireguard udp/7000 via flannel-wg (udp/7001 via flannel-wg-v6 for IPv6)"},
	} {
		for _, onLink := range []bool{false, true} {
			if p := tc.o.Path(onLink); p != tc.want {
				t.Errorf("%+v: path(%v) %q, want %q", tc.o.net, onLink, p, tc.want)
			}
		}
	}
	o.Mode = IPv6
	if p := o.ForNetwork(true, false).Path(false); p != "wireguard udp/7000 via flannel-wg (mode ipv6)" {
		t.Errorf("mode ipv6: path %q", p)
	}
}

// TestParseErrors: each bad value is one line naming its key; the PSK is
// never repeated.
func TestParseErrors(t *testing.T) {
	secret := "c2VjcmV0LXBzay10aGF0LWlzLXRvby1zaG9ydA=="
	for _, tc := range []struct{ raw, key, says string }{
		{`{"PSK":"` + secret + `"}`, "Backend.PSK", "bytes once decoded; a WireGuard key is 32"},
		{`{"PSK":"%%%%"}`, "Backend.PSK", "not valid base64"},
		{`{"PSK":7}`, "Backend.PSK", "wrong type"},
		{`{"Mode":"dual"}`, "Backend.Mode", `"dual" is not a mode; use one of separate, auto, ipv4, ipv6`},
		{`{"ListenPort":-1}`, "Backend.ListenPort", "not a UDP port; use 1-65535"},
		{`{"ListenPortV6":0}`, "Backend.ListenPortV6", "not a UDP port"},
		{`{"PersistentKeepaliveInterval":65536}`, "Backend.PersistentKeepaliveInterval", "out of range"},
		{`{"PersistentKeepaliveInterval":1.5}`, "Backend.PersistentKeepaliveInterval", "wrong type"},
		{`{"MTU":-5}`, "Backend.MTU", "out of range"},
	} {
		_, err := Parse(json.RawMessage(tc.raw))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s saying %q", tc.raw, err, tc.key, tc.says)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error repeats the PSK: %v", tc.raw, err)
		}
	}
}

func TestCheckIPv6(t *testing.T) {
	o, _ := Parse(json.RawMessage(`{"ListenPort":5000,"ListenPortV6":5000}`))
	if err := o.(Options).CheckIPv6(); err == nil || !strings.Contains(err.Error(), "Backend.ListenPortV6: 5000 is ListenPort too") {
		t.Errorf("separate with one port: %v", err)
	}
	o, _ = Parse(json.RawMessage(`{"ListenPort":5000,"ListenPortV6":5000,"Mode":"auto"}`))
	if err := o.(Options).CheckIPv6(); err != nil {
		t.Errorf("auto with one port: %v", err)
	}
}

// FuzzParse: no panic; an error is one line that never repeats the PSK;
// accepted options render and parse again to the same.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"PSK":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","Mode":"ipv6"}`, `{"ListenPort":1,"PersistentKeepaliveInterval":0}`, `{"PSK":"abc"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		opts, err := Parse(raw)
		if err != nil {
			var r struct{ PSK string }
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			if json.Unmarshal(raw, &r) == nil && len(r.PSK) >= 4 && strings.Contains(err.Error(), r.PSK) {
				t.Fatalf("the error %q repeats the PSK", err)
			}
			return
		}
		o := opts.(Options)
		r := o.Resolved()
		if o.HasPSK {
			r["PSK"] = base64.StdEncoding.EncodeToString(o.PSK[:])
		}
		doc, _ := json.Marshal(r)
		again, err := Parse(doc)
		if err != nil || again != opts {
			t.Fatalf("%s: parses again to %+v, %v; want %+v", doc, again, err, opts)
		}
	})
}

// FuzzParseData: no panic; accepted data has a 32-byte key that is its
// PublicKey decoded.
func FuzzParseData(f *testing.F) {
	for _, s := range []string{`{"PublicKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","Port":51820}`, `null`, `{"PublicKey":""}`, `{"Port":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, key, err := ParseData(raw)
		if err != nil {
			return
		}
		if b, _ := base64.StdEncoding.DecodeString(d.PublicKey); string(b) != string(key[:]) {
			t.Fatalf("key %x is not %q decoded", key, d.PublicKey)
		}
	})
}
