package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/policy/nft"
	"github.com/weftnet/weft/internal/sysctl"
)

// Linux is the Platform of a Linux node: netlink and nftables in the
// agent's own network namespace.
type Linux struct {
	h   *netlink.Handle
	k   *kernel.Cached
	fw  *firewall.Firewall
	log *slog.Logger
}

var _ Platform = (*Linux)(nil)

// NewLinux opens netlink and nftables in the current namespace. The
// firewall places the iptables chains of the parts it is given (the
// Forward part's accepts in iptables' FORWARD chain) when the node has
// iptables; Options.ForwardRules decides whether there is such a part.
func NewLinux(log *slog.Logger) (*Linux, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	fw, err := firewall.New(firewall.Options{Log: log, IPTablesForward: true})
	if err != nil {
		h.Close()
		return nil, err
	}
	nl := kernel.NewNetlink(h)
	return &Linux{h: h, k: kernel.NewCached(nl, nl), fw: fw, log: log}, nil
}

// Close releases the netlink handle and the firewall's descriptors; the
// kernel state and the rules stay, so that pods keep their traffic while
// no agent runs.
func (l *Linux) Close() error {
	err := l.fw.Close()
	l.h.Close()
	return err
}

// Underlay implements Platform.
func (l *Linux) Underlay(q kernel.UnderlayQuery) (kernel.Underlay, error) {
	return kernel.FindUnderlay(l.k, q)
}

// Backend implements Platform.
func (l *Linux) Backend(ctx context.Context, k backend.Kind, opts backend.Options, env backend.Env) (backend.Backend, error) {
	env.Kernel = l.k
	return k.New(ctx, env, opts)
}

// Firewall implements Platform.
func (l *Linux) Firewall() firewall.Applier { return l.fw }

// EnableForwarding is `sysctl -w net.ipv4.ip_forward=1` for this
// namespace, and `net.ipv6.conf.all.forwarding=1` when ipv6 (a node that
// routes IPv6 pods; as with the bridge plugin under flannel, the node then
// ignores router advertisements on interfaces with accept_ra=1). It
// writes only when needed: in a container /proc/sys is read-only, and the
// node usually has forwarding on already.
func (l *Linux) EnableForwarding(ipv6 bool, underlay string) error {
	fams := []bool{false}
	if ipv6 {
		fams = append(fams, true)
	}
	for _, is6 := range fams {
		knob := sysctl.Forwarding(is6)
		wrote, err := sysctl.Ensure("1", knob...)
		if err != nil {
			return fmt.Errorf("enable forwarding (set %s=1 on the node, or run the agent with write access to /proc/sys): %w", sysctl.Name(knob...), err)
		}
		if wrote {
			l.log.Info("turned on forwarding (" + sysctl.Name(knob...) + "=1)")
		}
	}
	// With forwarding on, accept_ra=1 stops taking router advertisements:
	// an underlay configured by SLAAC would lose its IPv6 default route
	// and addresses when they expire.
	ra := []string{"net", "ipv6", "conf", underlay, "accept_ra"}
	if v, err := sysctl.Get(ra...); ipv6 && err == nil && v == "1" {
		l.log.Warn("IPv6 forwarding is on and the underlay takes router advertisements only while it is off (accept_ra=1): "+
			"if its IPv6 address or default route come from them (SLAAC), set "+sysctl.Name(ra[:4]...)+".accept_ra=2", "iface", underlay)
	}
	return nil
}

// WatchKernel implements Platform: it keeps the kernel cache's netlink
// subscription running (`ip monitor link route neigh`), subscribing again
// a second after it fails; meanwhile every Apply reads the kernel.
func (l *Linux) WatchKernel(ctx context.Context, changed func()) error {
	for {
		err := l.k.Run(ctx, changed)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("the kernel's change notifications stopped; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// Refresh implements Platform.
func (l *Linux) Refresh() { l.k.Invalidate() }

// KernelDumps is how many tables the kernel cache has read from the
// kernel (a route dump, or one device's neighbour or FDB dump).
func (l *Linux) KernelDumps() uint64 { return l.k.Dumps() }

// BridgeNetfilter implements the agent's bridgeNetfilter: it is `sysctl -w
// net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1`
// for this namespace, written only where a value is 0, so that packets
// between pods on this node's bridge pass the IP forward hook, where the
// NetworkPolicy rules are. br_netfilter makes these sysctls; without it
// they are missing (ErrNoBridgeNetfilter).
func (l *Linux) BridgeNetfilter() ([]string, error) {
	var set []string
	for _, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		path := "/proc/sys/net/bridge/" + name
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return set, fmt.Errorf("%s is missing: %w", path, ErrNoBridgeNetfilter)
		}
		if err != nil {
			return set, fmt.Errorf("read %s: %w", path, err)
		}
		if strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return set, fmt.Errorf("set net.bridge.%s=1 (set it on the node, or run the agent with write access to /proc/sys): %w", name, err)
		}
		set = append(set, "net.bridge."+name)
	}
	return set, nil
}

// NewPolicyEnforcer returns the NetworkPolicy table of the agent's
// namespace, `table inet weft-policy`, written through nft. logGroup,
// when not 0, is the NFLOG group that denied packets are logged to.
func NewPolicyEnforcer(log *slog.Logger, logGroup uint16) (PolicyEnforcer, error) {
	a, err := nft.New(nft.Options{Log: log, LogGroup: logGroup})
	if err != nil {
		return nil, err
	}
	return nftEnforcer{a}, nil
}

// nftEnforcer is nft.Applier as the agent's PolicyEnforcer.
type nftEnforcer struct{ *nft.Applier }

func (e nftEnforcer) Denied(ctx context.Context) (map[netip.Addr]DeniedCounts, error) {
	m, err := e.Applier.Denied(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]DeniedCounts, len(m))
	for a, c := range m {
		out[a] = DeniedCounts{Ingress: c.Ingress, Egress: c.Egress}
	}
	return out, nil
}

// LastOps is how many nft operations the last Apply sent.
func (e nftEnforcer) LastOps() int {
	n, _ := e.Applier.LastOps()
	return n
}
