package vxlan

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
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
	k    kernel.Kernel
	cfg  Options
	u    kernel.Underlay
	fams []family // the enabled families, IPv4 first
	log  *slog.Logger
	// derived: every VTEP MAC, this node's too, is MACFor its address.
	derived bool

	mu   sync.Mutex           // guards macs
	macs map[string]macResult // the MAC of each backend data value of the last Plan
}

var _ backend.Backend = (*Backend)(nil)

// family is one enabled address family's device: Plan, New and
// LeaseAttrs run one code path over them.
type family struct {
	backend.Family
	name     string     // the device: flannel.<VNI> or flannel-v6.<VNI>
	local    netip.Addr // the underlay address encapsulated packets leave from
	overhead int        // Overhead or Overhead6
	mac      string     // this node's VTEP MAC on the device
}

// New prepares the backend without touching the kernel, with a device for
// each family whose network env enables (Env.Network, Env.IPv6Network),
// over the underlay's address of that family. Each device's VTEP MAC is
// the MAC of the existing device (peers hold it); else, for a device about
// to be created, the one this node published before (env.Previous: the
// node's backend-data and backend-v6-data annotations after a reboot,
// flannel PR #1829) if it is a unicast MAC; else a new random one. With
// env.ReadOnly, each MAC is MACFor the underlay address of its family. The
// devices are created by the first Apply, after the lease is held.
func New(env backend.Env, cfg Options) (*Backend, error) {
	b := &Backend{k: env.Kernel, cfg: cfg, u: env.Underlay, log: env.Log, derived: env.ReadOnly}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	for _, fam := range env.Families() {
		f := family{Family: fam, name: DeviceName(cfg.VNI), overhead: Overhead}
		if fam.Is6 {
			f.name, f.overhead = DeviceName6(cfg.VNI), Overhead6
		}
		var err error
		if f.local, err = fam.Local(env.Underlay); err != nil {
			return nil, fmt.Errorf("vxlan: %s: %w", f.name, err)
		}
		mac, err := b.vtepMAC(f, fam.Data(env.Previous))
		if err != nil {
			return nil, err
		}
		f.mac = mac
		b.fams = append(b.fams, f)
	}
	if len(b.fams) == 0 {
		return nil, errors.New("vxlan: no address family: neither an IPv4 nor an IPv6 network is enabled")
	}
	return b, nil
}

// vtepMAC is the VTEP MAC of f's device (see New); previous is the backend
// data this node published for f before.
func (b *Backend) vtepMAC(f family, previous json.RawMessage) (string, error) {
	if b.derived {
		return MACFor(f.local), nil
	}
	l, err := b.k.LinkByName(f.name)
	switch {
	case err == nil && l.MAC != "":
		return l.MAC, nil
	case err != nil && !kernel.IsNotFound(err):
		return "", fmt.Errorf("vxlan: %w", err)
	}
	if len(previous) > 0 {
		mac, err := dataMAC(previous, f.DataKey())
		if err == nil {
			b.log.Info("vxlan device gets the VTEP MAC this node published before", "device", f.name, "mac", mac)
			return mac, nil
		}
		b.log.Warn("the VTEP MAC this node published before is unusable; the new device gets a random one", "device", f.name, "err", err)
	}
	var hw [6]byte
	if _, err := rand.Read(hw[:]); err != nil {
		return "", fmt.Errorf("vxlan: random VTEP MAC: %w", err)
	}
	hw[0] = hw[0]&0xfe | 0x02 // unicast, locally administered
	return net.HardwareAddr(hw[:]).String(), nil
}

// newBackend is Kind.New: in read-only mode the VTEP MACs are derived.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env, opts.(Options))
}

// Close implements backend.Backend: vxlan holds nothing in the process.
func (b *Backend) Close() error { return nil }

// LeaseAttrs implements backend.Backend: BackendData carries the IPv4
// device's VNI and VTEP MAC, BackendV6Data the IPv6 device's, as
// flannel's; a family that is off has none.
func (b *Backend) LeaseAttrs() lease.Attrs {
	a := lease.Attrs{BackendType: Type}
	for _, f := range b.fams {
		data, _ := json.Marshal(Data{VNI: b.cfg.VNI, VtepMAC: f.mac})
		f.SetData(&a, data)
	}
	return a
}

// MTU implements backend.Backend: the smallest of the devices' MTUs, so a
// pod's packets of either family fit (flannel writes MTU-50 with IPv6 too,
// which the kernel's flannel-v6 device does not carry).
func (b *Backend) MTU() int {
	mtu := 0
	for _, f := range b.fams {
		if m := b.deviceMTU(f); mtu == 0 || m < mtu {
			mtu = m
		}
	}
	return mtu
}

// deviceMTU is the MTU of f's device: the configured MTU, else the
// underlay's, less f's overhead.
func (b *Backend) deviceMTU(f family) int { return backend.InnerMTU(b.u, b.cfg.MTU, f.overhead) }

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

// device is f's device as it must be, same as
// `ip link add flannel.1 address MAC mtu MTU type vxlan id 1 local PUBLICIP
// dev eth0 dstport 8472 nolearning; ip addr replace OWN/32 dev flannel.1;
// ip link set flannel.1 up` (flannel-v6.1, local PUBLICIPV6, OWN/128 for
// IPv6): the device holds its subnet's network address.
func (b *Backend) device(f family, own netip.Prefix) kernel.Device {
	return kernel.Device{
		Name: f.name,
		Kind: kernel.KindVXLAN,
		VXLAN: kernel.VXLAN{
			VNI:      b.cfg.VNI,
			Local:    f.local,
			Dev:      b.u.LinkIndex,
			Port:     b.cfg.Port,
			Learning: b.cfg.Learning,
			GBP:      b.cfg.GBP,
		},
		MTU:   b.deviceMTU(f),
		MAC:   f.mac,
		Addrs: []netip.Prefix{netip.PrefixFrom(own.Addr(), own.Addr().BitLen())},
	}
}
