package bgpbench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// pollEvery is how often the router's table and the pod's namespace are
// read, and how often ext sends an echo request: the figures' resolution.
const pollEvery = 10 * time.Millisecond

// watcher watches, while a node is added, for new routes in the
// router's kernel table, the new pod's address, and ext's first echo
// reply from it. ext starts pinging once the pod has its address: an
// echo sent before would leave a failed ARP entry for the pod in its
// node, and the retry after a second would be what the figure shows.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the polling goroutine has ended

	mu       sync.Mutex                 // guards the fields below
	base     map[netip.Prefix]bool      // the router's routes before the add
	seen     map[netip.Prefix]time.Time // each new route, when first seen
	podUp    time.Time                  // when target was first seen in the pod's namespace
	reply    time.Time                  // ext's first echo reply from target
	target   netip.Addr                 // what ext pings: the first new route's first pod
	err      error                      // why polling stopped early
	replyErr error                      // why pinging stopped early
}

// result is what a watcher saw for one subnet.
type result struct{ route, podUp, reply time.Time }

// watch starts watching: the router's IPv4 table in routerNS (its routes
// now are the baseline); once a new route appears, podNS for the first
// pod address in it; once that is there, ext in extNS pinging it.
func watch(ctx context.Context, routerNS, extNS, podNS string) (*watcher, error) {
	h, err := netns.Handle(routerNS)
	if err != nil {
		return nil, fmt.Errorf("open router namespace %s: %w", routerNS, err)
	}
	base, err := routes(h)
	if err != nil {
		h.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{cancel: cancel, done: make(chan struct{}), base: map[netip.Prefix]bool{}, seen: map[netip.Prefix]time.Time{}}
	for _, p := range base {
		w.base[p] = true
	}
	go func() {
		defer close(w.done)
		defer h.Close()
		w.poll(ctx, h, extNS, podNS)
	}()
	return w, nil
}

// routes are the destinations of the IPv4 routes of h's main table (same
// as `ip route show`).
func routes(h *netlink.Handle) ([]netip.Prefix, error) {
	rs, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list the router's routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Dst == nil {
			continue // the default route
		}
		if p, ok := netconv.Prefix(r.Dst); ok {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func (w *watcher) poll(ctx context.Context, h *netlink.Handle, extNS, podNS string) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	var pod *netlink.Handle // podNS, once it exists
	defer func() {
		if pod != nil {
			pod.Close()
		}
	}()
	pinging := false
	for {
		now := time.Now()
		rs, err := routes(h)
		w.mu.Lock()
		if err != nil {
			w.err = err
			w.mu.Unlock()
			return
		}
		for _, p := range rs {
			if _, ok := w.seen[p]; !ok && !w.base[p] {
				w.seen[p] = now
				if !pinging {
					w.target = firstPod(p)
				}
			}
		}
		target := w.target
		w.mu.Unlock()
		if pod == nil && target.IsValid() && netns.Exists(podNS) {
			if p, err := netns.Handle(podNS); err == nil { // else next time
				pod = p
			}
		}
		if !pinging && pod != nil && hasAddr(pod, target) {
			pinging = true
			w.mu.Lock()
			w.podUp = now
			w.mu.Unlock()
			go w.ping(ctx, extNS, target)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// hasAddr reports whether an interface in h's namespace has a (same as
// `ip addr show to A`).
func hasAddr(h *netlink.Handle, a netip.Addr) bool {
	as, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, x := range as {
		if netconv.Addr(x.IP) == a {
			return true
		}
	}
	return false
}

// ping sends an echo request from extNS to dst every pollEvery until
// the first reply, and records when that came.
func (w *watcher) ping(ctx context.Context, extNS string, dst netip.Addr) {
	var pc *icmp.PacketConn
	err := netns.Do(extNS, func() error { // same as `ip netns exec EXT ping DST`
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		w.mu.Lock()
		w.replyErr = fmt.Errorf("open an ICMP socket in %s: %w", extNS, err)
		w.mu.Unlock()
		return
	}
	defer pc.Close()
	id := int(time.Now().UnixNano() & 0xffff)
	got := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			at := time.Now()
			m, err := icmp.ParseMessage(1, buf[:n]) // 1: ICMP for IPv4
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == dst.String() {
				got <- at
				return
			}
		}
	}()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for seq := 1; ; seq++ {
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("weft-bench-bgp")}}).Marshal(nil)
		_, _ = pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}) // unreachable until the route and the pod are there
		select {
		case <-ctx.Done():
			return
		case at := <-got:
			w.mu.Lock()
			w.reply = at
			w.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

// wait waits up to timeout for ext's first reply from subnet's first
// pod, stops watching, and returns when subnet's route appeared, the
// pod got its address and the reply came.
func (w *watcher) wait(ctx context.Context, subnet netip.Prefix, timeout time.Duration) (result, error) {
	end := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		done := !w.reply.IsZero() || w.err != nil || w.replyErr != nil
		w.mu.Unlock()
		if done || time.Now().After(end) {
			break
		}
		select {
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		return result{}, w.err
	case w.base[subnet]:
		return result{}, fmt.Errorf("the router had a route to %s before the node was added", subnet)
	case w.seen[subnet].IsZero():
		return result{}, fmt.Errorf("no route to %s in the router's table (new routes seen: %v)", subnet, w.seen)
	case w.target != firstPod(subnet):
		return result{}, fmt.Errorf("ext pinged %s, the first pod of another new route, not %s's", w.target, subnet)
	case w.podUp.IsZero():
		return result{}, fmt.Errorf("no %s in the pod's namespace %s after the node was added", w.target, timeout)
	case w.replyErr != nil:
		return result{}, w.replyErr
	case w.reply.IsZero():
		return result{}, fmt.Errorf("no echo reply from %s at ext %s after the node was added", w.target, timeout)
	}
	return result{route: w.seen[subnet], podUp: w.podUp, reply: w.reply}, nil
}

// stop stops watching and waits for the poller; it may be called more
// than once.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}
