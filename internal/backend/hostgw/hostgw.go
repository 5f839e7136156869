// Package hostgw is the host-gw backend: a plain route to each peer's subnet
// via the peer's underlay address. A peer must be on-link, or its subnet
// learned over BGP from an on-link router (import on); one that is neither
// is skipped and reported, never misrouted.
package hostgw

import (
	"context"
	"fmt"
	"strings"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
)

// Backend is the host-gw backend.
type Backend struct {
	k    kernel.Kernel
	u    kernel.Underlay
	fams []backend.Family // the enabled families, IPv4 first
}

var _ backend.Backend = (*Backend)(nil)

// New returns the backend for the families env enables; it writes nothing
// until Apply. As flannel, it refuses a public address (of either family)
// that is not an address of the underlay interface: peers would route to
// an address in front of the node (NAT), not on its link.
func New(env backend.Env) (*Backend, error) {
	b := &Backend{k: env.Kernel, u: env.Underlay, fams: env.Families()}
	if len(b.fams) == 0 {
		return nil, fmt.Errorf("%s: no address family: neither an IPv4 nor an IPv6 network is enabled", Type)
	}
	addrs, err := env.Kernel.Addrs()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Type, err)
	}
	for _, f := range b.fams {
		local, err := f.Local(env.Underlay)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", Type, err)
		}
		name, found := env.Underlay.Name, false
		var held []string
		for _, a := range addrs {
			if a.Dev == name && a.Prefix.Addr().Is6() == f.Is6 {
				found = found || a.Prefix.Addr() == local
				held = append(held, a.Prefix.String())
			}
		}
		if !found {
			has := "no " + f.String() + " address"
			if len(held) > 0 {
				has = strings.Join(held, ", ")
			}
			return nil, fmt.Errorf("%s: public IP %s is not an address of %s (it has %s): probably a NAT address, which host-gw cannot route to (flannel refuses it too); set %s to %s's address, or drop it and the %s annotation, or use the vxlan backend",
				Type, local, name, has, f.PublicIPFlag(), name, kernel.OverwriteAnnotation(local))
		}
	}
	return b, nil
}

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env)
}

// Close implements backend.Backend: host-gw holds nothing in the process.
func (b *Backend) Close() error { return nil }

// LeaseAttrs implements backend.Backend.
func (b *Backend) LeaseAttrs() lease.Attrs { return lease.Attrs{BackendType: Type} }

// MTU implements backend.Backend: no encapsulation.
func (b *Backend) MTU() int { return b.u.MTU }

// Plan implements backend.Backend: for each enabled family, a route to
// each host-gw peer's subnet of that family via its public address of that
// family (PublicIP, PublicIPv6) on the underlay, which must be on the
// underlay's link. A peer that is not is routed through the next hop
// learned over BGP for exactly its subnet (st.Learned), when that next hop
// is on-link, and skipped otherwise. Only peers' subnets are looked up, so
// a learned prefix that no lease holds makes no route; a learned route
// that goes away takes its route with it at the next Apply, except while
// st.LearnedPending: then an off-link peer's subnet with no learned route
// yet is held (kernel.Scope.Hold: whatever route the kernel has to it
// stays, e.g. the one through the router written before the agent
// restarted) rather than skipped. host-gw has no device of its own and
// owns the routes into the cluster networks on the underlay.
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	d := backend.Desired{Node: st, Scope: kernel.Scope{RouteDevs: []string{b.u.Name}}}
	for _, f := range b.fams {
		d.Scope.Networks = append(d.Scope.Networks, f.Network(st))
		if own := f.Subnet(st.Own); own.IsValid() {
			d.Scope.Own = append(d.Scope.Own, own)
		}
		for peer := range st.FamilyPeers(f, &d.Skipped, Type) {
			subnet, gw := f.Subnet(peer), f.PublicIP(peer.Attrs)
			hop, learned := st.Learned[subnet]
			switch {
			case b.u.IsOnLink(gw):
				d.Entries.Routes = append(d.Entries.Routes, kernel.Route{Dst: subnet, Gw: gw, Dev: b.u.Name})
			case !learned && st.LearnedPending && st.Learned != nil:
				// Not learned yet (the speaker has just started): the
				// route it had stays until the learned set is complete.
				d.Scope.Hold = append(d.Scope.Hold, subnet)
			case !learned:
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s (%s): not on-link from %s; host-gw needs all nodes on one L2 segment (use vxlan with DirectRouting), or a router that announces the subnet over BGP (BGP.Import)", subnet, gw, b.u.Name))
			case hop.Is4() != subnet.Addr().Is4() || !b.u.IsOnLink(hop):
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s (%s): not on-link from %s, and the next hop %s learned over BGP is not on-link either", subnet, gw, b.u.Name, hop))
			default:
				// Through the router that announced the peer's subnet:
				// `ip route replace SUBNET via HOP dev UNDERLAY proto weft`.
				d.Entries.Routes = append(d.Entries.Routes, kernel.Route{Dst: subnet, Gw: hop, Dev: b.u.Name})
			}
		}
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
