package trace

import (
	"bytes"
	"encoding/xml"
	"io"
	"slices"
	"strings"
	"testing"
)

// parsed is what an SVG holds: its texts, its hop lines (by data-hop)
// and its boxes' classes (by data-netns).
type parsed struct {
	texts []string
	hops  []string
	boxes map[string]string
}

func parseSVG(t *testing.T, b []byte) parsed {
	t.Helper()
	p := parsed{boxes: map[string]string{}}
	d := xml.NewDecoder(bytes.NewReader(b))
	var ns string
	inText := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v\n%s", err, b)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			attr := func(n string) string {
				for _, a := range e.Attr {
					if a.Name.Local == n {
						return a.Value
					}
				}
				return ""
			}
			switch e.Name.Local {
			case "g":
				if v := attr("data-netns"); v != "" {
					ns = v
				}
				if v := attr("data-hop"); v != "" {
					p.hops = append(p.hops, v)
				}
			case "rect":
				if ns != "" {
					p.boxes[ns] = attr("class")
				}
			case "text":
				inText = true
			}
		case xml.CharData:
			if inText {
				p.texts = append(p.texts, strings.TrimSpace(string(e)))
			}
		case xml.EndElement:
			inText = false
		}
	}
	return p
}

func hostGWTopology() Topology {
	return Topology{Title: "lab x: host-gw, l2", Underlay: Box{"underlay", "ul", "switch br-a"},
		Ctl: Box{"ctl", "ctl", "192.0.2.2"}, Ext: Box{"ext", "ext", "192.0.2.254"},
		Nodes: []NodeBox{
			{Box{"n1", "n1", "10.244.1.0/24"}, []Box{{"n1-p1", "p1", "10.244.1.2"}}},
			{Box{"n2", "n2", "10.244.2.0/24"}, []Box{{"n2-p1", "p2", "10.244.2.2"}}},
		}}
}

func TestSVG(t *testing.T) {
	k, c := hostGW()
	r := Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	var b bytes.Buffer
	if err := SVG(&b, hostGWTopology(), r); err != nil {
		t.Fatal(err)
	}
	p := parseSVG(t, b.Bytes())
	for _, want := range []string{"n1", "n2", "n1-p1", "n2-p1", "underlay", "ctl", "ext", "delivered to n2-p1 after 5 hops"} {
		if !slices.Contains(p.texts, want) {
			t.Errorf("no text %q in %q", want, p.texts)
		}
	}
	if !slices.Equal(p.hops, []string{"2", "3", "4", "5"}) {
		t.Errorf("hop lines %q, want 2..5 (one per move between namespaces)", p.hops)
	}
	for ns, class := range map[string]string{"p1": "on", "n1": "on", "ul": "on", "n2": "on", "p2": "on", "ext": "box", "ctl": "box"} {
		if p.boxes[ns] != class {
			t.Errorf("box %s: class %q, want %q", ns, p.boxes[ns], class)
		}
	}
	// A broken path: the box where it stops is red, the note says why,
	// and names with XML's special characters stay well-formed.
	delete(k.routes["n1"], aa("10.244.2.2"))
	r = Run(k, c, "n1-p1", "n2-p1", "p1", aa("10.244.1.2"), aa("10.244.2.2"))
	tp := hostGWTopology()
	tp.Title = `lab <x> & "y"`
	b.Reset()
	if err := SVG(&b, tp, r); err != nil {
		t.Fatal(err)
	}
	p = parseSVG(t, b.Bytes())
	if p.boxes["n1"] != "stop" || p.boxes["p1"] != "on" || p.boxes["n2"] != "box" {
		t.Errorf("broken path boxes: %v", p.boxes)
	}
	if !slices.ContainsFunc(p.texts, func(s string) bool { return strings.HasPrefix(s, "stopped at hop 2 (n1): missing route") }) || !slices.Contains(p.texts, `lab <x> & "y"`) {
		t.Errorf("texts %q", p.texts)
	}
}
