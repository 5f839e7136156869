package cni

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/internal/subnetenv"
)

// flannelConflistPlugin is the flannel entry of kube-flannel.yml's
// conflist, with only its type changed.
const flannelConflistPlugin = `{"cniVersion":"0.3.1","name":"cbr0","type":"weft-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`

func TestParseConf(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name, in string
		want     NetConf // resolved fields only
		bridge   string
		code     uint // CNI error code; 0: accepted
	}{
		{"weft's own", `{"name":"weft"}`, NetConf{HairpinMode: true, DefaultGateway: true}, "cni0", 0},
		{"flannel's conflist", flannelConflistPlugin, NetConf{HairpinMode: true, DefaultGateway: true}, "cni0", 0},
		{"flannel's type kept", strings.Replace(flannelConflistPlugin, "weft-cni", "flannel", 1), NetConf{HairpinMode: true, DefaultGateway: true}, "cni0", 0},
		// A delegate means the bridge plugin's defaults for what it leaves out.
		{"empty delegate", `{"name":"n","delegate":{}}`, NetConf{}, "cni0", 0},
		{"delegate options", `{"name":"n","bridge":"top","delegate":{"bridge":"br1","ipMasq":false,"mtu":1400,"hairpinMode":false,"isDefaultGateway":false}}`,
			NetConf{IPMasq: &no, MTU: 1400}, "br1", 0},
		{"delegate ipMasq on", `{"name":"n","delegate":{"ipMasq":true}}`, NetConf{IPMasq: &yes}, "cni0", 0},
		// Keys flannel passes on, or checks, that change nothing here.
		{"ignored keys", `{"name":"n","type":"flannel","dataDir":"/var/lib/cni/flannel","ipam":{"type":"host-local","routes":[{"dst":"192.0.2.0/24"}]},
			"runtimeConfig":{"portMappings":[]},"delegate":{"type":"bridge","isGateway":true,"forceAddress":true,"promiscMode":false,"vlan":0,"name":"x","ipam":{},"cniVersion":"0.3.1"}}`,
			NetConf{}, "cni0", 0},
		{"delegate null", `{"name":"n","delegate":null}`, NetConf{HairpinMode: true, DefaultGateway: true}, "cni0", 0},
		{"top-level bridge", `{"name":"n","bridge":"br0"}`, NetConf{HairpinMode: true, DefaultGateway: true}, "br0", 0},
		{"no name", `{"type":"weft-cni"}`, NetConf{}, "", types.ErrInvalidNetworkConfig},
		{"bad JSON", `{"name":`, NetConf{}, "", types.ErrDecodingFailure},
		{"delegate not an object", `{"name":"n","delegate":"bridge"}`, NetConf{}, "", types.ErrDecodingFailure},
		{"delegate bool as string", `{"name":"n","delegate":{"hairpinMode":"true"}}`, NetConf{}, "", types.ErrDecodingFailure},
		{"delegate mtu too small", `{"name":"n","delegate":{"mtu":10}}`, NetConf{}, "", types.ErrInvalidNetworkConfig},
		{"long bridge", `{"name":"n","delegate":{"bridge":"a-very-long-bridge"}}`, NetConf{}, "", types.ErrInvalidNetworkConfig},
	} {
		c, err := ParseConf([]byte(tc.in))
		if tc.code != 0 {
			te, ok := err.(*types.Error)
			if !ok || te.Code != tc.code {
				t.Errorf("%s: ParseConf = %v, want CNI error code %d", tc.name, err, tc.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := fmt.Sprintf("hairpin=%t defaultGW=%t ipMasq=%s mtu=%d bridge=%s", c.HairpinMode, c.DefaultGateway, ptr(c.IPMasq), c.MTU, c.Bridge)
		want := fmt.Sprintf("hairpin=%t defaultGW=%t ipMasq=%s mtu=%d bridge=%s", tc.want.HairpinMode, tc.want.DefaultGateway, ptr(tc.want.IPMasq), tc.want.MTU, tc.bridge)
		if got != want {
			t.Errorf("%s: got %s, want %s", tc.name, got, want)
		}
	}
}

func ptr(b *bool) string {
	if b == nil {
		return "unset"
	}
	return fmt.Sprint(*b)
}

func env(t *testing.T, s string) subnetenv.Env {
	t.Helper()
	e, err := subnetenv.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const (
	dualEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	v6Env   = "FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
)

// TestNodeAndRoutes: each family of subnet.env gives the pod an address
// range, a gateway and routes as flannel's delegate to the bridge does.
func TestNodeAndRoutes(t *testing.T) {
	for _, tc := range []struct {
		name, conf, env string
		fams            string
		masq            bool
		routes          string
	}{
		{"dual, weft's own conf", `{"name":"n"}`, dualEnv,
			"[10.244.5.0/24 gw 10.244.5.1 net 10.244.0.0/16, 2001:db8:244:5::/64 gw 2001:db8:244:5::1 net 2001:db8:244::/48]", false,
			"[route 10.244.0.0/16 via 10.244.5.1 default route via 10.244.5.1 route 2001:db8:244::/48 via 2001:db8:244:5::1 default route via 2001:db8:244:5::1]"},
		{"IPv6 only, flannel's conflist", flannelConflistPlugin, v6Env,
			"[2001:db8:244:5::/64 gw 2001:db8:244:5::1 net 2001:db8:244::/48]", true,
			"[route 2001:db8:244::/48 via 2001:db8:244:5::1 default route via 2001:db8:244:5::1]"},
		{"no default gateway", `{"name":"n","delegate":{"hairpinMode":true}}`, dualEnv,
			"[10.244.5.0/24 gw 10.244.5.1 net 10.244.0.0/16, 2001:db8:244:5::/64 gw 2001:db8:244:5::1 net 2001:db8:244::/48]", false,
			"[route 10.244.0.0/16 via 10.244.5.1 route 2001:db8:244::/48 via 2001:db8:244:5::1]"},
		{"delegate ipMasq wins", `{"name":"n","delegate":{"ipMasq":true}}`, dualEnv, "", true, ""},
		{"weft's own conf never masquerades by itself", `{"name":"n"}`, v6Env, "", false, ""},
		{"subnet given by its network address", `{"name":"n"}`, "FLANNEL_SUBNET=10.244.5.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			"[10.244.5.0/24 gw 10.244.5.1 net invalid Prefix]", false, "[default route via 10.244.5.1]"},
	} {
		c, err := ParseConf([]byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		n, err := resolveNode(c, env(t, tc.env))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if n.ipMasq != tc.masq {
			t.Errorf("%s: ipMasq %t, want %t", tc.name, n.ipMasq, tc.masq)
		}
		if tc.fams == "" {
			continue
		}
		var fams []string
		for _, f := range n.fams {
			fams = append(fams, fmt.Sprintf("%s gw %s net %s", f.subnet, f.gw, f.network))
		}
		if got := "[" + strings.Join(fams, ", ") + "]"; got != tc.fams {
			t.Errorf("%s: families %s, want %s", tc.name, got, tc.fams)
		}
		if got := fmt.Sprint(podRoutes(n, c.DefaultGateway)); got != tc.routes {
			t.Errorf("%s: routes %s, want %s", tc.name, got, tc.routes)
		}
	}
}

func TestNodeRejects(t *testing.T) {
	c, _ := ParseConf([]byte(`{"name":"n"}`))
	for _, tc := range []struct{ env, want string }{
		{"FLANNEL_SUBNET=10.244.5.1/31\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET 10.244.5.1/31 has no room for pods: weft-cni needs an IPv4 subnet of /30 or larger"},
		{"FLANNEL_IPV6_SUBNET=2001:db8::1/127\nFLANNEL_MTU=1450\n", "FLANNEL_IPV6_SUBNET 2001:db8::1/127 has no room for pods: weft-cni needs an IPv6 subnet of /126 or larger"},
		{"FLANNEL_SUBNET=2001:db8::1/64\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET 2001:db8::1/64 is not an IPv4 subnet"},
		{"FLANNEL_IPV6_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n", "FLANNEL_IPV6_SUBNET 10.244.5.1/24 is not an IPv6 subnet"},
		{"FLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPV6_SUBNET=2001:db8::1/64\nFLANNEL_MTU=1000\n", "MTU 1000 is too small or too large for the node's families: use 1280 to 65535"},
		{"FLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=67\n", "MTU 67 is too small or too large for the node's families: use 68 to 65535"},
	} {
		_, err := resolveNode(c, env(t, tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.env, err, tc.want)
		}
	}
	// flannel's conflist: FLANNEL_IPMASQ decides, so a file without it is
	// refused, as flannel's plugin refuses it.
	fc, err := ParseConf([]byte(flannelConflistPlugin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveNode(fc, env(t, "FLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n")); err == nil || !strings.Contains(err.Error(), "has no FLANNEL_IPMASQ line") {
		t.Errorf("flannel's conflist without FLANNEL_IPMASQ: %v", err)
	}
}

// TestMasqScripts: ADD's transaction declares the table and its chain
// exactly, the node's subnets and the pod's addresses; DEL's removes only
// the pod's addresses, and does not fail when they are not there.
func TestMasqScripts(t *testing.T) {
	c, _ := ParseConf([]byte(`{"name":"n"}`))
	n, err := resolveNode(c, env(t, dualEnv))
	if err != nil {
		t.Fatal(err)
	}
	pod := []netip.Addr{netip.MustParseAddr("10.244.5.7"), netip.MustParseAddr("2001:db8:244:5::7")}
	const skeleton = `add table inet weft-cni
add set inet weft-cni pods_ip { type ipv4_addr; }
add set inet weft-cni subnets_ip { type ipv4_addr; flags interval; }
add set inet weft-cni pods_ip6 { type ipv6_addr; }
add set inet weft-cni subnets_ip6 { type ipv6_addr; flags interval; }
add chain inet weft-cni postrouting { type nat hook postrouting priority 100; }
`
	want := skeleton + `flush chain inet weft-cni postrouting
add rule inet weft-cni postrouting ip daddr 224.0.0.0/4 return
add rule inet weft-cni postrouting ip saddr @pods_ip ip daddr != @subnets_ip masquerade
add rule inet weft-cni postrouting ip6 daddr ff00::/8 return
add rule inet weft-cni postrouting ip6 saddr @pods_ip6 ip6 daddr != @subnets_ip6 masquerade
flush set inet weft-cni subnets_ip
flush set inet weft-cni subnets_ip6
add element inet weft-cni subnets_ip { 10.244.5.0/24 }
add element inet weft-cni subnets_ip6 { 2001:db8:244:5::/64 }
add element inet weft-cni pods_ip { 10.244.5.7 }
add element inet weft-cni pods_ip6 { 2001:db8:244:5::7 }
`
	if got := string(masqAddScript(n, pod)); got != want {
		t.Errorf("ADD script:\n%s\nwant\n%s", got, want)
	}
	want = skeleton + `add element inet weft-cni pods_ip { 10.244.5.7 }
delete element inet weft-cni pods_ip { 10.244.5.7 }
add element inet weft-cni pods_ip6 { 2001:db8:244:5::7 }
delete element inet weft-cni pods_ip6 { 2001:db8:244:5::7 }
`
	if got := string(masqDelScript(pod)); got != want {
		t.Errorf("DEL script:\n%s\nwant\n%s", got, want)
	}
	if !hasTable([]byte("table inet filter\ntable inet weft-cni\n"), masqTable) || hasTable([]byte("table inet weft-cni2\n"), masqTable) {
		t.Error("hasTable misreads `nft list tables`")
	}
}
