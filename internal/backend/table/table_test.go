package table

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/config"
)

func TestTypes(t *testing.T) {
	if got := Types(); !slices.Equal(got, []string{"vxlan", "host-gw", "udp", "wireguard"}) {
		t.Errorf("Types() = %v", got)
	}
	for _, k := range kinds {
		opts, err := k.Parse(nil)
		if err != nil {
			t.Fatalf("%s: defaults: %v", k.Type, err)
		}
		if opts.Type() != k.Type || opts.Resolved()["Type"] != k.Type || k.New == nil {
			t.Errorf("%s: options of %q, resolved %v", k.Type, opts.Type(), opts.Resolved())
		}
		if _, err := Lookup(strings.ToUpper(k.Type)); err != nil {
			t.Errorf("Lookup(%q): %v", strings.ToUpper(k.Type), err)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		doc, typ, path string
		defaulted      bool
	}{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "vxlan", "vxlan VNI 1 udp/8472 via flannel.1", false},
		{`{"network":"10.244.0.0/16","backend":{"type":"host-gw"}}`, "host-gw", "direct route (host-gw)", false},
		{`{"Network":"10.244.7.9/16"}`, "udp", "udp/8285 via flannel0 (BPF, or userspace where the node lacks it)", true},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"UDP","Port":7890}}`, "udp", "udp/7890 via flannel0 (BPF, or userspace where the node lacks it)", false},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vXlAn","VNI":4,"Port":4789}}`, "vxlan", "vxlan VNI 4 udp/4789 via flannel.4", false},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"WireGuard"}}`, "wireguard", "wireguard udp/51820 via flannel-wg", false},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/56","Backend":{"Type":"wireguard"}}`, "wireguard", "wireguard udp/51820 via flannel-wg (udp/51821 via flannel-wg-v6 for IPv6)", false},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/56","Backend":{"Type":"wireguard"}}`, "wireguard", "wireguard udp/51821 via flannel-wg-v6", false},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"auto","ListenPort":7000}}`, "wireguard", "wireguard udp/7000 via flannel-wg (mode auto)", false},
	} {
		c, k, opts, err := Parse([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		if c.Backend.Type != tc.typ || k.Type != tc.typ || opts.Type() != tc.typ || c.BackendDefaulted != tc.defaulted {
			t.Errorf("%s: type %q/%q/%q defaulted=%v", tc.doc, c.Backend.Type, k.Type, opts.Type(), c.BackendDefaulted)
		}
		if p := opts.Path(false); p != tc.path {
			t.Errorf("%s: path %q, want %q", tc.doc, p, tc.path)
		}
	}
}

func TestVXLANDefaults(t *testing.T) {
	_, _, opts, err := Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","DirectRouting":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	o := opts.(vxlan.Options)
	if o.VNI != 1 || o.Port != 8472 || !o.DirectRouting || o.Learning || o.GBP || o.MTU != 0 {
		t.Errorf("vxlan defaults: %+v", o)
	}
	if o.Path(true) != "direct route (same segment)" || o.Path(false) != "vxlan VNI 1 udp/8472 via flannel.1" {
		t.Errorf("paths %q, %q", o.Path(true), o.Path(false))
	}
}

// TestInvalid lists invalid Backend objects; each must fail with a one-line
// error naming the key.
func TestInvalid(t *testing.T) {
	for _, tc := range []struct{ doc, key, says string }{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"banana"}}`, "Backend.Type", "unknown backend \"banana\"; use one of vxlan, host-gw, udp, wireguard"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`, "Backend.Type", "flannel backend weft does not implement"},
		{`{"Network":"10.244.0.0/16","Backend":{}}`, "Backend.Type", "missing; use one of vxlan, host-gw, udp, wireguard"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"c2VjcmV0"}}`, "Backend.PSK", "6 bytes once decoded; a WireGuard key is 32"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"not base64!"}}`, "Backend.PSK", "not valid base64"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"both"}}`, "Backend.Mode", "\"both\" is not a mode; use one of separate, auto, ipv4, ipv6"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":0}}`, "Backend.ListenPort", "not a UDP port"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPortV6":65536}}`, "Backend.ListenPortV6", "not a UDP port"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":-1}}`, "Backend.PersistentKeepaliveInterval", "out of range"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":"25s"}}`, "Backend.PersistentKeepaliveInterval", "wrong type"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","MTU":147}}`, "Backend.MTU", "147 is below 148, the least MTU of an IPv4 link (68) plus what WireGuard adds (80)"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","MTU":1359}}`, "Backend.MTU", "1359 is below 1360"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","ListenPortV6":51820}}`, "Backend.ListenPortV6", "51820 is ListenPort too"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, "Backend.VNI", "out of range"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}`, "Backend.VNI", "out of range"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":70000}}`, "Backend.Port", "not a UDP port"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":-2}}`, "Backend.Port", "not a UDP port"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","Port":70000}}`, "Backend.Port", "not a UDP port"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":-1}}`, "Backend.MTU", "out of range"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","MTU":65536}}`, "Backend.MTU", "out of range"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}`, "Backend.DirectRouting", "wrong type"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":1}}`, "Backend.GBP", "wrong type"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"},"SubnetLen":31}`, "SubnetLen", "longer than /30"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":10}}`, "Backend.MTU", "10 is below 68, the least MTU of an IPv4 link; use 0 (derive from the interface) or at least 68"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw","MTU":1279}}`, "Backend.MTU", "1279 is below 1280, the least MTU of an IPv6 link, and EnableIPv6 is true"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan","MTU":1349}}`, "Backend.MTU", "1349 is below 1350, the least MTU of an IPv6 link (1280) plus what VXLAN over IPv6 adds (70)"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"udp"}}`, "EnableIPv6", "the udp backend is IPv4-only, as flannel's: use vxlan or host-gw for IPv6"},
		{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48"}`, "EnableIPv6", "the udp backend is IPv4-only"},
	} {
		_, _, _, err := Parse([]byte(tc.doc))
		if err == nil {
			t.Errorf("%s: accepted", tc.doc)
			continue
		}
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: error %q does not name key %s and say %q", tc.doc, err, tc.key, tc.says)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.doc, err)
		}
	}
}

// Each backend reads only its own options, as flannel's backends do: a
// key that belongs to another backend is ignored, whatever its value.
// (Before the table, every backend's keys were type-checked for all.)
func TestOtherBackendsKeysAreIgnored(t *testing.T) {
	for _, doc := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":"x","DirectRouting":"yes"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","GBP":7,"Learning":"no"}}`,
	} {
		if _, _, _, err := Parse([]byte(doc)); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
}

// TestMTUBounds: Backend.MTU 0 derives the MTU and is always valid; else
// it must be at least 68, or 1280 when the network enables IPv6 (with
// vxlan, 1280 on flannel-v6.<VNI>: 1350; wireguard adds its 80 to both). The values at the bounds pass;
// one below fails.
func TestMTUBounds(t *testing.T) {
	nets := map[string]string{
		"ipv4": `"Network":"10.244.0.0/16"`,
		"dual": `"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48"`,
		"ipv6": `"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48"`,
	}
	for fam, least := range map[string]int{"ipv4": MinMTU, "dual": MinMTU6, "ipv6": MinMTU6} {
		for _, typ := range Types() {
			if typ == "udp" && fam != "ipv4" {
				continue // refused whatever the MTU (TestInvalid)
			}
			least := least
			if typ == "vxlan" && fam != "ipv4" {
				least += vxlan.Overhead6
			}
			if typ == "wireguard" {
				least += wireguard.Overhead // every device, both families
			}
			for _, tc := range []struct {
				mtu int
				ok  bool
			}{{0, true}, {least, true}, {least - 1, false}, {1, false}, {9000, true}} {
				doc := fmt.Sprintf(`{%s,"Backend":{"Type":%q,"MTU":%d}}`, nets[fam], typ, tc.mtu)
				_, _, _, err := Parse([]byte(doc))
				var ce *config.Error
				switch {
				case tc.ok && err != nil:
					t.Errorf("%s: %v", doc, err)
				case !tc.ok && (!errors.As(err, &ce) || ce.Key != "Backend.MTU"):
					t.Errorf("%s: error %v, want one naming Backend.MTU", doc, err)
				}
			}
		}
	}
}

func TestDocument(t *testing.T) {
	doc, err := Document("10.244.0.0/16", "vxlan", 0, map[string]any{"DirectRouting": true})
	if err != nil || string(doc) != `{"Backend":{"DirectRouting":true,"Type":"vxlan"},"Network":"10.244.0.0/16"}` {
		t.Errorf("Document = %s, %v", doc, err)
	}
	if _, err := Document("10.244.0.0/16", "banana", 0, nil); err == nil {
		t.Error("Document accepted backend banana")
	}
}

// FuzzParse checks that whatever Parse accepts resolves into a document
// that parses again to the same options.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":3,"GBP":true}}`,
		`{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.16.0.0","Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":7000,"MTU":1400}}`,
		`{"EnableIPv6":true,"IPv6Network":"fd00::/56","Network":"10.1.0.0/16","Backend":{"Type":"vxlan","MTU":1350}}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","IPv6SubnetLen":80,"Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","Mode":"auto","PersistentKeepaliveInterval":25}}`,
		`{"EnableIPv6":true,"IPv6Network":"fd00::/56","Network":"10.1.0.0/16","Backend":{"Type":"wireguard","ListenPortV6":4000,"MTU":1400}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, opts, err := Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		r := opts.Resolved()
		if wg, ok := opts.(wireguard.Options); ok && wg.HasPSK {
			// Resolved shows a PSK as "(set)"; the round trip needs it.
			if r["PSK"] != "(set)" {
				t.Fatalf("the PSK is rendered as %q", r["PSK"])
			}
			r["PSK"] = base64.StdEncoding.EncodeToString(wg.PSK[:])
		}
		out, err := c.MarshalResolved(r)
		if err != nil {
			t.Fatal(err)
		}
		c2, _, opts2, err := Parse(out)
		if err != nil {
			t.Fatalf("resolved config does not parse again: %v\n%s", err, out)
		}
		if c2.IPv4 != c.IPv4 || c2.IPv6 != c.IPv6 || opts2 != opts {
			t.Fatalf("round trip changed the config:\n%+v %+v\n%+v %+v", c, opts, c2, opts2)
		}
	})
}
