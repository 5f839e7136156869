package e2e

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/netns"
)

// replyClock sends ICMP echo requests from a namespace at a fixed interval
// and records when each reply arrived, for gaps measured in time rather
// than in lost requests.
type replyClock struct {
	pc      *icmp.PacketConn
	dst     netip.Addr
	id      int
	mu      sync.Mutex
	sent    int
	replies []time.Time // arrival of each reply, in order
	start   time.Time   // when the pinging began
	end     time.Time   // when stop ended it
	stopped chan struct{}
	done    sync.WaitGroup
}

// startReplyClock pings dst (IPv4) from namespace ns every interval until stop.
func startReplyClock(t *testing.T, ns string, dst netip.Addr, interval time.Duration) *replyClock {
	t.Helper()
	p := &replyClock{dst: dst, id: os.Getpid() & 0xffff, start: time.Now(), stopped: make(chan struct{})}
	if err := netns.Do(ns, func() error {
		var err error
		p.pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatalf("icmp socket in %s: %v", ns, err)
	}
	p.done.Add(2)
	go func() { // receiver
		defer p.done.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := p.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			ia, _ := from.(*net.IPAddr)
			if !ok || e.ID != p.id || ia == nil || !ia.IP.Equal(dst.AsSlice()) {
				continue
			}
			p.mu.Lock()
			p.replies = append(p.replies, time.Now())
			p.mu.Unlock()
		}
	}()
	go func() { // sender
		defer p.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("weft-e2e-wireguard")}}
			b, _ := msg.Marshal(nil)
			_, _ = p.pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
			p.mu.Lock()
			p.sent++
			p.mu.Unlock()
			select {
			case <-p.stopped:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the ping, waiting a second for the last replies; safe to
// repeat. It returns the number sent and the replies' arrival times.
func (p *replyClock) stop() (int, []time.Time) {
	select {
	case <-p.stopped:
	default:
		p.mu.Lock()
		p.end = time.Now()
		p.mu.Unlock()
		close(p.stopped)
		time.Sleep(time.Second)
		_ = p.pc.Close()
		p.done.Wait()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.replies
}

// longestGap is the longest time between consecutive replies.
func longestGap(replies []time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(replies); i++ {
		gap = max(gap, replies[i].Sub(replies[i-1]))
	}
	return gap
}

// stall is how long before the end of the pinging the last reply came
// (all of it when none came): a gap longestGap does not see.
func (p *replyClock) stall() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.replies) == 0 {
		return p.end.Sub(p.start)
	}
	return max(0, p.end.Sub(p.replies[len(p.replies)-1]))
}

// firstAfter is the first reply at or after t, and whether there is one.
func firstAfter(replies []time.Time, t time.Time) (time.Time, bool) {
	for _, r := range replies {
		if !r.Before(t) {
			return r, true
		}
	}
	return time.Time{}, false
}
