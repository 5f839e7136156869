// Package subnetenv reads and writes subnet.env, the file through which the
// agent hands the node's subnet to CNI plugins, in flannel's format.
package subnetenv

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/weftnet/weft/internal/atomicfile"
)

// DefaultPath is flannel's default location.
const DefaultPath = "/run/flannel/subnet.env"

// Env is the content of subnet.env.
type Env struct {
	Network     netip.Prefix // FLANNEL_NETWORK
	Subnet      netip.Prefix // FLANNEL_SUBNET: first address of the subnet, with its length
	IPv6Network netip.Prefix // FLANNEL_IPV6_NETWORK (optional)
	IPv6Subnet  netip.Prefix // FLANNEL_IPV6_SUBNET (optional)
	MTU         int          // FLANNEL_MTU
	IPMasq      bool         // FLANNEL_IPMASQ
	// HasIPMasq is set by Parse when the file has a FLANNEL_IPMASQ line
	// (flannel's CNI plugin refuses a file without one); Write always
	// writes it.
	HasIPMasq bool
}

// GatewayPrefix turns a subnet (10.244.3.0/24) into the form subnet.env
// carries (10.244.3.1/24): the first address, with the subnet's length.
func GatewayPrefix(subnet netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(subnet.Masked().Addr().Next(), subnet.Bits())
}

// SetFamily sets the lines of network's family: FLANNEL_NETWORK and
// FLANNEL_SUBNET for IPv4, FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET for
// IPv6, the subnet in its gateway form (GatewayPrefix). flannel writes a
// family's lines only when it is enabled: a family never set is left out.
func (e *Env) SetFamily(network, subnet netip.Prefix) {
	n, s := &e.Network, &e.Subnet
	if network.Addr().Is6() {
		n, s = &e.IPv6Network, &e.IPv6Subnet
	}
	*n, *s = network, netip.Prefix{}
	if subnet.IsValid() {
		*s = GatewayPrefix(subnet)
	}
}

// Marshal renders the file, in flannel's key order: each family's network
// and subnet together, IPv4 first.
func (e Env) Marshal() []byte {
	var b bytes.Buffer
	for _, kv := range []struct {
		key string
		val netip.Prefix
	}{{"FLANNEL_NETWORK", e.Network}, {"FLANNEL_SUBNET", e.Subnet}, {"FLANNEL_IPV6_NETWORK", e.IPv6Network}, {"FLANNEL_IPV6_SUBNET", e.IPv6Subnet}} {
		if kv.val.IsValid() {
			fmt.Fprintf(&b, "%s=%s\n", kv.key, kv.val)
		}
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.Bytes()
}

// Write writes the file atomically (temporary file, fsync, rename), mode
// 0644, so that weft-cni reads the old file or the whole new one.
func Write(path string, e Env) error {
	return atomicfile.Write(path, bytes.NewReader(e.Marshal()), 0o644)
}

// Read parses the file. A missing file is reported with os.ErrNotExist.
func Read(path string) (Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Env{}, fmt.Errorf("read subnet file: %w", err)
	}
	e, err := Parse(data)
	if err != nil {
		return e, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return e, nil
}

// Parse parses the file's content.
func Parse(data []byte) (Env, error) {
	var e Env
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return e, fmt.Errorf("line %d: %q is not KEY=VALUE", n, line)
		}
		var err error
		switch k {
		case "FLANNEL_NETWORK":
			e.Network, err = netip.ParsePrefix(v)
		case "FLANNEL_SUBNET":
			e.Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_NETWORK":
			e.IPv6Network, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_SUBNET":
			e.IPv6Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_MTU":
			e.MTU, err = strconv.Atoi(v)
		case "FLANNEL_IPMASQ":
			e.IPMasq, err = strconv.ParseBool(v)
			e.HasIPMasq = err == nil
		}
		if err != nil {
			return e, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
	}
	if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() {
		return e, fmt.Errorf("no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET")
	}
	return e, nil
}
