package leasebench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// routeKey names a route event: a route to dst added (or replaced), or
// deleted.
type routeKey struct {
	dst netip.Prefix
	del bool
}

// expectation is a set of route events awaited in one namespace; done is
// closed when the last of them arrived.
type expectation struct {
	left int       // guarded by the routeWatch's mu
	last time.Time // guarded by the routeWatch's mu: when the latest one arrived
	done chan struct{}
}

// routeWatch receives the IPv4 route events of one node's namespace, the
// same as `ip netns exec NS ip -4 monitor route`, and stamps each awaited
// one with the time it arrived.
type routeWatch struct {
	ns     string
	stop   chan struct{}
	failed chan struct{} // closed when the subscription broke

	mu   sync.Mutex
	want map[routeKey]*expectation // awaited events
	err  error                     // why the subscription broke
}

// watchRoutes subscribes to the route events of namespace ns. The receive
// buffer is large enough for thousands of routes written at once; if the
// kernel still drops events (ENOBUFS), the watch fails rather than miss
// one.
func watchRoutes(ns string) (*routeWatch, error) {
	h, err := netns.Fd(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	w := &routeWatch{ns: ns, stop: make(chan struct{}), failed: make(chan struct{}), want: map[routeKey]*expectation{}}
	ch := make(chan netlink.RouteUpdate, 4096)
	var once sync.Once
	err = netlink.RouteSubscribeWithOptions(ch, w.stop, netlink.RouteSubscribeOptions{
		Namespace:              &h,
		ReceiveBufferSize:      64 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			select {
			case <-w.stop: // closing the socket ends the receive loop with an error
				return
			default:
			}
			once.Do(func() {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				close(w.failed)
			})
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", ns, err)
	}
	go w.receive(ch)
	return w, nil
}

func (w *routeWatch) receive(ch <-chan netlink.RouteUpdate) {
	for u := range ch {
		now := time.Now()
		if u.Table != unix.RT_TABLE_MAIN {
			continue
		}
		dst, ok := netconv.Prefix(u.Dst)
		if !ok {
			continue
		}
		k := routeKey{dst: dst, del: u.Type == unix.RTM_DELROUTE}
		w.mu.Lock()
		if e := w.want[k]; e != nil {
			delete(w.want, k)
			e.left--
			e.last = now
			if e.left == 0 {
				close(e.done)
			}
		}
		w.mu.Unlock()
	}
}

// Close ends the subscription.
func (w *routeWatch) Close() { close(w.stop) }

// expect registers the events for dsts (deletions when del) before the
// write that causes them, so that none is missed.
func (w *routeWatch) expect(dsts []netip.Prefix, del bool) *expectation {
	e := &expectation{left: len(dsts), done: make(chan struct{})}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range dsts {
		w.want[routeKey{dst: d, del: del}] = e
	}
	if e.left == 0 {
		close(e.done)
	}
	return e
}

// wait returns when the last event of e arrived, or fails after timeout,
// saying how many are missing; the missing ones are no longer awaited.
func (w *routeWatch) wait(ctx context.Context, e *expectation, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	timedOut := false
	select {
	case <-e.done:
	case <-ctx.Done():
		err = ctx.Err()
	case <-w.failed:
		w.mu.Lock()
		err = fmt.Errorf("route events in %s: %w", w.ns, w.err)
		w.mu.Unlock()
	case <-t.C:
		timedOut = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil && !timedOut {
		return e.last, nil
	}
	missing := 0
	for k, x := range w.want {
		if x == e {
			delete(w.want, k)
			missing++
		}
	}
	if timedOut {
		if missing == 0 { // the last one came as the timer fired
			return e.last, nil
		}
		err = fmt.Errorf("%d route events still missing in %s after %s", missing, w.ns, timeout)
	}
	return time.Time{}, err
}
