package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
)

// frame is what a capture keeps of one Ethernet frame: when it was read,
// its IP header's addresses and protocol, its UDP ports and payload (IPv4
// or IPv6 without extension headers), of an ICMP error the datagram it
// quotes, and whether it held one of the markers.
type frame struct {
	at         time.Time
	ifindex    int
	src, dst   netip.Addr
	proto      int // IP protocol; 0 when the frame is not IP
	sport      uint16
	dport      uint16
	udpPayload []byte // at most 64 bytes of it
	udpLen     int    // the whole UDP payload's length
	icmpType   int    // ICMP or ICMPv6 type; -1 when not ICMP
	quoted     *frame // the IP datagram an ICMP error quotes (addresses, protocol, ports)
	marker     bool
}

// capture reads every frame on every interface of a namespace (an
// AF_PACKET socket, ETH_P_ALL: both directions of each port) until
// stopped.
type capture struct {
	fd      int // set before the reader starts; closed by stop once it has ended
	markers [][]byte
	ending  atomic.Bool // stop asks the reader to end
	once    sync.Once   // stop's ending
	done    chan struct{}
	mu      sync.Mutex // guards frames and total
	frames  []frame
	total   int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startCapture opens the socket inside ns (on ifname only, when given)
// and reads until stop; frames containing any of markers are flagged.
func startCapture(t *testing.T, ns, ifname string, markers ...[]byte) *capture {
	t.Helper()
	c := &capture{fd: -1, markers: markers, done: make(chan struct{})}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		if ifname == "" {
			return nil
		}
		h, err := netns.Handle(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		l, err := h.LinkByName(ifname)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture in %s: %v", ns, err)
	}
	// Frames on a veth can be GSO super-packets of up to 64 KiB.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	go c.read()
	t.Cleanup(func() { c.stop() })
	return c
}

// read reads frames until stop asks it to end (it looks at every frame
// and at every receive timeout, 100 ms).
func (c *capture) read() {
	defer close(c.done)
	buf := make([]byte, 1<<17)
	for !c.ending.Load() {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		f := parseFrame(buf[:n])
		f.at = time.Now()
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.ifindex = ll.Ifindex
		}
		for _, m := range c.markers {
			if bytes.Contains(buf[:n], m) {
				f.marker = true
			}
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.total++
		c.mu.Unlock()
	}
}

// stop ends the capture and returns every frame read; safe to repeat.
func (c *capture) stop() []frame {
	c.once.Do(func() {
		c.ending.Store(true)
		<-c.done // within the receive timeout
		unix.Close(c.fd)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// parseFrame reads an Ethernet frame's IP and UDP headers.
func parseFrame(b []byte) frame {
	if len(b) < 14 {
		return frame{icmpType: -1}
	}
	return parseIP(binary.BigEndian.Uint16(b[12:14]), b[14:])
}

// parseIP reads an IP datagram's headers (et: its EtherType) and, in an
// ICMP error (destination unreachable, time exceeded), the quoted
// datagram's.
func parseIP(et uint16, ip []byte) frame {
	f := frame{icmpType: -1}
	var l4 []byte
	switch {
	case et == unix.ETH_P_IP && len(ip) >= 20:
		ihl := int(ip[0]&0x0f) * 4
		if len(ip) < ihl {
			return f
		}
		f.src, _ = netip.AddrFromSlice(ip[12:16])
		f.dst, _ = netip.AddrFromSlice(ip[16:20])
		f.proto = int(ip[9])
		l4 = ip[ihl:]
	case et == unix.ETH_P_IPV6 && len(ip) >= 40:
		f.src, _ = netip.AddrFromSlice(ip[8:24])
		f.dst, _ = netip.AddrFromSlice(ip[24:40])
		f.proto = int(ip[6])
		l4 = ip[40:]
	default:
		return f
	}
	if f.proto == unix.IPPROTO_UDP && len(l4) >= 8 {
		f.sport, f.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		f.udpLen = len(l4) - 8
		f.udpPayload = bytes.Clone(l4[8:min(len(l4), 8+64)])
	}
	if (f.proto == unix.IPPROTO_ICMP || f.proto == unix.IPPROTO_ICMPV6) && len(l4) >= 8 {
		f.icmpType = int(l4[0])
		inner := uint16(unix.ETH_P_IP)
		if f.proto == unix.IPPROTO_ICMPV6 {
			inner = unix.ETH_P_IPV6
		}
		// ICMP: 3 destination unreachable, 11 time exceeded; ICMPv6: 1,
		// 3 (and 2, packet too big).
		if q := parseIP(inner, l4[8:]); q.src.IsValid() && (f.proto == unix.IPPROTO_ICMP && (f.icmpType == 3 || f.icmpType == 11) ||
			f.proto == unix.IPPROTO_ICMPV6 && f.icmpType >= 1 && f.icmpType <= 3) {
			f.quoted = &q
		}
	}
	return f
}

// wgType is the WireGuard message type of a UDP payload (1 initiation, 2
// response, 3 cookie reply, 4 transport data), or 0 if the payload is not
// a WireGuard message: a type byte of 1 to 4, three reserved zero bytes,
// and the length of its type (a data message: a 16-byte header and at
// least an empty, authenticated packet).
func wgType(f frame) int {
	p := f.udpPayload
	if len(p) < 4 || p[0] < 1 || p[0] > 4 || p[1] != 0 || p[2] != 0 || p[3] != 0 {
		return 0
	}
	want := map[byte]int{1: 148, 2: 92, 3: 64}[p[0]]
	switch {
	case p[0] == 4 && f.udpLen >= 32:
		return 4
	case p[0] != 4 && f.udpLen == want:
		return int(p[0])
	}
	return 0
}
