// Package nflog reads the packets that the NetworkPolicy rule set logs to
// an NFLOG group (`log group N prefix "weft-deny-in "`, see package
// internal/policy/nft) from the kernel's nfnetlink_log over netlink, the
// way `ulogd` or `tcpdump -i nflog:N` does.
//
// Listen binds the group (NFULNL_CFG_CMD_BIND; one reader per group and
// network namespace, the kernel answers EBUSY to a second), asks for the
// first CopyRange bytes of each packet, enough for the IP and transport
// headers, and hands each logged packet to a callback as a Packet: the
// rule's prefix, addresses, protocol and ports. Parsing is a pure function
// of the netlink message (Parse), fuzzed, because its input comes from the
// wire: a packet the parser cannot read is skipped, never trusted.
//
// The kernel drops log messages rather than wait for a slow reader (the
// socket's receive queue fills and a read fails with ENOBUFS); Listen
// skips over such a gap and keeps reading, so logging never holds up
// forwarding.
package nflog
