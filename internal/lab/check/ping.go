package check

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/netns"
)

// PingStats summarises a continuous ping.
type PingStats struct {
	From, To  string
	Sent      int
	Received  int
	MaxGap    time.Duration // longest run of lost replies, in send intervals
	FirstLost int           // sequence number of the first lost echo, 0 if none
}

func (p PingStats) String() string {
	return fmt.Sprintf("%s -> %s: %d sent, %d received, %d lost, longest gap %s",
		p.From, p.To, p.Sent, p.Received, p.Sent-p.Received, p.MaxGap)
}

// Ping sends count echo requests from ns to dst, one per interval, and
// counts the replies (each may arrive until one second after the last send).
func Ping(ctx context.Context, ns string, dst netip.Addr, count int, interval time.Duration) (PingStats, error) {
	st := PingStats{}
	var pc *icmp.PacketConn
	if err := netns.Do(ns, func() error {
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return st, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer pc.Close()
	id := int(time.Now().UnixNano() & 0xffff)
	got := make([]bool, count+1)
	var mu sync.Mutex // guards got
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != dst.String() {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq >= 1 && e.Seq <= count {
				mu.Lock()
				got[e.Seq] = true
				mu.Unlock()
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 1; seq <= count; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("weft-lab-ping")}}
		b, _ := msg.Marshal(nil)
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err == nil {
			st.Sent++
		} else {
			st.Sent++ // a send error is a lost packet too
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-tick.C:
		}
	}
	time.Sleep(time.Second)
	_ = pc.SetReadDeadline(time.Now())
	<-done
	mu.Lock()
	defer mu.Unlock()
	run := 0
	for seq := 1; seq <= count; seq++ {
		if got[seq] {
			st.Received++
			run = 0
			continue
		}
		if st.FirstLost == 0 {
			st.FirstLost = seq
		}
		run++
		st.MaxGap = max(st.MaxGap, time.Duration(run)*interval)
	}
	return st, nil
}
