package trace

import (
	"fmt"
	"io"
	"strings"
)

// Print writes r as `weft lab trace` shows it: a numbered line per hop
// (namespace, the devices in and out, the packet's addresses, marked
// "underlay" for a tunnel's outer packet), its steps indented under it,
// then the outcome.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "%s (%s) -> %s (%s)\n", r.From, r.Src, r.To, r.Dst)
	for i, h := range r.Hops {
		in, out := h.In, h.Out
		if in == "" {
			in = "-"
		}
		if out == "" {
			out = "-"
		}
		kind := "packet"
		if h.Underlay {
			kind = "underlay"
		}
		fmt.Fprintf(w, "%2d  %-10s in %-22s out %-20s %s %s -> %s\n", i+1, h.Name, in, out, kind, h.Src, h.Dst)
		for _, s := range h.Steps {
			fmt.Fprintf(w, "      %-10s %s\n", s.Kind, s.Text)
		}
		if r.Probe != nil && i < len(r.Probe.Hops) {
			fmt.Fprintf(w, "      %-10s %s\n", "probe", r.Probe.Hops[i].text(h, r.Probe.Sent))
		}
	}
	if p := r.Probe; p != nil {
		fmt.Fprintf(w, "probe: %d echo requests sent, %d replies; ", p.Sent, p.Received)
		switch {
		case p.StoppedAt < 0 && r.Delivered:
			fmt.Fprintln(w, "every hop counted them")
		case p.StoppedAt < 0:
			fmt.Fprintf(w, "every hop up to %d (%s) counted them, and there the trace stops\n", len(r.Hops), r.Hops[len(r.Hops)-1].Name)
		default:
			fmt.Fprintf(w, "they stop at hop %d (%s): its counters did not see them all\n", p.StoppedAt+1, r.Hops[p.StoppedAt].Name)
		}
	}
	switch {
	case r.Delivered:
		fmt.Fprintf(w, "delivered to %s after %d hops\n", r.To, len(r.Hops))
	case r.Problem != nil:
		p := r.Problem
		if p.Kind == DeniedByPolicy {
			fmt.Fprintf(w, "STOPPED at hop %d (%s): denied by NetworkPolicy: %s\n", p.Hop+1, p.Node, p.What)
		} else {
			fmt.Fprintf(w, "STOPPED at hop %d (%s): missing %s: %s\n", p.Hop+1, p.Node, p.Kind, p.What)
		}
		if p.Why != "" {
			fmt.Fprintf(w, "  why: %s\n", p.Why)
		}
		if p.Fix != "" {
			fmt.Fprintf(w, "  fix: %s\n", strings.ReplaceAll(p.Fix, "\n", "\n       "))
		}
	}
}

// text is c as a probe line: each device's count against the packets
// sent.
func (c HopCount) text(h Hop, sent int) string {
	parts := []string{}
	if c.InRx < 0 && c.OutTx < 0 {
		parts = append(parts, "no device to count on")
	}
	if c.InRx >= 0 {
		parts = append(parts, fmt.Sprintf("%s received +%d", h.InDev, c.InRx))
	}
	if c.OutTx >= 0 {
		parts = append(parts, fmt.Sprintf("%s sent +%d", h.OutDev, c.OutTx))
	}
	v := "ok"
	if !c.Confirmed {
		v = fmt.Sprintf("FEWER than the %d sent", sent)
	}
	return strings.Join(parts, ", ") + ": " + v
}

// Summary says in a line how the traced packet went: the tunnel or route
// it left its first node by, across the router if the underlay routed it;
// or where it broke.
func (r *Result) Summary() string {
	if !r.Delivered {
		if p := r.Problem; p != nil {
			s := fmt.Sprintf("BROKEN at %s: missing %s: %s", p.Node, p.Kind, p.What)
			if p.Kind == DeniedByPolicy {
				s = fmt.Sprintf("DENIED at %s by NetworkPolicy: %s", p.Node, p.What)
			}
			if p.Why != "" {
				s += ": " + p.Why
			}
			return s
		}
		return "not delivered"
	}
	var via string
	routed := false
	for _, h := range r.Hops {
		for _, s := range h.Steps {
			switch {
			case via == "" && s.Kind == "encap":
				via = s.Text
			case s.Kind == "route" && h.Name == "underlay":
				routed = true
			}
		}
	}
	if via == "" {
		for _, s := range r.Hops[0].Steps {
			if s.Kind == "route" {
				via = "route " + strings.SplitN(s.Text, " (table", 2)[0]
				break
			}
		}
	}
	if routed {
		via += "; the underlay's router forwards it"
	}
	return via
}
