package kernel

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool's legacy commands (linux/ethtool.h).
const (
	ethtoolSTXCSUM = 0x17
	ethtoolGGRO    = 0x2b
	ethtoolSGRO    = 0x2c
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd, data uint32
}

// ifreqData is struct ifreq with ifr_data, the pointer ethtool reads.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

func ethtool(dev string, v *ethtoolValue) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr ifreqData
	if len(dev) >= unix.IFNAMSIZ {
		return fmt.Errorf("device name %q is too long", dev)
	}
	copy(ifr.name[:], dev)
	ifr.data = uintptr(unsafe.Pointer(v))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return errno
	}
	return nil
}

// GRO reports whether generic receive offload is on for device dev of the
// calling thread's namespace (`ethtool -k DEV`, generic-receive-offload).
func GRO(dev string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGGRO}
	if err := ethtool(dev, &v); err != nil {
		return false, fmt.Errorf("read GRO of %s: %w", dev, err)
	}
	return v.data != 0, nil
}

// SetGRO turns generic receive offload on or off for device dev of the
// calling thread's namespace (`ethtool -K DEV gro on|off`).
func SetGRO(dev string, on bool) error { return ethtoolSet(dev, ethtoolSGRO, on, "GRO") }

// SetTxChecksum turns transmit checksum offload on or off for device dev
// of the calling thread's namespace (`ethtool -K DEV tx on|off`). Off, the
// kernel completes every checksum before the device sends a packet, and
// segments every super-packet (TSO needs checksum offload).
func SetTxChecksum(dev string, on bool) error {
	return ethtoolSet(dev, ethtoolSTXCSUM, on, "tx checksumming")
}

// ethtoolSet runs a legacy ethtool set command that takes on or off.
func ethtoolSet(dev string, cmd uint32, on bool, what string) error {
	v := ethtoolValue{cmd: cmd}
	if on {
		v.data = 1
	}
	if err := ethtool(dev, &v); err != nil {
		return fmt.Errorf("set %s of %s: %w", what, dev, err)
	}
	return nil
}
