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
}

// openUserspace opens the TUN device name (creating it, persistent, if it
// is missing; same as `ip tuntap add NAME mode tun vnet_hdr`, then
// attached), starts wireguard-go on it with the private key and the listen
// port, up, and serves its control socket at <socketDir>/<name>.sock.
func openUserspace(name string, mtu int, priv [KeyLen]byte, port int, socketDir string, k kernel.Kernel, log *slog.Logger) (_ *userLink, err error) {
	tdev, err := openPersistentTUN(name, mtu)
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
	if l.uapi, err = listenUAPI(filepath.Join(socketDir, name+".sock")); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		for {
			c, err := l.uapi.Accept()
			if err != nil {
				return
			}
			l.done.Add(1)
			go func() { defer l.done.Done(); l.dev.IpcHandle(c) }()
		}
	}()
	return l, nil
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
// persists) and the control socket (its file is removed).
func (l *userLink) close() error {
	l.close1.Do(func() {
		l.err = l.uapi.Close()
		l.dev.Close()
		l.done.Wait()
	})
	return l.err
}

// openPersistentTUN attaches to the TUN device name, creating it if it is
// missing, and makes it persistent (TUNSETPERSIST): it stays, with its
// addresses and routes, when the descriptor is closed, so that across an
// agent restart what is routed to it is dropped rather than sent by
// another route. wireguard-go's flags (a virtio-net header, for its
// TSO/GRO offloads) are the same as tun.CreateTUN's.
func openPersistentTUN(name string, mtu int) (tun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tun device %s is held by another process (a second agent?): %w", name, err)
		case errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("tun device %s exists with other flags (not wireguard-go's); delete it (ip link del %s): %w", name, name, err)
		}
		return nil, fmt.Errorf("ip tuntap add %s mode tun vnet_hdr: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make tun device %s persistent: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	dev, err := tun.CreateTUNFromFile(os.NewFile(uintptr(fd), "/dev/net/tun"), mtu)
	if err != nil {
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	return dev, nil
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
// directory is fixed). The directory is created (0755) if missing; a
// socket left by a process that is gone is replaced; one that answers is
// another process's, and an error. The socket is 0600; closing the
// listener removes it.
func listenUAPI(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is served by another process (a second agent?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale control socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}
