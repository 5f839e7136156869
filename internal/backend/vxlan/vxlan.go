package vxlan

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// Backend is the vxlan backend.
type Backend struct {
	k   kernel.Kernel
	cfg Options
	u   kernel.Underlay
	mac string // the VTEP MAC, kept across restarts by reusing the device
	log *slog.Logger
	// derived: every VTEP MAC, this node's too, is MACFor its address.
	derived bool

	mu   sync.Mutex           // guards macs
	macs map[string]macResult // the MAC of each BackendData value of the last Plan
}

var _ backend.Backend = (*Backend)(nil)

// New prepares the backend without touching the kernel: it reuses the MAC of
// an existing device (peers hold it), or picks a new one; with derivedMAC,
// the MAC is MACFor the underlay address. The device is created by the
// first Apply, after the lease is held.
func New(k kernel.Kernel, cfg Options, u kernel.Underlay, derivedMAC bool, log *slog.Logger) (*Backend, error) {
	b := &Backend{k: k, cfg: cfg, u: u, log: log, derived: derivedMAC}
	if derivedMAC {
		b.mac = MACFor(u.Addr)
		return b, nil
	}
	l, err := k.LinkByName(DeviceName(cfg.VNI))
	switch {
	case err == nil && l.MAC != "":
		b.mac = l.MAC
	case err != nil && !kernel.IsNotFound(err):
		return nil, fmt.Errorf("vxlan: %w", err)
	default:
		var hw [6]byte
		if _, err := rand.Read(hw[:]); err != nil {
			return nil, fmt.Errorf("vxlan: random VTEP MAC: %w", err)
		}
		hw[0] = hw[0]&0xfe | 0x02 // unicast, locally administered
		b.mac = net.HardwareAddr(hw[:]).String()
	}
	return b, nil
}

// newBackend is Kind.New: in read-only mode the VTEP MACs are derived.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env.Kernel, opts.(Options), env.Underlay, env.ReadOnly, env.Log)
}

// Close implements backend.Backend: vxlan holds nothing in the process.
func (b *Backend) Close() error { return nil }

// LeaseAttrs implements backend.Backend.
func (b *Backend) LeaseAttrs() lease.Attrs {
	data, _ := json.Marshal(Data{VNI: b.cfg.VNI, VtepMAC: b.mac})
	return lease.Attrs{BackendType: Type, BackendData: data}
}

// MTU implements backend.Backend.
func (b *Backend) MTU() int {
	return backend.InnerMTU(b.u, b.cfg.MTU, Overhead)
}

// Apply implements backend.Backend.
func (b *Backend) Apply(ctx context.Context, d backend.Desired) (backend.Report, error) {
	for _, dev := range d.Devices {
		if l, err := b.k.LinkByName(dev.Name); err == nil && dev.Recreates(l) {
			b.log.Warn("vxlan device does not match the config; recreating it with the same MAC", "device", dev.Name)
		}
		if err := kernel.EnsureLink(ctx, b.k, dev); err != nil {
			return backend.Report{}, fmt.Errorf("vxlan: %w", err)
		}
	}
	added, removed, err := kernel.Apply(ctx, b.k, d.Entries, d.Scope)
	return backend.Report{Added: added, Removed: removed, Skipped: d.Skipped}, err
}

// device is flannel.<VNI> as it must be, same as
// `ip link add flannel.1 address MAC mtu MTU type vxlan id 1 local PUBLICIP
// dev eth0 dstport 8472 nolearning; ip addr replace OWN/32 dev flannel.1;
// ip link set flannel.1 up`: the device holds its subnet's network address.
func (b *Backend) device(own netip.Prefix) kernel.Device {
	return kernel.Device{
		Name: DeviceName(b.cfg.VNI),
		Kind: kernel.KindVXLAN,
		VXLAN: kernel.VXLAN{
			VNI:      b.cfg.VNI,
			Local:    b.u.Addr,
			Dev:      b.u.LinkIndex,
			Port:     b.cfg.Port,
			Learning: b.cfg.Learning,
			GBP:      b.cfg.GBP,
		},
		MTU:   b.MTU(),
		MAC:   b.mac,
		Addrs: []netip.Prefix{netip.PrefixFrom(own.Addr(), own.Addr().BitLen())},
	}
}
