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

// Apply implements backend.Backend.
func (b *Backend) Apply(ctx context.Context, st backend.NodeState) (backend.Report, error) {
	plan, skipped := Plan(st, b.u)
	scope := kernel.Scope{Network: st.Network, Own: st.Own.Subnet, RouteDevs: []string{b.u.Name}}
	added, removed, err := kernel.Apply(ctx, b.k, plan, scope)
	return backend.Report{Added: added, Removed: removed, Skipped: skipped}, err
}

// Plan computes the routes for st's host-gw peers on underlay u.
func Plan(st backend.NodeState, u kernel.Underlay) (kernel.Plan, []string) {
	var p kernel.Plan
	var skipped []string
	for _, peer := range st.PeersOf(Type) {
		if !u.IsOnLink(peer.Attrs.PublicIP) {
			skipped = append(skipped, fmt.Sprintf("%s (%s): not on-link from %s; host-gw needs all nodes on one L2 segment (use vxlan with DirectRouting)", peer.Subnet, peer.Attrs.PublicIP, u.Name))
			continue
		}
		p.Routes = append(p.Routes, kernel.Route{Dst: peer.Subnet, Gw: peer.Attrs.PublicIP, Dev: u.Name})
	}
	return p, skipped
}
