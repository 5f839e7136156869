package udp

import (
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
