// Package difftest compares weft with flannel's own library on the same
// inputs: what weft accepts must be what flannel accepts, with the same
// defaults, except for the deliberate differences listed in deliberate.
package difftest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-io/flannel/pkg/ip"
	fsubnet "github.com/flannel-io/flannel/pkg/subnet"

	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/config"
)

// corpus: flannel's documented examples, edge cases of SubnetLen, SubnetMin
// and SubnetMax for both families, and invalid documents.
var corpus = []string{
	// flannel's documentation (Documentation/configuration.md, backends.md)
	`{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0", "Backend": {"Type": "udp", "Port": 7890}}`,
	`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}`,
	`{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`,
	`{"EnableIPv4": true, "EnableIPv6": true, "Network": "10.42.0.0/16", "IPv6Network": "2001:cafe:42::/56", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv6": true, "EnableIPv4": false, "IPv6Network": "2001:cafe:42::/56", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.244.0.0/16"}`,
	// SubnetLen edges
	`{"Network": "10.0.0.0/22", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/23", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/28", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/29", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": 30, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": 31, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": 18, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": 17, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": 0, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": -1, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetLen": "24", "Backend": {"Type": "vxlan"}}`,
	// SubnetMin / SubnetMax edges
	`{"Network": "10.0.0.0/16", "SubnetMin": "10.0.5.0", "SubnetMax": "10.0.9.0", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMin": "10.0.5.1", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMax": "10.1.0.0", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMin": "0.0.0.0", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMin": "10.0.9.0", "SubnetMax": "10.0.5.0", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMin": "bogus", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "SubnetMin": "fd00::", "Backend": {"Type": "vxlan"}}`,
	// IPv6 edges
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/62", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/63", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/124", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/125", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 127, "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 60, "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd00:0:0:10::", "IPv6SubnetMax": "fd00:0:0:20::", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd00:0:0:10::1", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMax": "fd01::", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "::", "Backend": {"Type": "vxlan"}}`,
	// invalid documents
	`not json`,
	`[]`,
	`{}`,
	`{"Network": ""}`,
	`{"Network": "10.0.0.0"}`,
	`{"Network": "10.0.0.0/33"}`,
	`{"Network": "fd00::/64"}`,
	`{"Network": 17}`,
	`{"EnableIPv4": false, "EnableIPv6": true}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}`,
	`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "Network": "garbage", "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "Backend": "vxlan"}`,
	`{"Network": "10.0.0.0/16", "EnableIPv4": "yes"}`,
	// keys in other cases, unknown keys
	`{"network": "10.9.0.0/16", "subnetlen": 26, "backend": {"type": "vxlan"}, "Frobnicate": 1}`,
	// deliberate differences (see deliberate)
	`{"EnableIPv4": false, "EnableIPv6": false, "Backend": {"Type": "vxlan"}}`,
	`{"Network": "10.0.0.0/16", "Backend": {"Type": "banana"}}`,
	`{"Network": "10.0.0.0/16", "Backend": {}}`,
	`{"Network": "10.0.0.0/16", "Backend": {"Type": "ipsec"}}`,
	`{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "MTU": 10}}`,
	`{"EnableIPv6": true, "Network": "10.0.0.0/16", "IPv6Network": "fd00::/56", "Backend": {"Type": "vxlan", "MTU": 1279}}`,
	`{"EnableIPv6": true, "Network": "10.0.0.0/16", "IPv6Network": "fd00::/56", "Backend": {"Type": "udp"}}`,
	`{"EnableIPv6": true, "Network": "10.0.0.0/16", "IPv6Network": "fd00::/56"}`,
}

// ipv6Corpus are IPv6-only and dual-stack documents, each with what
// flannel does with it, so that the corpus cannot quietly stop testing
// either side: defaults of IPv6SubnetLen, IPv6SubnetMin and IPv6SubnetMax,
// their bounds, and rejections.
var ipv6Corpus = []struct {
	doc            string
	flannelAccepts bool
}{
	// defaults: /64 up to a /62 network, else the network's length + 2
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8::/32", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/64", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/120", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/124", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/126", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/128", "Backend": {"Type": "vxlan"}}`, false},
	// host bits, upper case, keys in other cases
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::1/48", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:DB8:244::/48", "Backend": {"Type": "vxlan"}}`, true},
	{`{"enableipv4": false, "enableipv6": true, "ipv6network": "2001:db8:244::/48", "ipv6subnetlen": 80, "backend": {"type": "vxlan"}}`, true},
	// IPv6SubnetLen bounds
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 50, "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 49, "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 126, "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 127, "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 0, "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": -64, "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": "64", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 64.5, "Backend": {"Type": "vxlan"}}`, false},
	// IPv6SubnetMin and IPv6SubnetMax
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "2001:db8:244:10::", "IPv6SubnetMax": "2001:db8:244:20::", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "2001:db8:244:20::", "IPv6SubnetMax": "2001:db8:244:10::", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 80, "IPv6SubnetMin": "2001:db8:244:0:1::", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 80, "IPv6SubnetMin": "2001:db8:244:0:1:1::", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMax": "2001:db8:245::", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "2001:db8:243:ffff::", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMax": "::", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "10.244.1.0", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetMin": "bogus", "Backend": {"Type": "vxlan"}}`, false},
	// both families' bounds at once: the IPv4 side still decides
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "SubnetLen": 31, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`, false},
	// rejections
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "::/0", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/129", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": 6, "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv4": false, "EnableIPv6": "true", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan"}}`, false},
	{`{"EnableIPv6": false, "Network": "10.244.0.0/16", "IPv6Network": "bogus", "Backend": {"Type": "vxlan"}}`, false},
	// IPv4-mapped (weft refuses it, deliberate) and IPv4-compatible networks
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "::ffff:10.0.0.0/104", "Backend": {"Type": "vxlan"}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "::a00:0/104", "Backend": {"Type": "vxlan"}}`, true}, // weft refuses, deliberate
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fe80::%eth0/64", "Backend": {"Type": "vxlan"}}`, false},
	// IPv6 switched off: the IPv6 keys are read but not used
	{`{"EnableIPv6": false, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "IPv6SubnetLen": 127, "Backend": {"Type": "vxlan"}}`, true},
	// MTU: 0 derives it; weft refuses less than 1280 with IPv6, 1350 with
	// vxlan (deliberate)
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan", "MTU": 0}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "vxlan", "MTU": 1280}}`, true},
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "host-gw", "MTU": 576}}`, true},
	// udp: flannel starts it and carries IPv4 only; weft refuses (deliberate)
	{`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:244::/48", "Backend": {"Type": "udp"}}`, true},
	{`{"EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "2001:db8:244::/48"}`, true},
}

// flannelParse is what flanneld does with <prefix>/config: ParseConfig,
// then CheckNetworkConfig (which also fills in the defaults).
func flannelParse(doc string) (*fsubnet.Config, error) {
	c, err := fsubnet.ParseConfig(doc)
	if err != nil {
		return nil, err
	}
	if err := fsubnet.CheckNetworkConfig(c); err != nil {
		return nil, err
	}
	return c, nil
}

// deliberate lists why weft may reject a document flannel accepts, each
// with the key weft's error must name (weft reports the first it meets).
// flannel checks these later (at backend start) or not at all.
func deliberate(c *fsubnet.Config) map[string]string {
	whys := map[string]string{} // key: why
	typ := strings.ToLower(c.BackendType)
	if !c.EnableIPv4 && !c.EnableIPv6 {
		whys["EnableIPv4"] = "both families disabled: weft rejects it in the config"
	}
	if !slices.Contains(table.Types(), typ) {
		whys["Backend.Type"] = fmt.Sprintf("backend type %q: weft rejects a type it does not implement in the config; flannel fails later, at backend start", c.BackendType)
	}
	if c.EnableIPv6 && addr6(c.IPv6Network.IP).Is4In6() {
		whys["IPv6Network"] = "an IPv4-mapped IPv6Network (::ffff:0:0/96): flannel takes it; weft refuses it, an IPv4 network in IPv6's clothes"
	}
	if n6 := netip.PrefixFrom(addr6(c.IPv6Network.IP), int(c.IPv6Network.PrefixLen)); c.EnableIPv6 && n6.Overlaps(netip.MustParsePrefix("::/96")) {
		whys["IPv6Network"] = "an IPv6Network overlapping ::/96: flannel takes it and writes its lease keys as IPv4, keys it cannot read; weft refuses it"
	}
	if typ == wireguard.Type {
		wireguardDeliberate(c, whys)
	}
	if typ == "udp" && c.EnableIPv6 {
		whys["EnableIPv6"] = "udp with IPv6: flannel's udp carries IPv4 only and says nothing; weft refuses it in the config"
	}
	var be struct{ MTU *int }
	if json.Unmarshal(c.Backend, &be) == nil && be.MTU != nil && *be.MTU != 0 {
		least := table.MinMTU
		if c.EnableIPv6 {
			least = table.MinMTU6
			if typ == vxlan.Type {
				least += vxlan.Overhead6 // flannel-v6.<VNI> needs 1280 itself
			}
		}
		if typ == wireguard.Type {
			least += wireguard.Overhead // the device gets MTU - 80
		}
		if *be.MTU < least {
			whys["Backend.MTU"] = fmt.Sprintf("Backend.MTU %d: flannel takes any MTU; weft refuses one below %d", *be.MTU, least)
		}
	}
	return whys
}

// addr6 is flannel's IPv6 address as a netip.Addr. (Not through its
// String: an address below 2^32 prints as IPv4 there, "::a00:0" as
// "10.0.0.0".)
func addr6(a *ip.IP6) netip.Addr {
	if a == nil {
		return netip.IPv6Unspecified()
	}
	return netip.AddrFrom16([16]byte((*big.Int)(a).FillBytes(make([]byte, 16))))
}

// compare checks one document and returns what differs, or "".
func compare(doc string) string {
	fc, ferr := flannelParse(doc)
	if ferr == nil && isWireguard(fc) {
		// flannel's wireguard backend checks its options at start, before
		// it touches the kernel
		_, ferr = flannelWGOptions(fc)
	}
	wc, _, _, werr := table.Parse([]byte(doc))
	switch {
	case ferr != nil && werr != nil:
		return ""
	case ferr != nil && fc != nil && isWireguard(fc) && wireguardLenient(fc) != "":
		return "" // weft is lenient, deliberately (wireguardLenient)
	case ferr != nil:
		return fmt.Sprintf("flannel rejects (%v), weft accepts", ferr)
	case werr != nil:
		whys := deliberate(fc)
		var ce *config.Error
		if errors.As(werr, &ce) && whys[ce.Key] != "" {
			return ""
		}
		if len(whys) > 0 {
			return fmt.Sprintf("flannel accepts, weft rejects it deliberately (%v) but with another error: %v", whys, werr)
		}
		return fmt.Sprintf("flannel accepts, weft rejects (%v)", werr)
	}
	var diffs []string
	eq := func(what string, f, w any) {
		if fmt.Sprint(f) != fmt.Sprint(w) {
			diffs = append(diffs, fmt.Sprintf("%s: flannel %v, weft %v", what, f, w))
		}
	}
	eq("EnableIPv4", fc.EnableIPv4, wc.EnableIPv4)
	eq("EnableIPv6", fc.EnableIPv6, wc.EnableIPv6)
	// flannel keeps the type as written and picks the backend by its lower
	// case (pkg/backend/manager.go); weft lower-cases it when parsing.
	eq("Backend.Type", strings.ToLower(fc.BackendType), wc.Backend.Type)
	if fc.EnableIPv4 {
		eq("Network", fc.Network.String(), wc.IPv4.Network.String())
		eq("SubnetLen", fc.SubnetLen, wc.IPv4.SubnetLen)
		eq("SubnetMin", fc.SubnetMin.String(), wc.IPv4.SubnetMin.String())
		eq("SubnetMax", fc.SubnetMax.String(), wc.IPv4.SubnetMax.String())
	}
	if fc.EnableIPv6 {
		eq("IPv6Network", netip.PrefixFrom(addr6(fc.IPv6Network.IP), int(fc.IPv6Network.PrefixLen)), wc.IPv6.Network)
		eq("IPv6SubnetLen", fc.IPv6SubnetLen, wc.IPv6.SubnetLen)
		eq("IPv6SubnetMin", addr6(fc.IPv6SubnetMin), wc.IPv6.SubnetMin)
		eq("IPv6SubnetMax", addr6(fc.IPv6SubnetMax), wc.IPv6.SubnetMax)
	}
	if isWireguard(fc) {
		if d := compareWireguard(fc, wc); d != "" {
			diffs = append(diffs, d)
		}
	}
	return strings.Join(diffs, "; ")
}

func TestConfigAgainstFlannel(t *testing.T) {
	agree := 0
	for _, doc := range corpus {
		if d := compare(doc); d != "" {
			t.Errorf("%s\n    %s", doc, d)
		} else {
			agree++
		}
	}
	t.Logf("%d of %d documents: weft and flannel agree (or differ deliberately)", agree, len(corpus))
}

// TestIPv6ConfigAgainstFlannel: the IPv6-only and dual-stack documents,
// each accepted or refused by flannel as listed, and by weft the same way
// with the same resolved values (or refused deliberately).
func TestIPv6ConfigAgainstFlannel(t *testing.T) {
	agree, accepted := 0, 0
	for _, tc := range ipv6Corpus {
		fc, ferr := flannelParse(tc.doc)
		if (ferr == nil) != tc.flannelAccepts {
			t.Errorf("%s\n    flannel: %+v, %v; the corpus says accepted=%v", tc.doc, fc, ferr, tc.flannelAccepts)
		}
		if ferr == nil {
			accepted++
		}
		if d := compare(tc.doc); d != "" {
			t.Errorf("%s\n    %s", tc.doc, d)
		} else {
			agree++
		}
	}
	t.Logf("%d of %d IPv6 and dual-stack documents (%d accepted by flannel): weft and flannel agree (or differ deliberately)", agree, len(ipv6Corpus), accepted)
}

func FuzzConfigAgainstFlannel(f *testing.F) {
	for _, doc := range corpus {
		f.Add(doc)
	}
	for _, tc := range ipv6Corpus {
		f.Add(tc.doc)
	}
	for _, tc := range wireguardCorpus {
		f.Add(tc.doc)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if d := compare(doc); d != "" {
			t.Fatalf("%s\n    %s", doc, d)
		}
	})
}
