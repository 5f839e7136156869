package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Explanation answers `weft policy explain`: whether a connection from one
// endpoint to another is allowed, direction by direction, and why.
type Explanation struct {
	From, To string // as given: "namespace/name" or an address
	Protocol Protocol
	Port     uint16
	// Src and Dst are the addresses the question was evaluated with.
	Src, Dst netip.Addr
	// Egress is the source pod's side, evaluated with the Ruleset of its
	// node; Ingress the destination pod's, with its node's.
	Egress, Ingress Side
	// Allowed: both directions allow.
	Allowed bool
	// Problems of the policies (the same on every node).
	Problems []Problem
}

// Side is one direction of an Explanation.
type Side struct {
	// Pod is the policed pod ("namespace/name"), "" for an address
	// outside the cluster's pods.
	Pod string
	// Node is the node whose Ruleset decided ("" when no pod).
	Node string
	// HostNetwork: the pod shares its node's network and is not policed.
	HostNetwork bool
	// Selecting are the policies that select the pod for this direction.
	Selecting []string
	Verdict
}

// Allowed explains whether from may open a connection to to with proto on
// port. Each is "namespace/name" of a pod or a bare address (outside the
// cluster, or any address not a pod's). The egress side is compiled for
// the source pod's node and the ingress side for the destination pod's, as
// the agents on those nodes would. Errors name what is missing in one
// line: "no namespace x", "no pod x/y in the cluster".
func Allowed(c *Cluster, from, to string, proto Protocol, port uint16) (Explanation, error) {
	if c == nil {
		c = &Cluster{}
	}
	e := Explanation{From: from, To: to, Protocol: proto, Port: port}
	src, err := endpoint(c, from)
	if err != nil {
		return e, err
	}
	dst, err := endpoint(c, to)
	if err != nil {
		return e, err
	}
	if e.Src, err = src.addr(netip.Addr{}); err != nil {
		return e, err
	}
	if e.Dst, err = dst.addr(e.Src); err != nil {
		return e, err
	}
	pkt := Packet{Src: e.Src, Dst: e.Dst, Protocol: proto, Port: port}

	// Problems do not depend on the node: every compilation reports the
	// same ones.
	problemsSeen := false
	side := func(ep endpointInfo, dir Direction) Side {
		if ep.pod == nil {
			return Side{Verdict: Verdict{Allowed: true}}
		}
		s := Side{Pod: ep.pod.Key(), Node: ep.pod.Node, HostNetwork: ep.pod.HostNetwork}
		rs := Compile(c, ep.pod.Node)
		e.Problems, problemsSeen = rs.Problems, true
		s.Verdict = rs.Evaluate(dir, pkt)
		s.Selecting = rs.selecting(dir, ep.pod.Key())
		return s
	}
	e.Egress = side(src, Egress)
	e.Ingress = side(dst, Ingress)
	if !problemsSeen {
		e.Problems = Compile(c, "").Problems
	}
	e.Allowed = e.Egress.Allowed && e.Ingress.Allowed
	return e, nil
}

// selecting returns the policies whose chains police pod in dir.
func (r *Ruleset) selecting(dir Direction, pod string) []string {
	for _, pe := range r.Pods {
		if pe.Pod != pod {
			continue
		}
		name := pe.Ingress
		if dir == Egress {
			name = pe.Egress
		}
		g, ok := r.group(name)
		if !ok {
			return nil
		}
		var out []string
		for _, cn := range g.Chains {
			if ch, ok := r.chain(cn); ok {
				out = append(out, ch.Policy)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return nil
}

type endpointInfo struct {
	pod *Pod       // nil: an address
	ip  netip.Addr // for an address
}

// endpoint resolves "namespace/name" or an address.
func endpoint(c *Cluster, s string) (endpointInfo, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return endpointInfo{ip: a.Unmap()}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return endpointInfo{}, fmt.Errorf("%q is neither namespace/pod nor an IP address", s)
	}
	nsKnown := false
	for _, n := range c.Namespaces {
		if n != nil && n.Name == ns {
			nsKnown = true
		}
	}
	for _, p := range c.Pods {
		if p != nil && p.Namespace == ns && p.Name == name {
			return endpointInfo{pod: p}, nil
		}
		if p != nil && p.Namespace == ns {
			nsKnown = true
		}
	}
	if !nsKnown {
		return endpointInfo{}, fmt.Errorf("no namespace %s", ns)
	}
	return endpointInfo{}, fmt.Errorf("no pod %s/%s in the cluster", ns, name)
}

// addr returns the endpoint's address, of like's family when it has one.
func (ep endpointInfo) addr(like netip.Addr) (netip.Addr, error) {
	if ep.pod == nil {
		return ep.ip, nil
	}
	if len(ep.pod.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("pod %s has no IP address yet", ep.pod.Key())
	}
	for _, a := range ep.pod.IPs {
		if like.IsValid() && a.Unmap().Is4() == like.Is4() {
			return a.Unmap(), nil
		}
	}
	return ep.pod.IPs[0].Unmap(), nil
}

// String is the human answer, for example:
//
//	x/a -> y/b 80/TCP: denied
//	  egress  x/a on n1: not isolated
//	  ingress y/b on n2: isolated by y/deny-all, y/allow-x; allowed by none
func (e Explanation) String() string {
	var b strings.Builder
	verdict := "allowed"
	if !e.Allowed {
		verdict = "denied"
	}
	fmt.Fprintf(&b, "%s -> %s %s: %s\n", endpointName(e.From, e.Src), endpointName(e.To, e.Dst), portString(e.Protocol, e.Port), verdict)
	for _, s := range []struct {
		dir  string
		side Side
	}{{"egress ", e.Egress}, {"ingress", e.Ingress}} {
		fmt.Fprintf(&b, "  %s %s\n", s.dir, s.side.Text())
	}
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "  problem: policy %s: %v\n", p.Policy, p.Err)
	}
	return b.String()
}

func endpointName(given string, a netip.Addr) string {
	if a.IsValid() && given != a.String() {
		return given + " (" + a.String() + ")"
	}
	return given
}

func portString(proto Protocol, port uint16) string {
	if port == 0 {
		return string(proto)
	}
	return fmt.Sprintf("%d/%s", port, proto)
}

// onNode is " on NODE", or nothing for a pod not scheduled (a file written
// by hand).
func onNode(node string) string {
	if node == "" {
		return ""
	}
	return " on " + node
}

// ParsePort parses a --port value: "80/tcp" (or "80", TCP; udp and sctp
// too); "" is a packet without a port, as ICMP.
func ParsePort(s string) (Protocol, uint16, error) {
	if s == "" {
		return "ICMP", 0, nil
	}
	num, proto, found := strings.Cut(s, "/")
	p := TCP
	if found {
		p = Protocol(strings.ToUpper(proto))
	}
	if p != TCP && p != UDP && p != SCTP {
		return "", 0, fmt.Errorf("--port %s: protocol %q: use tcp, udp or sctp", s, proto)
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("--port %s: %q is not a port number (1-65535)", s, num)
	}
	return p, uint16(n), nil
}

// Text is the side's verdict as String writes it, without the direction:
// "default/n2-p1 on n2: isolated by default/deny; allowed by none: denied".
func (s Side) Text() string {
	switch {
	case s.Pod == "":
		return "outside the cluster's pods: not policed"
	case s.HostNetwork:
		return s.Pod + onNode(s.Node) + ": host network, not policed"
	case !s.Isolated:
		return s.Pod + onNode(s.Node) + ": not isolated (no policy selects it), allowed"
	case s.Allowed:
		return fmt.Sprintf("%s%s: isolated by %s; allowed by %s", s.Pod, onNode(s.Node), strings.Join(s.Selecting, ", "), strings.Join(s.Policies, ", "))
	}
	return fmt.Sprintf("%s%s: isolated by %s; allowed by none: denied", s.Pod, onNode(s.Node), strings.Join(s.Selecting, ", "))
}
