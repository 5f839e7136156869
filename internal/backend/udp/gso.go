package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A datagram is one packet to send as one UDP datagram: head, followed by
// body on the wire. A packet read whole has it all in head; a segment of a
// split super-packet has its own headers in head and its share of the
// super-packet's payload in body, which stays where the read put it.
type datagram struct{ head, body []byte }

func (d datagram) len() int { return len(d.head) + len(d.body) }

// vnetHdr is the virtio-net header in front of each packet read from a TUN
// device with IFF_VNET_HDR (linux/virtio_net.h), in host byte order.
type vnetHdr struct {
	flags, gsoType       uint8
	gsoSize              uint16
	csumStart, csumOffst uint16
}

// GSO types of the virtio-net header.
const (
	gsoNone  = 0
	gsoTCPv4 = 1
	gsoUDPL4 = 5
	gsoECN   = 0x80
)

func parseVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags: b[0], gsoType: b[1],
		gsoSize:   binary.NativeEndian.Uint16(b[4:]),
		csumStart: binary.NativeEndian.Uint16(b[6:]), csumOffst: binary.NativeEndian.Uint16(b[8:]),
	}
}

var errGSO = errors.New("super-packet the udp backend cannot split")

// splitter turns a packet read from the TUN device into datagrams. It does
// the kernel's part that the virtio-net header left to us: completing a
// partial checksum, and splitting a TSO or USO super-packet into packets of
// gsoSize payload bytes, each with its own headers (IPv4 length, ID and
// checksum; TCP sequence number, flags and checksum; or UDP length and
// checksum), written into an arena kept between calls. The payloads are
// not copied.
type splitter struct {
	arena []byte
}

// split appends p's datagrams to out. p is an IPv4 packet whose header the
// caller has checked; the datagrams stay valid until the next call.
func (s *splitter) split(out []datagram, p []byte, h vnetHdr) ([]datagram, error) {
	typ := h.gsoType &^ gsoECN
	if typ == gsoNone {
		if h.flags&vnetNeedsCsum != 0 {
			// The checksum to complete is the transport's: it starts
			// after the IPv4 header, never inside it.
			at := int(h.csumStart) + int(h.csumOffst)
			if int(h.csumStart) < int(p[0]&0x0f)*4 || int(h.csumStart) >= len(p) || at+2 > len(p) {
				return out, fmt.Errorf("%w: checksum at %d (from %d) of a %d-byte packet", errGSO, at, h.csumStart, len(p))
			}
			// The field holds the pseudo-header sum; the rest is ours.
			binary.BigEndian.PutUint16(p[at:], ^sum(p[h.csumStart:], 0))
		}
		return append(out, datagram{head: p}), nil
	}
	iphl := int(p[0]&0x0f) * 4
	var hl int
	switch {
	case typ == gsoTCPv4 && p[9] == 6 && len(p) > iphl+12:
		hl = iphl + int(p[iphl+12]>>4)*4
		if hl < iphl+20 {
			return out, fmt.Errorf("%w: TCP header of %d bytes", errGSO, hl-iphl)
		}
	case typ == gsoUDPL4 && p[9] == 17:
		hl = iphl + 8
	default:
		return out, fmt.Errorf("%w: GSO type %d, protocol %d", errGSO, h.gsoType, p[9])
	}
	size := int(h.gsoSize)
	if hl > len(p) || size == 0 {
		return out, fmt.Errorf("%w: %d bytes, headers %d, segment size %d", errGSO, len(p), hl, size)
	}
	payload := p[hl:]
	n := max(1, (len(payload)+size-1)/size)
	if need := n * hl; len(s.arena) < need {
		s.arena = make([]byte, max(need, 64*1024))
	}
	id := binary.BigEndian.Uint16(p[4:])
	var seq uint32
	if typ == gsoTCPv4 {
		seq = binary.BigEndian.Uint32(p[iphl+4:])
	}
	for i := range n {
		body := payload[min(i*size, len(payload)):min((i+1)*size, len(payload))]
		head := s.arena[i*hl : (i+1)*hl : (i+1)*hl]
		copy(head, p[:hl])
		binary.BigEndian.PutUint16(head[2:], uint16(hl+len(body)))
		binary.BigEndian.PutUint16(head[4:], id+uint16(i))
		head[10], head[11] = 0, 0
		binary.BigEndian.PutUint16(head[10:], ^sum(head[:iphl], 0))
		l4 := head[iphl:]
		var csumAt int
		if typ == gsoTCPv4 {
			binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*size))
			if i < n-1 {
				l4[13] &^= 0x01 | tcpPSH // FIN and PSH: the last segment's
			}
			if i > 0 {
				l4[13] &^= 0x80 // CWR: the first segment's
			}
			csumAt = tcpChecksumField
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(8+len(body)))
			csumAt = 6
		}
		l4[csumAt], l4[csumAt+1] = 0, 0
		c := ^sum(body, sum(l4, pseudo(head, len(l4)+len(body))))
		if typ == gsoUDPL4 && c == 0 {
			c = 0xffff // a zero UDP checksum means none
		}
		binary.BigEndian.PutUint16(l4[csumAt:], c)
		out = append(out, datagram{head: head, body: body})
	}
	return out, nil
}
