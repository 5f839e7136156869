package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Underlay describes the interface node-to-node traffic uses.
type Underlay struct {
	Name      string     // the link's name: Dev of routes through it
	LinkIndex int        // its index: the lower device of a vxlan link (VXLAN.Dev)
	Addr      netip.Addr // the node's PublicIP (IPv4); invalid when IPv4 is off
	Addr6     netip.Addr // the node's PublicIPv6; invalid when IPv6 is off
	MTU       int        // the interface MTU
	// OnLink are the networks directly attached to the interface, of both
	// families.
	OnLink []netip.Prefix
}

// UnderlayQuery says how to find the underlay interface, as flannel's
// flags do.
type UnderlayQuery struct {
	// Ifaces are --iface values in order: interface names or addresses;
	// the first that matches wins.
	Ifaces []string
	// Regexes are --iface-regex values, tried after Ifaces: matched against
	// the interfaces' addresses first, then their names.
	Regexes []string
	// CanReach is --iface-can-reach: the interface and source address the
	// node would use to reach it.
	CanReach netip.Addr
	// PublicIP and PublicIPv6 are --public-ip and --public-ipv6.
	PublicIP, PublicIPv6 netip.Addr
	// IPv4 and IPv6 are the families the network enables: the underlay
	// needs an address of each. A query with neither is IPv4 only, the
	// network config's default.
	IPv4, IPv6 bool
}

// IsOnLink reports whether ip is directly reachable on the underlay.
func (u Underlay) IsOnLink(ip netip.Addr) bool {
	for _, p := range u.OnLink {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// family is one IP family as the underlay query sees it: its flag, its
// default route and the Kubernetes annotation that publishes a NAT address
// of it.
type family struct {
	name, flag, overwrite string
	anyAddr               netip.Prefix // the default route's destination
}

var families = [2]family{
	{"IPv4", "--public-ip", "public-ip-overwrite", netip.MustParsePrefix("0.0.0.0/0")},
	{"IPv6", "--public-ipv6", "public-ipv6-overwrite", netip.MustParsePrefix("::/0")},
}

// PublicIPFlag is the agent's flag that sets the public address of ip's
// family: --public-ip or --public-ipv6.
func PublicIPFlag(ip netip.Addr) string { return families[familyOf(ip)].flag }

// OverwriteAnnotation is the Node annotation that publishes a NAT address
// of ip's family (Kubernetes mode): public-ip-overwrite or
// public-ipv6-overwrite.
func OverwriteAnnotation(ip netip.Addr) string { return families[familyOf(ip)].overwrite }

// familyOf returns the index in families of ip's family.
func familyOf(ip netip.Addr) int {
	if ip.Unmap().Is4() {
		return 0
	}
	return 1
}

// perFamily holds one address of each family, indexed as families.
type perFamily [2]netip.Addr

// set puts ip in its family's place.
func (p *perFamily) set(ip netip.Addr) { p[familyOf(ip)] = ip.Unmap() }

// enabled returns the indexes in families of the families q enables.
func (q UnderlayQuery) enabled() []int {
	switch {
	case q.IPv4 && q.IPv6:
		return []int{0, 1}
	case q.IPv6:
		return []int{1}
	}
	return []int{0}
}

func (q UnderlayQuery) public() perFamily { return perFamily{q.PublicIP, q.PublicIPv6} }

// FindUnderlay finds the underlay interface and the node's addresses as
// flanneld does (its LookupExtIface):
//
//  1. each of q.Ifaces in order, an interface name or an address of one;
//  2. then each of q.Regexes, matched against the interfaces' addresses
//     (an address of each enabled family must match) and then their
//     names, interfaces in index order;
//  3. then q.CanReach: the interface and source address of `ip route get`
//     (a RouteGetter kernel); a kernel that cannot ask (the fake) takes
//     the most specific main-table route and the address in its gateway's
//     network;
//  4. when none of those is given: the interface that holds q.PublicIP
//     (else q.PublicIPv6) of the enabled families;
//  5. else the interface of the IPv4 default route (the IPv6 one when IPv4
//     is off, or has none).
//
// When any of 1-3 is given, only those are tried, and the error names why
// each failed. An interface qualifies only when it has an address of each
// enabled family, or the family's public address is given. A family's
// address is its public address when given, else the one the step chose
// (the --iface address, the regex's match, the route's source), else the
// interface's first global one (permanent before dynamic, deprecated ones
// skipped), else its first link-local one (flannel's preference). OnLink
// are the interface's networks of global addresses, both families, and
// the link-local network of a link-local address chosen.
//
// A public address that no interface of the node holds is refused with a
// *NotLocalError naming the node's addresses of its family (one per
// family, joined: see NotLocalErrors). The Underlay returned with it is
// otherwise complete (chosen as if it were not given), for the caller that
// knows the address is a NAT address in front of the node and only warns.
func FindUnderlay(k Kernel, q UnderlayQuery) (Underlay, error) {
	addrs, err := k.Addrs()
	if err != nil {
		return Underlay{}, err
	}
	f := finder{k: k, q: q, addrs: addrs}
	var notLocal []error
	for _, fam := range q.enabled() {
		if ip := q.public()[fam]; ip.IsValid() && !f.holds(ip) {
			notLocal = append(notLocal, &NotLocalError{Addr: ip, Local: f.global(fam)})
		}
	}
	var u Underlay
	if len(q.Ifaces) > 0 || len(q.Regexes) > 0 || q.CanReach.IsValid() {
		u, err = f.bySelectors()
	} else {
		u, err = f.byPublicOrDefault(notLocal)
	}
	if err != nil {
		return Underlay{}, err
	}
	return u, joinErrors(notLocal)
}

// finder is one FindUnderlay: the query and the node's addresses.
type finder struct {
	k     Kernel
	q     UnderlayQuery
	addrs []Addr
}

// holds reports whether an interface has ip.
func (f *finder) holds(ip netip.Addr) bool {
	return slices.ContainsFunc(f.addrs, func(a Addr) bool { return a.Prefix.Addr() == ip })
}

// global returns the node's global addresses of family fam (what a public
// address could be).
func (f *finder) global(fam int) []Addr {
	var out []Addr
	for _, a := range f.addrs {
		if ip := a.Prefix.Addr(); familyOf(ip) == fam && ip.IsGlobalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// candidates returns the addresses of dev of family fam that can be the
// node's, in flannel's order of preference: global permanent ones, global
// dynamic ones (DHCP, SLAAC), then link-local ones, each in the kernel's
// order; deprecated addresses are skipped.
func (f *finder) candidates(dev string, fam int) []netip.Addr {
	var permanent, dynamic, local []netip.Addr
	for _, a := range f.addrs {
		ip := a.Prefix.Addr()
		switch {
		case a.Dev != dev || familyOf(ip) != fam || a.Deprecated:
		case ip.IsGlobalUnicast() && !a.Dynamic:
			permanent = append(permanent, ip)
		case ip.IsGlobalUnicast():
			dynamic = append(dynamic, ip)
		case ip.IsLinkLocalUnicast():
			local = append(local, ip)
		}
	}
	return slices.Concat(permanent, dynamic, local)
}

// bySelectors tries --iface, --iface-regex and --iface-can-reach in order.
func (f *finder) bySelectors() (Underlay, error) {
	var errs []error
	for _, s := range f.q.Ifaces {
		u, err := f.byIface(s)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	for _, s := range f.q.Regexes {
		u, err := f.byRegex(s)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	if f.q.CanReach.IsValid() {
		u, err := f.byCanReach(f.q.CanReach)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return Underlay{}, errs[0]
	}
	return Underlay{}, fmt.Errorf("no interface matches --iface, --iface-regex or --iface-can-reach: %w", joinErrors(errs))
}

// byIface is one --iface value: a name, or an address of the interface.
func (f *finder) byIface(s string) (Underlay, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		l, err := f.k.LinkByName(s)
		if err != nil {
			return Underlay{}, fmt.Errorf("find interface %s (--iface): %w", s, err)
		}
		u, err := f.resolve(l, perFamily{})
		if err != nil {
			return Underlay{}, fmt.Errorf("--iface %s: %w", s, err)
		}
		return u, nil
	}
	ip = ip.WithZone("").Unmap()
	i := slices.IndexFunc(f.addrs, func(a Addr) bool { return a.Prefix.Addr() == ip })
	if i < 0 {
		return Underlay{}, fmt.Errorf("no interface has address %s (--iface)", ip)
	}
	var pinned perFamily
	pinned.set(ip)
	return f.resolveDev(f.addrs[i].Dev, pinned, "--iface "+s)
}

// byRegex is one --iface-regex: the first interface, in index order, with
// a matching address of each enabled family, else the first whose name
// matches; either must qualify (resolve).
func (f *finder) byRegex(s string) (Underlay, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return Underlay{}, fmt.Errorf("--iface-regex %q: %w", s, err)
	}
	links, err := f.links()
	if err != nil {
		return Underlay{}, err
	}
	var failed []error
	try := func(l Link, pinned perFamily) (Underlay, bool) {
		u, err := f.resolve(l, pinned)
		if err != nil {
			failed = append(failed, err)
		}
		return u, err == nil
	}
	for _, l := range links {
		var pinned perFamily
		all := true
		for _, fam := range f.q.enabled() {
			i := slices.IndexFunc(f.candidates(l.Name, fam), func(ip netip.Addr) bool { return re.MatchString(ip.String()) })
			if i < 0 {
				all = false
				break
			}
			pinned[fam] = f.candidates(l.Name, fam)[i]
		}
		if all {
			if u, ok := try(l, pinned); ok {
				return u, nil
			}
		}
	}
	for _, l := range links {
		if re.MatchString(l.Name) {
			if u, ok := try(l, perFamily{}); ok {
				return u, nil
			}
		}
	}
	if len(failed) > 0 {
		return Underlay{}, fmt.Errorf("--iface-regex %q: %w", s, joinErrors(failed))
	}
	var have []string
	for _, l := range links {
		var ips []string
		for _, fam := range f.q.enabled() {
			for _, ip := range f.candidates(l.Name, fam) {
				ips = append(ips, ip.String())
			}
		}
		have = append(have, fmt.Sprintf("%s [%s]", l.Name, strings.Join(ips, " ")))
	}
	return Underlay{}, fmt.Errorf("--iface-regex %q matches no interface's address or name (the node has %s)", s, strings.Join(have, ", "))
}

// links returns the links that have an address other than a loopback one,
// in index order: the interfaces --iface-regex can match.
func (f *finder) links() ([]Link, error) {
	var out []Link
	for _, a := range f.addrs {
		if a.Prefix.Addr().IsLoopback() || slices.ContainsFunc(out, func(l Link) bool { return l.Name == a.Dev }) {
			continue
		}
		l, err := f.k.LinkByName(a.Dev)
		if err != nil {
			if IsNotFound(err) { // gone since the addresses were read
				continue
			}
			return nil, err
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Link) int { return a.Index - b.Index })
	return out, nil
}

// byCanReach is --iface-can-reach: the interface of the most specific
// route to ip, and the address of that interface in the network of the
// route's gateway (or of ip, for a connected route), as the kernel would
// choose its source. Routes carry no source address (`src`) or metric
// here: among equally specific routes the first wins.
func (f *finder) byCanReach(ip netip.Addr) (Underlay, error) {
	if g, ok := f.k.(RouteGetter); ok {
		dev, src, err := g.RouteGet(ip)
		switch {
		case err == nil:
			// The source counts only when it is the interface's own (an
			// address still in duplicate address detection is not
			// chosen: the kernel then names another, even ::1).
			var pinned perFamily
			if slices.ContainsFunc(f.addrs, func(a Addr) bool { return a.Dev == dev && a.Prefix.Addr() == src }) {
				pinned.set(src)
			}
			return f.resolveDev(dev, pinned, fmt.Sprintf("--iface-can-reach %s (ip route get: dev %s src %s)", ip, dev, src))
		case !errors.Is(err, errors.ErrUnsupported):
			return Underlay{}, fmt.Errorf("--iface-can-reach %s: %w", ip, err)
		}
	}
	routes, err := f.k.Routes()
	if err != nil {
		return Underlay{}, err
	}
	var best *Route
	for i, r := range routes {
		if r.Dst.Contains(ip) && (best == nil || r.Dst.Bits() > best.Dst.Bits()) {
			best = &routes[i]
		}
	}
	if best == nil {
		return Underlay{}, fmt.Errorf("no route to %s (--iface-can-reach)", ip)
	}
	next := ip
	if best.Gw.IsValid() {
		next = best.Gw
	}
	var pinned perFamily
	for _, a := range f.addrs {
		if a.Dev == best.Dev && a.Prefix.Contains(next) && !a.Prefix.Addr().IsLoopback() {
			pinned.set(a.Prefix.Addr())
			break
		}
	}
	return f.resolveDev(best.Dev, pinned, fmt.Sprintf("--iface-can-reach %s (route %s dev %s)", ip, best.Dst, best.Dev))
}

// byPublicOrDefault is steps 4 and 5: the interface of the public
// addresses that are local, else of the default route. notLocal are the
// public addresses no interface holds, for the error without a default
// route.
func (f *finder) byPublicOrDefault(notLocal []error) (Underlay, error) {
	var dev, by string
	for _, fam := range f.q.enabled() {
		ip := f.q.public()[fam]
		i := slices.IndexFunc(f.addrs, func(a Addr) bool { return ip.IsValid() && a.Prefix.Addr() == ip })
		if i < 0 {
			continue
		}
		d, flag := f.addrs[i].Dev, families[fam].flag+" "+ip.String()
		if dev != "" && d != dev {
			return Underlay{}, fmt.Errorf("%s is on %s and %s on %s: the underlay is one interface; set --iface", by, dev, flag, d)
		}
		dev, by = d, flag
	}
	if dev != "" {
		return f.resolveDev(dev, perFamily{}, by)
	}
	l, err := f.defaultLink()
	if err != nil {
		if len(notLocal) > 0 {
			// Not wrapped: with no interface, a NAT address cannot be
			// used either, so this is no NotLocalError.
			return Underlay{}, fmt.Errorf("%v; and %v", joinErrors(notLocal), err)
		}
		return Underlay{}, err
	}
	u, err := f.resolve(l, perFamily{})
	if err != nil {
		return Underlay{}, fmt.Errorf("the default route's interface: %w", err)
	}
	return u, nil
}

// defaultLink returns the interface of the default route of the first
// enabled family that has one. With both families enabled, IPv6's default
// route must not leave by another interface than IPv4's, as in flannel.
func (f *finder) defaultLink() (Link, error) {
	routes, err := f.k.Routes()
	if err != nil {
		return Link{}, err
	}
	var found []Link
	for _, fam := range f.q.enabled() {
		for _, r := range routes {
			if r.Dst != families[fam].anyAddr {
				continue
			}
			if l, err := f.k.LinkByName(r.Dev); err == nil {
				found = append(found, l)
				break
			}
		}
	}
	switch {
	case len(found) == 0 && f.q.IPv4 && f.q.IPv6:
		return Link{}, errors.New("no default route (IPv4 or IPv6) to pick the underlay interface from; set --iface or --public-ip")
	case len(found) == 0 && !f.q.IPv4 && f.q.IPv6:
		return Link{}, errors.New("no IPv6 default route to pick the underlay interface from; set --iface or --public-ipv6")
	case len(found) == 0:
		return Link{}, errors.New("no default route to pick the underlay interface from; set --iface or --public-ip")
	case len(found) == 2 && found[0].Name != found[1].Name:
		return Link{}, fmt.Errorf("the IPv4 default route leaves by %s and the IPv6 one by %s: the underlay is one interface; set --iface", found[0].Name, found[1].Name)
	}
	return found[0], nil
}

// resolveDev is resolve for the link called dev, chosen by what.
func (f *finder) resolveDev(dev string, pinned perFamily, what string) (Underlay, error) {
	l, err := f.k.LinkByName(dev)
	if err != nil {
		return Underlay{}, fmt.Errorf("find interface %s (%s): %w", dev, what, err)
	}
	u, err := f.resolve(l, pinned)
	if err != nil {
		return Underlay{}, fmt.Errorf("%s: %w", what, err)
	}
	return u, nil
}

// resolve makes the Underlay of l: each enabled family's address is its
// public address, else the pinned one, else l's first candidate. It fails
// when a family has none.
func (f *finder) resolve(l Link, pinned perFamily) (Underlay, error) {
	u := Underlay{Name: l.Name, LinkIndex: l.Index, MTU: l.MTU}
	var missing []string
	var set perFamily
	for _, fam := range f.q.enabled() {
		ip := f.q.public()[fam]
		if !ip.IsValid() {
			ip = pinned[fam]
		}
		if c := f.candidates(l.Name, fam); !ip.IsValid() && len(c) > 0 {
			ip = c[0]
		}
		if !ip.IsValid() {
			missing = append(missing, families[fam].name)
			continue
		}
		set[fam] = ip
	}
	if len(missing) > 0 {
		var flags []string
		for _, fam := range f.q.enabled() {
			if !set[fam].IsValid() {
				flags = append(flags, families[fam].flag)
			}
		}
		msg := fmt.Sprintf("interface %s has no %s address", l.Name, strings.Join(missing, " or "))
		if len(f.q.enabled()) == 2 {
			msg += " (dual stack: the underlay needs an address of each family)"
		}
		return Underlay{}, fmt.Errorf("%s; set %s or choose another --iface", msg, strings.Join(flags, " and "))
	}
	u.Addr, u.Addr6 = set[0], set[1]
	for _, a := range f.addrs {
		ip, p := a.Prefix.Addr(), a.Prefix.Masked()
		if a.Dev == l.Name && (ip.IsGlobalUnicast() || slices.Contains(set[:], ip)) && !slices.Contains(u.OnLink, p) {
			u.OnLink = append(u.OnLink, p)
		}
	}
	return u, nil
}

// joinErrors joins errs into one line ("a; b"), each still matched by
// errors.Is and errors.As; nil when errs is empty.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	format := strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	args := make([]any, len(errs))
	for i, e := range errs {
		args[i] = e
	}
	return fmt.Errorf(format, args...)
}

// NotLocalError says that a public address asked for (--public-ip or
// --public-ipv6) is on no interface of the node.
type NotLocalError struct {
	Addr  netip.Addr // the public address asked for
	Local []Addr     // the node's global addresses of its family
}

func (e *NotLocalError) Error() string {
	fam := families[familyOf(e.Addr)]
	var b strings.Builder
	fmt.Fprintf(&b, "no interface has address %s (%s): ", e.Addr, fam.flag)
	if len(e.Local) == 0 {
		fmt.Fprintf(&b, "this node has no usable %s address", fam.name)
	} else {
		b.WriteString("this node's addresses are")
		for i, a := range e.Local {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %s", a.Dev, a.Prefix)
		}
	}
	fmt.Fprintf(&b, "; use one of them, or, behind NAT, publish the NAT address with the node annotation %s (Kubernetes mode)", fam.overwrite)
	return b.String()
}

// NotLocalErrors returns the NotLocalErrors FindUnderlay's err is made of
// (one per family whose public address no interface holds), and whether
// err is nothing else: then the Underlay returned with it is complete,
// and a caller that knows those addresses are NAT addresses may use it.
func NotLocalErrors(err error) ([]*NotLocalError, bool) {
	if err == nil {
		return nil, true
	}
	if nl, ok := err.(*NotLocalError); ok {
		return []*NotLocalError{nl}, true
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil, false
	}
	var out []*NotLocalError
	for _, e := range j.Unwrap() {
		nl, ok := e.(*NotLocalError)
		if !ok {
			return nil, false
		}
		out = append(out, nl)
	}
	return out, true
}
