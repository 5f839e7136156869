package nft

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/internal/policy"
)

// Counts are the packets dropped for one local pod address, per direction:
// Ingress those sent to it, Egress those it sent.
type Counts struct {
	Ingress, Egress uint64
}

// parseDenied adds to m the element counters of one denied set, from the
// output of `nft -j list set inet weft-policy denied-in4`:
//
//	{"nftables": [{"metainfo": {...}}, {"set": {..., "elem": [
//	  {"elem": {"val": "10.244.1.2", "counter": {"packets": 3, "bytes": 180}}}]}}]}
func parseDenied(out []byte, dir policy.Direction, m map[netip.Addr]Counts) error {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name string `json:"name"`
				Elem []struct {
					Elem struct {
						Val     string `json:"val"`
						Counter *struct {
							Packets uint64 `json:"packets"`
						} `json:"counter"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return fmt.Errorf("parse nft json: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			a, err := netip.ParseAddr(e.Elem.Val)
			if err != nil {
				return fmt.Errorf("set %s: element %q: %w", o.Set.Name, e.Elem.Val, err)
			}
			if e.Elem.Counter == nil {
				return fmt.Errorf("set %s: element %s has no counter", o.Set.Name, a)
			}
			c := m[a]
			if dir == policy.Egress {
				c.Egress += e.Elem.Counter.Packets
			} else {
				c.Ingress += e.Elem.Counter.Packets
			}
			m[a] = c
		}
	}
	return nil
}
