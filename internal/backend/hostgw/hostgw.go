// Package hostgw is the host-gw backend: a plain route to each peer's subnet
// via the peer's underlay address. Every peer must be on-link; one that is
// not is skipped and reported, never misrouted.
package hostgw

import (
	"context"
	"fmt"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// Backend is the host-gw backend.
type Backend struct {
	k kernel.Kernel
	u kernel.Underlay
}

var _ backend.Backend = (*Backend)(nil)

// New returns the backend; it touches nothing until Apply.
func New(k kernel.Kernel, u kernel.Underlay) *Backend { return &Backend{k: k, u: u} }

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env.Kernel, env.Underlay), nil
}

// Close implements backend.Backend: host-gw holds nothing in the process.
func (b *Backend) Close() error { return nil }

// LeaseAttrs implements backend.Backend.
func (b *Backend) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: Type} }

// MTU implements backend.Backend: no encapsulation.
func (b *Backend) MTU() int { return b.u.MTU }

// Plan implements backend.Backend: a route to each host-gw peer's subnet
// via its public address on the underlay, which must be on the underlay's
// link; a peer that is not is skipped. host-gw has no device of its own and
// owns the routes into the cluster network on the underlay.
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	d := backend.Desired{Node: st, Scope: kernel.Scope{Network: st.Network, Own: st.Own.Subnet, RouteDevs: []string{b.u.Name}}}
	for peer := range st.PeersOf(Type) {
		if !b.u.IsOnLink(peer.Attrs.PublicIP) {
			d.Skipped = append(d.Skipped, fmt.Sprintf("%s (%s): not on-link from %s; host-gw needs all nodes on one L2 segment (use vxlan with DirectRouting)", peer.Subnet, peer.Attrs.PublicIP, b.u.Name))
			continue
		}
		d.Entries.Routes = append(d.Entries.Routes, kernel.Route{Dst: peer.Subnet, Gw: peer.Attrs.PublicIP, Dev: b.u.Name})
	}
	return d
}

// Apply implements backend.Backend.
func (b *Backend) Apply(ctx context.Context, d backend.Desired) (backend.Report, error) {
	for _, dev := range d.Devices { // none that Plan returns
		if err := kernel.EnsureLink(ctx, b.k, dev); err != nil {
			return backend.Report{}, fmt.Errorf("%s: %w", Type, err)
		}
	}
	added, removed, err := kernel.Apply(ctx, b.k, d.Entries, d.Scope)
	return backend.Report{Added: added, Removed: removed, Skipped: d.Skipped}, err
}
