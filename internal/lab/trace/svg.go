package trace

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Box is a namespace in a picture: its lab name, namespace and a line
// under the name (an address, a subnet).
type Box struct {
	Name, NS, Label string
}

// NodeBox is a node with its pods.
type NodeBox struct {
	Box
	Pods []Box
}

// Topology is what SVG draws: the underlay (switch or router) with ctl
// and ext beside it, the nodes under it, each node's pods under the node.
type Topology struct {
	Title    string
	Underlay Box
	Ctl, Ext Box
	Nodes    []NodeBox
}

// Layout of the picture, in pixels.
const (
	boxW, boxH = 150, 46
	podW       = 110
	colGap     = 30
	rowUnder   = 70
	rowNodes   = 200
	rowPods    = 330
)

type pos struct{ x, y, w int } // a box's top-left corner and width

// SVG draws t with r's path over it: a box per namespace, grey lines for
// the links (pod to node, node and hosts to the underlay), and for each
// hop that moves to another namespace a numbered line, dashed where it is
// a tunnel's outer packet; the boxes the packet crosses are outlined, and
// where it stops is red with the missing piece written under the picture.
// It is plain SVG 1.1: any browser opens it.
func SVG(w io.Writer, t Topology, r *Result) error {
	at := map[string]pos{} // by namespace
	x := 20
	var width int
	for _, n := range t.Nodes {
		colW := max(boxW, len(n.Pods)*(podW+10)-10)
		at[n.NS] = pos{x + (colW-boxW)/2, rowNodes, boxW}
		px := x
		for _, p := range n.Pods {
			at[p.NS] = pos{px, rowPods, podW}
			px += podW + 10
		}
		x += colW + colGap
	}
	width = max(x, 3*boxW+4*colGap)
	mid := width/2 - boxW/2
	at[t.Underlay.NS] = pos{mid, rowUnder, boxW}
	at[t.Ctl.NS] = pos{20, rowUnder, boxW}
	at[t.Ext.NS] = pos{width - boxW - 20, rowUnder, boxW}
	height := rowPods + boxH + 60
	var notes []string
	if r != nil && r.Problem != nil {
		if r.Problem.Kind == DeniedByPolicy {
			notes = append(notes, fmt.Sprintf("stopped at hop %d (%s): denied by NetworkPolicy: %s", r.Problem.Hop+1, r.Problem.Node, r.Problem.What))
		} else {
			notes = append(notes, fmt.Sprintf("stopped at hop %d (%s): missing %s: %s", r.Problem.Hop+1, r.Problem.Node, r.Problem.Kind, r.Problem.What))
		}
		if r.Problem.Fix != "" {
			notes = append(notes, "fix: "+r.Problem.Fix)
		}
	} else if r != nil && r.Delivered {
		notes = append(notes, fmt.Sprintf("delivered to %s after %d hops", r.To, len(r.Hops)))
	}
	height += 18 * len(notes)

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
`, width, height, width, height)
	fmt.Fprintf(&b, `<style>.link{stroke:#bbb;stroke-width:1.5}.hop{stroke:#1a73e8;stroke-width:3;fill:none}.underlay{stroke-dasharray:7 4}.box{fill:#fafafa;stroke:#888}.on{fill:#e8f0fe;stroke:#1a73e8;stroke-width:2}.stop{fill:#fde8e8;stroke:#d93025;stroke-width:3}.num{fill:#1a73e8;font-weight:bold}</style>
`)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(t.Title))
	fmt.Fprintf(&b, `<text x="20" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", esc(t.Title))
	center := func(p pos) (int, int) { return p.x + p.w/2, p.y + boxH/2 }
	line := func(a, c string, class string) {
		pa, oka := at[a]
		pc, okc := at[c]
		if !oka || !okc {
			return
		}
		x1, y1 := center(pa)
		x2, y2 := center(pc)
		fmt.Fprintf(&b, `<line class="%s" x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", class, x1, y1, x2, y2)
	}
	// The links.
	line(t.Ctl.NS, t.Underlay.NS, "link")
	line(t.Ext.NS, t.Underlay.NS, "link")
	for _, n := range t.Nodes {
		line(n.NS, t.Underlay.NS, "link")
		for _, p := range n.Pods {
			line(p.NS, n.NS, "link")
		}
	}
	// The boxes, outlined where the packet goes.
	on, stop := map[string]bool{}, ""
	if r != nil {
		for _, h := range r.Hops {
			on[h.NS] = true
		}
		if r.Problem != nil && r.Problem.Hop < len(r.Hops) {
			stop = r.Hops[r.Problem.Hop].NS
		}
	}
	box := func(bx Box) {
		p, ok := at[bx.NS]
		if !ok {
			return
		}
		class := "box"
		switch {
		case bx.NS == stop:
			class = "stop"
		case on[bx.NS]:
			class = "on"
		}
		fmt.Fprintf(&b, `<g class="ns" data-netns="%s"><rect class="%s" x="%d" y="%d" width="%d" height="%d" rx="6"/>`, esc(bx.NS), class, p.x, p.y, p.w, boxH)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-weight="bold">%s</text>`, p.x+p.w/2, p.y+18, esc(bx.Name))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="10">%s</text></g>`+"\n", p.x+p.w/2, p.y+34, esc(bx.Label))
	}
	box(t.Underlay)
	box(t.Ctl)
	box(t.Ext)
	for _, n := range t.Nodes {
		box(n.Box)
		for _, p := range n.Pods {
			box(p)
		}
	}
	// The hops: a numbered line for each move to another namespace.
	if r != nil {
		for i := 1; i < len(r.Hops); i++ {
			a, c := r.Hops[i-1], r.Hops[i]
			if a.NS == c.NS {
				continue
			}
			pa, oka := at[a.NS]
			pc, okc := at[c.NS]
			if !oka || !okc {
				continue
			}
			class := "hop"
			if c.Underlay {
				class += " underlay"
			}
			x1, y1 := center(pa)
			x2, y2 := center(pc)
			// Offset the way back (the tunnel's outer packet goes up
			// and down the same link) so both stay visible.
			off := 0
			if c.Underlay {
				off = 8
			}
			fmt.Fprintf(&b, `<g class="step" data-hop="%d"><path class="%s" d="M%d,%d L%d,%d"/>`, i+1, class, x1+off, y1, x2+off, y2)
			fmt.Fprintf(&b, `<text class="num" x="%d" y="%d">%d</text></g>`+"\n", (x1+x2)/2+off+4, (y1+y2)/2, i+1)
		}
	}
	for i, n := range notes {
		fmt.Fprintf(&b, `<text x="20" y="%d">%s</text>`+"\n", rowPods+boxH+40+18*i, esc(n))
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
