package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/internal/backend/udp"
)

// maxHops bounds a walk (a routing loop ends the trace).
const maxHops = 48

// Run traces a packet from src, sent by namespace ns, to dst: every hop
// until a namespace that owns dst takes it, or the first missing piece.
// from and to are the names the caller gave.
func Run(k Kernel, c *Cluster, from, to, ns string, src, dst netip.Addr) *Result {
	t := &tracer{k: k, c: c, r: &Result{From: from, To: to, Src: src, Dst: dst}, snaps: map[string]*Snapshot{}}
	_, _, t.r.Delivered = t.walk(ns, "", "", src, dst, false)
	return t.r
}

type tracer struct {
	k     Kernel
	c     *Cluster
	r     *Result
	snaps map[string]*Snapshot
	// pending are steps for the next hop (a decapsulation).
	pending []Step
}

func (t *tracer) snap(ns string) (*Snapshot, error) {
	if s, ok := t.snaps[ns]; ok {
		return s, nil
	}
	s, err := t.k.Snapshot(ns)
	if err != nil {
		return nil, fmt.Errorf("read namespace %s: %w", ns, err)
	}
	t.snaps[ns] = s
	return s, nil
}

// stop ends the trace at hop h with problem p.
func (t *tracer) stop(h Hop, p Problem) (string, string, bool) {
	t.r.Hops = append(t.r.Hops, h)
	p.Hop = len(t.r.Hops) - 1
	if p.Node == "" {
		p.Node = h.Name
	}
	if p.Fix == "" && t.c.Fix != nil {
		p.Fix = t.c.Fix(p)
	}
	t.r.Problem = &p
	return "", "", false
}

// walk moves a packet from src to dst that is in namespace ns, came in by
// iif ("" if ns sent it) in a frame to mac ("" if not known), until a
// namespace that owns dst takes it: it returns that namespace and the
// device that has dst. underlay marks a tunnel's outer packet.
func (t *tracer) walk(ns, iif, mac string, src, dst netip.Addr, underlay bool) (string, string, bool) {
	for {
		h := Hop{NS: ns, Name: t.c.name(ns), Underlay: underlay, In: iif, InDev: iif, Src: src, Dst: dst, Steps: t.pending}
		t.pending = nil
		if len(t.r.Hops) >= maxHops {
			return t.stop(h, Problem{Kind: TooManyHops, What: fmt.Sprintf("more than %d hops: a routing loop", maxHops)})
		}
		s, err := t.snap(ns)
		if err != nil {
			return t.stop(h, Problem{Kind: MissingLink, What: err.Error()})
		}
		// In by a bridge port, in a frame not for the bridge itself:
		// switched to another port.
		if in := s.link(iif); in != nil && in.Master != 0 {
			br := s.linkByIndex(in.Master)
			if br != nil && mac != "" && mac != br.MAC {
				port, how := t.switchPort(s, br, mac, iif)
				if port == "" {
					return t.stop(h, Problem{Kind: MissingFDB, What: fmt.Sprintf("%s on bridge %s: no port has it (bridge fdb)", mac, br.Name)})
				}
				h.Steps = append(h.Steps, Step{"bridge", fmt.Sprintf("bridge %s switches the frame to %s: %s", br.Name, mac, how)})
				h.Out, h.OutDev = port, port
				pns, pdev, ok := t.peer(ns, s.link(port))
				if !ok {
					return t.stop(h, Problem{Kind: MissingLink, What: fmt.Sprintf("the other end of %s", port)})
				}
				t.r.Hops = append(t.r.Hops, h)
				ns, iif = pns, pdev
				continue
			}
			if br != nil {
				iif = br.Name
				h.In = fmt.Sprintf("%s (port of %s)", in.Name, br.Name)
			}
		}
		// Ours: delivered.
		if l := s.owner(dst); l != nil {
			if underlay {
				h.Steps = append(h.Steps, Step{"deliver", fmt.Sprintf("%s is %s's address here: the node takes the datagram", dst, l.Name)})
			} else {
				h.Steps = append(h.Steps, Step{"deliver", fmt.Sprintf("%s is %s's address here: delivered", dst, l.Name)})
			}
			t.r.Hops = append(t.r.Hops, h)
			return ns, l.Name, true
		}
		node := t.c.nodeOf(ns)
		holder, sub := t.c.holder(dst)
		r, err := t.k.RouteGet(ns, src, dst, iif)
		if err != nil || (r.Type != "" && r.Type != "unicast") {
			why := ""
			if err != nil {
				why = err.Error()
			} else {
				why = r.Type + " " + r.Dst.String()
			}
			if node != nil && node.Agent != "running" && holder != nil && holder.NS != ns {
				for _, l := range s.Links {
					if l.Kind == "tuntap" && !l.Up {
						// A TUN without its reader is down, and the
						// kernel ignores its routes.
						return t.stop(h, Problem{Kind: MissingAgent,
							What: fmt.Sprintf("a reader of %s: %s's agent is %s (%s is down, and the kernel ignores its route: %s)", l.Name, node.Name, node.Agent, l.Name, why)})
					}
				}
			}
			return t.stop(h, t.noRoute(node, holder, sub, dst, why))
		}
		if !src.IsValid() { // sent by a node: the source its route picks
			src, h.Src = r.Src, r.Src
			if len(t.r.Hops) == 0 {
				t.r.Src = src
			}
		}
		h.Steps = append(h.Steps, Step{"route", routeText(r, dst)})
		// A node's route to another node's pods is its agent's: one
		// for that node's subnet (or the whole network) or none.
		if node != nil && !underlay && holder != nil && holder.NS != ns && !(r.Dst.Bits() <= sub.Bits() && r.Dst.Contains(sub.Addr()) && t.c.inCluster(r.Dst.Addr())) {
			return t.stop(h, t.noRoute(node, holder, sub, dst, "the route that matched is not the agent's"))
		}
		out := s.link(r.Dev)
		if out == nil {
			return t.stop(h, Problem{Kind: MissingLink, What: "device " + r.Dev})
		}
		if out.Kind == "tuntap" && node != nil && node.Agent != "running" && !out.encapsulates() {
			// Without its agent a TUN has no reader (and is down): the
			// agent is what is missing.
			return t.stop(h, Problem{Kind: MissingAgent, What: fmt.Sprintf("a reader of %s: %s's agent is %s", out.Name, node.Name, node.Agent)})
		}
		// udp's kernel path: a persistent flannel0 without a reader has no
		// carrier, and its program sends what is routed to it all the same.
		if !out.Up && !out.encapsulates() {
			return t.stop(h, Problem{Kind: MissingLink, What: fmt.Sprintf("device %s is down", out.Name)})
		}
		h.Out, h.OutDev = out.Name, out.Name
		if node != nil && !underlay {
			if st, to, ok := t.masquerade(s, src, dst, out, r); ok {
				h.Steps = append(h.Steps, st)
				src = to // the next hops see the translated source
			}
		}
		nh := r.Gw
		if !nh.IsValid() {
			nh = dst
		}
		switch {
		case out.Kind == "vxlan":
			n := s.neigh(out.Name, nh)
			if n == nil {
				p := Problem{Kind: MissingNeigh, What: fmt.Sprintf("neighbour %s on %s", nh, out.Name)}
				if holder != nil {
					p.Peer = holder.Name
					if vtep := t.vtepMAC(holder, out); vtep != "" {
						p.What = fmt.Sprintf("neighbour %s lladdr %s on %s (%s's VTEP)", nh, vtep, out.Name, holder.Name)
					}
				}
				return t.stop(h, p)
			}
			h.Steps = append(h.Steps, Step{"neigh", fmt.Sprintf("neighbour %s lladdr %s %s on %s: the frame goes to that VTEP MAC", n.IP, n.MAC, n.State, out.Name)})
			f := s.fdb(n.MAC, out.Name)
			if f == nil || !f.IP.IsValid() {
				p := Problem{Kind: MissingFDB, What: fmt.Sprintf("fdb %s dst <the VTEP's underlay address> on %s", n.MAC, out.Name)}
				if holder != nil {
					p.Peer = holder.Name
					p.What = fmt.Sprintf("fdb %s dst %s on %s (%s)", n.MAC, holder.Public, out.Name, holder.Name)
				}
				return t.stop(h, p)
			}
			port := out.Port
			h.Steps = append(h.Steps, Step{"fdb", fmt.Sprintf("fdb %s dst %s on %s: the VTEP is at %s", f.MAC, f.IP, out.Name, f.IP)},
				Step{"encap", fmt.Sprintf("VXLAN encapsulation: VNI %d, UDP to %s:%d; the inner frame to %s carries %s -> %s", out.VNI, f.IP, port, n.MAC, src, dst)})
			t.r.Hops = append(t.r.Hops, h)
			osrc := out.Local
			if !osrc.IsValid() {
				if or, err := t.k.RouteGet(ns, netip.Addr{}, f.IP, ""); err == nil {
					osrc = or.Src
				}
			}
			arr, _, ok := t.walk(ns, "", "", osrc, f.IP, true)
			if !ok {
				return "", "", false
			}
			as, err := t.snap(arr)
			if err != nil {
				return t.stop(Hop{NS: arr, Name: t.c.name(arr)}, Problem{Kind: MissingLink, What: err.Error()})
			}
			// The device of the same VNI and port, and of the outer
			// packet's family (flannel.1 and flannel-v6.1 share both).
			var vx *Link
			for i := range as.Links {
				l := &as.Links[i]
				if l.Kind != "vxlan" || l.VNI != out.VNI || l.Port != port {
					continue
				}
				if l.Local.IsValid() && l.Local.Is4() != f.IP.Is4() {
					continue
				}
				if vx == nil || l.Name == out.Name {
					vx = l
				}
			}
			if vx == nil || !vx.Up {
				return t.stop(Hop{NS: arr, Name: t.c.name(arr), Underlay: true, Src: osrc, Dst: f.IP},
					Problem{Kind: MissingDecap, What: fmt.Sprintf("a vxlan device with VNI %d on port %d, up", out.VNI, port)})
			}
			if vx.MAC != n.MAC {
				return t.stop(Hop{NS: arr, Name: t.c.name(arr), In: vx.Name, InDev: vx.Name, Src: src, Dst: dst},
					Problem{Kind: MissingNeigh, Node: t.c.name(ns), What: fmt.Sprintf("%s's %s has MAC %s, but %s's neighbour entry says %s (the frame is dropped)", t.c.name(arr), vx.Name, vx.MAC, t.c.name(ns), n.MAC)})
			}
			t.pending = []Step{{"decap", fmt.Sprintf("UDP port %d, VNI %d: decapsulated by %s (MAC %s)", port, vx.VNI, vx.Name, vx.MAC)}}
			ns, iif, mac, underlay = arr, vx.Name, vx.MAC, false
		case out.Kind == "tuntap" || out.Kind == "tun" || out.Kind == "wireguard":
			arr, dev, ok := t.userspace(&h, ns, node, holder, sub, out, dst)
			if !ok {
				return "", "", false
			}
			ns, iif, mac, underlay = arr, dev, "", false
		case out.Kind == "veth":
			m, how := t.nextMAC(ns, s, out, nh)
			h.Steps = append(h.Steps, Step{"neigh", how})
			if m == "" {
				return t.stop(h, Problem{Kind: MissingNeigh, What: fmt.Sprintf("neighbour %s on %s: nothing behind it has that address", nh, out.Name)})
			}
			pns, pdev, ok := t.peer(ns, out)
			if !ok {
				return t.stop(h, Problem{Kind: MissingLink, What: fmt.Sprintf("the other end of veth %s", out.Name)})
			}
			h.Steps = append(h.Steps, Step{"veth", fmt.Sprintf("veth %s -> %s in %s", out.Name, pdev, t.c.name(pns))})
			t.r.Hops = append(t.r.Hops, h)
			ns, iif, mac = pns, pdev, m
		case out.Kind == "bridge":
			m, how := t.nextMAC(ns, s, out, nh)
			h.Steps = append(h.Steps, Step{"neigh", how})
			if m == "" {
				return t.stop(h, Problem{Kind: MissingNeigh, What: fmt.Sprintf("neighbour %s on %s: no port leads to it", nh, out.Name)})
			}
			port, phow := t.switchPort(s, out, m, "")
			if port == "" {
				return t.stop(h, Problem{Kind: MissingFDB, What: fmt.Sprintf("%s on bridge %s: no port has it", m, out.Name)})
			}
			h.Steps = append(h.Steps, Step{"bridge", fmt.Sprintf("bridge %s: %s", out.Name, phow)})
			h.Out, h.OutDev = fmt.Sprintf("%s (port %s)", out.Name, port), port
			pns, pdev, ok := t.peer(ns, s.link(port))
			if !ok {
				return t.stop(h, Problem{Kind: MissingLink, What: fmt.Sprintf("the other end of %s", port)})
			}
			h.Steps = append(h.Steps, Step{"veth", fmt.Sprintf("veth %s -> %s in %s", port, pdev, t.c.name(pns))})
			t.r.Hops = append(t.r.Hops, h)
			ns, iif, mac = pns, pdev, m
		default:
			return t.stop(h, Problem{Kind: MissingLink, What: fmt.Sprintf("device %s of kind %q: the trace does not follow it", out.Name, out.Kind)})
		}
	}
}

// userspace follows a packet routed to a TUN device that an agent reads
// (udp's flannel0, wireguard-go's flannel-wg) or to a kernel WireGuard
// device: to the node whose lease holds dst, over the underlay, and out of
// the same device there. It returns where the packet continues.
func (t *tracer) userspace(h *Hop, ns string, node, holder *Node, sub netip.Prefix, out *Link, dst netip.Addr) (string, string, bool) {
	if node == nil {
		return t.stop(*h, Problem{Kind: MissingLink, What: fmt.Sprintf("%s is not a node's: nothing reads it", out.Name)})
	}
	wg := t.c.Backend == "wireguard" || out.Kind == "wireguard"
	port, what := t.c.UDPPort, "weft's udp agent"
	if wg {
		port, what = t.c.WGPort, "WireGuard"
	}
	bpf := out.encapsulates()
	if out.Kind != "wireguard" && node.Agent != "running" && !bpf {
		return t.stop(*h, Problem{Kind: MissingAgent, What: fmt.Sprintf("a reader of %s: %s's agent is %s", out.Name, node.Name, node.Agent)})
	}
	if holder == nil {
		return t.stop(*h, Problem{Kind: Unreachable, What: fmt.Sprintf("a lease that holds %s: none does (the agent answers ICMP net unreachable)", dst)})
	}
	if why, ok := node.Skips[holder.Name]; ok {
		return t.stop(*h, Problem{Kind: MissingPeer, Peer: holder.Name, What: fmt.Sprintf("peer %s (%s)", holder.Name, sub), Why: why})
	}
	switch {
	case wg:
		h.Steps = append(h.Steps, Step{"encap", fmt.Sprintf("%s: %s's lease holds %s; the packet is encrypted to its key and sent in UDP %s:%d -> %s:%d", what, holder.Name, sub, node.Public, port, holder.Public, port)})
	case bpf:
		// The program redirects the packet before flannel0 sends it:
		// flannel0 counts nothing (the probe reads the underlay's hop).
		h.OutDev = ""
		h.Steps = append(h.Steps, Step{"bpf", fmt.Sprintf("%s at tcx egress of %s (udp's kernel path): %s's lease holds %s", udp.EncapProgram, out.Name, holder.Name, sub)},
			Step{"encap", fmt.Sprintf("udp encapsulation (flannel's): UDP %s:%d -> %s:%d, the IP packet as payload, sent out of the underlay device", node.Public, port, holder.Public, port)})
	default:
		h.Steps = append(h.Steps, Step{"agent", fmt.Sprintf("%s reads the packet from %s; %s's lease holds %s", what, out.Name, holder.Name, sub)},
			Step{"encap", fmt.Sprintf("udp encapsulation (flannel's): UDP %s:%d -> %s:%d, the IP packet as payload", node.Public, port, holder.Public, port)})
	}
	t.r.Hops = append(t.r.Hops, *h)
	arr, arrDev, ok := t.walk(ns, "", "", node.Public, holder.Public, true)
	if !ok {
		return "", "", false
	}
	an := t.c.nodeOf(arr)
	if an == nil {
		return t.stop(Hop{NS: arr, Name: t.c.name(arr), Underlay: true}, Problem{Kind: MissingDecap, What: "a node at " + holder.Public.String()})
	}
	as, err := t.snap(arr)
	if err != nil {
		return t.stop(Hop{NS: arr, Name: t.c.name(arr)}, Problem{Kind: MissingLink, What: err.Error()})
	}
	if in := as.link(arrDev); !wg && in != nil && in.XDP == udp.DecapProgram {
		// udp's kernel path: decapsulated at XDP, before the stack; the
		// packet enters the node by the underlay device.
		t.pending = []Step{{"decap", fmt.Sprintf("%s at XDP of %s (udp's kernel path): the datagram comes from %s's address and port, and the inner packet from its subnet; the outer headers are stripped, and the packet enters by %s", udp.DecapProgram, in.Name, node.Name, in.Name)}}
		return arr, in.Name, true
	}
	dev := as.link(out.Name)
	// Without its agent, a TUN has no reader (and is down): the agent is
	// what is missing.
	if (dev == nil || dev.Kind != "wireguard") && an.Agent != "running" {
		return t.stop(Hop{NS: arr, Name: an.Name, Underlay: true, Src: node.Public, Dst: holder.Public},
			Problem{Kind: MissingAgent, Peer: an.Name, What: fmt.Sprintf("a listener on UDP %d: %s's agent is %s (the datagram is refused: ICMP port unreachable)", port, an.Name, an.Agent)})
	}
	if dev == nil || !dev.Up {
		return t.stop(Hop{NS: arr, Name: an.Name, Underlay: true}, Problem{Kind: MissingDecap, Peer: an.Name, What: fmt.Sprintf("device %s, up, on %s", out.Name, an.Name)})
	}
	if wg {
		t.pending = []Step{{"decap", fmt.Sprintf("WireGuard on UDP %d: decrypted from %s's key (its allowed IPs hold %s), out of %s", port, node.Name, h.Src, dev.Name)}}
	} else {
		t.pending = []Step{{"decap", fmt.Sprintf("%s's agent receives the datagram on UDP %d and writes the packet to %s", an.Name, port, dev.Name)}}
	}
	return arr, dev.Name, true
}

// noRoute is the problem of a namespace with no (right) route to dst.
func (t *tracer) noRoute(node, holder *Node, sub netip.Prefix, dst netip.Addr, why string) Problem {
	p := Problem{Kind: MissingRoute, What: fmt.Sprintf("a route to %s (%s)", dst, why)}
	if holder == nil {
		if t.c.inCluster(dst) {
			p.Kind = Unreachable
			p.What = fmt.Sprintf("a lease that holds %s: none does", dst)
		}
		return p
	}
	p.Peer = holder.Name
	if node == nil || node.NS == holder.NS {
		return p
	}
	p.What = fmt.Sprintf("a route to %s's subnet %s (%s)", holder.Name, sub, why)
	if node.Agent != "running" {
		p.Why = fmt.Sprintf("%s's agent is %s", node.Name, node.Agent)
		if t.c.Backend == "udp" {
			p.Why += " (udp's agent removes flannel0, and the route with it, when it stops)"
		}
	}
	if reason, ok := node.Skips[holder.Name]; ok {
		p.Kind, p.Why = MissingPeer, reason
		p.What = fmt.Sprintf("a route to %s's subnet %s: %s's agent skips %s", holder.Name, sub, node.Name, holder.Name)
	}
	return p
}

// nextMAC is the MAC a frame to nh out of dev is sent to, and how it was
// found: the neighbour entry, or, without one, the address's owner behind
// dev, across bridges (what ARP or neighbour discovery would find on the
// first packet).
func (t *tracer) nextMAC(ns string, s *Snapshot, dev *Link, nh netip.Addr) (string, string) {
	if n := s.neigh(dev.Name, nh); n != nil {
		return n.MAC, fmt.Sprintf("neighbour %s lladdr %s %s on %s", n.IP, n.MAC, n.State, dev.Name)
	}
	if l, where := t.behind(ns, s, dev, nh, 0); l != nil {
		return l.MAC, fmt.Sprintf("no neighbour entry for %s on %s yet: ARP finds %s (%s in %s)", nh, dev.Name, l.MAC, l.Name, t.c.name(where))
	}
	return "", fmt.Sprintf("no neighbour entry for %s on %s, and no host behind it has that address", nh, dev.Name)
}

// behind finds the link that has address a behind dev of namespace ns:
// at a veth's far end, or behind a bridge's ports, bridges on the way
// crossed (up to a few). It returns the link and its namespace.
func (t *tracer) behind(ns string, s *Snapshot, dev *Link, a netip.Addr, depth int) (*Link, string) {
	if depth > 4 {
		return nil, ""
	}
	var ends []*Link
	if dev.Kind == "bridge" {
		for _, p := range s.ports(dev) {
			ends = append(ends, s.link(p))
		}
	} else {
		ends = append(ends, dev)
	}
	for _, e := range ends {
		if e == nil || e.Kind != "veth" || e.PeerNS == "" {
			continue
		}
		ps, err := t.snap(e.PeerNS)
		if err != nil {
			continue
		}
		far := ps.linkByIndex(e.Peer)
		if far == nil {
			continue
		}
		if ps.owner(a) != nil {
			// The namespace answers for any of its addresses: by the
			// far end, or by the bridge the far end is a port of.
			if br := ps.linkByIndex(far.Master); br != nil {
				return br, e.PeerNS
			}
			return far, e.PeerNS
		}
		if far.Master == 0 {
			continue
		}
		// A bridge port: the hosts on the bridge's other ports, and the
		// bridge itself.
		br := ps.linkByIndex(far.Master)
		if br == nil {
			continue
		}
		for _, p := range ps.ports(br) {
			if p == far.Name {
				continue
			}
			if l, where := t.behind(e.PeerNS, ps, ps.link(p), a, depth+1); l != nil {
				return l, where
			}
		}
	}
	return nil, ""
}

// switchPort is the port of bridge br a frame to mac leaves by, and how:
// its FDB entry, or the port whose far end has mac (flooded, then
// learned). in is the port it came in by.
func (t *tracer) switchPort(s *Snapshot, br *Link, mac, in string) (string, string) {
	ports := s.ports(br)
	if f := s.fdb(mac, ports...); f != nil && f.Dev != in {
		return f.Dev, fmt.Sprintf("fdb %s on port %s", mac, f.Dev)
	}
	for _, p := range ports {
		l := s.link(p)
		if l == nil || p == in || l.Kind != "veth" {
			continue
		}
		if l.MAC == mac {
			return p, fmt.Sprintf("%s is port %s's own", mac, p)
		}
		// The far end's MAC: the bridge floods the first frame, then
		// learns it.
		if l.PeerNS == "" {
			continue
		}
		if ps, err := t.snap(l.PeerNS); err == nil {
			if pl := ps.linkByIndex(l.Peer); pl != nil && pl.MAC == mac {
				return p, fmt.Sprintf("no fdb entry for %s: flooded, it is behind port %s", mac, p)
			}
		}
	}
	return "", ""
}

// peer is the namespace and name of veth l's other end.
func (t *tracer) peer(ns string, l *Link) (string, string, bool) {
	if l == nil || l.Kind != "veth" {
		return "", "", false
	}
	if l.PeerNS == "" {
		return "", "", false
	}
	s, err := t.snap(l.PeerNS)
	if err != nil {
		return "", "", false
	}
	if pl := s.linkByIndex(l.Peer); pl != nil && pl.Kind == "veth" && pl.Peer == l.Index {
		return l.PeerNS, pl.Name, true
	}
	return "", "", false
}

// vtepMAC is the MAC of holder's device of dev's kind and name (its VTEP).
func (t *tracer) vtepMAC(holder *Node, dev *Link) string {
	s, err := t.snap(holder.NS)
	if err != nil {
		return ""
	}
	if l := s.link(dev.Name); l != nil {
		return l.MAC
	}
	return ""
}

// routeText is r as `ip route` prints it, with why it matched.
func routeText(r Route, dst netip.Addr) string {
	var b strings.Builder
	d := r.Dst.String()
	if r.Dst.Bits() == 0 {
		d = "default"
	}
	b.WriteString(d)
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	fmt.Fprintf(&b, " dev %s", r.Dev)
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if r.Proto != "" {
		fmt.Fprintf(&b, " proto %s", r.Proto)
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	fmt.Fprintf(&b, " (table %s: the longest prefix that holds %s)", tableName(r.Table), dst)
	return b.String()
}

func tableName(t int) string {
	switch t {
	case 254:
		return "main"
	case 255:
		return "local"
	case 253:
		return "default"
	}
	return fmt.Sprint(t)
}
