package udp

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunWriter writes a batch of admitted packets (each with offset bytes of
// headroom) to flannel0. TCP goes through its coalescer and out with one
// writev per run: a super-packet is the first segment and the payloads of
// the rest, read by the kernel straight from the receive buffers, and each
// segment's checksum is checked on the way, as the kernel's GRO would.
// Other packets go through wireguard-go's Write, which coalesces UDP where
// the kernel can take it. Only the receiving goroutine uses a tunWriter.
type tunWriter struct {
	dev    tun.Device
	rc     syscall.RawConn // flannel0's descriptor; nil (no virtio-net header, or a test's device): all through dev.Write
	writes *atomic.Uint64  // system calls writing to the device

	c     coalescer
	pkts  [][]byte // the batch without headroom
	other [][]byte // packets for dev.Write
	iovs  []unix.Iovec
	errno syscall.Errno
	call  func(fd uintptr) bool
}

func newTUNWriter(dev tun.Device, writes *atomic.Uint64) *tunWriter {
	w := &tunWriter{dev: dev, writes: writes, rc: rawTUN(dev)}
	w.call = w.do
	return w
}

// do is w.call: one writev of w.iovs.
func (w *tunWriter) do(fd uintptr) bool {
	_, _, w.errno = unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(len(w.iovs)))
	return w.errno != unix.EAGAIN
}

// writeOne writes b, a virtio-net header and one packet.
func (w *tunWriter) writeOne(b []byte) error {
	w.iovs = append(w.iovs[:0], unix.Iovec{Base: unsafe.SliceData(b)})
	w.iovs[0].SetLen(len(b))
	return w.flush()
}

func (w *tunWriter) flush() error {
	w.writes.Add(1)
	if err := w.rc.Write(w.call); err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}

// write writes the batch and returns the number of packets written and the
// first error; a packet the kernel refuses does not stop the rest.
func (w *tunWriter) write(bufs [][]byte) (int, error) {
	if w.rc == nil {
		w.writes.Add(1)
		return devWrite(w.dev, bufs)
	}
	w.pkts, w.other = w.pkts[:0], w.other[:0]
	for _, b := range bufs {
		w.pkts = append(w.pkts, b[offset:])
	}
	var first error
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	n := 0
	for _, r := range w.c.plan(w.pkts) {
		buf, p := bufs[r.first], w.pkts[r.first]
		vnet := buf[offset-vnetHdrLen : offset]
		switch {
		case len(r.more) > 0:
			superPacket(w.pkts, &r, vnet)
			w.iovs = append(w.iovs[:0], unix.Iovec{Base: &vnet[0]})
			w.iovs[0].SetLen(vnetHdrLen + len(p))
			for _, k := range r.more {
				w.iovs = append(w.iovs, unix.Iovec{Base: &w.pkts[k][r.hlen]})
				w.iovs[len(w.iovs)-1].SetLen(len(w.pkts[k]) - r.hlen)
			}
			if err := w.flush(); err != nil {
				fail(fmt.Errorf("write %d coalesced segments: %w", 1+len(r.more), err))
				continue
			}
			n += 1 + len(r.more)
		case len(p) >= 20 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP:
			clear(vnet) // no offload: the kernel checks the checksum
			if err := w.writeOne(buf[offset-vnetHdrLen:]); err != nil {
				fail(fmt.Errorf("write: %w", err))
				continue
			}
			n++
		default:
			w.other = append(w.other, buf)
		}
	}
	if len(w.other) > 0 {
		w.writes.Add(1)
		k, err := devWrite(w.dev, w.other)
		n += k
		if err != nil {
			fail(err)
		}
	}
	return n, first
}

// devWrite writes bufs through wireguard-go's Write and returns the number
// of packets written. Write's own count is not that: the interface promises
// packets, but the Linux device returns the sum of write(2)'s byte counts.
// Without an error every packet was written, coalesced or not. Each write
// that failed is joined into the error (errs = errors.Join(errs, err), so
// the joins nest), one packet fewer each (a failed coalesced write counts
// as one). Any other error (coalescing refused the batch, or the device is
// gone) counts the batch as lost.
func devWrite(dev tun.Device, bufs [][]byte) (int, error) {
	_, err := dev.Write(bufs, offset)
	if err == nil {
		return len(bufs), nil
	}
	if _, ok := err.(interface{ Unwrap() []error }); !ok {
		return 0, err
	}
	return max(len(bufs)-joined(err), 0), err
}

// joined counts the errors errors.Join joined into err, through nested joins.
func joined(err error) int {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return 1
	}
	n := 0
	for _, e := range j.Unwrap() {
		n += joined(e)
	}
	return n
}
