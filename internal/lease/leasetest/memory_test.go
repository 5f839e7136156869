package leasetest

import (
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lease"
)

func TestMemoryConformance(t *testing.T) {
	Run(t, func(t *testing.T) Harness {
		m := NewMemory()
		return Harness{
			Store:     m,
			PutConfig: func(t *testing.T, doc string) { m.PutConfig([]byte(doc)) },
			Reserve:   func(t *testing.T, l lease.Lease) { m.Reserve(l) },
			Delete:    func(t *testing.T, key string) { m.Delete(key) },
			Lease:     func(t *testing.T, l lease.Lease, ttl time.Duration) { m.PutLease(l, ttl) },
		}
	})
}
