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
// use Command or CommandBind): when the process was started by one of them
// it enters the namespace (and mounts the bind) and execs the target, and
// otherwise returns.
func HandleExec() {
	execReady.Store(true)
	var err error
	switch {
	case len(os.Args) >= 3 && os.Args[1] == ExecArg:
		err = Exec(os.Args[2], os.Args[3:])
	case len(os.Args) >= 5 && os.Args[1] == ExecBindArg:
		err = execBind(os.Args[2], Bind{Src: os.Args[3], Dst: os.Args[4]}, os.Args[5:])
	default:
		return
	}
	fmt.Fprintf(os.Stderr, "weft: %v\n", err)
	os.Exit(127)
}

// Bind is a directory Src bind-mounted onto Dst in a command's private
// mount namespace (CommandBind): the command sees Src's content at Dst,
// and nobody else sees the mount.
type Bind struct {
	Src, Dst string
}

// ExecBindArg is the hidden subcommand of the weft binary that enters a
// network namespace in a private mount namespace with a bind mount and
// execs a program: `weft __netns-exec-bind NAME SRC DST PROGRAM ARGS...`.
const ExecBindArg = "__netns-exec-bind"

// CommandBind is Command with b mounted for the command only: it runs argv
// inside the named network namespace and in a mount namespace of its own
// where b.Src is bind-mounted onto b.Dst, the same as
// `unshare --mount --propagation slave sh -c 'mount --bind SRC DST &&
// ip netns exec NAME argv...'`. Nothing is mounted in the caller's mount
// namespace; b.Dst is created if it is absent, on the host's file system
// (an empty directory that stays after the command).
func CommandBind(name string, b Bind, argv ...string) *exec.Cmd {
	cmd := Command(name, argv...)
	if cmd.Err != nil {
		return cmd
	}
	cmd.Args = append([]string{cmd.Args[0], ExecBindArg, name, b.Src, b.Dst}, argv...)
	return cmd
}

// execBind enters a new mount namespace whose mounts are slaves of the
// caller's (mounts made in it never propagate back), bind-mounts b there,
// enters the named network namespace and replaces the process with argv.
// It returns only on failure, and then the caller must exit (HandleExec
// does): the calling goroutine's thread stays locked in the private mount
// namespace, and maybe in the network namespace. b.Dst, if absent, is
// created (mkdir, 0755) in the file system the caller's mount namespace
// shares: the directory stays on the host after the command, empty.
func execBind(name string, b Bind, argv []string) error {
	if len(argv) == 0 {
		return errors.New("netns exec: no command")
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("netns exec: %w", err)
	}
	// The namespace is opened before the mounts change: its file stays
	// reachable whatever is mounted.
	h, err := vns.GetFromPath(Path(name))
	if err != nil {
		return fmt.Errorf("netns %s: open: %w", name, err)
	}
	// Mount and network namespaces are per thread until exec, which
	// happens from this thread and keeps both.
	runtime.LockOSThread()
	// `unshare --mount`
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("netns exec: unshare the mount namespace: %w", err)
	}
	// `mount --make-rslave /`: the host's mounts still reach this
	// namespace, none of its own goes back.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("netns exec: make / rslave: %w", err)
	}
	if _, err := os.Stat(b.Dst); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(b.Dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("netns exec: create mount point %s: %w", b.Dst, err)
		}
	}
	// `mount --bind SRC DST`
	if err := unix.Mount(b.Src, b.Dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("netns exec: bind %s onto %s: %w", b.Src, b.Dst, err)
	}
	if err := vns.Set(h); err != nil {
		return fmt.Errorf("netns %s: enter: %w", name, err)
	}
	return syscall.Exec(prog, argv, os.Environ())
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
