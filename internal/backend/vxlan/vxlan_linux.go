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

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/lease"
)

// Backend is the vxlan backend.
type Backend struct {
	h   *netlink.Handle
	cfg Options
	u   backend.Underlay
	mac string // the VTEP MAC, kept across restarts by reusing the device
	log *slog.Logger
	// derived: every VTEP MAC, this node's too, is MACFor its address.
	derived bool
}

var _ backend.Backend = (*Backend)(nil)

// New prepares the backend without touching the kernel: it reuses the MAC of
// an existing device (peers hold it), or picks a new one; with derivedMAC,
// the MAC is MACFor the underlay address. The device is created by the
// first Apply, after the lease is held.
func New(h *netlink.Handle, cfg Options, u backend.Underlay, derivedMAC bool, log *slog.Logger) (*Backend, error) {
	b := &Backend{h: h, cfg: cfg, u: u, log: log, derived: derivedMAC}
	if derivedMAC {
		b.mac = MACFor(u.Addr)
	} else if link, err := h.LinkByName(DeviceName(cfg.VNI)); err == nil {
		b.mac = link.Attrs().HardwareAddr.String()
	} else {
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
	return New(env.Netlink, opts.(Options), env.Underlay, env.ReadOnly, env.Log)
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
func (b *Backend) Apply(ctx context.Context, st backend.NodeState) (backend.Report, error) {
	dev, err := b.ensureDevice(st.Own.Subnet)
	if err != nil {
		return backend.Report{}, err
	}
	plan, skipped := Plan(st, dev, b.u, Mode{DirectRouting: b.cfg.DirectRouting, DerivedMAC: b.derived})
	rep, err := backend.Kernel{H: b.h}.Apply(plan, Scope(st.Network, st.Own.Subnet, dev, b.u))
	rep.Skipped = skipped
	return rep, err
}

// ensureDevice creates or repairs flannel.<VNI>, same as
// `ip link add flannel.1 type vxlan id 1 local PUBLICIP dev eth0 dstport 8472 nolearning`,
// sets its MTU, gives it OWN/32 and brings it up. It returns the link index.
func (b *Backend) ensureDevice(own netip.Prefix) (int, error) {
	name := DeviceName(b.cfg.VNI)
	hw, err := net.ParseMAC(b.mac)
	if err != nil {
		return 0, fmt.Errorf("vxlan: VTEP MAC %q: %w", b.mac, err)
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: b.MTU(), HardwareAddr: hw},
		VxlanId:      b.cfg.VNI,
		VtepDevIndex: b.u.LinkIndex,
		SrcAddr:      b.u.Addr.AsSlice(),
		Port:         b.cfg.Port,
		Learning:     b.cfg.Learning,
		GBP:          b.cfg.GBP,
	}
	link, err := b.h.LinkByName(name)
	if err == nil {
		vx, ok := link.(*netlink.Vxlan)
		if !ok || vx.VxlanId != want.VxlanId || vx.Port != want.Port || vx.VtepDevIndex != want.VtepDevIndex ||
			!vx.SrcAddr.Equal(want.SrcAddr) || vx.Learning != want.Learning || vx.GBP != want.GBP {
			b.log.Warn("vxlan device does not match the config; recreating it with the same MAC", "device", name)
			if err := b.h.LinkDel(link); err != nil {
				return 0, fmt.Errorf("delete mismatched %s: %w", name, err)
			}
			link = nil
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return 0, fmt.Errorf("look up %s: %w", name, err)
	} else {
		link = nil
	}
	if link == nil {
		if err := b.h.LinkAdd(want); err != nil {
			return 0, fmt.Errorf("add vxlan device %s (vni %d, port %d, dev %s): %w", name, b.cfg.VNI, b.cfg.Port, b.u.Name, err)
		}
		if link, err = b.h.LinkByName(name); err != nil {
			return 0, fmt.Errorf("look up %s after creating it: %w", name, err)
		}
	}
	if link.Attrs().HardwareAddr.String() != hw.String() {
		if err := b.h.LinkSetHardwareAddr(link, hw); err != nil {
			return 0, fmt.Errorf("set the VTEP MAC of %s to %s: %w", name, hw, err)
		}
	}
	if link.Attrs().MTU != b.MTU() {
		if err := b.h.LinkSetMTU(link, b.MTU()); err != nil {
			return 0, fmt.Errorf("set MTU of %s to %d: %w", name, b.MTU(), err)
		}
	}
	if err := b.ensureAddr(link, netip.PrefixFrom(own.Addr(), own.Addr().BitLen())); err != nil {
		return 0, err
	}
	if err := b.h.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("set %s up: %w", name, err)
	}
	return link.Attrs().Index, nil
}

// ensureAddr leaves exactly addr on link (`ip addr replace 10.244.3.0/32 dev flannel.1`).
func (b *Backend) ensureAddr(link netlink.Link, addr netip.Prefix) error {
	addrs, err := b.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if err := b.h.AddrReplace(link, want); err != nil {
		return fmt.Errorf("add address %s to %s: %w", addr, link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != want.IPNet.String() {
			if err := b.h.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
			}
		}
	}
	return nil
}
