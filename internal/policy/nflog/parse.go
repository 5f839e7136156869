package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"
)

// Packet is one packet logged to an NFLOG group.
type Packet struct {
	// Prefix is the log rule's prefix as written in the rule, e.g.
	// "weft-deny-in " (with its trailing space).
	Prefix string
	// Src and Dst are the IP header's addresses.
	Src, Dst netip.Addr
	// Protocol is the transport protocol by its usual name ("TCP", "UDP",
	// "SCTP", "ICMP", "ICMPv6", ...), or its number for others ("47").
	Protocol string
	// SrcPort and DstPort are the transport ports for TCP, UDP, UDP-Lite,
	// SCTP and DCCP; 0 for other protocols, non-first fragments and
	// headers cut short by the copy range.
	SrcPort, DstPort uint16
}

// String formats p on one line for logs.
func (p Packet) String() string {
	if p.SrcPort == 0 && p.DstPort == 0 {
		return fmt.Sprintf("%s%s %s -> %s", p.Prefix, p.Protocol, p.Src, p.Dst)
	}
	return fmt.Sprintf("%s%s %s -> %s", p.Prefix, p.Protocol,
		netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
}

// nfnetlink_log message and attribute numbers, from
// include/uapi/linux/netfilter/nfnetlink_log.h and nfnetlink.h.
const (
	nfnlSubsysULOG = 4 // NFNL_SUBSYS_ULOG

	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	// Packet attributes (enum nfulnl_attr_type).
	attrPayload = 9  // NFULA_PAYLOAD: the packet from its network header
	attrPrefix  = 10 // NFULA_PREFIX: NUL-terminated

	// Config attributes (enum nfulnl_attr_config).
	cfgCmd     = 1 // NFULA_CFG_CMD: struct nfulnl_msg_config_cmd { __u8 command; }
	cfgMode    = 2 // NFULA_CFG_MODE: struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 pad; }
	cfgTimeout = 4 // NFULA_CFG_TIMEOUT: __be32, in 1/100 s
	cfgQThresh = 5 // NFULA_CFG_QTHRESH: __be32, messages batched per send

	cmdBind    = 1 // NFULNL_CFG_CMD_BIND
	copyPacket = 2 // NFULNL_COPY_PACKET

	nfgenmsgLen = 4 // struct nfgenmsg { __u8 nfgen_family; __u8 version; __be16 res_id; }
)

// packetType is the netlink message type of a logged packet.
const packetType = netlink.HeaderType(nfnlSubsysULOG<<8 | msgPacket)

// errNoPayload is the error for a message without NFULA_PAYLOAD (the group
// copies metadata only, or the message is not a packet).
var errNoPayload = errors.New("no payload")

// Parse reads a logged packet from the data of an NFULNL_MSG_PACKET netlink
// message (struct nfgenmsg, then NFULA_* attributes). The payload must hold
// at least the IP header; ports are read when the transport header's first
// four bytes are there too.
func Parse(data []byte) (Packet, error) {
	if len(data) < nfgenmsgLen {
		return Packet{}, fmt.Errorf("nflog message of %d bytes: shorter than its nfgenmsg header", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenmsgLen:])
	if err != nil {
		return Packet{}, fmt.Errorf("nflog message: %w", err)
	}
	var p Packet
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			p.Prefix, _, _ = strings.Cut(string(ad.Bytes()), "\x00")
		case attrPayload:
			payload = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return Packet{}, fmt.Errorf("nflog message attributes: %w", err)
	}
	if payload == nil {
		return Packet{}, fmt.Errorf("nflog message: %w", errNoPayload)
	}
	if err := parsePayload(payload, &p); err != nil {
		return Packet{}, fmt.Errorf("nflog payload: %w", err)
	}
	return p, nil
}

// IP protocol numbers.
const (
	protoHopOpts  = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoDCCP     = 33
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoICMPv6   = 58
	protoDstOpts  = 60
	protoSCTP     = 132
	protoUDPLite  = 136
)

// protoNames names the protocols a NetworkPolicy can name, and ICMP.
var protoNames = map[uint8]string{
	protoICMP:    "ICMP",
	protoTCP:     "TCP",
	protoUDP:     "UDP",
	protoDCCP:    "DCCP",
	protoESP:     "ESP",
	protoAH:      "AH",
	protoICMPv6:  "ICMPv6",
	protoSCTP:    "SCTP",
	protoUDPLite: "UDPLite",
}

func protoName(n uint8) string {
	if s, ok := protoNames[n]; ok {
		return s
	}
	return strconv.Itoa(int(n))
}

// hasPorts reports whether a protocol's header starts with 16-bit source
// and destination ports.
func hasPorts(n uint8) bool {
	switch n {
	case protoTCP, protoUDP, protoSCTP, protoUDPLite, protoDCCP:
		return true
	}
	return false
}

// maxExtHeaders bounds the walk over IPv6 extension headers.
const maxExtHeaders = 8

// parsePayload fills p's addresses, protocol and ports from an IPv4 or
// IPv6 packet that starts at its network header.
func parsePayload(b []byte, p *Packet) error {
	if len(b) == 0 {
		return errors.New("empty packet")
	}
	var proto uint8
	var l4 []byte // the transport header; nil when it is not in this packet
	switch v := b[0] >> 4; v {
	case 4:
		if len(b) < 20 {
			return fmt.Errorf("IPv4 header of %d bytes, want 20", len(b))
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 {
			return fmt.Errorf("IPv4 header length %d, want at least 20", ihl)
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		proto = b[9]
		fragOff := binary.BigEndian.Uint16(b[6:8]) & 0x1fff
		if fragOff == 0 && len(b) >= ihl {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return fmt.Errorf("IPv6 header of %d bytes, want 40", len(b))
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = skipIPv6Ext(b[6], b[40:])
	default:
		return fmt.Errorf("IP version %d", v)
	}
	p.Protocol = protoName(proto)
	if hasPorts(proto) && len(l4) >= 4 {
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	}
	return nil
}

// skipIPv6Ext walks the IPv6 extension headers (RFC 8200 section 4) that
// start b, whose type is next, and returns the upper-layer protocol and
// its header, or nil for the header when it is not in b: cut short, after
// a non-first fragment, or behind ESP.
func skipIPv6Ext(next uint8, b []byte) (uint8, []byte) {
	for range maxExtHeaders {
		var n int
		switch next {
		case protoHopOpts, protoRouting, protoDstOpts:
			if len(b) < 2 {
				return next, nil
			}
			n = (int(b[1]) + 1) * 8
		case protoFragment:
			if len(b) < 8 {
				return next, nil
			}
			if binary.BigEndian.Uint16(b[2:4])&^0x7 != 0 { // fragment offset
				return b[0], nil
			}
			n = 8
		case protoAH:
			if len(b) < 2 {
				return next, nil
			}
			n = (int(b[1]) + 2) * 4
		default: // an upper layer, ESP or No Next Header
			return next, b
		}
		if len(b) < n {
			return b[0], nil
		}
		next, b = b[0], b[n:]
	}
	return next, nil
}
