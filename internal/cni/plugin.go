// Package cni is weft's CNI plugin: it connects a container's network
// namespace to the node bridge with a veth pair and gives it an address of
// each family the node has (read from subnet.env), with a persistent IPAM
// store. It accepts flannel's conflist shape: the options of flannel's
// "delegate" object that matter to the bridge (hairpinMode,
// isDefaultGateway, ipMasq, mtu, bridge) are honoured, the rest ignored.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/internal/subnetenv"
)

// NetConf is the plugin's network configuration, as decoded and resolved
// by ParseConf.
type NetConf struct {
	types.NetConf
	// SubnetFile is the agent's subnet.env (default /run/flannel/subnet.env).
	SubnetFile string `json:"subnetFile,omitempty"`
	// DataDir holds IPAM allocations (default /var/lib/cni/weft).
	DataDir string `json:"dataDir,omitempty"`
	// Bridge is the node bridge (default cni0; delegate.bridge wins).
	Bridge string `json:"bridge,omitempty"`
	// Delegate is flannel's "delegate" object, the bridge plugin's
	// configuration in flannel's conflist. weft-cni is the bridge itself:
	// it reads the options below and ignores every other key (type, ipam,
	// name, isGateway ...), as they change nothing weft-cni can do.
	Delegate *Delegate `json:"delegate,omitempty"`

	// Resolved options (ParseConf): with a delegate, the bridge plugin's
	// defaults for what it leaves out, as flannel's users get them; without
	// one, weft-cni's own (hairpin on, default route via the bridge).
	HairpinMode    bool `json:"-"`
	DefaultGateway bool `json:"-"` // default route of each family via the bridge
	// IPMasq: masquerade the pods' traffic leaving their subnet. nil: with
	// flannel's delegate, the opposite of FLANNEL_IPMASQ, as flannel's
	// plugin does (masquerade where the agent does not); without one, off,
	// as weft-cni always did (pod-to-pod traffic keeps its addresses, which
	// NetworkPolicy matches on).
	IPMasq *bool `json:"-"`
	MTU    int   `json:"-"` // 0: FLANNEL_MTU
}

// Delegate holds the keys of flannel's delegate object that weft-cni
// honours, with the bridge plugin's meaning.
type Delegate struct {
	Bridge           string `json:"bridge,omitempty"`
	HairpinMode      *bool  `json:"hairpinMode,omitempty"`
	IsDefaultGateway *bool  `json:"isDefaultGateway,omitempty"`
	IPMasq           *bool  `json:"ipMasq,omitempty"`
	MTU              int    `json:"mtu,omitempty"`
}

// Defaults.
const (
	DefaultDataDir = "/var/lib/cni/weft"
	DefaultBridge  = "cni0"
)

// ParseConf decodes stdin, applies defaults and validates; a malformed
// config is a CNI decoding error, a wrong value an invalid-config error.
func ParseConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft-cni: network config is not valid JSON", err.Error())
	}
	bad := func(format string, a ...any) (*NetConf, error) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: "+fmt.Sprintf(format, a...), "")
	}
	if c.Name == "" {
		return bad("network config has no \"name\"")
	}
	if c.SubnetFile == "" {
		c.SubnetFile = subnetenv.DefaultPath
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	c.HairpinMode, c.DefaultGateway = true, true
	if d := c.Delegate; d != nil {
		if d.Bridge != "" {
			c.Bridge = d.Bridge
		}
		// The bridge plugin's defaults: false when left out.
		c.HairpinMode = d.HairpinMode != nil && *d.HairpinMode
		c.DefaultGateway = d.IsDefaultGateway != nil && *d.IsDefaultGateway
		c.IPMasq = d.IPMasq
		if d.MTU != 0 && (d.MTU < 68 || d.MTU > 65535) {
			return bad("delegate.mtu %d is not an MTU: use 68 to 65535, or leave it out for FLANNEL_MTU", d.MTU)
		}
		c.MTU = d.MTU
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > 15 {
		return bad("bridge name %q is longer than 15 characters", c.Bridge)
	}
	return c, nil
}

// family is one address family of the node: its subnet and the cluster
// network it belongs to.
type family struct {
	subnet  netip.Prefix // the node's subnet, masked
	gw      netip.Addr   // the bridge address, first of the subnet
	network netip.Prefix // the cluster network; invalid when subnet.env has none
}

// gateway is the bridge's address with the subnet's length.
func (f family) gateway() netip.Prefix { return netip.PrefixFrom(f.gw, f.subnet.Bits()) }

// node is what the plugin learns from subnet.env and its config.
type node struct {
	fams   []family // IPv4 first, then IPv6; at least one
	mtu    int
	ipMasq bool // masquerade the pods' traffic leaving their subnet
}

// family returns the node's family of a, if it has one.
func (n node) family(a netip.Addr) (family, bool) {
	for _, f := range n.fams {
		if f.subnet.Addr().Is4() == a.Is4() {
			return f, true
		}
	}
	return family{}, false
}

func (c *NetConf) node() (node, error) {
	env, err := subnetenv.Read(c.SubnetFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return node{}, types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("weft-cni: %s does not exist: is the weft agent running on this node?", c.SubnetFile), "")
		}
		return node{}, types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: "+err.Error(), "")
	}
	return resolveNode(c, env)
}

// resolveNode checks subnet.env's values and combines them with the
// config's options.
func resolveNode(c *NetConf, env subnetenv.Env) (node, error) {
	bad := func(format string, a ...any) (node, error) {
		return node{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("weft-cni: %s: ", c.SubnetFile)+fmt.Sprintf(format, a...), "")
	}
	n := node{mtu: env.MTU}
	switch {
	case c.IPMasq != nil:
		n.ipMasq = *c.IPMasq
	case c.Delegate != nil && !env.HasIPMasq:
		// flannel's plugin refuses the file too: which way to masquerade
		// would be a guess.
		return bad("has no FLANNEL_IPMASQ line, which decides whether the plugin masquerades (flannel's conflist): is it the agent's file? set delegate.ipMasq to decide here")
	case c.Delegate != nil:
		n.ipMasq = !env.IPMasq
	}
	if c.MTU != 0 {
		n.mtu = c.MTU
	}
	for _, kv := range []struct {
		key, family     string
		subnet, network netip.Prefix
		is4             bool
	}{
		{"FLANNEL_SUBNET", "IPv4", env.Subnet, env.Network, true},
		{"FLANNEL_IPV6_SUBNET", "IPv6", env.IPv6Subnet, env.IPv6Network, false},
	} {
		if !kv.subnet.IsValid() {
			continue
		}
		s := kv.subnet.Masked()
		if s.Addr().Is4() != kv.is4 || (kv.network.IsValid() && kv.network.Addr().Is4() != kv.is4) {
			return bad("%s %s is not an %s subnet", kv.key, kv.subnet, kv.family)
		}
		// Network and gateway (and an IPv4 broadcast) leave no pod address
		// in a subnet of fewer than 4 addresses.
		if s.Bits() > s.Addr().BitLen()-2 {
			return bad("%s %s has no room for pods: weft-cni needs an %s subnet of /%d or larger", kv.key, kv.subnet, kv.family, s.Addr().BitLen()-2)
		}
		n.fams = append(n.fams, family{subnet: s, gw: s.Addr().Next(), network: kv.network.Masked()})
	}
	if len(n.fams) == 0 {
		return bad("has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET")
	}
	if n.mtu <= 0 {
		n.mtu = 1500
	}
	minMTU := 68
	if _, v6 := n.family(netip.IPv6Unspecified()); v6 {
		minMTU = 1280 // RFC 8200: IPv6 needs links of 1280 bytes
	}
	if n.mtu < minMTU || n.mtu > 65535 {
		return bad("MTU %d is too small or too large for the node's families: use %d to 65535", n.mtu, minMTU)
	}
	return n, nil
}

func (c *NetConf) store() (*Store, error) {
	return OpenStore(filepath.Join(c.DataDir, c.Name))
}

// route is one route in the pod: to dst via gw on the pod's interface.
type route struct {
	dst netip.Prefix
	gw  netip.Addr
}

// String names the route for messages: "default route via GW" or
// "route DST via GW".
func (r route) String() string {
	if r.dst.Bits() == 0 {
		return "default route via " + r.gw.String()
	}
	return "route " + r.dst.String() + " via " + r.gw.String()
}

// podRoutes are the routes ADD installs in the pod, family by family, as
// flannel's delegate to the bridge plugin does: the cluster network via
// the bridge, and with a default gateway the default route via it too.
func podRoutes(n node, defaultGW bool) []route {
	var rs []route
	for _, f := range n.fams {
		// A network equal to the subnet is the pod's connected route already.
		if f.network.IsValid() && f.network != f.subnet {
			rs = append(rs, route{dst: f.network, gw: f.gw})
		}
		if defaultGW {
			rs = append(rs, route{dst: netip.PrefixFrom(unspecified(f.gw), 0), gw: f.gw})
		}
	}
	return rs
}

// unspecified is the unspecified address of a's family (0.0.0.0 or ::).
func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
