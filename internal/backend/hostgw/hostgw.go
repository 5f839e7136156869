// Package hostgw is the host-gw backend: a plain route to each peer's subnet
// via the peer's underlay address. Every peer must be on-link; one that is
// not is skipped and reported, never misrouted.
package hostgw

import (
	"fmt"

	"github.com/weftnet/weft/internal/backend"
)

// Plan computes the routes for st's host-gw peers on underlay u.
func Plan(st backend.NodeState, u backend.Underlay) (backend.Plan, []string) {
	var p backend.Plan
	var skipped []string
	for _, peer := range st.Peers {
		if peer.Key() == st.Own.Key() || peer.Attrs.BackendType != Type || !peer.Subnet.IsValid() {
			continue
		}
		if !u.IsOnLink(peer.Attrs.PublicIP) {
			skipped = append(skipped, fmt.Sprintf("%s (%s): not on-link from %s; host-gw needs all nodes on one L2 segment (use vxlan with DirectRouting)", peer.Subnet, peer.Attrs.PublicIP, u.Name))
			continue
		}
		p.Routes = append(p.Routes, backend.Route{Dst: peer.Subnet, Gw: peer.Attrs.PublicIP, Link: u.LinkIndex})
	}
	return p, skipped
}
