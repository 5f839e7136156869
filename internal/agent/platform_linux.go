package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/hostgw"
	"github.com/weftnet/weft/internal/backend/udp"
	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/firewall"
)

// Linux is the Platform of a Linux node: netlink in the agent's own
// network namespace.
type Linux struct {
	h  *netlink.Handle
	fw *firewall.Firewall
}

var _ Platform = (*Linux)(nil)

// NewLinux opens netlink and nftables in the current namespace.
func NewLinux() (*Linux, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	fw, err := firewall.New(-1)
	if err != nil {
		return nil, err
	}
	return &Linux{h: h, fw: fw}, nil
}

// Underlay implements Platform.
func (l *Linux) Underlay(iface string, publicIP netip.Addr) (backend.Underlay, error) {
	return backend.FindUnderlay(l.h, iface, publicIP)
}

// Backend implements Platform.
func (l *Linux) Backend(cfg *config.Config, u backend.Underlay, readOnly bool, log *slog.Logger) (backend.Backend, error) {
	switch cfg.Backend.Type {
	case config.BackendVXLAN:
		return vxlan.New(l.h, cfg.Backend, u, readOnly, log)
	case config.BackendHostGW:
		return hostgw.New(l.h, u), nil
	case config.BackendUDP:
		return udp.New(l.h, cfg.Backend, u, log), nil
	default:
		return nil, fmt.Errorf("net-conf.json: Backend.Type: %q is not available; use vxlan, host-gw or udp", cfg.Backend.Type)
	}
}

// EnableForwarding is `sysctl -w net.ipv4.ip_forward=1` for this
// namespace. It writes only when needed: in a container /proc/sys is
// read-only, and the node usually has forwarding on already.
func (l *Linux) EnableForwarding() error {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding (set net.ipv4.ip_forward=1 on the node, or run the agent with write access to /proc/sys): %w", err)
	}
	return nil
}

// Masquerade implements Platform.
func (l *Linux) Masquerade(on bool, network, subnet netip.Prefix) error {
	if !on {
		return l.fw.Delete(network)
	}
	return l.fw.Apply(network, firewall.Rules(network, subnet))
}
