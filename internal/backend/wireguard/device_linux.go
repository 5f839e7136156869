package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/kernel"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/tundev"
)

// addKernelLink creates a kernel WireGuard device, same as `ip link add
// NAME mtu MTU type wireguard`, in the calling thread's namespace.
func addKernelLink(name string, mtu int) error {
	l := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, LinkType: KindWireGuard}
	if err := netlink.LinkAdd(l); err != nil {
		return fmt.Errorf("ip link add %s mtu %d type wireguard: %w", name, mtu, err)
	}
	return nil
}

// unsupported reports whether err says the kernel has no WireGuard: the
// kernel knows no link kind "wireguard" (EOPNOTSUPP, once it failed to load
// the module) or no generic netlink family for it.
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) ||
		errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}

// kernelLink is a kernel WireGuard device, configured through wgctrl
// (generic netlink).
type kernelLink struct {
	name string
	c    *wgctrl.Client
}

// openKernel opens the kernel device name, creating it if it is missing
// (`ip link add NAME type wireguard`).
func openKernel(name string, mtu int) (*kernelLink, error) {
	if _, err := netlink.LinkByName(name); err != nil {
		if !errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, fmt.Errorf("ip link show %s: %w", name, err)
		}
		if err := addKernelLink(name, mtu); err != nil {
			return nil, err
		}
	}
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open the WireGuard control client (generic netlink): %w", err)
	}
	return &kernelLink{name: name, c: c}, nil
}

func (l *kernelLink) get() (State, error) {
	d, err := l.c.Device(l.name)
	if err != nil {
		return State{}, err
	}
	st := State{PrivateKey: d.PrivateKey, ListenPort: d.ListenPort, Status: map[[KeyLen]byte]PeerStatus{}}
	for _, p := range d.Peers {
		q := Peer{Key: p.PublicKey, PSK: p.PresharedKey, Keepalive: p.PersistentKeepaliveInterval}
		if p.Endpoint != nil {
			q.Endpoint = unmap(p.Endpoint.AddrPort())
		}
		for _, a := range p.AllowedIPs {
			if pr, ok := netconv.Prefix(&a); ok {
				q.AllowedIPs = append(q.AllowedIPs, pr)
			}
		}
		slices.SortFunc(q.AllowedIPs, comparePrefix)
		st.Peers = append(st.Peers, q)
		st.Status[q.Key] = PeerStatus{LastHandshake: p.LastHandshakeTime, RxBytes: uint64(p.ReceiveBytes), TxBytes: uint64(p.TransmitBytes)}
	}
	return st, nil
}

func (l *kernelLink) set(c Config) error {
	cfg := wgtypes.Config{ListenPort: c.ListenPort}
	if c.PrivateKey != nil {
		k := wgtypes.Key(*c.PrivateKey)
		cfg.PrivateKey = &k
	}
	for _, p := range c.Peers {
		pc := wgtypes.PeerConfig{PublicKey: p.Key, Remove: p.Remove}
		if p.KeepaliveOnly {
			ka := p.Keepalive
			pc.UpdateOnly, pc.PersistentKeepaliveInterval = true, &ka
		} else if !p.Remove {
			psk, ka := wgtypes.Key(p.PSK), p.Keepalive
			pc.PresharedKey, pc.PersistentKeepaliveInterval = &psk, &ka
			if p.Endpoint.IsValid() {
				pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
			}
			pc.ReplaceAllowedIPs = true
			for _, a := range p.AllowedIPs {
				pc.AllowedIPs = append(pc.AllowedIPs, *netconv.IPNet(a))
			}
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	return l.c.ConfigureDevice(l.name, cfg)
}

// alive: a kernel device deleted by hand is created again by openKernel
// only when the link is opened again; wgctrl names it, so any device of
// the name will do.
func (l *kernelLink) alive(k kernel.Kernel) bool {
	kl, err := k.LinkByName(l.name)
	return err == nil && kl.Kind == KindWireGuard
}

func (l *kernelLink) close() error { return l.c.Close() }

// userLink is a wireguard-go device in this process over a persistent TUN
// device, with its control socket.
type userLink struct {
	name   string
	index  int // the TUN's link index
	dev    *device.Device
	uapi   net.Listener
	done   sync.WaitGroup // the control socket's goroutines
	close1 sync.Once
	err    error

	mu      sync.Mutex            // guards the fields below
	conns   map[net.Conn]struct{} // the control connections open
	closing bool                  // close has begun: connections accepted now are closed at once
}

// openUserspace opens the TUN device name (creating it, persistent, if it
// is missing; same as `ip tuntap add NAME mode tun vnet_hdr`, then
// attached), starts wireguard-go on it with the private key and the listen
// port, up, and serves its control socket at <socketDir>/<name>.sock.
func openUserspace(name string, mtu int, priv [KeyLen]byte, port int, socketDir string, k kernel.Kernel, log *slog.Logger) (_ *userLink, err error) {
	tdev, err := tundev.Open(name, mtu, true)
	if err != nil {
		return nil, err
	}
	kl, err := k.LinkByName(name)
	if err != nil {
		tdev.Close()
		return nil, err
	}
	l := &userLink{name: name, index: kl.Index}
	debug := func(format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("wireguard-go: "+fmt.Sprintf(format, args...), "device", name)
		}
	}
	l.dev = device.NewDevice(withoutLinkState(tdev), conn.NewDefaultBind(), &device.Logger{Verbosef: debug, Errorf: debug})
	defer func() {
		if err != nil {
			l.dev.Close()
		}
	}()
	c := Config{PrivateKey: &priv, ListenPort: &port}
	if err := l.dev.IpcSet(c.UAPI()); err != nil {
		return nil, fmt.Errorf("%s: set the private key and listen port %d: %w", name, port, err)
	}
	// Up binds the UDP sockets, in the calling thread's namespace.
	if err := l.dev.Up(); err != nil {
		return nil, fmt.Errorf("%s: listen on UDP port %d: %w", name, port, err)
	}
	if err := l.serve(filepath.Join(socketDir, name+".sock")); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// serve listens on the control socket path (listenUAPI) and answers each
// connection with wireguard-go's configuration protocol until close.
// controlSessionLimit bounds one control connection (a variable for
// tests).
var controlSessionLimit = 10 * time.Second

func (l *userLink) serve(path string) error {
	var err error
	if l.uapi, err = listenUAPI(path); err != nil {
		return err
	}
	l.conns = map[net.Conn]struct{}{}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		for {
			c, err := l.uapi.Accept()
			if err != nil {
				return
			}
			if !l.track(c) {
				c.Close()
				continue
			}
			// A client that stops halfway through a set holds
			// wireguard-go's configuration lock, and with it the agent's
			// next sync: a connection gets controlSessionLimit in all
			// (wg sends one request per connection).
			_ = c.SetDeadline(time.Now().Add(controlSessionLimit))
			l.done.Add(1)
			go func() {
				defer l.done.Done()
				l.dev.IpcHandle(c) // closes c
				l.mu.Lock()
				delete(l.conns, c)
				l.mu.Unlock()
			}()
		}
	}()
	return nil
}

// track records the control connection c, unless close has begun.
func (l *userLink) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *userLink) get() (State, error) {
	s, err := l.dev.IpcGet()
	if err != nil {
		return State{}, err
	}
	return ParseUAPI(s)
}

func (l *userLink) set(c Config) error { return l.dev.IpcSet(c.UAPI()) }

func (l *userLink) alive(k kernel.Kernel) bool {
	kl, err := k.LinkByIndex(l.index)
	return err == nil && kl.Name == l.name
}

// close stops wireguard-go and closes the TUN's descriptor (the device
// persists) and the control socket (its file is removed), and the control
// connections open: a client that keeps one open without a word (a hung
// `wg` or socat) does not hold close up.
func (l *userLink) close() error {
	l.close1.Do(func() {
		l.err = l.uapi.Close()
		l.mu.Lock()
		l.closing = true
		for c := range l.conns {
			c.Close() // ends IpcHandle's read
		}
		l.mu.Unlock()
		l.dev.Close()
		l.done.Wait()
	})
	return l.err
}

// linkStateless is a TUN device whose up and down events are not passed
// on: wireguard-go would bring itself up or down with the link (binding
// its sockets on whichever thread reads the events), while the backend
// keeps it up from its first Apply to Close.
type linkStateless struct {
	tun.Device
	events chan tun.Event
}

func withoutLinkState(d tun.Device) tun.Device {
	t := &linkStateless{Device: d, events: make(chan tun.Event, 4)}
	go func() {
		defer close(t.events)
		for e := range d.Events() {
			if e &^= tun.EventUp | tun.EventDown; e != 0 {
				t.events <- e
			}
		}
	}()
	return t
}

func (t *linkStateless) Events() <-chan tun.Event { return t.events }

// listenUAPI listens on path, a Unix socket for WireGuard's configuration
// protocol (what `wg` talks to; wireguard-go's ipc.UAPIListen, whose
// directory is fixed). Whoever can connect to it can set the device's keys
// and peers. Its directory is created 0700 if missing, and refused if group
// or others may write to it or another user owns it (they could put their
// own socket in its place). A socket left by a process that is gone is
// replaced; one that answers is another process's, and an error.
//
// The socket never shows at path with other permissions than 0600: it is
// bound in a fresh 0700 directory beside path (os.MkdirTemp), made 0600
// there and renamed onto path. wireguard-go sets the umask to 077 around
// the bind instead, but the umask is the process's: every goroutine that
// creates a file meanwhile would get it too. Closing the listener removes
// path if it is still this socket.
func listenUAPI(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is served by another process (a second agent?)", path)
	}
	tmp, err := os.MkdirTemp(dir, ".uapi") // 0700, whatever the umask
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	// A short name: a socket's path has at most 107 bytes.
	bound := filepath.Join(tmp, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // it is renamed; uapiListener.Close removes it
	var st unix.Stat_t
	err = os.Chmod(bound, 0o600)
	if err == nil {
		err = unix.Lstat(bound, &st)
	}
	if err == nil {
		// `mv`: atomic, and replaces a stale socket (or anything else) at
		// path without following it.
		err = os.Rename(bound, path)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &uapiListener{UnixListener: l, path: path, dev: st.Dev, ino: st.Ino}, nil
}

// checkSocketDir refuses a control socket directory that group or others
// may write to, or that a user other than this process's or root owns.
func checkSocketDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("control socket directory %s is not a directory", dir)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("control socket directory %s is writable by group or others (mode %04o): other users could replace the socket that sets WireGuard's keys; chmod go-w %s, or use another directory", dir, st.Mode&0o7777, dir)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("control socket directory %s belongs to user %d, not this process's user or root: use a directory of this user's", dir, st.Uid)
	}
	return nil
}

// uapiListener is a control socket renamed into place at path: Close
// removes path if it is still that socket (dev, ino), not one another
// process put there since.
type uapiListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
}

func (l *uapiListener) Close() error {
	err := l.UnixListener.Close()
	var st unix.Stat_t
	if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("remove control socket %s: %w", l.path, rerr)
		}
	}
	return err
}
