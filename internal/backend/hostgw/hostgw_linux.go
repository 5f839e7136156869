package hostgw

import (
	"context"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/lease"
)

// Backend is the host-gw backend.
type Backend struct {
	h *netlink.Handle
	u backend.Underlay
}

var _ backend.Backend = (*Backend)(nil)

// New returns the backend; it touches nothing until Apply.
func New(h *netlink.Handle, u backend.Underlay) *Backend { return &Backend{h: h, u: u} }

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env.Netlink, env.Underlay), nil
}

// Close implements backend.Backend: host-gw holds nothing in the process.
func (b *Backend) Close() error { return nil }

// LeaseAttrs implements backend.Backend.
func (b *Backend) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: Type} }

// MTU implements backend.Backend: no encapsulation.
func (b *Backend) MTU() int { return b.u.MTU }

// Apply implements backend.Backend.
func (b *Backend) Apply(ctx context.Context, st backend.NodeState) (backend.Report, error) {
	plan, skipped := Plan(st, b.u)
	scope := backend.Scope{Network: st.Network, Own: st.Own.Subnet, RouteLinks: []int{b.u.LinkIndex}}
	rep, err := backend.Kernel{H: b.h}.Apply(plan, scope)
	rep.Skipped = skipped
	return rep, err
}
