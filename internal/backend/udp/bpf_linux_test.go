package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
	"github.com/weftnet/weft/internal/tundev"
)

// TestProgramNames: the names the agent and the trace look for are the
// compiled programs'.
func TestProgramNames(t *testing.T) {
	if EncapProgram != udpbpfProgWeftUdpEncap || DecapProgram != udpbpfProgWeftUdpDecap {
		t.Errorf("EncapProgram %q, DecapProgram %q; compiled %q, %q", EncapProgram, DecapProgram, udpbpfProgWeftUdpEncap, udpbpfProgWeftUdpDecap)
	}
}

func TestByteOrder(t *testing.T) {
	// The programs compare raw network-order words: in memory, 10.244.1.0
	// is the bytes 10 244 1 0 and port 8285 the bytes 0x20 0x5d, whatever
	// the host's order.
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], be32(netip.MustParseAddr("10.244.1.0")))
	if b != [4]byte{10, 244, 1, 0} {
		t.Errorf("be32(10.244.1.0) in memory: %v", b)
	}
	binary.NativeEndian.PutUint32(b[:], mask32(20))
	if b != [4]byte{255, 255, 240, 0} {
		t.Errorf("mask32(20) in memory: %v", b)
	}
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], be16(8285))
	if p != [2]byte{0x20, 0x5d} {
		t.Errorf("be16(8285) in memory: %v", p)
	}
}

// TestKernelPathAttachReplaceDetach loads the programs in a fresh
// namespace with a TUN device and a veth pair: a second load replaces the
// first's programs in place (one encap program at flannel0's tcx egress,
// one XDP program), the programs stay when their loader closes its handles
// (an agent exiting), the maps follow the peers, another XDP program is
// never replaced, and detachKPath leaves nothing.
func TestKernelPathAttachReplaceDetach(t *testing.T) {
	ns := netnstest.New(t)
	err := netns.Do(ns, func() error {
		dev, err := tundev.Open(DeviceName, 1472, true)
		if err != nil {
			return err
		}
		defer dev.Close()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}); err != nil {
			return err
		}
		tunL, err := netlink.LinkByName(DeviceName)
		if err != nil {
			return err
		}
		v0, _ := netlink.LinkByName("veth0")
		v1, _ := netlink.LinkByName("veth1")
		for _, l := range []netlink.Link{tunL, v0, v1} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		tunIdx, underIdx := tunL.Attrs().Index, v0.Attrs().Index
		own := netip.MustParsePrefix("10.244.1.0/24")
		peers := map[netip.Prefix]netip.AddrPort{
			netip.MustParsePrefix("10.244.2.0/24"): netip.MustParseAddrPort("192.0.2.12:8285"),
			netip.MustParsePrefix("10.244.3.0/24"): netip.MustParseAddrPort("192.0.2.13:8285"),
		}
		// netns.Do runs this on another goroutine: failures are returned,
		// not t.Fatal'd.
		start := func() (*kpath, error) {
			kp, err := loadKPath()
			if err != nil {
				return nil, err
			}
			if err := kp.configure(own, netip.MustParseAddr("192.0.2.11"), underIdx, 8285); err != nil {
				return nil, err
			}
			if err := kp.setPeers(peers); err != nil {
				return nil, err
			}
			return kp, kp.attach(tunIdx, underIdx)
		}
		attached := func() (tcx []ebpf.ProgramID, xdp ebpf.ProgramID) {
			tcx, err := tcxPrograms(tunIdx)
			if err != nil {
				t.Error(err)
			}
			l, _ := netlink.LinkByIndex(underIdx)
			if x := l.Attrs().Xdp; x != nil && x.Attached {
				xdp = ebpf.ProgramID(x.ProgId)
			}
			return tcx, xdp
		}

		kp1, err := start()
		if err != nil {
			return err
		}
		enc1, _ := progID(kp1.objs.WeftUdpEncap)
		dec1, _ := progID(kp1.objs.WeftUdpDecap)
		if tcx, xdp := attached(); len(tcx) != 1 || tcx[0] != enc1 || xdp != dec1 {
			return fmt.Errorf("after the first attach: tcx %v xdp %v, want [%d] %d", tcx, xdp, enc1, dec1)
		}
		// Attaching again is a no-op.
		if err := kp1.attach(tunIdx, underIdx); err != nil {
			return err
		}
		// The agent exits: its handles close, the programs stay.
		kp1.close()
		if tcx, xdp := attached(); len(tcx) != 1 || tcx[0] != enc1 || xdp != dec1 {
			return fmt.Errorf("after the loader closed: tcx %v xdp %v", tcx, xdp)
		}

		// The next agent's programs replace them.
		kp2, err := start()
		if err != nil {
			return err
		}
		defer kp2.close()
		enc2, _ := progID(kp2.objs.WeftUdpEncap)
		dec2, _ := progID(kp2.objs.WeftUdpDecap)
		if tcx, xdp := attached(); len(tcx) != 1 || tcx[0] != enc2 || xdp != dec2 {
			return fmt.Errorf("after the second agent: tcx %v xdp %v, want [%d] %d", tcx, xdp, enc2, dec2)
		}

		// A departed peer leaves both maps; the other stays.
		delete(peers, netip.MustParsePrefix("10.244.3.0/24"))
		if err := kp2.setPeers(peers); err != nil {
			return err
		}
		var out uint32
		if err := kp2.objs.Routes.Lookup(udpbpfRouteKey{Prefixlen: 24, Addr: be32(netip.MustParseAddr("10.244.3.0"))}, &out); err == nil {
			t.Error("10.244.3.0/24 is still routed")
		}
		if err := kp2.objs.Routes.Lookup(udpbpfRouteKey{Prefixlen: 32, Addr: be32(netip.MustParseAddr("10.244.2.7"))}, &out); err != nil || out != be32(netip.MustParseAddr("192.0.2.12")) {
			t.Errorf("10.244.2.7 routed to %08x (%v)", out, err)
		}
		var sn udpbpfSubnet
		if err := kp2.objs.Senders.Lookup(udpbpfSender{Addr: be32(netip.MustParseAddr("192.0.2.13")), Port: be16(8285)}, &sn); err == nil {
			t.Error("192.0.2.13:8285 is still a sender")
		}

		// Another XDP program is never replaced.
		other, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "someone_else", Type: ebpf.XDP, License: "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
		if err != nil {
			return err
		}
		defer other.Close()
		if err := netlink.LinkSetXdpFdWithFlags(v1, other.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
			return err
		}
		if err := kp2.attachXDP(v1.Attrs().Index); err == nil || !strings.Contains(err.Error(), "another XDP program") {
			t.Errorf("attach over another XDP program: %v", err)
		}

		// The TUN path removes what an earlier agent left, and only that.
		found, err := detachKPath(tunIdx, underIdx)
		if err != nil || !found {
			return fmt.Errorf("detach: found %v, %v", found, err)
		}
		if tcx, xdp := attached(); len(tcx) != 0 || xdp != 0 {
			t.Errorf("after detach: tcx %v xdp %v", tcx, xdp)
		}
		if found, err := detachKPath(tunIdx, v1.Attrs().Index); err != nil || found {
			t.Errorf("detach on veth1 (someone else's program): found %v, %v", found, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// datagramFrame is an Ethernet frame carrying payload p in a UDP datagram
// from from to 192.0.2.11:8285, as it reaches the underlay's XDP hook.
func datagramFrame(from netip.AddrPort, p []byte) []byte {
	f := make([]byte, 14+28+len(p))
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(28+len(p)))
	ip[6], ip[8], ip[9] = 0x40, 64, 17
	s, d := from.Addr().As4(), netip.MustParseAddr("192.0.2.11").As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], ^sum(ip[:20], 0))
	binary.BigEndian.PutUint16(ip[20:22], from.Port())
	binary.BigEndian.PutUint16(ip[22:24], 8285)
	binary.BigEndian.PutUint16(ip[24:26], uint16(8+len(p)))
	copy(ip[28:], p)
	return f
}

// decapCounter is the kernel counter that counts the agent's verdict v.
var decapCounter = map[verdict]int{stranger: countStranger, spoofed: countSpoofed, malformed: countMalformed, misdirected: countDestination}

// FuzzDecap runs the XDP program (BPF_PROG_TEST_RUN) on a datagram from a
// peer or a stranger carrying any payload, and holds it to the agent's
// path (table.inbound) for the same datagram: a packet the agent would
// forward is decapsulated, its payload intact; one it would drop is
// dropped, counted under the same reason; only an inner packet with IP
// options, which the agent's path checks, is passed on untouched. Its
// seeds run as a table test under `go test`; it needs root.
func FuzzDecap(f *testing.F) {
	f.Add(false, packet("10.244.2.7", "10.244.1.5", 63, 40))       // forwarded
	f.Add(true, packet("10.244.2.7", "10.244.1.5", 63, 40))        // a stranger
	f.Add(false, packet("10.244.3.7", "10.244.1.5", 63, 40))       // spoofed source
	f.Add(false, packet("10.244.2.7", "10.244.3.5", 63, 40))       // not this node's
	f.Add(false, []byte("not an IP packet at all, twenty+ bytes")) // malformed
	f.Add(false, []byte{0x45, 0, 0, 20})                           // short
	bad := packet("10.244.2.7", "10.244.1.5", 63, 40)
	bad[10] ^= 0xff
	f.Add(false, bad) // bad checksum
	long := packet("10.244.2.7", "10.244.1.5", 63, 40)
	long[3]++
	f.Add(false, long) // total length wrong
	opts := append(packet("10.244.2.7", "10.244.1.5", 63, 0)[:20:20], 1, 1, 1, 0)
	opts[0] = 0x46
	binary.BigEndian.PutUint16(opts[2:4], 24)
	opts[10], opts[11] = 0, 0
	binary.BigEndian.PutUint16(opts[10:12], ^sum(opts[:24], 0))
	f.Add(false, opts) // IP options: the agent's path

	netnstest.RequireRoot(f)
	kp, err := loadKPath()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { kp.close() })
	if err := kp.configure(ownSubnet, netip.MustParseAddr("192.0.2.11"), 1, 8285); err != nil {
		f.Fatal(err)
	}
	peers := map[netip.Prefix]netip.AddrPort{netip.MustParsePrefix("10.244.2.0/24"): peerA}
	if err := kp.setPeers(peers); err != nil {
		f.Fatal(err)
	}
	tb := newTable(ownSubnet, ownSubnet.Addr(), peers)
	stranger := netip.MustParseAddrPort("192.0.2.99:8285")
	f.Fuzz(func(t *testing.T, fromStranger bool, p []byte) {
		if len(p) > 1400 {
			return
		}
		from := peerA
		if fromStranger {
			from = stranger
		}
		frame := datagramFrame(from, p)
		before, err := kp.counters()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, len(frame)+256)
		ret, err := kp.objs.WeftUdpDecap.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := kp.counters()
		rose := -1
		for i := range after {
			if after[i] != before[i] {
				if rose >= 0 {
					t.Fatalf("two counters rose: %v -> %v", before, after)
				}
				rose = i
			}
		}
		want := tb.inbound(from, p)
		const xdpDrop, xdpPass = 1, 2
		switch {
		case ret == xdpPass && rose == countRX:
			if want != forward {
				t.Fatalf("decapsulated what the agent's path drops as %d: %x", want, p)
			}
			if got := out[:len(frame)-28]; !bytes.Equal(got[14:], p) || !bytes.Equal(got[:14], frame[:14]) {
				t.Fatalf("decapsulated frame %x, want the Ethernet header and %x", got, p)
			}
		case ret == xdpPass && rose == -1:
			// Passed on untouched: only IP options, left to the agent.
			if !bytes.Equal(out[:len(frame)], frame) {
				t.Fatalf("passed on changed: %x, sent %x", out[:len(frame)], frame)
			}
			if fromStranger || len(p) < 20 || p[0]>>4 != 4 || p[0]&0x0f <= 5 {
				t.Fatalf("passed on to the agent without a reason: %x (agent: %d)", p, want)
			}
		case ret == xdpDrop:
			if c, ok := decapCounter[want]; !ok || c != rose {
				t.Fatalf("dropped, counter %d rose; the agent's verdict is %d (counter %d): %x", rose, want, decapCounter[want], p)
			}
		default:
			t.Fatalf("XDP verdict %d, counter %d rose, for %x", ret, rose, p)
		}
	})
}
