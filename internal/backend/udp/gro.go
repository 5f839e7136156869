package udp

import "encoding/binary"

const (
	tcpACK = 0x10
	tcpPSH = 0x08
)

// segment describes a TCP/IPv4 packet that may join a super-packet: no IP
// options, not a fragment, ACK set and nothing else but PSH, a payload.
type segment struct {
	hlen    int    // IP and TCP headers
	payload int    // bytes after them
	seq     uint32 // first payload byte's sequence number
	psh     bool   // PSH: the last segment of a super-packet
}

func parseSegment(p []byte) (segment, bool) {
	if len(p) < 40 || p[0] != 0x45 || p[9] != 6 || int(binary.BigEndian.Uint16(p[2:])) != len(p) ||
		binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
		return segment{}, false
	}
	doff := int(p[32]>>4) * 4
	flags := p[33]
	if doff < 20 || 20+doff >= len(p) || flags&tcpACK == 0 || flags&^(tcpACK|tcpPSH) != 0 {
		return segment{}, false
	}
	return segment{hlen: 20 + doff, payload: len(p) - 20 - doff, seq: binary.BigEndian.Uint32(p[24:]), psh: flags&tcpPSH != 0}, true
}

// sameFlow reports whether b's headers match a's in every byte that must
// be equal for b to follow a in one super-packet, as the kernel's TCP GRO
// requires: addresses, ports, TOS, TTL, DF, acknowledgement, header
// length, flags (PSH aside), window and options.
func sameFlow(a, b []byte, hlen int) bool {
	return a[1] == b[1] && a[6]&0x40 == b[6]&0x40 && a[8] == b[8] &&
		string(a[12:24]) == string(b[12:24]) && string(a[28:33]) == string(b[28:33]) &&
		a[33]&^tcpPSH == b[33]&^tcpPSH && string(a[34:36]) == string(b[34:36]) &&
		string(a[40:hlen]) == string(b[40:hlen])
}

// validTCP reports whether a TCP/IPv4 packet's checksum is right.
func validTCP(p []byte) bool {
	return sum(p[20:], pseudo(p, len(p)-20)) == 0xffff
}

// A run is one write to the TUN device: pkts[first] alone, or followed by
// the payloads of more segments of its flow, as one TSO super-packet.
type run struct {
	key   [12]byte // addresses and ports of a TCP segment's flow
	first int      // index into the batch
	hlen  int      // a TCP segment's IP and TCP headers
	more  []int    // the other segments, in sequence order
	size  int      // the first segment's payload: every segment's but the last
	total int      // the super-packet's length so far
	next  uint32
	open  bool // more segments may join
	valid bool // the first segment's checksum was checked and is right
}

// coalescer plans a batch's writes: consecutive segments of one TCP flow
// become one super-packet (the kernel's GRO, done here because a TUN write
// is one packet), everything else is written as it came. Runs keep each
// flow's order; its buffers are kept between batches.
type coalescer struct {
	runs []run
	open []int // indices of open runs, oldest first; a few flows at a time
}

// maxOpen is how many flows a batch coalesces at once; a new one beyond
// them closes the oldest.
const maxOpen = 8

// plan fills c.runs for the packets.
func (c *coalescer) plan(pkts [][]byte) []run {
	for i := range c.runs {
		c.runs[i].more = c.runs[i].more[:0]
	}
	c.runs, c.open = c.runs[:0], c.open[:0]
	for i, p := range pkts {
		seg, ok := parseSegment(p)
		if !ok {
			c.add(run{first: i})
			continue
		}
		if j := c.find(p); j >= 0 {
			r := &c.runs[j]
			q := pkts[r.first]
			if seg.seq == r.next && seg.payload <= r.size && r.total+seg.payload <= 0xffff &&
				sameFlow(q, p, seg.hlen) && (r.valid || validTCP(q)) && validTCP(p) {
				r.valid = true
				r.more = append(r.more, i)
				r.total += seg.payload
				r.next += uint32(seg.payload)
				if seg.psh || seg.payload < r.size {
					c.close(j)
				}
				continue
			}
			c.close(j)
		}
		c.add(run{key: [12]byte(p[12:24]), first: i, hlen: seg.hlen, size: seg.payload, total: len(p), next: seg.seq + uint32(seg.payload), open: !seg.psh})
	}
	return c.runs
}

// add appends a run, reusing the buffer of the one it replaces.
func (c *coalescer) add(r run) {
	if len(c.runs) < cap(c.runs) {
		r.more = c.runs[:len(c.runs)+1][len(c.runs)].more[:0]
	}
	c.runs = append(c.runs, r)
	if !r.open {
		return
	}
	if len(c.open) == maxOpen {
		c.runs[c.open[0]].open = false
		c.open = c.open[:copy(c.open, c.open[1:])]
	}
	c.open = append(c.open, len(c.runs)-1)
}

// find returns the open run of p's flow (same addresses and ports), or -1.
func (c *coalescer) find(p []byte) int {
	for _, j := range c.open {
		if c.runs[j].key == [12]byte(p[12:24]) {
			return j
		}
	}
	return -1
}

func (c *coalescer) close(j int) {
	c.runs[j].open = false
	for k, o := range c.open {
		if o == j {
			c.open = append(c.open[:k], c.open[k+1:]...)
			return
		}
	}
}

// virtio-net header values (linux/virtio_net.h).
const (
	vnetHdrLen       = 10
	vnetNeedsCsum    = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSOTCPv4     = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	tcpChecksumField = 16
)

// superPacket turns a run of more than one segment into one TSO
// super-packet: it rewrites the first segment's headers in place for the
// whole length (IP length and checksum, PSH from the last segment, the
// pseudo-header sum in the TCP checksum for the kernel to complete) and
// fills vnet, the virtio-net header in front of it. The payloads of
// pkts[r.more...] follow the first segment on the wire.
func superPacket(pkts [][]byte, r *run, vnet []byte) {
	p := pkts[r.first]
	binary.BigEndian.PutUint16(p[2:], uint16(r.total))
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], ^sum(p[:20], 0))
	if last := pkts[r.more[len(r.more)-1]]; last[33]&tcpPSH != 0 {
		p[33] |= tcpPSH
	}
	binary.BigEndian.PutUint16(p[20+tcpChecksumField:], pseudo(p, r.total-20))
	vnet[0], vnet[1] = vnetNeedsCsum, vnetGSOTCPv4
	binary.NativeEndian.PutUint16(vnet[2:], uint16(r.hlen))
	binary.NativeEndian.PutUint16(vnet[4:], uint16(r.size))
	binary.NativeEndian.PutUint16(vnet[6:], 20)
	binary.NativeEndian.PutUint16(vnet[8:], tcpChecksumField)
}
