package router

import (
	"fmt"
	"strconv"
	"strings"
)

// BIRDConfig is bird.conf for r: one BGP protocol per neighbour (n1 for
// its IPv4 session, n1_v6 for its IPv6 one), each carrying its family's
// unicast routes, importing all and exporting all (the other nodes'
// subnets: BIRD never sends a route back to the protocol it came from),
// with graceful restart on (the router keeps a node's routes while its
// agent restarts), and kernel protocols that write the learned routes
// into the namespace's tables (`ip route` shows them as proto bird).
// Nothing is imported from the kernel or the interfaces: the table holds
// only what the nodes announce.
func BIRDConfig(r *Router) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# weft lab router (BIRD 2), written by weft lab; reload with birdc -s %s configure\n", r.Socket())
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\n\n", r.ID)
	b.WriteString("# interfaces: a neighbour must be on a connected network\nprotocol device { scan time 10; }\n\n")
	b.WriteString("protocol kernel kernel4 { ipv4 { import none; export all; }; }\n")
	b.WriteString("protocol kernel kernel6 { ipv6 { import none; export all; }; }\n\n")
	fmt.Fprintf(&b, `template bgp node {
  local as %d;
  hold time %d;
  keepalive time %d;
  connect retry time %d;
  error wait time 1, 10;
  graceful restart on;
`, r.AS, HoldTime, Keepalive, ConnectRetry)
	if r.Password != "" {
		fmt.Fprintf(&b, "  password %s;\n", birdString(r.Password))
	}
	b.WriteString("}\n")
	for _, n := range r.Neighbors {
		fam := "ipv4"
		if n.Addr.Is6() {
			fam = "ipv6"
		}
		fmt.Fprintf(&b, "\nprotocol bgp %s from node {\n  neighbor %s as %d;\n  %s { import all; export all; };\n}\n", n.name(), n.Addr, n.AS, fam)
	}
	return b.String()
}

// birdString quotes s for bird.conf. BIRD 2.0's strings have no escape
// (a backslash is itself; CheckPassword refuses a double quote).
func birdString(s string) string {
	return `"` + s + `"`
}

// FRRConfig is bgpd.conf for r: router bgp AS with every neighbour, no
// policy required on eBGP (FRR otherwise neither accepts nor sends
// anything without one), graceful restart on, the lab's timers, and each
// neighbour activated in its own family only. zebra writes the best
// routes into the namespace's tables (`ip route` shows them as proto
// bgp).
func FRRConfig(r *Router) string {
	var b strings.Builder
	fmt.Fprintf(&b, "! weft lab router (FRR bgpd), written by weft lab; vtysh --vty_socket %s\nhostname weft-lab-router\n", r.Socket())
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n timers bgp %d %d\n",
		r.AS, r.ID, Keepalive, HoldTime)
	for _, n := range r.Neighbors {
		for _, l := range frrNeighbor(n, r.Password) {
			b.WriteString(" " + l + "\n")
		}
	}
	for _, fam := range []bool{false, true} {
		var lines []string
		for _, n := range r.Neighbors {
			if n.Addr.Is6() == fam {
				lines = append(lines, frrActivate(n)[1:2]...)
			}
		}
		if len(lines) == 0 {
			continue
		}
		af := "ipv4"
		if fam {
			af = "ipv6"
		}
		fmt.Fprintf(&b, " address-family %s unicast\n", af)
		for _, l := range lines {
			b.WriteString("  " + l + "\n")
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String()
}

// frrNeighbor are the lines under `router bgp` that define n.
func frrNeighbor(n Neighbor, password string) []string {
	a := n.Addr.String()
	lines := []string{
		"neighbor " + a + " remote-as " + strconv.FormatUint(uint64(n.AS), 10),
		"neighbor " + a + " description " + n.Node,
		fmt.Sprintf("neighbor %s timers %d %d", a, Keepalive, HoldTime),
		fmt.Sprintf("neighbor %s timers connect %d", a, ConnectRetry),
	}
	if password != "" {
		lines = append(lines, "neighbor "+a+" password "+password)
	}
	return lines
}

// frrActivate are the lines that activate n in its family: the
// address-family line, the activation, and the exit.
func frrActivate(n Neighbor) []string {
	af := "ipv4"
	if n.Addr.Is6() {
		af = "ipv6"
	}
	return []string{"address-family " + af + " unicast", "neighbor " + n.Addr.String() + " activate", "exit-address-family"}
}
