package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/tundev"
)

// DeviceName is flannel's name for the udp backend's TUN device.
const DeviceName = "flannel0"

// offset is the headroom left in front of each packet buffer: the TUN
// device writes its virtio-net header there.
const offset = 16

// Backend is the udp backend.
type Backend struct {
	k   kernel.Kernel
	cfg Options
	u   kernel.Underlay
	log *slog.Logger
	// life is the backend's lifetime: the data path's goroutines end with
	// it, or on Close.
	life context.Context
	// openTUN and openBind open the data path's two ends, flannel0
	// (tundev.Open, persistent for the kernel path) and the UDP socket;
	// tests put in-memory ones.
	openTUN  func(name string, mtu int, persist bool) (tun.Device, error)
	openBind func() conn.Bind
	// loadKPath loads the kernel data path; nil where there is none (a
	// test's in-memory device).
	loadKPath func() (*kpath, error)

	peers atomic.Pointer[table] // the data path's view of the leases
	stats stats

	mu     sync.Mutex // guards the fields below
	closed bool       // Close was called (or life ended): no new data path
	dev    tun.Device
	devIdx int // flannel0's link index while dev is open
	bind   conn.Bind
	eps    map[netip.AddrPort]conn.Endpoint // parsed endpoints, by peer
	kp     *kpath                           // the kernel data path; nil on the TUN path
	chosen string                           // the data path the last start chose
	stop   context.CancelFunc
	done   sync.WaitGroup // the data path's goroutines
}

var (
	_ backend.Backend      = (*Backend)(nil)
	_ prometheus.Collector = (*Backend)(nil)
)

// errClosed is returned by Apply after Close.
var errClosed = errors.New("udp: the backend is closed")

// New prepares the backend; it touches nothing until Apply. The data path
// it starts then ends when ctx ends, or on Close.
func New(ctx context.Context, k kernel.Kernel, cfg Options, u kernel.Underlay, log *slog.Logger) *Backend {
	if cfg.Datapath == "" {
		cfg.Datapath = DatapathAuto
	}
	b := &Backend{k: k, cfg: cfg, u: u, log: log, life: ctx, openTUN: tundev.Open, loadKPath: loadKPath}
	b.openBind = func() conn.Bind { return newSocket(conn.IdealBatchSize, &b.stats.malformed, b.log) }
	// A goroutine blocked in read(2) sees no context: closing the device
	// and the socket is what ends it.
	context.AfterFunc(ctx, func() { _ = b.Close() })
	return b
}

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(ctx, env.Kernel, opts.(Options), env.Underlay, env.Log), nil
}

// LeaseAttrs implements backend.Backend. flannel's udp leases carry no
// BackendType, and flannel ignores leases whose type differs from its own,
// so weft writes none either.
func (b *Backend) LeaseAttrs() lease.Attrs { return lease.Attrs{} }

// MTU implements backend.Backend.
func (b *Backend) MTU() int {
	return backend.InnerMTU(b.u, b.cfg.MTU, Overhead)
}

// Plan implements backend.Backend: flannel0 as it must be, and no kernel
// entries (flannel0's address routes the whole cluster network to it; the
// data path finds each peer in its table). Peers whose subnet length
// differs from this node's are skipped: the data path could not tell their
// addresses from others'.
func (b *Backend) Plan(st backend.NodeState) backend.Desired {
	_, skipped := b.peerAddrs(st)
	return backend.Desired{Node: st, Devices: []kernel.Device{b.device(st)}, Skipped: skipped}
}

// peerAddrs returns where each udp peer's subnet is sent (its public
// address and this backend's port), and the peers skipped, with the reason.
func (b *Backend) peerAddrs(st backend.NodeState) (map[netip.Prefix]netip.AddrPort, []string) {
	var skipped []string
	peers := map[netip.Prefix]netip.AddrPort{}
	for l := range st.PeersOf("", Type) { // flannel's udp leases carry no type
		if l.Subnet.Bits() != st.Own.Subnet.Bits() {
			skipped = append(skipped, fmt.Sprintf("%s (%s): subnet length differs from this node's /%d", l.Subnet, l.Attrs.PublicIP, st.Own.Subnet.Bits()))
			continue
		}
		peers[l.Subnet] = netip.AddrPortFrom(l.Attrs.PublicIP, uint16(b.cfg.Port))
	}
	return peers, skipped
}

// Apply implements backend.Backend: it opens flannel0 and the socket when
// the data path is not running (the first call, or flannel0 was deleted),
// puts d's device (flannel0) right on every call, and swaps in a new peer
// table made from d.Node. d has no kernel entries to apply.
func (b *Backend) Apply(ctx context.Context, d backend.Desired) (backend.Report, error) {
	if err := ctx.Err(); err != nil {
		return backend.Report{}, err
	}
	if err := b.ensure(ctx, d); err != nil {
		return backend.Report{}, err
	}
	return b.setPeers(d)
}

// setPeers builds the peer table from d's leases and swaps it in.
func (b *Backend) setPeers(d backend.Desired) (backend.Report, error) {
	rep := backend.Report{Skipped: d.Skipped}
	st := d.Node
	peers, _ := b.peerAddrs(st)
	// Parse each peer's endpoint once; the data path reuses it.
	b.mu.Lock()
	if b.bind == nil {
		b.mu.Unlock()
		return rep, errClosed
	}
	eps := make(map[netip.AddrPort]conn.Endpoint, len(peers))
	for _, ep := range peers {
		if e, ok := b.eps[ep]; ok {
			eps[ep] = e
			continue
		}
		e, err := b.bind.ParseEndpoint(ep.String())
		if err != nil {
			b.mu.Unlock()
			return rep, fmt.Errorf("udp: peer endpoint %s: %w", ep, err)
		}
		eps[ep] = e
		rep.Added++
	}
	rep.Removed = len(b.eps) + rep.Added - len(eps)
	b.eps = eps
	var err error
	if b.kp != nil {
		err = b.kp.setPeers(peers)
	}
	b.mu.Unlock()
	b.peers.Store(newTable(st.Own.Subnet, st.Own.Subnet.Addr(), peers))
	return rep, err
}

// device is flannel0 as it must be: OWN/NETLEN (which routes the cluster
// network to it), the MTU, up, and no IPv6 link-local address (so no
// router solicitations to drop).
func (b *Backend) device(st backend.NodeState) kernel.Device {
	return kernel.Device{
		Name:          DeviceName,
		Kind:          kernel.KindTUN,
		MTU:           b.MTU(),
		Addrs:         []netip.Prefix{netip.PrefixFrom(st.Own.Subnet.Addr(), st.Network.Bits())},
		NoIPv6AddrGen: true,
	}
}

// ensure keeps the data path running over flannel0 and puts d's devices
// right. flannel0 exists only while weft holds it open: when the device
// weft opened is gone (deleted by hand, or renamed), the old data path is
// closed and a new device opened.
func (b *Backend) ensure(ctx context.Context, d backend.Desired) error {
	b.mu.Lock()
	closed, running, idx := b.closed, b.dev != nil, b.devIdx
	b.mu.Unlock()
	if closed {
		return errClosed
	}
	if running {
		l, err := b.k.LinkByIndex(idx)
		switch {
		case err == nil && l.Name == DeviceName:
			if err := b.ensureLinks(ctx, d); err != nil {
				return err
			}
			return b.ensureKPath(idx, d)
		case err != nil && !kernel.IsNotFound(err):
			return fmt.Errorf("udp: %w", err)
		}
		b.log.Warn("udp: " + DeviceName + " is gone (deleted by hand?); opening it again")
		if err := b.stopDataPath(); err != nil {
			b.log.Debug("udp: close the old data path", "err", err)
		}
	}
	return b.start(ctx, d)
}

// ensureLinks puts d's devices right (EnsureLink).
func (b *Backend) ensureLinks(ctx context.Context, d backend.Desired) error {
	for _, dev := range d.Devices {
		if err := kernel.EnsureLink(ctx, b.k, dev); err != nil {
			return fmt.Errorf("udp: %w", err)
		}
	}
	return nil
}

// start chooses the data path, opens flannel0 and the UDP socket, same as
// `ip tuntap add flannel0 mode tun` (but held open, and persistent only for
// the kernel path), starts the data path over them and puts the device
// right (EnsureLink).
func (b *Backend) start(ctx context.Context, d backend.Desired) error {
	dev, l, kp, why, err := b.openPath(d)
	if err != nil {
		return err
	}
	bind := b.openBind()
	fns, _, err := bind.Open(uint16(b.cfg.Port))
	if err != nil {
		dev.Close()
		if kp != nil {
			kp.close()
		}
		return fmt.Errorf("udp: listen on UDP port %d: %w", b.cfg.Port, err)
	}
	if !b.run(dev, l.Index, bind, fns, d.Node.Own.Subnet, kp) {
		if kp != nil {
			kp.close()
		}
		return errors.Join(errClosed, bind.Close(), dev.Close())
	}
	b.logChoice(kp != nil, why)
	b.log.Info("udp backend up", "device", DeviceName, "mtu", b.MTU(), "port", b.cfg.Port,
		"tun-batch", dev.BatchSize(), "udp-batch", bind.BatchSize())
	if dev.BatchSize() == 1 && kp == nil {
		b.log.Warn("the kernel offers no TUN offloads (virtio-net header, TSO/GRO): one packet per read and write")
	}
	// The data path runs; a device that could not be put right is
	// reported, and the next Apply tries again.
	return b.ensureLinks(ctx, d)
}

// openPath chooses the data path and opens flannel0 for it: with the
// kernel path's programs attached and their maps filled (kp), or for the
// TUN path with none of weft's programs left at its hooks (why says why
// not the kernel path; "" when Datapath tun asked for none). A forced
// Datapath bpf that cannot run is an error, and leaves whatever an earlier
// agent attached carrying traffic until the next sync tries again.
func (b *Backend) openPath(d backend.Desired) (dev tun.Device, l kernel.Link, kp *kpath, why string, err error) {
	kp, why = b.kernelPath()
	if kp != nil {
		if dev, l, err = b.openDevice(true); err != nil {
			kp.close()
			return nil, l, nil, "", err
		}
		serr := b.startKPath(kp, l.Index, d)
		if serr == nil {
			return dev, l, kp, "", nil
		}
		kp.close()
		dev.Close()
		if b.cfg.Datapath == DatapathBPF {
			return nil, l, nil, "", fmt.Errorf("udp: Datapath bpf: %w", serr)
		}
		why = serr.Error()
	} else if b.cfg.Datapath == DatapathBPF {
		return nil, l, nil, "", fmt.Errorf("udp: Datapath bpf: %s", why)
	}
	if dev, l, err = b.openDevice(false); err != nil {
		return nil, l, nil, "", err
	}
	if err = b.removeKPath(l.Index); err != nil {
		dev.Close()
		if why != "" {
			err = fmt.Errorf("%w (the kernel path cannot run: %s)", err, why)
		}
		return nil, l, nil, "", err
	}
	return dev, l, nil, why, nil
}

// removeKPath removes weft's programs from flannel0 (tunIdx) and the
// underlay: the TUN path cannot run beside them, as they would keep
// taking packets with the peers they had.
func (b *Backend) removeKPath(tunIdx int) error {
	if b.loadKPath == nil {
		return nil // a test's in-memory device: no kernel path to remove
	}
	found, err := detachKPath(tunIdx, b.u.LinkIndex)
	if err != nil {
		return fmt.Errorf("udp: remove the kernel data path left attached (or remove it by hand: ip link del %s; ip link set %s xdp off): %w", DeviceName, b.u.Name, err)
	}
	if found {
		b.log.Info("udp: removed the kernel data path an earlier agent left")
	}
	return nil
}

// openDevice opens flannel0 (persistent for the kernel path) and finds
// its link.
func (b *Backend) openDevice(persist bool) (tun.Device, kernel.Link, error) {
	dev, err := b.openTUN(DeviceName, b.MTU(), persist)
	if err != nil {
		return nil, kernel.Link{}, fmt.Errorf("udp: create TUN device %s: %w", DeviceName, err)
	}
	l, err := b.k.LinkByName(DeviceName)
	if err != nil {
		dev.Close()
		return nil, kernel.Link{}, fmt.Errorf("udp: %w", err)
	}
	return dev, l, nil
}

// kernelPath loads the kernel data path when Datapath asks for it and the
// node can run it; otherwise it returns nil and why not ("" for Datapath
// tun).
func (b *Backend) kernelPath() (*kpath, string) {
	switch {
	case b.cfg.Datapath == DatapathTUN:
		return nil, ""
	case b.loadKPath == nil:
		return nil, "this backend has no kernel data path (a test's)"
	case !b.u.Addr.Is4() || b.u.LinkIndex == 0:
		return nil, "no IPv4 underlay device is known"
	}
	if why := strictRPFilter(b.u.Name); why != "" {
		return nil, why
	}
	kp, err := b.loadKPath()
	if err != nil {
		return nil, err.Error()
	}
	if err := kp.canReplace(); err != nil {
		kp.close()
		return nil, err.Error()
	}
	return kp, ""
}

// startKPath fills kp's maps from d and attaches its programs to flannel0
// (tunIdx) and the underlay, replacing an earlier agent's in one step each:
// traffic never finds them missing or empty.
func (b *Backend) startKPath(kp *kpath, tunIdx int, d backend.Desired) error {
	if err := kp.configure(d.Node.Own.Subnet, b.u.Addr, b.u.LinkIndex, b.cfg.Port); err != nil {
		return err
	}
	peers, _ := b.peerAddrs(d.Node)
	if err := kp.setPeers(peers); err != nil {
		return err
	}
	return kp.attach(tunIdx, b.u.LinkIndex)
}

// ensureKPath keeps the running kernel path configured and attached
// (level-triggered: a program detached by hand is attached again).
func (b *Backend) ensureKPath(tunIdx int, d backend.Desired) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kp == nil {
		return nil
	}
	if err := b.kp.configure(d.Node.Own.Subnet, b.u.Addr, b.u.LinkIndex, b.cfg.Port); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	if err := b.kp.attach(tunIdx, b.u.LinkIndex); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	return nil
}

// logChoice says which data path runs, once per change: why the kernel
// path does not, when it was wanted.
func (b *Backend) logChoice(kernelPath bool, why string) {
	chosen := DatapathTUN
	if kernelPath {
		chosen = DatapathBPF
	}
	b.mu.Lock()
	same := b.chosen == chosen
	b.chosen = chosen
	b.mu.Unlock()
	switch {
	case same:
	case kernelPath:
		b.log.Info("udp: data path bpf: packets are encapsulated at tcx egress of "+DeviceName+" and decapsulated at XDP of the underlay", "underlay", b.u.Name)
		if on, err := kernel.GRO(b.u.Name); err == nil && !on {
			b.log.Warn("udp: GRO is off on the underlay: each decapsulated datagram reaches the pod on its own, at a high CPU cost; turn it on (ethtool -K "+b.u.Name+" gro on)", "underlay", b.u.Name)
		}
	case why != "":
		b.log.Warn("udp: data path tun: the kernel path cannot run here; packets go through the agent", "reason", why)
	default:
		b.log.Info("udp: data path tun (Datapath tun): packets go through the agent")
	}
}

// run starts one goroutine per direction (and per receive function) over
// dev (link index idx) and bind, which the Backend owns from now on. It
// reports false, and starts nothing, once the backend is closed.
func (b *Backend) run(dev tun.Device, idx int, bind conn.Bind, fns []conn.ReceiveFunc, own netip.Prefix, kp *kpath) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.dev, b.devIdx, b.bind, b.eps, b.kp = dev, idx, bind, map[netip.AddrPort]conn.Endpoint{}, kp
	b.peers.Store(newTable(own, own.Addr(), nil))
	ctx, cancel := context.WithCancel(b.life)
	b.stop = cancel
	b.done.Add(1 + len(fns))
	go func() { defer b.done.Done(); b.tunToUDP(ctx, dev, bind) }()
	for _, fn := range fns {
		go func() { defer b.done.Done(); b.udpToTUN(ctx, dev, bind, fn) }()
	}
	return true
}

// Close implements backend.Backend: it stops the data path and closes
// flannel0 and the socket. On the TUN path that removes flannel0; on the
// kernel path flannel0 persists with its programs, which carry traffic
// until the next agent swaps in its own. It waits for the data path's
// goroutines to end; calling it again is harmless.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.stopDataPath()
}

// stopDataPath closes the device and the socket, which ends the data
// path's goroutines, and waits for them.
func (b *Backend) stopDataPath() error {
	b.mu.Lock()
	dev, bind, stop, kp := b.dev, b.bind, b.stop, b.kp
	b.dev, b.bind, b.stop, b.devIdx, b.kp = nil, nil, nil, 0, nil
	b.mu.Unlock()
	var err error
	if dev != nil {
		stop()
		err = errors.Join(bind.Close(), dev.Close())
	}
	if kp != nil {
		// The next kernel path counts from zero: keep what this one
		// counted.
		if k, kerr := kp.counters(); kerr == nil {
			b.stats.addKernel(k)
		}
		err = errors.Join(err, kp.close())
	}
	b.done.Wait()
	return err
}

// buffers returns n packet buffers with headroom, mapped outside the Go
// heap: they are long-lived and large (64 KiB each, for GSO and GRO), and on
// the heap they would raise the garbage collector's target by their size, so
// that the agent's RSS grew by the same again in garbage before each
// collection. Pages never written cost no memory.
func buffers(n int) (bufs [][]byte, sizes []int, free func()) {
	const size = offset + 65535
	mem, err := unix.Mmap(-1, 0, n*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil { // fall back to the heap
		mem = make([]byte, n*size)
	}
	bufs = make([][]byte, n)
	for i := range bufs {
		bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, make([]int, n), func() {
		if err == nil {
			_ = unix.Munmap(mem)
		}
	}
}

// tunToUDP reads packets from flannel0 and sends each to its peer, one
// batch per peer.
func (b *Backend) tunToUDP(ctx context.Context, dev tun.Device, bind conn.Bind) {
	src := newTUNSource(dev)
	defer src.close()
	var sp splitter
	byPeer := map[netip.AddrPort][]datagram{}
	var icmp [][]byte
	for ctx.Err() == nil {
		pkts, err := src.read()
		if err != nil {
			switch {
			case ctx.Err() != nil || errors.Is(err, os.ErrClosed):
				return
			case errors.Is(err, unix.EBADFD):
				// flannel0 was deleted under its descriptor: every read
				// fails now. The next Apply opens a new device.
				b.log.Warn("udp: " + DeviceName + " is gone; the next sync opens it again")
				return
			case errors.Is(err, tun.ErrTooManySegments):
				b.stats.malformed.Add(1) // a super-packet larger than a batch
			default:
				b.log.Error("udp: read from TUN", "err", err)
			}
			if len(pkts) == 0 {
				continue
			}
		}
		t := b.peers.Load()
		// Keep each peer's slice between batches: no garbage per batch.
		if len(byPeer) > 2*len(t.bySubnet)+8 {
			clear(byPeer) // peers came and went
		}
		for k, v := range byPeer {
			byPeer[k] = v[:0]
		}
		icmp = icmp[:0]
		for _, tp := range pkts {
			ep, v := t.outbound(tp.p)
			b.stats.count(v)
			switch v {
			case forward:
				ds, err := sp.split(byPeer[ep], tp.p, tp.hdr)
				if err != nil {
					b.stats.malformed.Add(1)
					b.log.Debug("udp: drop a packet read from TUN", "err", err)
				}
				byPeer[ep] = ds
			case unreachable:
				icmp = appendICMP(icmp, t.icmpError(tp.p, icmpUnreachable, icmpNetUnreachable))
			case expired:
				icmp = appendICMP(icmp, t.icmpError(tp.p, icmpTimeExceeded, icmpTTLExceeded))
			}
		}
		b.mu.Lock()
		eps := b.eps
		b.mu.Unlock()
		for peer, ds := range byPeer {
			e, ok := eps[peer]
			if !ok {
				continue
			}
			for len(ds) > 0 {
				k := min(len(ds), bind.BatchSize())
				if err := send(bind, ds[:k], e); err != nil {
					b.stats.sendErrors.Add(1)
				} else {
					b.stats.txPackets.Add(uint64(k))
				}
				ds = ds[k:]
			}
		}
		if len(icmp) > 0 {
			if _, err := dev.Write(icmp, offset); err != nil {
				b.log.Debug("udp: write ICMP to TUN", "err", err)
			}
		}
	}
}

// send hands datagrams to the socket; another conn.Bind (a test's) gets
// each as one buffer.
func send(bind conn.Bind, ds []datagram, e conn.Endpoint) error {
	if s, ok := bind.(*socket); ok {
		return s.sendDatagrams(ds, e)
	}
	bufs := make([][]byte, len(ds))
	for i, d := range ds {
		bufs[i] = append(d.head[:len(d.head):len(d.head)], d.body...)
	}
	return bind.Send(bufs, e)
}

func appendICMP(out [][]byte, pkt []byte) [][]byte {
	if pkt == nil {
		return out
	}
	buf := make([]byte, offset+len(pkt))
	copy(buf[offset:], pkt)
	return append(out, buf)
}

// udpToTUN receives batches of datagrams and writes the admitted packets
// to flannel0 in one call.
func (b *Backend) udpToTUN(ctx context.Context, dev tun.Device, bind conn.Bind, recv conn.ReceiveFunc) {
	batch := bind.BatchSize()
	bufs, sizes, free := buffers(batch)
	defer free()
	pkts := make([][]byte, batch)
	for i := range bufs {
		pkts[i] = bufs[i][offset:]
	}
	eps := make([]conn.Endpoint, batch)
	out := make([][]byte, 0, batch)
	w := newTUNWriter(dev, &b.stats.tunWrites)
	for ctx.Err() == nil {
		n, err := recv(pkts, sizes, eps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if b.stats.recvErrors.Add(1) == 1 { // say it once; the metric counts the rest
				b.log.Warn("udp: receive from the socket failed", "err", err)
			}
			continue
		}
		t := b.peers.Load()
		out = out[:0]
		for i := range n {
			from := endpointAddr(eps[i])
			v := t.inbound(from, pkts[i][:sizes[i]])
			b.stats.count(v)
			if v == forward {
				out = append(out, bufs[i][:offset+sizes[i]])
			}
		}
		if len(out) == 0 {
			continue
		}
		n, err = w.write(out)
		b.stats.rxPackets.Add(uint64(n))
		if err != nil {
			b.stats.writeErrors.Add(uint64(len(out) - n))
			b.log.Debug("udp: write to TUN", "err", err)
		}
	}
}

func endpointAddr(e conn.Endpoint) netip.AddrPort {
	if se, ok := e.(*conn.StdNetEndpoint); ok {
		return se.AddrPort
	}
	ap, _ := netip.ParseAddrPort(e.DstToString())
	return ap
}
