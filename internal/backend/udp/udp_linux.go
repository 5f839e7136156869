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
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/lease"
)

// DeviceName is flannel's name for the udp backend's TUN device.
const DeviceName = "flannel0"

// offset is the headroom left in front of each packet buffer: the TUN
// device writes its virtio-net header there.
const offset = 16

// Backend is the udp backend.
type Backend struct {
	h   *netlink.Handle
	cfg Options
	u   backend.Underlay
	log *slog.Logger

	peers atomic.Pointer[table] // the data path's view of the leases
	stats stats

	mu   sync.Mutex // guards the fields below
	dev  tun.Device
	bind conn.Bind
	eps  map[netip.AddrPort]conn.Endpoint // parsed endpoints, by peer
	stop context.CancelFunc
	done sync.WaitGroup
}

var (
	_ backend.Backend      = (*Backend)(nil)
	_ prometheus.Collector = (*Backend)(nil)
)

// New prepares the backend; it touches nothing until Apply.
func New(h *netlink.Handle, cfg Options, u backend.Underlay, log *slog.Logger) *Backend {
	return &Backend{h: h, cfg: cfg, u: u, log: log}
}

// newBackend is Kind.New.
func newBackend(ctx context.Context, env backend.Env, opts backend.Options) (backend.Backend, error) {
	return New(env.Netlink, opts.(Options), env.Underlay, env.Log), nil
}

// LeaseAttrs implements backend.Backend. flannel's udp leases carry no
// BackendType, and flannel ignores leases whose type differs from its own,
// so weft writes none either.
func (b *Backend) LeaseAttrs() lease.Attrs { return lease.Attrs{} }

// MTU implements backend.Backend.
func (b *Backend) MTU() int {
	return backend.InnerMTU(b.u, b.cfg.MTU, Overhead)
}

// isPeer reports whether a lease is a udp lease.
func isPeer(l lease.Lease) bool {
	return l.Attrs.BackendType == "" || l.Attrs.BackendType == Type
}

// Apply implements backend.Backend: it starts the device and socket on the
// first call and swaps in a new peer table on every call.
func (b *Backend) Apply(ctx context.Context, st backend.NodeState) (backend.Report, error) {
	if err := b.start(st); err != nil {
		return backend.Report{}, err
	}
	return b.setPeers(st)
}

// setPeers builds the peer table from the leases and swaps it in.
func (b *Backend) setPeers(st backend.NodeState) (backend.Report, error) {
	var rep backend.Report
	peers := map[netip.Prefix]netip.AddrPort{}
	for _, l := range st.Peers {
		if l.Key() == st.Own.Key() || !isPeer(l) || !l.Subnet.IsValid() {
			continue
		}
		if l.Subnet.Bits() != st.Own.Subnet.Bits() {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (%s): subnet length differs from this node's /%d", l.Subnet, l.Attrs.PublicIP, st.Own.Subnet.Bits()))
			continue
		}
		peers[l.Subnet] = netip.AddrPortFrom(l.Attrs.PublicIP, uint16(b.cfg.Port))
	}
	// Parse each peer's endpoint once; the data path reuses it.
	b.mu.Lock()
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
	b.mu.Unlock()
	b.peers.Store(newTable(st.Own.Subnet, st.Own.Subnet.Addr(), peers))
	return rep, nil
}

// start opens the device and socket once and starts the data path.
func (b *Backend) start(st backend.NodeState) error {
	b.mu.Lock()
	running := b.dev != nil
	b.mu.Unlock()
	if running {
		return nil
	}
	dev, bind, fns, err := b.open(st)
	if err != nil {
		return err
	}
	b.run(dev, bind, fns, st.Own.Subnet)
	return nil
}

// open creates flannel0 and the UDP socket, same as
// `ip tuntap add flannel0 mode tun; ip addr add OWN/NETLEN dev flannel0;
// ip link set flannel0 up`, which routes the cluster network to flannel0.
func (b *Backend) open(st backend.NodeState) (tun.Device, conn.Bind, []conn.ReceiveFunc, error) {
	dev, err := tun.CreateTUN(DeviceName, b.MTU())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("udp: create TUN device %s: %w", DeviceName, err)
	}
	fail := func(err error) (tun.Device, conn.Bind, []conn.ReceiveFunc, error) {
		dev.Close()
		return nil, nil, nil, err
	}
	link, err := b.h.LinkByName(DeviceName)
	if err != nil {
		return fail(fmt.Errorf("udp: look up %s: %w", DeviceName, err))
	}
	// IPv4 only: no link-local address, so no router solicitations to drop.
	if err := b.h.LinkSetIP6AddrGenMode(link, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
		b.log.Debug("udp: turn off IPv6 address generation on "+DeviceName, "err", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: st.Own.Subnet.Addr().AsSlice(), Mask: net.CIDRMask(st.Network.Bits(), 32)}}
	if err := b.h.AddrReplace(link, addr); err != nil {
		return fail(fmt.Errorf("udp: address %s on %s: %w", addr.IPNet, DeviceName, err))
	}
	if err := b.h.LinkSetUp(link); err != nil {
		return fail(fmt.Errorf("udp: set %s up: %w", DeviceName, err))
	}
	bind := newSocket(conn.IdealBatchSize, &b.stats.malformed, b.log)
	fns, _, err := bind.Open(uint16(b.cfg.Port))
	if err != nil {
		return fail(fmt.Errorf("udp: listen on UDP port %d: %w", b.cfg.Port, err))
	}
	b.log.Info("udp backend up", "device", DeviceName, "mtu", b.MTU(), "port", b.cfg.Port,
		"tun-batch", dev.BatchSize(), "udp-batch", bind.BatchSize())
	if dev.BatchSize() == 1 {
		b.log.Warn("the kernel offers no TUN offloads (virtio-net header, TSO/GRO): one packet per read and write")
	}
	return dev, bind, fns, nil
}

// run starts one goroutine per direction (and per receive function) over
// dev and bind, which the Backend owns from now on.
func (b *Backend) run(dev tun.Device, bind conn.Bind, fns []conn.ReceiveFunc, own netip.Prefix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dev, b.bind, b.eps = dev, bind, map[netip.AddrPort]conn.Endpoint{}
	b.peers.Store(newTable(own, own.Addr(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.done.Add(1 + len(fns))
	go func() { defer b.done.Done(); b.tunToUDP(ctx, dev, bind) }()
	for _, fn := range fns {
		go func() { defer b.done.Done(); b.udpToTUN(ctx, dev, bind, fn) }()
	}
}

// Close stops the data path and removes the device.
func (b *Backend) Close() error {
	b.mu.Lock()
	dev, bind, stop := b.dev, b.bind, b.stop
	b.dev = nil
	b.mu.Unlock()
	if dev == nil {
		return nil
	}
	stop()
	err := errors.Join(bind.Close(), dev.Close())
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
