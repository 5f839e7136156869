package difftest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	fsubnet "github.com/flannel-io/flannel/pkg/subnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/config"
)

// flannelWG are the wireguard options as flannel resolves them.
type flannelWG struct {
	ListenPort                  int
	ListenPortV6                int
	MTU                         int
	PSK                         string
	PersistentKeepaliveInterval time.Duration
	Mode                        string
}

// ifaceMTU stands for flannel's default MTU, the external interface's
// (weft's 0: derive it from the interface).
const ifaceMTU = -1 << 20

// flannelWGOptions is what flannel's wireguard RegisterNetwork
// (pkg/backend/wireguard/wireguard.go) does with the Backend object before
// it touches the kernel, copied because it is not a function of its own:
// json.Unmarshal into its anonymous options struct with the defaults
// (51820, 51821, the interface's MTU, no keepalive, Mode separate), the
// Mode switch ("no valid Mode configured"; Mode is compared as written,
// case-sensitively), and the PSK parse (wgtypes.ParseKey in setupKeys,
// reached when a device is created: in Mode separate only for an enabled
// family). Anything past that (ports, MTU, keepalive) is checked, if at
// all, by the kernel when flannel creates and configures the device.
func flannelWGOptions(c *fsubnet.Config) (flannelWG, error) {
	cfg := flannelWG{ListenPort: 51820, ListenPortV6: 51821, MTU: ifaceMTU, Mode: "separate"}
	if len(c.Backend) > 0 {
		if err := json.Unmarshal(c.Backend, &cfg); err != nil {
			return cfg, fmt.Errorf("error decoding backend config: %w", err)
		}
	}
	device := false
	switch cfg.Mode {
	case "separate":
		device = c.EnableIPv4 || c.EnableIPv6
	case "auto", "ipv4", "ipv6":
		device = true
	default:
		return cfg, errors.New("no valid Mode configured")
	}
	if device && cfg.PSK != "" {
		if _, err := wgtypes.ParseKey(cfg.PSK); err != nil {
			return cfg, fmt.Errorf("could not parse psk: %w", err)
		}
	}
	return cfg, nil
}

// isWireguard: the document's backend is flannel's wireguard (flannel
// picks backends by the type's lower case).
func isWireguard(c *fsubnet.Config) bool { return strings.ToLower(c.BackendType) == wireguard.Type }

// wireguardDeliberate adds to whys the wireguard options weft refuses
// where flannel starts (and then fails at the kernel, or runs broken),
// each under the key weft's error names.
func wireguardDeliberate(c *fsubnet.Config, whys map[string]string) {
	fw, err := flannelWGOptions(c)
	if err != nil {
		return
	}
	port := func(key string, p int) {
		if p < 1 || p > 65535 {
			whys["Backend."+key] = fmt.Sprintf("%s %d: flannel hands it to the kernel (0 picks a random port that it publishes as Port 0; above 65535 it publishes the port modulo 65536); weft refuses it", key, p)
		}
	}
	port("ListenPort", fw.ListenPort)
	port("ListenPortV6", fw.ListenPortV6)
	if k := int64(fw.PersistentKeepaliveInterval); k < 0 || k > wireguard.MaxKeepalive {
		whys["Backend.PersistentKeepaliveInterval"] = fmt.Sprintf("PersistentKeepaliveInterval %d: flannel hands it to wgctrl, WireGuard's field is 16 bits of seconds; weft refuses it", k)
	}
	if c.EnableIPv6 && strings.ToLower(fw.Mode) == string(wireguard.Separate) && fw.ListenPort == fw.ListenPortV6 && whys["Backend.ListenPort"] == "" {
		whys["Backend.ListenPortV6"] = "ListenPortV6 equal to ListenPort in Mode separate with IPv6: flannel-wg-v6 cannot bind it and flanneld fails at start; weft refuses it in the config"
	}
	var r struct{ Port *int }
	if json.Unmarshal(c.Backend, &r) == nil && r.Port != nil && (*r.Port < 0 || *r.Port > 65535) {
		whys["Backend.Port"] = fmt.Sprintf("Backend.Port %d: flannel's wireguard ignores it; weft validates it as every backend's", *r.Port)
	}
	if fw.MTU != ifaceMTU && fw.MTU > 65535 {
		whys["Backend.MTU"] = fmt.Sprintf("Backend.MTU %d: flannel hands it to the kernel; weft refuses one above 65535", fw.MTU)
	}
}

// wireguardLenient says why weft may accept a wireguard document flannel
// refuses, or "": weft reads Mode case-insensitively and takes an empty
// Mode as the default, separate, where flannel's switch on the string
// as written stops with "no valid Mode configured".
func wireguardLenient(c *fsubnet.Config) string {
	var r struct{ Mode *string }
	if err := json.Unmarshal(c.Backend, &r); err != nil || r.Mode == nil {
		return ""
	}
	switch m := *r.Mode; {
	case m == "":
		return `Mode "": flannel refuses it ("no valid Mode configured"); weft takes the default, separate`
	case m != strings.ToLower(m):
		return fmt.Sprintf("Mode %q: flannel compares Mode as written and refuses it; weft reads it case-insensitively", m)
	}
	return ""
}

// compareWireguard compares the resolved wireguard options of a document
// both accept, or returns what differs.
func compareWireguard(c *fsubnet.Config, wc *config.Config) string {
	fw, err := flannelWGOptions(c)
	if err != nil {
		return fmt.Sprintf("flannel's wireguard refuses it (%v), weft accepts", err)
	}
	_, opts, err := table.Resolve(wc)
	if err != nil {
		return fmt.Sprintf("weft's wireguard options: %v", err)
	}
	wo, ok := opts.(wireguard.Options)
	if !ok {
		return fmt.Sprintf("weft resolves %T, not wireguard.Options", opts)
	}
	var diffs []string
	eq := func(what string, f, w any) {
		if fmt.Sprint(f) != fmt.Sprint(w) {
			diffs = append(diffs, fmt.Sprintf("%s: flannel %v, weft %v", what, f, w))
		}
	}
	eq("ListenPort", fw.ListenPort, wo.ListenPort)
	eq("ListenPortV6", fw.ListenPortV6, wo.ListenPortV6)
	eq("Mode", strings.ToLower(fw.Mode), wo.Mode)
	eq("PersistentKeepaliveInterval", fw.PersistentKeepaliveInterval*time.Second, wo.Keepalive)
	fmtu := fw.MTU
	if fmtu == ifaceMTU {
		fmtu = 0 // the interface's, on both sides
	}
	eq("MTU", fmtu, wo.MTU)
	switch {
	case fw.PSK == "" && wo.HasPSK:
		diffs = append(diffs, "PSK: flannel none, weft one")
	case fw.PSK != "" && !wo.HasPSK:
		diffs = append(diffs, "PSK: flannel one, weft none")
	case fw.PSK != "":
		if k, err := wgtypes.ParseKey(fw.PSK); err == nil && [wireguard.KeyLen]byte(k) != wo.PSK {
			diffs = append(diffs, "PSK: flannel and weft decode different keys")
		}
	}
	return strings.Join(diffs, "; ")
}

const testPSK = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="

// wireguardCorpus are wireguard documents with flannel's outcome (its
// ParseConfig and CheckNetworkConfig, then its RegisterNetwork up to the
// kernel: flannelWGOptions) and weft's: "" when weft accepts, else the key
// its error names. compare checks that they agree, or differ as
// deliberate or wireguardLenient say.
var wireguardCorpus = []struct {
	doc            string
	flannelAccepts bool
	weftKey        string
}{
	// defaults, every option, every Mode, both families
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard"}}`, true, ""},
	{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard"}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","ListenPort":51830,"ListenPortV6":51831,"PSK":"` + testPSK + `","MTU":1500,"PersistentKeepaliveInterval":25,"Mode":"separate"}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","Mode":"auto"}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","Mode":"ipv4","PSK":"` + testPSK + `"}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","Mode":"ipv6","PersistentKeepaliveInterval":65535}}`, true, ""},
	{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","Mode":"ipv6","ListenPort":4000}}`, true, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":1,"ListenPortV6":65535,"PSK":"","PersistentKeepaliveInterval":0,"MTU":0}}`, true, ""},
	// keys in other cases (encoding/json matches them on both sides), the
	// type's case, unknown keys and udp's Port
	{`{"network":"10.244.0.0/16","backend":{"type":"wireguard","listenport":4000,"LISTENPORTV6":4001,"psk":"` + testPSK + `","persistentkeepaliveinterval":5,"mode":"auto","mtu":1420}}`, true, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"WireGuard","Frobnicate":1,"Port":7000}}`, true, ""},
	// one port for both devices: Mode separate with IPv6 needs two; any
	// other Mode, or IPv4 only, one device
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","ListenPort":51820,"ListenPortV6":51820}}`, true, "Backend.ListenPortV6"},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","ListenPortV6":51820,"Mode":"auto"}}`, true, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPortV6":51820}}`, true, ""},
	// Mode: flannel compares it as written
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"bogus"}}`, false, "Backend.Mode"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"Auto"}}`, false, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"SEPARATE"}}`, false, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":""}}`, false, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":null}}`, true, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":4}}`, false, "Backend"},
	// PSK: both parse it as a WireGuard key
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"not-a-key"}}`, false, "Backend.PSK"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"AAAAAAAAAAAAAAAAAAAAAA=="}}`, false, "Backend.PSK"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"` + strings.TrimSuffix(testPSK, "=") + `"}}`, false, "Backend.PSK"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":12}}`, false, "Backend"},
	// ports: flannel hands any int to the kernel; weft takes 1-65535
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":0}}`, true, "Backend.ListenPort"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":-1}}`, true, "Backend.ListenPort"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":70000}}`, true, "Backend.ListenPort"},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","ListenPortV6":65536}}`, true, "Backend.ListenPortV6"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":"51820"}}`, false, "Backend"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":51820.5}}`, false, "Backend"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Port":-1}}`, true, "Backend.Port"},
	// keepalive: whole seconds, 16 bits in WireGuard
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":-5}}`, true, "Backend.PersistentKeepaliveInterval"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":65536}}`, true, "Backend.PersistentKeepaliveInterval"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":"25s"}}`, false, "Backend"},
	// MTU: the device gets MTU - 80, and must carry the enabled families
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","MTU":148}}`, true, ""},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","MTU":147}}`, true, "Backend.MTU"},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","MTU":1360}}`, true, ""},
	{`{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"2001:db8:244::/48","Backend":{"Type":"wireguard","MTU":1359}}`, true, "Backend.MTU"},
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","MTU":70000}}`, true, "Backend.MTU"},
}

// TestWireguardConfigAgainstFlannel: each wireguard document is accepted
// or refused by flannel and by weft as listed, weft's refusal names the
// key listed, and compare finds no difference but the deliberate and
// lenient ones. A refused PSK is never repeated in weft's message.
func TestWireguardConfigAgainstFlannel(t *testing.T) {
	for _, tc := range wireguardCorpus {
		fc, ferr := flannelParse(tc.doc)
		if ferr == nil {
			if !isWireguard(fc) {
				t.Fatalf("%s: not a wireguard document", tc.doc)
			}
			_, ferr = flannelWGOptions(fc)
		}
		if (ferr == nil) != tc.flannelAccepts {
			t.Errorf("%s\n    flannel: %v; the corpus says accepted=%v", tc.doc, ferr, tc.flannelAccepts)
		}
		_, _, _, werr := table.Parse([]byte(tc.doc))
		var ce *config.Error
		switch {
		case tc.weftKey == "" && werr != nil:
			t.Errorf("%s\n    weft refuses (%v); the corpus says it accepts", tc.doc, werr)
		case tc.weftKey == "":
		case werr == nil:
			t.Errorf("%s\n    weft accepts; the corpus says it refuses naming %s", tc.doc, tc.weftKey)
		case tc.weftKey == "Backend": // a JSON type error: the Backend object does not decode
			if !strings.Contains(werr.Error(), "Backend") {
				t.Errorf("%s\n    weft: %v; want an error naming Backend", tc.doc, werr)
			}
		case !errors.As(werr, &ce) || ce.Key != tc.weftKey:
			t.Errorf("%s\n    weft: %v; want an error naming %s", tc.doc, werr, tc.weftKey)
		}
		if werr != nil && strings.Contains(tc.doc, `"PSK"`) {
			var r struct{ Backend struct{ PSK any } }
			_ = json.Unmarshal([]byte(tc.doc), &r)
			if s, ok := r.Backend.PSK.(string); ok && s != "" && strings.Contains(werr.Error(), s) {
				t.Errorf("%s\n    weft's message repeats the PSK: %v", tc.doc, werr)
			}
		}
		if d := compare(tc.doc); d != "" {
			t.Errorf("%s\n    %s", tc.doc, d)
		}
		t.Logf("flannel %-5v weft %-40q %s", ferr == nil, map[bool]string{true: "accepts"}[werr == nil]+errText(werr), tc.doc)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
