package wireguard

import "github.com/weftnet/weft/internal/backend"

var _ backend.Tunnel = (*Backend)(nil)

// TunnelDevices implements backend.Tunnel: f's traffic to other nodes'
// pods goes only through the device that carries f (flannel-wg; for IPv6
// flannel-wg-v6 in Mode separate), whose peers are allowed only their
// subnets. None when this node has no subnet of f, or f is not enabled:
// Plan makes no device for f then.
func (b *Backend) TunnelDevices(st backend.NodeState, f backend.Family) []string {
	for _, g := range b.fams {
		if g == f && f.Subnet(st.Own).IsValid() {
			return []string{b.deviceOf(f)}
		}
	}
	return nil
}
