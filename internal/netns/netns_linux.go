// Package netns is the only code that enters network namespaces: it creates
// and deletes named namespaces, runs a function inside one on a locked
// thread, and starts processes inside one.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces live, as for `ip netns`.
const Dir = "/run/netns"

// Path is the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Exists reports whether a named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Create makes a named namespace, same as `ip netns add NAME`, and leaves
// the calling thread where it was. Its loopback is brought up.
func Create(name string) (err error) {
	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: get current namespace: %w", name, err)
	}
	defer orig.Close()
	h, err := vns.NewNamed(name) // switches this thread into the new namespace
	if err != nil {
		if serr := vns.Set(orig); serr != nil {
			return fmt.Errorf("netns %s: create: %w (and could not return: %v)", name, err, serr)
		}
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: create: %w", name, err)
	}
	h.Close()
	if err := vns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine rather than
		// running other goroutines in the wrong namespace.
		return fmt.Errorf("netns %s: return to the original namespace: %w", name, err)
	}
	runtime.UnlockOSThread()
	nh, err := Handle(name)
	if err != nil {
		return err
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netns %s: find lo: %w", name, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netns %s: set lo up: %w", name, err)
	}
	return nil
}

// Delete removes a named namespace, same as `ip netns del NAME`. A missing
// namespace is success.
func Delete(name string) error {
	p := Path(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: remove: %w", name, err)
	}
	return nil
}

// Handle returns a netlink handle that works inside the named namespace.
func Handle(name string) (*netlink.Handle, error) {
	h, err := vns.GetFromPath(Path(name))
	if err != nil {
		return nil, fmt.Errorf("netns %s: open: %w", name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netns %s: netlink handle: %w", name, err)
	}
	return nh, nil
}

// Fd opens the named namespace; the caller closes it.
func Fd(name string) (vns.NsHandle, error) {
	h, err := vns.GetFromPath(Path(name))
	if err != nil {
		return h, fmt.Errorf("netns %s: open: %w", name, err)
	}
	return h, nil
}

// Do runs fn on a thread inside the named namespace (sockets fn opens stay
// in it), following the thread rules of containernetworking's ns package.
func Do(name string, fn func() error) error {
	n, err := ns.GetNS(Path(name))
	if err != nil {
		return fmt.Errorf("netns %s: open: %w", name, err)
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return fn() })
}

// execReady is set by HandleExec: only then may Command re-execute us.
var execReady atomic.Bool

// ExecArg is the hidden subcommand of the weft binary that enters a
// namespace and execs a program: `weft __netns-exec NAME PROGRAM ARGS...`.
const ExecArg = "__netns-exec"

// Command returns a command that runs argv inside the named namespace, by
// re-executing the current binary (which calls Exec), the same as
// `ip netns exec NAME argv...`.
func Command(name string, argv ...string) *exec.Cmd {
	if !execReady.Load() {
		// Re-executing a binary that does not handle ExecArg would run the
		// binary itself again (a test binary would rerun its tests).
		cmd := exec.Command("/nonexistent")
		cmd.Err = errors.New("netns: Command used in a binary that does not call netns.HandleExec")
		return cmd
	}
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	return exec.Command(self, append([]string{ExecArg, name}, argv...)...)
}

// Exec enters the named namespace and replaces the process with argv. It
// returns only on failure.
func Exec(name string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("netns exec: no command")
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("netns exec: %w", err)
	}
	runtime.LockOSThread() // exec happens from this thread, now in the namespace
	h, err := vns.GetFromPath(Path(name))
	if err != nil {
		return fmt.Errorf("netns %s: open: %w", name, err)
	}
	if err := vns.Set(h); err != nil {
		return fmt.Errorf("netns %s: enter: %w", name, err)
	}
	return syscall.Exec(prog, argv, os.Environ())
}

// HandleExec must be called first in main (and in TestMain of tests that
// use Command): when the process was started by Command it enters the
// namespace and execs the target, and otherwise returns.
func HandleExec() {
	execReady.Store(true)
	if len(os.Args) < 3 || os.Args[1] != ExecArg {
		return
	}
	err := Exec(os.Args[2], os.Args[3:])
	fmt.Fprintf(os.Stderr, "weft: %v\n", err)
	os.Exit(127)
}

// Dialer returns a dial function whose sockets are created inside the named
// namespace, for clients (HTTP, Kubernetes) in a process that lives
// elsewhere. A socket stays in the namespace it was created in.
func Dialer(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(name, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
