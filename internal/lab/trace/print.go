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
	}
	switch {
	case r.Delivered:
		fmt.Fprintf(w, "delivered to %s after %d hops\n", r.To, len(r.Hops))
	case r.Problem != nil:
		p := r.Problem
		fmt.Fprintf(w, "STOPPED at hop %d (%s): missing %s: %s\n", p.Hop+1, p.Node, p.Kind, p.What)
		if p.Why != "" {
			fmt.Fprintf(w, "  why: %s\n", p.Why)
		}
		if p.Fix != "" {
			fmt.Fprintf(w, "  fix: %s\n", strings.ReplaceAll(p.Fix, "\n", "\n       "))
		}
	}
}
