package udp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is an in-memory tun.Device: tests queue batches for Read and
// collect what the data path writes.
type fakeTUN struct {
	batch   int
	in      chan [][]byte
	out     chan []byte
	mu      sync.Mutex // guards pending
	pending [][]byte
	closed  chan struct{}
	once    sync.Once
	gone    chan struct{} // closed by remove
	rmOnce  sync.Once
	onClose func() // if set, runs once on Close
}

func newFakeTUN(batch int) *fakeTUN {
	return &fakeTUN{batch: batch, in: make(chan [][]byte, 16), out: make(chan []byte, 4096), closed: make(chan struct{}), gone: make(chan struct{})}
}

// remove makes the device behave as one deleted under its descriptor:
// every read fails with EBADFD.
func (t *fakeTUN) remove() { t.rmOnce.Do(func() { close(t.gone) }) }

func (t *fakeTUN) File() *os.File { return nil }
func (t *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.mu.Lock()
	if len(t.pending) == 0 {
		t.mu.Unlock()
		select {
		case b := <-t.in:
			t.mu.Lock()
			t.pending = b
		case <-t.closed:
			return 0, os.ErrClosed
		case <-t.gone:
			return 0, &os.PathError{Op: "read", Path: "/dev/net/tun", Err: unix.EBADFD}
		}
	}
	defer t.mu.Unlock()
	n := min(len(bufs), len(t.pending))
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], t.pending[i])
	}
	t.pending = t.pending[n:]
	return n, nil
}

// Write returns what wireguard-go's Linux device returns: the sum of the
// bytes written, not the number of packets its interface documents.
func (t *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	n := 0
	for _, b := range bufs {
		t.out <- append([]byte(nil), b[offset:]...)
		n += len(b) - offset
	}
	return n, nil
}
func (t *fakeTUN) MTU() (int, error)        { return 1472, nil }
func (t *fakeTUN) Name() (string, error)    { return "fake0", nil }
func (t *fakeTUN) Events() <-chan tun.Event { return nil }
func (t *fakeTUN) BatchSize() int           { return t.batch }
func (t *fakeTUN) Close() error {
	t.once.Do(func() {
		close(t.closed)
		if t.onClose != nil {
			t.onClose()
		}
	})
	return nil
}

type received struct {
	from netip.AddrPort
	data []byte
}

type sent struct {
	to   netip.AddrPort
	pkts [][]byte
}

// fakeBind is an in-memory conn.Bind: tests queue received datagrams and
// collect sends, with their batch boundaries.
type fakeBind struct {
	batch  int
	in     chan []received
	sent   chan sent
	closed chan struct{}
	once   sync.Once
}

func newFakeBind(batch int) *fakeBind {
	return &fakeBind{batch: batch, in: make(chan []received, 16), sent: make(chan sent, 4096), closed: make(chan struct{})}
}

func (b *fakeBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	var pending []received
	recv := func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if len(pending) == 0 {
			select {
			case pending = <-b.in:
			case <-b.closed:
				return 0, net.ErrClosed
			}
		}
		n := min(len(pkts), len(pending))
		for i := range n {
			sizes[i] = copy(pkts[i], pending[i].data)
			eps[i] = &conn.StdNetEndpoint{AddrPort: pending[i].from}
		}
		pending = pending[n:]
		return n, nil
	}
	return []conn.ReceiveFunc{recv}, port, nil
}
func (b *fakeBind) Close() error         { b.once.Do(func() { close(b.closed) }); return nil }
func (b *fakeBind) SetMark(uint32) error { return nil }
func (b *fakeBind) BatchSize() int       { return b.batch }
func (b *fakeBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if len(bufs) > b.batch {
		return errors.New("fakeBind: batch larger than BatchSize")
	}
	s := sent{to: ep.(*conn.StdNetEndpoint).AddrPort}
	for _, p := range bufs {
		s.pkts = append(s.pkts, append([]byte(nil), p...))
	}
	b.sent <- s
	return nil
}
func (b *fakeBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}
