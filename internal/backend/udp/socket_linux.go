package udp

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// The socket's limits. A UDP GSO send or a GRO receive carries at most
// maxSegments datagrams (the kernel coalesces at most 64 on receive, and
// older kernels accept at most 64 on send) of at most maxPayload bytes in
// all (an IPv4 datagram's limit, less its IP and UDP headers).
const (
	maxSegments = 64
	maxPayload  = 0xffff - 20 - 8
	sockBuffer  = 7 << 20 // socket buffers, as wireguard-go sizes them
)

// socket is the backend's UDP socket, a conn.Bind over one IPv4 socket. It
// moves a batch of datagrams per system call (recvmmsg, sendmmsg) and, where
// the kernel offers them, many datagrams per message: a send hands the
// kernel runs of equal-sized packets straight from the caller's buffers with
// UDP_SEGMENT, and a receive takes coalesced runs with UDP_GRO and splits
// them into the caller's buffers. Unlike wireguard-go's StdNetBind it keeps
// its message headers and endpoints between calls, so the data path neither
// allocates nor resets a full batch per call.
type socket struct {
	batch int
	log   *slog.Logger
	gso   atomic.Bool // UDP_SEGMENT works; cleared on the first send it fails
	gro   bool        // UDP_GRO is on

	dropped *atomic.Uint64 // counts datagrams of a GRO message that did not fit

	mu sync.Mutex // guards c and rc
	c  *net.UDPConn
	rc syscall.RawConn

	sendMu sync.Mutex // guards the send scratch below
	send   scratch
	whole  []datagram // Send's packets as datagrams

	recv scratch               // the receive scratch; one goroutine receives
	eps  []conn.StdNetEndpoint // receive endpoints, reused
}

// scratch holds the message headers of one direction, built once, and its
// system call: a func made once, so that a call allocates nothing.
type scratch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	oob   []byte // oobLen bytes per message

	trap     uintptr       // SYS_SENDMMSG or SYS_RECVMMSG
	from, to int           // the call's messages: hdrs[from:to]
	n        int           // its result
	errno    syscall.Errno //
	call     func(fd uintptr) bool
}

// do is scratch.call: one sendmmsg or recvmmsg on hdrs[from:to]. It reports
// false on EAGAIN, so that the runtime waits until the socket is ready.
func (sc *scratch) do(fd uintptr) bool {
	r, _, e := unix.Syscall6(sc.trap, fd, uintptr(unsafe.Pointer(&sc.hdrs[sc.from])), uintptr(sc.to-sc.from), 0, 0, 0)
	sc.n, sc.errno = int(r), e
	return e != unix.EAGAIN
}

// mmsghdr is the kernel's struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// oobLen is the control space of one message: one UDP_SEGMENT or UDP_GRO
// option. The kernel writes the GRO segment size as an int, and reads the
// GSO size as a u16.
var oobLen = unix.CmsgSpace(4)

var _ conn.Bind = (*socket)(nil)

func newSocket(batch int, dropped *atomic.Uint64, log *slog.Logger) *socket {
	s := &socket{batch: batch, log: log, dropped: dropped}
	for _, sc := range []*scratch{&s.send, &s.recv} {
		sc.hdrs = make([]mmsghdr, batch)
		sc.iovs = make([]unix.Iovec, 2*batch) // a datagram's head and body
		sc.names = make([]unix.RawSockaddrInet4, batch)
		sc.oob = make([]byte, batch*oobLen)
		sc.call = sc.do
	}
	s.send.trap, s.recv.trap = unix.SYS_SENDMMSG, unix.SYS_RECVMMSG
	s.eps = make([]conn.StdNetEndpoint, batch)
	s.whole = make([]datagram, batch)
	return s
}

// Open implements conn.Bind: it listens on the port on all IPv4 addresses
// (flannel's udp backend is IPv4 only) and returns one receive function.
func (s *socket) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, 0, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("raw socket: %w", err)
	}
	var gsoErr, groErr error
	err = rc.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain int }{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, sockBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, sockBuffer)
			}
		}
		_, gsoErr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		groErr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	})
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("socket options: %w", err)
	}
	s.gso.Store(gsoErr == nil)
	s.gro = groErr == nil
	if gsoErr != nil {
		s.log.Warn("udp: the kernel offers no UDP GSO (UDP_SEGMENT): one datagram per sent message", "err", gsoErr)
	}
	if groErr != nil {
		s.log.Warn("udp: the kernel offers no UDP GRO: one datagram per received message", "err", groErr)
	}
	s.mu.Lock()
	s.c, s.rc = c, rc
	s.mu.Unlock()
	return []conn.ReceiveFunc{s.receive}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

// Close implements conn.Bind; a blocked receive returns net.ErrClosed.
func (s *socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	err := s.c.Close()
	s.c = nil
	return err
}

func (s *socket) raw() (syscall.RawConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil, net.ErrClosed
	}
	return s.rc, nil
}

// SetMark implements conn.Bind (SO_MARK).
func (s *socket) SetMark(mark uint32) error {
	rc, err := s.raw()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	return serr
}

// BatchSize implements conn.Bind.
func (s *socket) BatchSize() int { return s.batch }

// ParseEndpoint implements conn.Bind.
func (s *socket) ParseEndpoint(str string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(str)
	if err != nil {
		return nil, err
	}
	if !ap.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("%s: the udp backend carries IPv4 only", str)
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func sockaddr(ap netip.AddrPort) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().Unmap().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	return sa
}

func addrPort(sa *unix.RawSockaddrInet4) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
}

// plan lays out ds as messages to one address: with GSO, each message is
// a run of datagrams of its first datagram's size (a shorter one ends the
// run), up to the kernel's limits; without, one datagram per message. Each
// datagram is one iovec, or two when it has a body. It returns the number
// of messages.
func (sc *scratch) plan(ds []datagram, to unix.RawSockaddrInet4, gso bool) int {
	m, v := 0, 0 // messages, iovecs
	iov := func(b []byte) {
		sc.iovs[v].Base = unsafe.SliceData(b)
		sc.iovs[v].SetLen(len(b))
		v++
	}
	add := func(d datagram) {
		iov(d.head)
		if len(d.body) > 0 {
			iov(d.body)
		}
	}
	for i := 0; i < len(ds); m++ {
		first := v
		size, total, j := ds[i].len(), 0, i
		for j < len(ds) && j-i < maxSegments {
			l := ds[j].len()
			if l > size || total+l > maxPayload || (j > i && !gso) {
				break
			}
			add(ds[j])
			total += l
			j++
			if l < size || size == 0 {
				break
			}
		}
		if j == i { // larger than a datagram can be: the kernel will say so
			add(ds[j])
			j++
		}
		sc.names[m] = to
		h := &sc.hdrs[m].hdr
		h.Name = (*byte)(unsafe.Pointer(&sc.names[m]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &sc.iovs[first]
		h.SetIovlen(v - first)
		h.Control, h.Controllen = nil, 0
		if j-i > 1 {
			oob := sc.oob[m*oobLen : (m+1)*oobLen]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(size)
			h.Control = &oob[0]
			h.SetControllen(unix.CmsgSpace(2))
		}
		i = j
	}
	return m
}

// Send implements conn.Bind: all of bufs go to ep, in as few system calls
// as the kernel allows.
func (s *socket) Send(bufs [][]byte, ep conn.Endpoint) error {
	if len(bufs) > s.batch {
		return fmt.Errorf("send %d packets: more than a batch (%d)", len(bufs), s.batch)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for i, b := range bufs {
		s.whole[i] = datagram{head: b}
	}
	return s.sendLocked(s.whole[:len(bufs)], ep)
}

// sendDatagrams sends ds to ep, in as few system calls as the kernel
// allows. A message the kernel refuses is skipped and the first such error
// returned once the rest are sent.
func (s *socket) sendDatagrams(ds []datagram, ep conn.Endpoint) error {
	if len(ds) > s.batch {
		return fmt.Errorf("send %d packets: more than a batch (%d)", len(ds), s.batch)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.sendLocked(ds, ep)
}

func (s *socket) sendLocked(ds []datagram, ep conn.Endpoint) error {
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok || !se.Addr().Is4() {
		return fmt.Errorf("send to %s: not an IPv4 endpoint", ep.DstToString())
	}
	rc, err := s.raw()
	if err != nil {
		return err
	}
	gso := s.gso.Load()
	m := s.send.plan(ds, sockaddr(se.AddrPort), gso)
	var first error
	sc := &s.send
	for k := 0; k < m; {
		sc.from, sc.to = k, m
		err := rc.Write(sc.call)
		n, errno := sc.n, sc.errno
		switch {
		case err != nil:
			return err
		case errno == unix.EIO && gso:
			// EIO: the egress device cannot checksum, so no GSO. Say it
			// once and send this batch again one datagram per message.
			s.gso.Store(false)
			s.log.Warn("udp: the underlay device refuses UDP GSO: one datagram per sent message")
			gso = false
			m, k = s.send.plan(ds, sockaddr(se.AddrPort), false), 0
		case errno != 0:
			if first == nil {
				first = fmt.Errorf("sendmmsg to %s: %w", se.AddrPort, errno)
			}
			k++
		default:
			k += n
		}
	}
	return first
}

// receive is the socket's conn.ReceiveFunc. With GRO one message holds up
// to maxSegments datagrams, so it reads at most len(pkts)/maxSegments
// messages into the last slots and splits each forward into the free ones.
func (s *socket) receive(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	rc, err := s.raw()
	if err != nil {
		return 0, err
	}
	lim := min(len(pkts), len(sizes), len(eps), s.batch)
	pkts = pkts[:lim]
	r, at := lim, 0
	if s.gro && r >= maxSegments {
		r = r / maxSegments
		at = lim - r
	}
	sc := &s.recv
	for k := range r {
		sc.iovs[k].Base = unsafe.SliceData(pkts[at+k])
		sc.iovs[k].SetLen(cap(pkts[at+k]))
		h := &sc.hdrs[k].hdr
		h.Name = (*byte)(unsafe.Pointer(&sc.names[k]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &sc.iovs[k]
		h.SetIovlen(1)
		h.Control = &sc.oob[k*oobLen]
		h.SetControllen(oobLen)
		h.Flags = 0
	}
	sc.from, sc.to = 0, r
	if err := rc.Read(sc.call); err != nil {
		return 0, err
	}
	n := sc.n
	if sc.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", sc.errno)
	}
	out := 0
	for k := range n {
		h := &sc.hdrs[k]
		size, from := int(h.n), addrPort(&sc.names[k])
		seg := size
		if g := groSize(sc.oob[k*oobLen:], int(h.hdr.Controllen)); g > 0 {
			seg = g
		}
		slot := at + k
		if size == 0 { // an empty datagram: passed on, so the caller counts it
			if out < len(pkts) && (out <= slot || out >= at+n) {
				sizes[out] = 0
				s.eps[out].AddrPort = from
				eps[out] = &s.eps[out]
				out++
			}
			continue
		}
		for off := 0; off < size; off += seg {
			if out >= len(pkts) || (out > slot && out < at+n) {
				// More segments than the batch has room for (the
				// kernel coalesces at most maxSegments): the rest would
				// overwrite a message not yet split. Drop them.
				s.dropped.Add(uint64((size - off + seg - 1) / seg))
				break
			}
			end := min(off+seg, size)
			sizes[out] = copy(pkts[out][:cap(pkts[out])], pkts[slot][off:end])
			s.eps[out].AddrPort = from
			eps[out] = &s.eps[out]
			out++
		}
	}
	return out, nil
}

// groSize returns the segment size of a received message's UDP_GRO option,
// or 0.
func groSize(oob []byte, n int) int {
	oob = oob[:min(n, len(oob))]
	for len(oob) >= unix.SizeofCmsghdr {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(cm.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if cm.Level == unix.SOL_UDP && cm.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob)):]
	}
	return 0
}
