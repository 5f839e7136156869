package check

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
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

// Ping sends count echo requests (ICMP or ICMPv6, as dst's family) from
// ns to dst, one per interval, and counts the replies (each may arrive
// until one second after the last send).
func Ping(ctx context.Context, ns string, dst netip.Addr, count int, interval time.Duration) (PingStats, error) {
	st := PingStats{}
	e := echoFor(dst)
	pc, err := e.open(ns)
	if err != nil {
		return st, err
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
			if r := e.replyFrom(buf[:n], from, dst); r != nil && r.ID == id && r.Seq >= 1 && r.Seq <= count {
				mu.Lock()
				got[r.Seq] = true
				mu.Unlock()
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 1; seq <= count; seq++ {
		_ = e.send(pc, dst, id, seq, "weft-lab-ping") // a send error is a lost packet too
		st.Sent++
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
