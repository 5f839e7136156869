package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/vxlan"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
	"github.com/weftnet/weft/internal/lease"
)

// BenchmarkDesire is the pure part of every sync: the lease set's
// snapshot, then the desired state of a vxlan node with n peers.
func BenchmarkDesire(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			network := netip.MustParsePrefix("10.0.0.0/8")
			u := kernel.Underlay{Name: "eth0", LinkIndex: 2, MTU: 1500, Addr: netip.MustParseAddr("192.0.2.1"), OnLink: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
			be, err := vxlan.New(backend.Env{Kernel: kerneltest.New(), Underlay: u, Network: network, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, vxlan.Options{VNI: 1, Common: backend.Common{Port: 8472}})
			if err != nil {
				b.Fatal(err)
			}
			set := lease.NewSet(network, netip.Prefix{}, be.CheckPeer)
			var recs []lease.Record
			for i := range n {
				l := lease.Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Created: int64(i),
					Attrs: lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), BackendType: "vxlan",
						BackendData: fmt.Appendf(nil, `{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, byte(i>>8), byte(i))}}
				recs = append(recs, lease.Record{Key: l.Key(), Lease: l})
			}
			set.Apply(lease.Event{Reset: true, Leases: recs})
			own := recs[0].Lease
			b.ResetTimer()
			for range b.N {
				d := Desire(Inputs{Network: network, Own: own, Leases: set.LeasesWhere(backend.NodeState{Own: own}.IsPeer), MTU: 1450, Backend: be})
				if len(d.Kernel.Entries.Routes) != n-1 {
					b.Fatalf("%d routes", len(d.Kernel.Entries.Routes))
				}
			}
		})
	}
}
