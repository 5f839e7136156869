// Package tundev opens TUN devices the way the udp and wireguard backends
// use them: wireguard-go's flags (no packet information, a virtio-net
// header for its TSO/GRO offloads, the same as tun.CreateTUN's), and
// persistent or not.
package tundev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// Open attaches to the TUN device name, creating it if it is missing. A
// persistent device (TUNSETPERSIST) stays, with its addresses, routes and
// attached programs, when the descriptor is closed, so that across an agent
// restart what is routed to it is dropped (or carried by a program
// attached to it) rather than sent by another route; a device that is not
// persistent goes with the descriptor, and Open clears the flag a device
// left by a persistent use has.
func Open(name string, mtu int, persist bool) (tun.Device, error) {
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
			return nil, fmt.Errorf("a device %s exists that is not a TUN with weft's flags (a TAP, another kind, or a TUN without a virtio-net header); delete it (ip link del %s): %w", name, name, err)
		}
		return nil, fmt.Errorf("ip tuntap add %s mode tun vnet_hdr: %w", name, err)
	}
	on := 0
	if persist {
		on = 1
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, on); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set tun device %s persistent=%v: %w", name, persist, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	dev, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		// Detach: a descriptor left open would hold the TUN, and every
		// later attach would fail with EBUSY.
		f.Close()
		return nil, fmt.Errorf("tun device %s: %w", name, err)
	}
	return dev, nil
}
