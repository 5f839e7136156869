// Package cni is weft's CNI plugin: it connects a container's network
// namespace to the node bridge with a veth pair and gives it an address from
// the node's subnet (read from subnet.env), with a persistent IPAM store.
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

// NetConf is the plugin's network configuration.
type NetConf struct {
	types.NetConf
	// SubnetFile is the agent's subnet.env (default /run/flannel/subnet.env).
	SubnetFile string `json:"subnetFile,omitempty"`
	// DataDir holds IPAM allocations (default /var/lib/cni/weft).
	DataDir string `json:"dataDir,omitempty"`
	// Bridge is the node bridge (default cni0).
	Bridge string `json:"bridge,omitempty"`
}

// Defaults.
const (
	DefaultDataDir = "/var/lib/cni/weft"
	DefaultBridge  = "cni0"
)

// ParseConf decodes stdin; a malformed one is a CNI decoding error.
func ParseConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft-cni: network config is not valid JSON", err.Error())
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: network config has no \"name\"", "")
	}
	if c.SubnetFile == "" {
		c.SubnetFile = subnetenv.DefaultPath
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > 15 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("weft-cni: bridge name %q is longer than 15 characters", c.Bridge), "")
	}
	return c, nil
}

// node is what the plugin learns from subnet.env.
type node struct {
	subnet netip.Prefix // the node's subnet, masked
	gw     netip.Addr   // the bridge address, first of the subnet
	mtu    int
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
	if !env.Subnet.IsValid() {
		return node{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("weft-cni: %s has no FLANNEL_SUBNET", c.SubnetFile), "")
	}
	n := node{subnet: env.Subnet.Masked(), gw: env.Subnet.Addr(), mtu: env.MTU}
	if !n.subnet.Addr().Is4() || n.subnet.Bits() > 30 {
		// Network, gateway and broadcast leave no pod address in a /31.
		return node{}, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("weft-cni: %s: FLANNEL_SUBNET %s has no room for pods: weft-cni needs an IPv4 subnet of /30 or larger", c.SubnetFile, env.Subnet), "")
	}
	if n.mtu <= 0 {
		n.mtu = 1500
	}
	if n.mtu < 68 || n.mtu > 65535 {
		return node{}, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("weft-cni: %s: FLANNEL_MTU %d is not an IPv4 MTU (68 to 65535)", c.SubnetFile, n.mtu), "")
	}
	return n, nil
}

func (c *NetConf) store() (*Store, error) {
	return OpenStore(filepath.Join(c.DataDir, c.Name))
}
