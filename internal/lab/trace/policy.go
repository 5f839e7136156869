package trace

import "fmt"

// Verdict is one direction of a NetworkPolicy decision for the traced
// packet: where it is enforced (the node's namespace) and what was decided.
type Verdict struct {
	Dir     string // egress, ingress
	NS      string // the namespace of the node that enforces it; "" if none
	Text    string // the decision, as weft policy explain words it
	Allowed bool
}

// ApplyPolicy adds each verdict as a step of the hop where its node
// handles the packet (egress: the first hop in that node, ingress: the
// last), and ends the trace at the first that denies it: the hops after
// it are dropped, and the problem says which policies decided. explain
// is the command that shows the decision in full.
func (r *Result) ApplyPolicy(vs []Verdict, explain string) {
	for _, v := range vs {
		if v.NS == "" {
			continue
		}
		at := -1
		for i, h := range r.Hops {
			if h.NS != v.NS || h.Underlay {
				continue
			}
			if at < 0 || v.Dir == "ingress" {
				at = i
			}
		}
		if at < 0 {
			continue
		}
		r.Hops[at].Steps = append(r.Hops[at].Steps, Step{"policy", fmt.Sprintf("NetworkPolicy %s: %s", v.Dir, v.Text)})
		// A problem the kernel walk found (a missing route at this very
		// hop comes before the forward hook's policy) stands.
		if v.Allowed || r.Problem != nil {
			continue
		}
		r.Hops = r.Hops[:at+1]
		r.Delivered = false
		r.Problem = &Problem{Hop: at, Kind: DeniedByPolicy, Node: r.Hops[at].Name, What: fmt.Sprintf("%s: %s", v.Dir, v.Text),
			Fix: fmt.Sprintf("%s shows the decision; a policy rule that admits it lets it through", explain)}
		if p := r.Probe; p != nil && len(p.Hops) > at+1 {
			p.Hops = p.Hops[:at+1]
			if p.StoppedAt > at {
				p.StoppedAt = -1
			}
		}
		return
	}
}
