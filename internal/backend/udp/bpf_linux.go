package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/kernel"
)

// The counters of bpf/udp.c (enum counter), by index.
const (
	countTX = iota
	countRX
	countStranger
	countSpoofed
	countMalformed
	countDestination
	countSendError
	countMax
)

// kpath is the kernel data path (bpf/udp.c): its programs and maps, loaded
// in this process. The programs stay attached when the agent exits (they
// are attached without a link: flannel0's tcx egress and the underlay's
// XDP hold them), so pod traffic flows across a restart; the next agent
// loads its own and swaps them in atomically.
type kpath struct {
	objs    udpbpfObjects
	cfg     udpbpfConfig
	routes  map[netip.Prefix]netip.Addr     // what objs.Routes holds
	senders map[netip.AddrPort]netip.Prefix // what objs.Senders holds
}

// loadKPath loads the programs and maps into the kernel; nothing is
// attached yet. The error says what the node lacks.
func loadKPath() (*kpath, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for BPF maps: %w", err)
	}
	p := &kpath{routes: map[netip.Prefix]netip.Addr{}, senders: map[netip.AddrPort]netip.Prefix{}}
	if err := loadUdpbpfObjects(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// The last lines say why; the whole log is long.
			return nil, fmt.Errorf("the kernel refused the BPF programs (Linux 5.10 or later is needed): %w", ve)
		}
		return nil, fmt.Errorf("load the BPF programs: %w", err)
	}
	return p, nil
}

// canReplace checks that this process can open programs by ID, which
// replacing an earlier agent's (and removing them) needs.
func (p *kpath) canReplace() error {
	id, err := progID(p.objs.WeftUdpEncap)
	if err != nil {
		return err
	}
	_, err = kernel.BPFProgramName(id)
	return err
}

// be32 is a as the programs compare it: the bytes in network order, read
// as a native integer.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func mask32(bits int) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^uint32(0)<<(32-bits))
	return binary.NativeEndian.Uint32(b[:])
}

// configure tells the programs this node's subnet, underlay address and
// device, and the port; the programs act from the first configure on.
func (p *kpath) configure(own netip.Prefix, public netip.Addr, ifindex, port int) error {
	c := udpbpfConfig{
		Subnet:   be32(own.Masked().Addr()),
		Mask:     mask32(own.Bits()),
		PublicIp: be32(public),
		Ifindex:  uint32(ifindex),
		Port:     be16(uint16(port)),
	}
	if c == p.cfg {
		return nil
	}
	if err := p.objs.Config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("write the BPF config: %w", err)
	}
	p.cfg = c
	return nil
}

// setPeers makes the routes and senders maps hold peers (subnet ->
// endpoint): new and changed entries first, then the departed ones, each
// one map write, so traffic to other peers never pauses.
func (p *kpath) setPeers(peers map[netip.Prefix]netip.AddrPort) error {
	var errs []error
	senders := make(map[netip.AddrPort]netip.Prefix, len(peers))
	for s, ep := range peers {
		senders[ep] = s
		if old, ok := p.routes[s]; !ok || old != ep.Addr() {
			k := udpbpfRouteKey{Prefixlen: uint32(s.Bits()), Addr: be32(s.Masked().Addr())}
			if err := p.objs.Routes.Put(k, be32(ep.Addr())); err != nil {
				errs = append(errs, fmt.Errorf("route %s via %s: %w", s, ep.Addr(), err))
				continue
			}
			p.routes[s] = ep.Addr()
		}
	}
	for ep, s := range senders {
		if old, ok := p.senders[ep]; !ok || old != s {
			k := udpbpfSender{Addr: be32(ep.Addr()), Port: be16(ep.Port())}
			v := udpbpfSubnet{Addr: be32(s.Masked().Addr()), Mask: mask32(s.Bits())}
			if err := p.objs.Senders.Put(k, v); err != nil {
				errs = append(errs, fmt.Errorf("sender %s for %s: %w", ep, s, err))
				continue
			}
			p.senders[ep] = s
		}
	}
	for s := range p.routes {
		if _, ok := peers[s]; !ok {
			k := udpbpfRouteKey{Prefixlen: uint32(s.Bits()), Addr: be32(s.Masked().Addr())}
			if err := p.objs.Routes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", s, err))
				continue
			}
			delete(p.routes, s)
		}
	}
	for ep := range p.senders {
		if _, ok := senders[ep]; !ok {
			k := udpbpfSender{Addr: be32(ep.Addr()), Port: be16(ep.Port())}
			if err := p.objs.Senders.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete sender %s: %w", ep, err))
				continue
			}
			delete(p.senders, ep)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("udp: update the BPF maps: %w", errors.Join(errs...))
	}
	return nil
}

// attach puts this process's programs on the underlay's XDP hook
// (underIdx) and flannel0's tcx egress (tunIdx), each replacing in one step the
// program an earlier agent left there; it does nothing where they are on
// already. Another program at the underlay's XDP hook is not replaced: the
// error names it.
func (p *kpath) attach(tunIdx, underIdx int) error {
	// Ask for tcx first (a query changes nothing), then attach XDP, the
	// hook a node's driver most likely refuses: when either fails, nothing
	// has changed.
	if _, err := tcxPrograms(tunIdx); err != nil {
		return err
	}
	if err := p.attachXDP(underIdx); err != nil {
		return err
	}
	return p.attachTCX(tunIdx)
}

func (p *kpath) attachTCX(tunIdx int) error {
	mine, err := progID(p.objs.WeftUdpEncap)
	if err != nil {
		return err
	}
	old, err := tcxPrograms(tunIdx)
	if err != nil {
		return err
	}
	opts := link.RawAttachProgramOptions{Target: tunIdx, Program: p.objs.WeftUdpEncap, Attach: ebpf.AttachTCXEgress, Anchor: link.Head()}
	switch {
	case len(old) == 1 && old[0] == mine:
		return nil
	case len(old) > 0:
		// The kernel takes the program to replace by descriptor only.
		prev, err := ebpf.NewProgramFromID(old[0])
		if err != nil {
			return fmt.Errorf("open the program at tcx egress of %s (id %d): %w", DeviceName, old[0], err)
		}
		defer prev.Close()
		opts.Anchor = link.ReplaceProgram(prev)
	}
	if err := link.RawAttachProgram(opts); err != nil {
		if errors.Is(err, os.ErrInvalid) || errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach %s at tcx egress of %s (tcx needs Linux 6.6): %w", EncapProgram, DeviceName, err)
		}
		return fmt.Errorf("attach %s at tcx egress of %s: %w", EncapProgram, DeviceName, err)
	}
	// Any further copies (two agents raced) go.
	for _, id := range old[min(1, len(old)):] {
		if id != mine {
			detachTCX(tunIdx, id)
		}
	}
	return nil
}

// tcxPrograms returns the IDs of weft's encap programs at tcx egress of the
// device.
func tcxPrograms(idx int) ([]ebpf.ProgramID, error) {
	q, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) {
			return nil, errNoTCX
		}
		return nil, fmt.Errorf("list the programs at tcx egress of %s: %w", DeviceName, err)
	}
	var ids []ebpf.ProgramID
	for _, ap := range q.Programs {
		name, err := kernel.BPFProgramName(ap.ID)
		if err != nil {
			return nil, err
		}
		if name == EncapProgram {
			ids = append(ids, ap.ID)
		}
	}
	return ids, nil
}

func detachTCX(idx int, id ebpf.ProgramID) error {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return err
	}
	defer prog.Close()
	return link.RawDetachProgram(link.RawDetachProgramOptions{Target: idx, Program: prog, Attach: ebpf.AttachTCXEgress})
}

func progID(prog *ebpf.Program) (ebpf.ProgramID, error) {
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("read BPF program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("read BPF program info: the kernel gives no program IDs (Linux 4.13 or later is needed)")
	}
	return id, nil
}

// errNoTCX: the kernel has no tcx hooks (before Linux 6.6).
var errNoTCX = errors.New("the kernel has no tcx hooks (Linux 6.6 or later is needed)")

func (p *kpath) attachXDP(idx int) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return fmt.Errorf("find the underlay device (index %d): %w", idx, err)
	}
	mine, err := progID(p.objs.WeftUdpDecap)
	if err != nil {
		return err
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached && x.ProgId != 0 {
		name, err := kernel.BPFProgramName(ebpf.ProgramID(x.ProgId))
		if err != nil {
			return err
		}
		switch {
		case ebpf.ProgramID(x.ProgId) == mine:
			return nil
		case name != DecapProgram:
			return fmt.Errorf("%s has another XDP program (id %d, %q): weft does not replace it; use \"Datapath\": \"tun\", or remove it (ip link set %s xdp off)", l.Attrs().Name, x.ProgId, name, l.Attrs().Name)
		}
	}
	// Native XDP only: the generic hook would see every super-packet
	// linearized, slower than the TUN path.
	if err := netlink.LinkSetXdpFdWithFlags(l, p.objs.WeftUdpDecap.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
		return fmt.Errorf("attach %s at XDP of %s (native XDP: the driver must support it): %w", DecapProgram, l.Attrs().Name, err)
	}
	return nil
}

// detachKPath removes weft's programs from flannel0 (tunIdx; 0: none) and
// the underlay (underIdx): what an agent on the TUN data path does with the
// kernel path an earlier agent left. It reports whether any was there.
func detachKPath(tunIdx, underIdx int) (bool, error) {
	found := false
	var errs []error
	if tunIdx > 0 {
		ids, err := tcxPrograms(tunIdx)
		if err != nil && !errors.Is(err, errNoTCX) {
			errs = append(errs, err)
		}
		for _, id := range ids {
			found = true
			if err := detachTCX(tunIdx, id); err != nil {
				errs = append(errs, fmt.Errorf("detach %s from %s: %w", EncapProgram, DeviceName, err))
			}
		}
	}
	if l, err := netlink.LinkByIndex(underIdx); err == nil {
		x := l.Attrs().Xdp
		name := ""
		if x != nil && x.Attached && x.ProgId != 0 {
			if name, err = kernel.BPFProgramName(ebpf.ProgramID(x.ProgId)); err != nil {
				errs = append(errs, err)
			}
		}
		if name == DecapProgram {
			found = true
			if err := netlink.LinkSetXdpFdWithFlags(l, -1, nl.XDP_FLAGS_DRV_MODE); err != nil {
				errs = append(errs, fmt.Errorf("detach %s from %s: %w", DecapProgram, l.Attrs().Name, err))
			}
		}
	}
	return found, errors.Join(errs...)
}

// counters returns the programs' counters, summed over CPUs.
func (p *kpath) counters() ([countMax]uint64, error) {
	var out [countMax]uint64
	for i := range out {
		var per []uint64
		if err := p.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read the BPF counters: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// close releases this process's handles; the attached programs and their
// maps stay in the kernel.
func (p *kpath) close() error { return p.objs.Close() }

// strictRPFilter reports the reason the kernel path cannot run when strict
// reverse-path filtering is on for the underlay device dev: decapsulated
// packets arrive on dev while the cluster network is routed to flannel0,
// so strict mode drops them. "" when it is off or loose.
func strictRPFilter(dev string) string {
	read := func(name string) int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/rp_filter")
		if err != nil {
			return 0
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return v
	}
	// The kernel uses the larger of all and the device's.
	if max(read("all"), read(dev)) != 1 {
		return ""
	}
	return fmt.Sprintf("strict reverse-path filtering is on for %s (rp_filter=1): packets decapsulated there would be dropped, as the cluster network is routed to %s; set net.ipv4.conf.all.rp_filter and net.ipv4.conf.%s.rp_filter to 2 (loose) or 0", dev, DeviceName, dev)
}

// addKernel adds a kernel path's counters to the agent's, when that path
// closes.
func (s *stats) addKernel(k [countMax]uint64) {
	s.txPackets.Add(k[countTX])
	s.rxPackets.Add(k[countRX])
	s.stranger.Add(k[countStranger])
	s.spoofed.Add(k[countSpoofed])
	s.malformed.Add(k[countMalformed])
	s.misdirected.Add(k[countDestination])
	s.sendErrors.Add(k[countSendError])
}
