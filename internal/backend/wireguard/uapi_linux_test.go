package wireguard

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
	"github.com/weftnet/weft/internal/tundev"
)

// TestUAPISocketPermissions: with umask 000 (some container runtimes,
// systemd UMask=0000) the control socket is never seen at its path with
// other permissions than 0600, not even between the bind and a chmod: a
// watcher stats the path in a loop while the socket is made again and
// again. The directory is created 0700; a directory group or others may
// write to is refused in one line naming it; a stale socket is replaced,
// a served one is not; Close removes the socket, unless another has taken
// its place.
func TestUAPISocketPermissions(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "run", "wireguard") // absent
	path := filepath.Join(dir, "flannel-wg.sock")

	var stop atomic.Bool
	var bad atomic.Value // the first wrong mode seen
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for !stop.Load() {
			if fi, err := os.Lstat(path); err == nil && (fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600) {
				bad.CompareAndSwap(nil, fi.Mode().String())
			}
		}
	}()
	for range 300 {
		l, err := listenUAPI(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	watcher.Wait()
	if m := bad.Load(); m != nil {
		t.Errorf("the control socket showed at its path with mode %s", m)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory created %v (%v), want 0700", fi.Mode(), err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is left after Close: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the socket directory: %v", ents)
	}

	// A stale socket (its listener gone without removing it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err := listenUAPI(path)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	// A served one is another agent's.
	if l2, err := listenUAPI(path); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Errorf("a second listener on a served socket: %v", err)
		if l2 != nil {
			l2.Close()
		}
	}
	// Close leaves a socket that took this one's place.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed another listener's socket: %v", err)
	}

	// Directories others could write to are refused, naming them.
	for _, mode := range []os.FileMode{0o777, 0o770, 0o1777} {
		d := filepath.Join(t.TempDir(), "wg")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		l, err := listenUAPI(filepath.Join(d, "flannel-wg.sock"))
		if err == nil {
			l.Close()
			t.Errorf("socket directory of mode %v accepted", mode)
		} else if msg := err.Error(); !strings.Contains(msg, d) || strings.Contains(msg, "\n") {
			t.Errorf("mode %v: %q does not name %s in one line", mode, msg, d)
		}
	}
	// /var/run/wireguard as wireguard-go makes it (0755) will do.
	d := filepath.Join(t.TempDir(), "wg")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if l, err := listenUAPI(filepath.Join(d, "flannel-wg.sock")); err != nil {
		t.Errorf("a 0755 socket directory: %v", err)
	} else {
		l.Close()
	}
}

// TestCloseWithIdleControlClient: a client that connects to the control
// socket and never speaks (a hung `wg`, socat) does not hold close up,
// nor does one in the middle of a request; a client that asks is
// answered.
func TestCloseWithIdleControlClient(t *testing.T) {
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	l := &userLink{name: DeviceName, dev: dev}
	path := filepath.Join(t.TempDir(), DeviceName+".sock")
	if err := l.serve(path); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		t.Fatal(err)
	}
	var ans strings.Builder
	for sc := bufio.NewScanner(c); sc.Scan() && sc.Text() != ""; {
		ans.WriteString(sc.Text() + "\n")
	}
	if !strings.Contains(ans.String(), "errno=0\n") {
		t.Fatalf("get: %q", ans.String())
	}
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// A set never finished: wireguard-go holds the device's
	// configuration lock while it waits for the rest.
	half, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := io.WriteString(half, "set=1\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // both are being served
	closed := make(chan error, 1)
	go func() { closed <- l.close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close hangs on a control client that does not speak")
	}
	// The idle client sees its connection closed.
	_ = idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the idle client's read after close: %v, want EOF", err)
	}
}

// TestTUNFailedAttachReleased: an attach that fails after TUNSETIFF (here
// wireguard-go's setMTU, with an MTU no device takes) releases the TUN,
// so that the next attach succeeds rather than failing with EBUSY as if
// another agent held it.
func TestTUNFailedAttachReleased(t *testing.T) {
	ns := netnstest.New(t)
	err := netns.Do(ns, func() error {
		if d, err := tundev.Open(DeviceName, 1<<20, true); err == nil {
			d.Close()
			t.Fatal("MTU 1048576 accepted")
		}
		d, err := tundev.Open(DeviceName, 1420, true)
		if err != nil {
			return err
		}
		return d.Close()
	})
	if err != nil {
		t.Errorf("attach after a failed attach: %v", err)
	}
}

// TestHalfSetReleased: a control client that stops halfway through a set
// holds wireguard-go's configuration lock only until its connection's
// time is up; the agent's own reads of the device then go on.
func TestHalfSetReleased(t *testing.T) {
	defer func(d time.Duration) { controlSessionLimit = d }(controlSessionLimit)
	controlSessionLimit = 300 * time.Millisecond
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	l := &userLink{name: DeviceName, dev: dev}
	path := filepath.Join(t.TempDir(), DeviceName+".sock")
	if err := l.serve(path); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	defer l.close()
	half, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := io.WriteString(half, "set=1\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the set holds the lock now
	got := make(chan error, 1)
	go func() { _, err := dev.IpcGet(); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device's configuration stays locked by a client that stopped halfway through a set")
	}
}
