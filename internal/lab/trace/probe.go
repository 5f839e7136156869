package trace

import "fmt"

// Stats are a device's counters: packets received and sent.
type Stats struct{ Rx, Tx uint64 }

// Counters reads the devices' counters of a namespace, by name.
type Counters interface {
	Stats(ns string) (map[string]Stats, error)
}

// Probe is what the devices on a traced path counted while real packets
// were sent along it.
type Probe struct {
	Sent, Received int
	// Hops are the deltas of each hop's devices, by hop.
	Hops []HopCount
	// StoppedAt is the first hop (0-based) whose device counted fewer
	// packets than were sent, or -1 if every hop counted them all.
	StoppedAt int
}

// HopCount is one hop's counters over a probe: received on InDev, sent
// on OutDev (-1: the hop has no such device).
type HopCount struct {
	InRx, OutTx int64
	Confirmed   bool
}

// RunProbe reads the counters of every device of r's hops, calls send
// (which sends packets along the path and says how many it sent and how
// many came back), reads them again and records in r what moved. A hop is
// confirmed when each of its devices counted at least the packets sent:
// other traffic can only add to a count.
func RunProbe(k Counters, r *Result, send func() (sent, received int, err error)) error {
	read := func() (map[string]map[string]Stats, error) {
		out := map[string]map[string]Stats{}
		for _, h := range r.Hops {
			if _, ok := out[h.NS]; ok {
				continue
			}
			st, err := k.Stats(h.NS)
			if err != nil {
				return nil, fmt.Errorf("counters of %s: %w", h.Name, err)
			}
			out[h.NS] = st
		}
		return out, nil
	}
	before, err := read()
	if err != nil {
		return err
	}
	sent, received, err := send()
	if err != nil {
		return err
	}
	after, err := read()
	if err != nil {
		return err
	}
	p := &Probe{Sent: sent, Received: received, StoppedAt: -1}
	delta := func(a, b uint64) int64 {
		if a < b { // the device was recreated meanwhile
			return 0
		}
		return int64(a - b)
	}
	for i, h := range r.Hops {
		// Nothing sent confirms nothing; a hop without devices (where a
		// tunnel's packet found no taker) neither.
		c := HopCount{InRx: -1, OutTx: -1, Confirmed: sent > 0 && (h.InDev != "" || h.OutDev != "")}
		if h.InDev != "" {
			c.InRx = delta(after[h.NS][h.InDev].Rx, before[h.NS][h.InDev].Rx)
			c.Confirmed = c.Confirmed && c.InRx >= int64(sent)
		}
		if h.OutDev != "" {
			c.OutTx = delta(after[h.NS][h.OutDev].Tx, before[h.NS][h.OutDev].Tx)
			c.Confirmed = c.Confirmed && c.OutTx >= int64(sent)
		}
		if !c.Confirmed && p.StoppedAt < 0 {
			p.StoppedAt = i
		}
		p.Hops = append(p.Hops, c)
	}
	r.Probe = p
	return nil
}
