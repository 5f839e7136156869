package udp

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// A tunPacket is one packet read from flannel0, whole (a super-packet
// still unsplit), with its virtio-net header.
type tunPacket struct {
	p   []byte
	hdr vnetHdr
}

// tunSource reads packets from flannel0. One goroutine uses it.
type tunSource interface {
	// read blocks until the device has a packet and returns what one read
	// gave: one packet, whole, or (wireguard-go) its segments. They stay
	// valid, and may be changed in place, until the next read. After the
	// device closes it returns an error.
	read() ([]tunPacket, error)
	// close frees the buffers; the device is closed by its owner.
	close()
}

// newTUNSource reads flannel0's descriptor itself when the device has the
// virtio-net header, so that a super-packet is split into datagrams
// without copying its payload (splitter); otherwise, and for a test's
// device, it reads through wireguard-go, which splits into copies.
func newTUNSource(dev tun.Device) tunSource {
	if rc := rawTUN(dev); rc != nil {
		r := &fdSource{rc: rc}
		bufs, _, free := buffers(1)
		r.buf, r.free = bufs[0], free
		r.call = r.do
		return r
	}
	bufs, sizes, free := buffers(dev.BatchSize())
	return &devSource{dev: dev, bufs: bufs, sizes: sizes, free: free}
}

// rawTUN returns flannel0's descriptor for weft's own reads and writes, or
// nil to go through wireguard-go: when the device has no virtio-net header
// (wireguard-go turns it on exactly when it batches), or is a test's.
func rawTUN(dev tun.Device) syscall.RawConn {
	f := dev.File()
	if f == nil || dev.BatchSize() == 1 {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// fdSource reads one packet, with its virtio-net header, per read(2).
type fdSource struct {
	rc    syscall.RawConn
	buf   []byte
	free  func()
	n     int
	errno syscall.Errno
	call  func(fd uintptr) bool
	out   [1]tunPacket
}

func (r *fdSource) do(fd uintptr) bool {
	n, _, e := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
	r.n, r.errno = int(n), e
	return e != unix.EAGAIN
}

func (r *fdSource) read() ([]tunPacket, error) {
	if err := r.rc.Read(r.call); err != nil {
		return nil, err
	}
	if r.errno != 0 {
		return nil, r.errno
	}
	if r.n < vnetHdrLen {
		return nil, fmt.Errorf("read %d bytes: shorter than the virtio-net header", r.n)
	}
	r.out[0] = tunPacket{p: r.buf[vnetHdrLen:r.n], hdr: parseVnetHdr(r.buf)}
	return r.out[:], nil
}

func (r *fdSource) close() { r.free() }

// devSource reads through wireguard-go's tun.Device.
type devSource struct {
	dev   tun.Device
	bufs  [][]byte
	sizes []int
	free  func()
	out   []tunPacket
}

func (r *devSource) read() ([]tunPacket, error) {
	n, err := r.dev.Read(r.bufs, r.sizes, offset)
	r.out = r.out[:0]
	for i := range n {
		r.out = append(r.out, tunPacket{p: r.bufs[i][offset : offset+r.sizes[i]]})
	}
	return r.out, err
}

func (r *devSource) close() { r.free() }
