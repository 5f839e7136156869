package kernel

import (
	"fmt"
	"strings"
)

// The functions below write the iproute2 command equivalent to a Kernel
// call. Implementations name their failures with them, and kerneltest
// records its transcript with them, so an error read in a log and a line of
// a golden test look alike.

// Names returns the name of a link by index, for the one command that
// names a link by index (AddLinkCmd's lower device); NameOrIndex builds one
// that falls back to the index.
type Names func(index int) string

// NameOrIndex returns Names that asks lookup and writes "if7" for an index
// lookup does not know (as iproute2 does).
func NameOrIndex(lookup func(index int) (string, bool)) Names {
	return func(index int) string {
		if name, ok := lookup(index); ok {
			return name
		}
		return linkIndexName(index)
	}
}

// AddLinkCmd is `ip link add NAME [address MAC] [mtu MTU] type KIND ...`.
func AddLinkCmd(l Link, names Names) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ip link add %s", l.Name)
	if l.MAC != "" {
		fmt.Fprintf(&b, " address %s", l.MAC)
	}
	if l.MTU > 0 {
		fmt.Fprintf(&b, " mtu %d", l.MTU)
	}
	fmt.Fprintf(&b, " type %s", l.Kind)
	if l.Kind == KindVXLAN {
		v := l.VXLAN
		fmt.Fprintf(&b, " id %d", v.VNI)
		if v.Local.IsValid() {
			fmt.Fprintf(&b, " local %s", v.Local)
		}
		if v.Dev > 0 {
			fmt.Fprintf(&b, " dev %s", names(v.Dev))
		}
		if v.Port > 0 {
			fmt.Fprintf(&b, " dstport %d", v.Port)
		}
		if !v.Learning {
			b.WriteString(" nolearning")
		}
		if v.GBP {
			b.WriteString(" gbp")
		}
	}
	return b.String()
}

// LinkCmd is `ip link VERB NAME [ARGS]`: "del", or "set" with "mtu 1450",
// "up", "address MAC", "addrgenmode none".
func LinkCmd(verb, name string, args ...string) string {
	return strings.Join(append([]string{"ip link", verb, name}, args...), " ")
}

// AddrCmd is `ip addr VERB PREFIX dev DEV`.
func AddrCmd(verb string, a Addr) string {
	return fmt.Sprintf("ip addr %s %s dev %s", verb, a.Prefix, a.Dev)
}

// RouteCmd is `ip route VERB DST [via GW] dev DEV [onlink] [proto P]`. It
// leaves weft's own protocol out (0 or ProtoWeft): every route weft writes
// carries it, so weft's transcripts and errors name only another's.
func RouteCmd(verb string, r Route) string {
	return "ip route " + verb + " " + routeArgs(r)
}

func routeArgs(r Route) string {
	s := r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += " dev " + r.Dev
	if r.OnLink {
		s += " onlink"
	}
	if r.Protocol != 0 && r.Protocol != ProtoWeft {
		s += " proto " + r.Protocol.String()
	}
	return s
}

// NeighCmd is `ip neigh replace IP lladdr MAC dev DEV nud permanent`, or
// `ip neigh del IP dev DEV`.
func NeighCmd(verb string, n Neigh) string {
	if verb == "del" {
		return fmt.Sprintf("ip neigh del %s dev %s", n.IP, n.Dev)
	}
	return fmt.Sprintf("ip neigh %s %s lladdr %s dev %s nud permanent", verb, n.IP, n.MAC, n.Dev)
}

// FDBCmd is `bridge fdb replace MAC dev DEV dst IP self permanent`, or
// `bridge fdb del MAC dev DEV dst IP self`.
func FDBCmd(verb string, f FDB) string {
	s := fmt.Sprintf("bridge fdb %s %s dev %s dst %s self", verb, f.MAC, f.Dev, f.Dst)
	if verb != "del" {
		s += " permanent"
	}
	return s
}
