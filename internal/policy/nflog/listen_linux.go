package nflog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netns"
)

// CopyRange is how many bytes of each packet the kernel copies: an IPv6
// header with a few extension headers and a transport header's ports fit.
const CopyRange = 128

// Batching asked of the kernel: a message is sent when this many packets
// wait, or after flushTimeout (1/100 s units). The log rules are rate
// limited, so batches stay small; the timeout bounds the delay.
const (
	qThreshold   = 16
	flushTimeout = 10 // 100 ms
)

// readBuffer is the socket's receive buffer: room for a burst of logged
// packets (about 250 bytes each at CopyRange) while fn runs.
const readBuffer = 1 << 20

// Listen reads the packets logged to NFLOG group in the named network
// namespace ("" for the caller's own) and calls fn for each, one at a time
// on Listen's goroutine, until ctx ends; then it returns nil, and the
// group is unbound (closing the socket releases it). It returns an error
// at once when the group cannot be bound: another reader holds it
// (ErrGroupBusy), or the caller lacks CAP_NET_ADMIN in the namespace. It is the
// same as `tcpdump -i nflog:GROUP -s 128` for the packets' headers.
// A message that does not parse is skipped; a read error other than lost
// messages (ENOBUFS, when fn falls behind) ends Listen with that error.
func Listen(ctx context.Context, group uint16, namespace string, fn func(Packet)) error {
	c, err := dial(namespace)
	if err != nil {
		return fmt.Errorf("nflog group %d: %w", group, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()

	if err := bind(c, group, fn); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("nflog: bind group %d%s: %w", group, inNamespace(namespace), explain(err))
	}
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			continue // the kernel dropped messages while fn ran; read on
		}
		if err != nil {
			return fmt.Errorf("nflog group %d%s: receive: %w", group, inNamespace(namespace), err)
		}
		deliver(msgs, fn)
	}
}

// dial opens a NETLINK_NETFILTER socket inside the namespace (a socket
// stays in the namespace it was created in).
func dial(namespace string) (*netlink.Conn, error) {
	var c *netlink.Conn
	open := func() error {
		var err error
		c, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			return fmt.Errorf("open netfilter netlink socket: %w", err)
		}
		return nil
	}
	var err error
	if namespace == "" {
		err = open()
	} else {
		err = netns.Do(namespace, open)
	}
	if err != nil {
		return nil, err
	}
	if err := c.SetReadBuffer(readBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("set netlink receive buffer: %w", err)
	}
	return c, nil
}

// bind binds the group to this socket and sets its copy mode in one
// config message, so the kernel creates the instance and applies the mode
// before it answers (nfulnl_recv_config): the same as libnetfilter_log's
// nflog_bind_group and nflog_set_mode(NFULNL_COPY_PACKET, CopyRange), and
// its qthresh and timeout. Packets logged before the answer arrives are
// delivered to fn.
func bind(c *netlink.Conn, group uint16, fn func(Packet)) error {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(cfgCmd, []byte{cmdBind})
	mode := binary.BigEndian.AppendUint32(nil, CopyRange)
	ae.Bytes(cfgMode, append(mode, copyPacket, 0))
	ae.Bytes(cfgQThresh, binary.BigEndian.AppendUint32(nil, qThreshold))
	ae.Bytes(cfgTimeout, binary.BigEndian.AppendUint32(nil, flushTimeout))
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	// struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id the
	// group in network byte order.
	data := append([]byte{unix.AF_UNSPEC, 0, byte(group >> 8), byte(group)}, attrs...)
	req, err := c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysULOG<<8 | msgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: data,
	})
	if err != nil {
		return err
	}
	// The answer is an error message carrying 0 or an errno; Receive turns
	// a nonzero one into an error. Logged packets may come first.
	for {
		msgs, err := c.Receive()
		if err != nil {
			return err
		}
		deliver(msgs, fn)
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == req.Header.Sequence {
				return nil
			}
		}
	}
}

// deliver calls fn for each logged packet among msgs.
func deliver(msgs []netlink.Message, fn func(Packet)) {
	for _, m := range msgs {
		if m.Header.Type != packetType {
			continue
		}
		p, err := Parse(m.Data)
		if err != nil {
			continue
		}
		fn(p)
	}
}

// ErrGroupBusy is the cause of a bind error when another socket reads the
// group in that namespace already.
var ErrGroupBusy = errors.New("another process reads this group")

// explain names the usual cause of a bind error. The kernel answers EPERM
// both to a caller without CAP_NET_ADMIN (nfnetlink's check) and for a
// group bound by another socket (nfulnl_recv_config; EBUSY only when the
// same socket binds twice), so the capability decides which it was.
func explain(err error) error {
	switch {
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w (%w)", ErrGroupBusy, err)
	case errors.Is(err, unix.EPERM) && hasNetAdmin():
		return fmt.Errorf("%w (%w)", ErrGroupBusy, err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (needs CAP_NET_ADMIN)", err)
	}
	return err
}

// hasNetAdmin reports whether this thread has CAP_NET_ADMIN in its
// effective set.
func hasNetAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0
}

func inNamespace(namespace string) string {
	if namespace == "" {
		return ""
	}
	return " in netns " + namespace
}
