package udp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/kernel/kerneltest"
)

// fakeEnds records the devices and sockets a backend on the fake kernel
// opened: flannel0 appears in the fake when opened and goes when closed,
// as a TUN device held open by its process does.
type fakeEnds struct {
	mu    sync.Mutex // guards the slices
	tuns  []*fakeTUN
	binds []*fakeBind
}

func (e *fakeEnds) tun(i int) *fakeTUN {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tuns[i]
}

func (e *fakeEnds) opened() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tuns)
}

// onFake returns the backend over a fake kernel, its data path over
// in-memory ends.
func onFake(t *testing.T, ctx context.Context) (*Backend, *kerneltest.Fake, *fakeEnds) {
	t.Helper()
	f := kerneltest.New()
	b := New(ctx, f, Options{Common: backend.Common{Port: 8285}}, kernel.Underlay{MTU: 1500}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ends := &fakeEnds{}
	b.loadKPath = nil // the kernel data path needs a real kernel
	b.openTUN = func(name string, mtu int, persist bool) (tun.Device, error) {
		f.AddDevice(kernel.Link{Name: name, Kind: kernel.KindTUN, MTU: mtu}) // as tun.CreateTUN leaves it
		d := newFakeTUN(1)
		d.onClose = func() { f.RemoveDevice(name) }
		ends.mu.Lock()
		ends.tuns = append(ends.tuns, d)
		ends.mu.Unlock()
		return d, nil
	}
	b.openBind = func() conn.Bind {
		s := newFakeBind(1)
		ends.mu.Lock()
		ends.binds = append(ends.binds, s)
		ends.mu.Unlock()
		return s
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, f, ends
}

// ended waits up to 5 s for the data path's goroutines to end.
func ended(t *testing.T, b *Backend) {
	t.Helper()
	done := make(chan struct{})
	go func() { b.done.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the data path's goroutines are still running")
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func writes(t *testing.T, what string, f *kerneltest.Fake, want string) {
	t.Helper()
	if got := f.Writes(); got != want {
		t.Errorf("%s:\n%s\nwant\n%s", what, got, want)
	}
}

// TestPlanOnFake: the desired state is flannel0 and no kernel entries; a
// peer whose subnet length differs is skipped; Plan opens and writes
// nothing, and Apply reports the skipped peer.
func TestPlanOnFake(t *testing.T) {
	b, f, ends := onFake(t, t.Context())
	st := state()
	odd := st.Peers[1]
	odd.Subnet = netip.MustParsePrefix("10.244.2.0/25")
	st.Peers = append(st.Peers, odd)
	d := b.Plan(st)
	want := kernel.Device{Name: DeviceName, Kind: kernel.KindTUN, MTU: 1472,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/16")}, NoIPv6AddrGen: true}
	if len(d.Devices) != 1 || !reflect.DeepEqual(d.Devices[0], want) {
		t.Errorf("devices %+v, want [%+v]", d.Devices, want)
	}
	if e := d.Entries; len(e.Routes)+len(e.Neighs)+len(e.FDB) != 0 || !reflect.DeepEqual(d.Node, st) {
		t.Errorf("entries %+v, node state %+v", e, d.Node)
	}
	wantSkipped := []string{"10.244.2.0/25 (192.0.2.2): subnet length differs from this node's /24"}
	if !reflect.DeepEqual(d.Skipped, wantSkipped) {
		t.Errorf("skipped %q, want %q", d.Skipped, wantSkipped)
	}
	writes(t, "plan", f, "")
	if ends.opened() != 0 {
		t.Errorf("Plan opened %d devices", ends.opened())
	}
	rep, err := b.Apply(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 2 || !reflect.DeepEqual(rep.Skipped, wantSkipped) {
		t.Errorf("report %+v: want 2 peers added, %q skipped", rep, wantSkipped)
	}
}

// TestDeviceKeptRightOnFake: every Apply puts flannel0 right, and opens
// it again when it is gone.
func TestDeviceKeptRightOnFake(t *testing.T) {
	b, f, ends := onFake(t, t.Context())
	ctx := context.Background()
	st := state()
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	writes(t, "first apply", f, "ip link set flannel0 addrgenmode none\nip addr replace 10.244.1.0/16 dev flannel0\nip link set flannel0 up\n")
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	writes(t, "second apply", f, "")

	// By hand: ip addr del 10.244.1.0/16 dev flannel0.
	l, err := f.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteAddr(kernel.Addr{Dev: l.Name, Prefix: netip.MustParsePrefix("10.244.1.0/16")}); err != nil {
		t.Fatal(err)
	}
	f.Writes()
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	writes(t, "apply after the address was deleted by hand", f, "ip addr replace 10.244.1.0/16 dev flannel0\n")

	// A new own subnet, after the lease was acquired again: the device's
	// address and the data path's table follow.
	st.Own.Subnet = netip.MustParsePrefix("10.244.7.0/24")
	st.Peers[0] = st.Own
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	writes(t, "apply with a new own subnet", f, "ip addr del 10.244.1.0/16 dev flannel0\nip addr replace 10.244.7.0/16 dev flannel0\n")
	if own := b.peers.Load().own; own != st.Own.Subnet {
		t.Errorf("the data path's own subnet is %s, want %s", own, st.Own.Subnet)
	}

	// By hand: ip link del flannel0. The old descriptor fails from now on;
	// the next Apply closes the old data path and opens a new device.
	first := ends.tun(0)
	f.RemoveDevice(DeviceName)
	first.remove()
	if _, err := b.Apply(ctx, b.Plan(st)); err != nil {
		t.Fatal(err)
	}
	if ends.opened() != 2 || !isClosed(first.closed) || !isClosed(ends.binds[0].closed) {
		t.Errorf("opened %d devices; the first closed: %v, its socket closed: %v", ends.opened(), isClosed(first.closed), isClosed(ends.binds[0].closed))
	}
	writes(t, "apply after flannel0 was deleted", f, "ip link set flannel0 addrgenmode none\nip addr replace 10.244.7.0/16 dev flannel0\nip link set flannel0 up\n")
	// The new data path carries traffic.
	ends.tun(1).in <- [][]byte{packet("10.244.7.5", "10.244.2.7", 64, 20)}
	if s := recvSent(t, ends.binds[1]); s.to != peerA {
		t.Errorf("sent to %s, want %s", s.to, peerA)
	}
}

func TestCloseEndsTheDataPath(t *testing.T) {
	b, f, ends := onFake(t, t.Context())
	if _, err := b.Apply(context.Background(), b.Plan(state())); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ended(t, b)
	if !isClosed(ends.tun(0).closed) || !isClosed(ends.binds[0].closed) {
		t.Error("Close left the device or the socket open")
	}
	if _, err := f.LinkByName(DeviceName); !kernel.IsNotFound(err) {
		t.Errorf("flannel0 after Close: %v", err)
	}
	if _, err := b.Apply(context.Background(), b.Plan(state())); !errors.Is(err, errClosed) {
		t.Errorf("Apply after Close: %v", err)
	}
	if ends.opened() != 1 {
		t.Errorf("Apply after Close opened a device")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestLifetimeContextEndsTheDataPath(t *testing.T) {
	life, cancel := context.WithCancel(context.Background())
	b, _, ends := onFake(t, life)
	if _, err := b.Apply(context.Background(), b.Plan(state())); err != nil {
		t.Fatal(err)
	}
	cancel()
	ended(t, b)
	deadline := time.Now().Add(5 * time.Second)
	for !isClosed(ends.tun(0).closed) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !isClosed(ends.tun(0).closed) || !isClosed(ends.binds[0].closed) {
		t.Error("the end of the lifetime context left the device or the socket open")
	}
	if _, err := b.Apply(context.Background(), b.Plan(state())); !errors.Is(err, errClosed) {
		t.Errorf("Apply after the lifetime ended: %v", err)
	}
}

func TestApplyHonoursItsContext(t *testing.T) {
	b, f, ends := onFake(t, t.Context())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Apply(ctx, b.Plan(state())); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with an ended context: %v", err)
	}
	if ends.opened() != 0 {
		t.Error("Apply with an ended context opened the device")
	}
	writes(t, "apply with an ended context", f, "")
}

func TestDeviceThatCannotBeSetUp(t *testing.T) {
	b, f, ends := onFake(t, t.Context())
	f.Fail("ip addr replace", errors.New("permission denied"))
	_, err := b.Apply(context.Background(), b.Plan(state()))
	if err == nil || err.Error() != "udp: ip addr replace 10.244.1.0/16 dev flannel0: permission denied" {
		t.Errorf("error %v", err)
	}
	// The data path runs, so the next Apply only puts the device right.
	f.Fail("ip addr replace", nil)
	f.Writes()
	if _, err := b.Apply(context.Background(), b.Plan(state())); err != nil {
		t.Fatal(err)
	}
	writes(t, "the next apply", f, "ip addr replace 10.244.1.0/16 dev flannel0\n")
	if ends.opened() != 1 {
		t.Errorf("opened %d devices, want 1", ends.opened())
	}
}
