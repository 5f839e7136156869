package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// renewRecorder is a store whose Renew extends any lease it is given and
// records the store IDs it renewed.
type renewRecorder struct {
	*leasetest.Memory
	mu      sync.Mutex // guards renewed
	renewed []int64
}

func (r *renewRecorder) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewed = append(r.renewed, l.StoreID)
	l.Expiration = time.Now().Add(time.Hour)
	return l, nil
}

func (r *renewRecorder) ids() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.renewed...)
}

// TestRenewAfterReLease: a node leases anew (same subnet, another store
// lease) while the renewal loop waits to renew the old lease. The loop
// renews the new lease when its time comes, never the old one, and a
// renewal of the old one does not replace the node's lease.
func TestRenewAfterReLease(t *testing.T) {
	store := &renewRecorder{Memory: leasetest.NewMemory()}
	margin := time.Second
	a := New(Options{Store: store, LeaseTTL: time.Hour, RenewMargin: margin,
		Log: slog.New(slog.DiscardHandler)}, &fakePlatform{})
	subnet := netip.MustParsePrefix("10.244.3.0/24")
	old := lease.Lease{Subnet: subnet, StoreID: 1, Expiration: time.Now().Add(margin + 100*time.Millisecond)}
	cur := lease.Lease{Subnet: subnet, StoreID: 2, Expiration: time.Now().Add(margin + 600*time.Millisecond)}
	a.mu.Lock()
	a.own = old
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.renewLoop(ctx, lease.Request{}) }()
	time.Sleep(20 * time.Millisecond) // the loop has read the old lease and sleeps
	a.mu.Lock()
	a.own = cur
	a.mu.Unlock()
	eventually(t, "the new lease renewed", func() bool { return len(store.ids()) > 0 })
	cancel()
	<-done
	for _, id := range store.ids() {
		if id != cur.StoreID {
			t.Errorf("renewed store leases %v, want only %d (the lease held now)", store.ids(), cur.StoreID)
			break
		}
	}
	a.mu.Lock()
	got := a.own
	a.mu.Unlock()
	if got.StoreID != cur.StoreID || !got.Expiration.After(cur.Expiration) {
		t.Errorf("node's lease after renewal: %+v, want store lease %d renewed", got, cur.StoreID)
	}
}
