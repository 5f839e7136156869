package difftest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/flannel-io/flannel/pkg/ip"
	flease "github.com/flannel-io/flannel/pkg/lease"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// flannelWGData is flannel's wireguardLeaseAttrs
// (pkg/backend/wireguard/wireguard_network.go), the backend data of a
// wireguard lease. flannel does not export it: this is a copy with the same
// field names, types and order (no tags), so encoding/json writes and reads
// both alike.
type flannelWGData struct {
	PublicKey string
	Port      uint16
}

// flannelWGAttrs is flannel's newSubnetAttrs (pkg/backend/wireguard/
// wireguard.go, unexported, so copied statement for statement): the lease
// attributes flanneld's wireguard backend asks for. Both families' data
// carry the same public key; BackendV6Data's Port is ListenPortV6 whatever
// the Mode.
func flannelWGAttrs(t *testing.T, publicIP, publicIPv6 net.IP, enableIPv4, enableIPv6 bool, publicKey string, v4Port, v6Port uint16) flease.LeaseAttrs {
	t.Helper()
	v4Data, err := json.Marshal(&flannelWGData{PublicKey: publicKey, Port: v4Port})
	if err != nil {
		t.Fatal(err)
	}
	v6Data, err := json.Marshal(&flannelWGData{PublicKey: publicKey, Port: v6Port})
	if err != nil {
		t.Fatal(err)
	}
	a := flease.LeaseAttrs{BackendType: "wireguard"}
	if publicIP != nil {
		a.PublicIP = ip.FromIP(publicIP)
	}
	if enableIPv4 {
		a.BackendData = json.RawMessage(v4Data)
	}
	if publicIPv6 != nil {
		a.PublicIPv6 = ip.FromIP6(publicIPv6)
	}
	if enableIPv6 {
		a.BackendV6Data = json.RawMessage(v6Data)
	}
	return a
}

// wgKey is the public key of a fixed private key (32 bytes of seed), and
// its bytes, computed by wgtypes (flannel's and `wg`'s key code).
func wgKey(t *testing.T, seed byte) (string, [wireguard.KeyLen]byte) {
	t.Helper()
	priv, err := wgtypes.NewKey(bytes.Repeat([]byte{seed}, wgtypes.KeyLen))
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.PublicKey()
	return pub.String(), pub
}

// wgDataFamily is one family's side of a wireguard lease: its backend data
// and the key and port it must carry ("" when the family has none).
type wgDataFamily struct {
	what string
	raw  json.RawMessage
}

// checkWGDataInWeft: weft's wireguard.ParseData reads each family's data
// as the key and port flannel wrote.
func checkWGDataInWeft(t *testing.T, ctx string, fams []wgDataFamily, key [wireguard.KeyLen]byte, ports []uint16) {
	t.Helper()
	for i, f := range fams {
		if ports[i] == 0 {
			if f.raw != nil {
				t.Errorf("%s: %s is %s, want none", ctx, f.what, f.raw)
			}
			continue
		}
		d, k, err := wireguard.ParseData(f.raw)
		if err != nil {
			t.Errorf("%s: weft cannot read %s %s: %v", ctx, f.what, f.raw, err)
			continue
		}
		if k != key || d.Port != ports[i] {
			t.Errorf("%s: weft reads %s as key %x port %d, want %x port %d", ctx, f.what, k, d.Port, key, ports[i])
		}
	}
}

// checkWGDataInFlannel: flannel's backend reads each family's data (into
// its wireguardLeaseAttrs, here flannelWGData) as the key and port weft
// wrote, and wgtypes.ParseKey (which flannel's addPeer calls) takes the
// key.
func checkWGDataInFlannel(t *testing.T, ctx string, fams []wgDataFamily, key [wireguard.KeyLen]byte, ports []uint16) {
	t.Helper()
	for i, f := range fams {
		if ports[i] == 0 {
			if len(f.raw) > 0 {
				t.Errorf("%s: %s is %s, want none", ctx, f.what, f.raw)
			}
			continue
		}
		var d flannelWGData
		if err := json.Unmarshal(f.raw, &d); err != nil {
			t.Errorf("%s: flannel cannot read %s %s: %v", ctx, f.what, f.raw, err)
			continue
		}
		k, err := wgtypes.ParseKey(d.PublicKey)
		if err != nil || k != key || d.Port != ports[i] {
			t.Errorf("%s: flannel reads %s as key %x (%v) port %d, want %x port %d", ctx, f.what, k, err, d.Port, key, ports[i])
		}
	}
}

// wgLeaseCases are wireguard leases as flanneld publishes them: IPv4
// only, dual stack (separate mode's two ports, and other ports), and
// IPv6-only (PublicIP 0.0.0.0). p4 and p6 are the ports of BackendData and
// BackendV6Data, 0 where the family is off.
var wgLeaseCases = []struct {
	ip4, ip6 string
	p4, p6   uint16
	seed     byte
}{
	{"192.0.2.31", "", 51820, 0, 1},
	{"192.0.2.32", "2001:db8:0:1::32", 51820, 51821, 2},
	{"192.0.2.33", "2001:db8:0:1::33", 4500, 4501, 3},
	{"", "2001:db8:0:1::34", 0, 51821, 4},
	{"192.0.2.35", "2001:db8:0:1::35", 65535, 1, 5},
}

// TestWireguardLeaseValuesBothWays: a wireguard lease record flanneld
// writes decodes in weft (lease.ParseValue, then wireguard.ParseData of
// each family) with the same addresses, public key and ports, and encodes
// again to the same bytes; and the record weft writes for the same node
// (its wireguard.Data per family) is flannel's byte for byte and decodes
// in flannel's lease.LeaseAttrs and wireguardLeaseAttrs to the same key
// and ports.
func TestWireguardLeaseValuesBothWays(t *testing.T) {
	for _, tc := range wgLeaseCases {
		pub, key := wgKey(t, tc.seed)
		if len(pub) != 44 {
			t.Fatalf("public key %q is not 44 characters", pub)
		}
		var ip4, ip6 net.IP
		var a4, a6 netip.Addr
		if tc.ip4 != "" {
			ip4, a4 = net.ParseIP(tc.ip4).To4(), netip.MustParseAddr(tc.ip4)
		}
		if tc.ip6 != "" {
			ip6, a6 = net.ParseIP(tc.ip6), netip.MustParseAddr(tc.ip6)
		}
		ports := []uint16{tc.p4, tc.p6}
		ctx := fmt.Sprintf("%s/%s ports %d/%d", tc.ip4, tc.ip6, tc.p4, tc.p6)

		// flannel writes, weft reads.
		fa := flannelWGAttrs(t, ip4, ip6, tc.p4 != 0, tc.p6 != 0, pub, tc.p4, tc.p6)
		fj, err := json.Marshal(&fa)
		if err != nil {
			t.Fatal(err)
		}
		wa, err := lease.ParseValue(fj)
		if err != nil {
			t.Fatalf("%s: weft cannot decode flannel's %s: %v", ctx, fj, err)
		}
		if d := attrsDiff(fa, wa); d != "" {
			t.Errorf("%s: weft decodes flannel's %s with %s", ctx, fj, d)
		}
		if wa.BackendType != wireguard.Type {
			t.Errorf("%s: BackendType %q, want %q", ctx, wa.BackendType, wireguard.Type)
		}
		checkWGDataInWeft(t, ctx+" (flannel's record)", []wgDataFamily{{"BackendData", wa.BackendData}, {"BackendV6Data", wa.BackendV6Data}}, key, ports)
		if wj, err := wa.MarshalJSON(); err != nil || string(wj) != string(fj) {
			t.Errorf("%s: weft re-encodes flannel's record differently (%v):\nflannel %s\nweft    %s", ctx, err, fj, wj)
		}

		// weft writes (its wireguard.Data per family), flannel reads.
		w := lease.Attrs{PublicIP: a4, PublicIPv6: a6, BackendType: wireguard.Type}
		if tc.p4 != 0 {
			w.BackendData = mustJSON(t, wireguard.Data{PublicKey: pub, Port: tc.p4})
		}
		if tc.p6 != 0 {
			w.BackendV6Data = mustJSON(t, wireguard.Data{PublicKey: pub, Port: tc.p6})
		}
		wj, err := w.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(wj) != string(fj) {
			t.Errorf("%s: weft's record is not flannel's:\nflannel %s\nweft    %s", ctx, fj, wj)
		}
		var back flease.LeaseAttrs
		if err := json.Unmarshal(wj, &back); err != nil {
			t.Fatalf("%s: flannel cannot decode weft's %s: %v", ctx, wj, err)
		}
		if d := attrsDiff(back, w); d != "" {
			t.Errorf("%s: flannel decodes weft's %s with %s", ctx, wj, d)
		}
		checkWGDataInFlannel(t, ctx+" (weft's record)", []wgDataFamily{{"BackendData", back.BackendData}, {"BackendV6Data", back.BackendV6Data}}, key, ports)
	}
}

// TestWireguardDataFromOlderFlannel: flannel before PR #2200 wrote no Port
// (its peers used their own listen port); flannel reads a missing Port as
// 0 and so does weft, and unknown keys are ignored by both.
func TestWireguardDataFromOlderFlannel(t *testing.T) {
	pub, key := wgKey(t, 9)
	for _, raw := range []string{
		`{"PublicKey":"` + pub + `"}`,
		`{"PublicKey":"` + pub + `","Port":0}`,
		`{"PublicKey":"` + pub + `","Port":51820,"Future":true}`,
		`{"publickey":"` + pub + `","port":51820}`,
	} {
		var f flannelWGData
		ferr := json.Unmarshal([]byte(raw), &f)
		d, k, werr := wireguard.ParseData(json.RawMessage(raw))
		if ferr != nil || werr != nil {
			t.Errorf("%s: flannel %v, weft %v", raw, ferr, werr)
			continue
		}
		if k != key || d.PublicKey != f.PublicKey || d.Port != f.Port {
			t.Errorf("%s: flannel reads %+v, weft %+v (key %x)", raw, f, d, k)
		}
	}
}

// FuzzWireguardDataAgainstFlannel: whatever backend data weft accepts,
// flannel's wireguardLeaseAttrs reads with the same key and port, and
// wgtypes.ParseKey (flannel's addPeer) takes the key; weft refuses a key
// wgtypes refuses.
func FuzzWireguardDataAgainstFlannel(f *testing.F) {
	for _, s := range []string{
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":51820}`,
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","Port":51820}`,
		`{"PublicKey":"","Port":51820}`,
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":65536}`,
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":-1}`,
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":"51820"}`,
		`{"PublicKey":"4gjOCjS2UgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","PublicKey":"x"}`,
		`null`, `[]`, `{}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		d, k, werr := wireguard.ParseData(json.RawMessage(raw))
		var fd flannelWGData
		ferr := json.Unmarshal([]byte(raw), &fd)
		if werr != nil {
			if ferr == nil && raw != "null" {
				if _, err := wgtypes.ParseKey(fd.PublicKey); err == nil {
					t.Fatalf("%s: flannel takes key %q port %d; weft refuses: %v", raw, fd.PublicKey, fd.Port, werr)
				}
			}
			return
		}
		if ferr != nil {
			t.Fatalf("%s: weft reads %+v; flannel cannot: %v", raw, d, ferr)
		}
		fk, err := wgtypes.ParseKey(fd.PublicKey)
		if err != nil || fk != k || fd.Port != d.Port || fd.PublicKey != d.PublicKey {
			t.Fatalf("%s: weft reads key %x port %d, flannel %x (%v) port %d", raw, k, d.Port, fk, err, fd.Port)
		}
	})
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWireguardBackendPublishesFlannelsAttrs: what weft's wireguard
// backend really publishes (New, which reads the key file and touches no
// kernel, then LeaseAttrs) is what flannel's newSubnetAttrs makes for the
// same node, byte for byte in Mode separate, IPv4, dual stack and
// IPv6-only: from a key file flanneld wrote (wgtypes' String, mode 0400,
// as its writePrivateKey), weft publishes the public key flanneld
// published; and the key file weft generates, flanneld reads (os.ReadFile
// and wgtypes.ParseKey, as its setupKeys) as the same key. In the single
// device Modes (auto, ipv4, ipv6) flannel publishes ListenPortV6 in
// BackendV6Data although its one device, flannel-wg, listens on
// ListenPort; weft publishes the port its device listens on.
func TestWireguardBackendPublishesFlannelsAttrs(t *testing.T) {
	dir := t.TempDir()
	flannelKey := filepath.Join(dir, "flannel-wgkey")
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flannelKey, []byte(priv.String()), 0o400); err != nil {
		t.Fatal(err)
	}
	u4, u6 := netip.MustParseAddr("192.0.2.51"), netip.MustParseAddr("2001:db8:0:1::51")
	for _, tc := range []struct {
		what      string
		net, net6 string
		mode      wireguard.Mode
	}{
		{"IPv4", "10.244.0.0/16", "", wireguard.Separate},
		{"dual", "10.244.0.0/16", "2001:db8:244::/48", wireguard.Separate},
		{"IPv6-only", "", "2001:db8:244::/48", wireguard.Separate},
		{"dual auto", "10.244.0.0/16", "2001:db8:244::/48", wireguard.Auto},
		{"dual ipv6", "10.244.0.0/16", "2001:db8:244::/48", wireguard.IPv6},
	} {
		for _, keyFile := range []string{flannelKey, filepath.Join(t.TempDir(), "wgkey")} {
			env := backend.Env{Underlay: kernel.Underlay{Name: "eth0", MTU: 1500}, WireGuardKeyFile: keyFile}
			var ip4, ip6 net.IP
			if tc.net != "" {
				env.Network, env.Underlay.Addr, ip4 = netip.MustParsePrefix(tc.net), u4, u4.AsSlice()
			}
			if tc.net6 != "" {
				env.IPv6Network, env.Underlay.Addr6, ip6 = netip.MustParsePrefix(tc.net6), u6, u6.AsSlice()
			}
			ctx, cancel := context.WithCancel(context.Background())
			b, err := wireguard.New(ctx, env, wireguard.Options{ListenPort: 51820, ListenPortV6: 51821, Mode: tc.mode})
			if err != nil {
				cancel()
				t.Fatalf("%s: New: %v", tc.what, err)
			}
			wa := b.LeaseAttrs()
			wa.PublicIP, wa.PublicIPv6 = env.Underlay.Addr, env.Underlay.Addr6 // the agent fills them in
			_ = b.Close()
			cancel()

			// flannel's key: parsed from the file as flanneld's setupKeys does
			data, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			fpriv, err := wgtypes.ParseKey(string(data))
			if err != nil {
				t.Fatalf("%s: flanneld cannot read the key file weft uses (%q): %v", tc.what, keyFile, err)
			}
			if keyFile == flannelKey && fpriv != priv {
				t.Fatalf("%s: weft changed flanneld's key file", tc.what)
			}
			fa := flannelWGAttrs(t, ip4, ip6, tc.net != "", tc.net6 != "", fpriv.PublicKey().String(), 51820, 51821)
			if tc.mode != wireguard.Separate {
				// weft publishes the port flannel-wg listens on (see above)
				fa.BackendV6Data = mustJSON(t, flannelWGData{PublicKey: fpriv.PublicKey().String(), Port: 51820})
			}
			fj, _ := json.Marshal(&fa)
			wj, err := wa.MarshalJSON()
			if err != nil || string(wj) != string(fj) {
				t.Errorf("%s (key file %s): weft's backend publishes\n    %s (%v)\nflannel\n    %s", tc.what, filepath.Base(keyFile), wj, err, fj)
			}
		}
	}
}
