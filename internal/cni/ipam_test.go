package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

func TestAllocateSkipsReservedAndWraps(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.244.3.0/29") // .2 to .6 usable
	var got []string
	for i := range 5 {
		ip, err := st.Allocate(subnet, Attachment{ContainerID: string(rune('a' + i)), IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip.String())
	}
	if got[0] != "10.244.3.2" || got[4] != "10.244.3.6" {
		t.Errorf("allocated %v", got)
	}
	if _, err := st.Allocate(subnet, Attachment{ContainerID: "z", IfName: "eth0"}); err == nil {
		t.Error("allocated beyond the subnet")
	}
	// Same attachment, same address.
	if ip, _ := st.Allocate(subnet, Attachment{ContainerID: "b", IfName: "eth0"}); ip.String() != got[1] {
		t.Errorf("repeated ADD got %s, want %s", ip, got[1])
	}
	if err := st.Release(Attachment{ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(Attachment{ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if ip, err := st.Allocate(subnet, Attachment{ContainerID: "z", IfName: "eth0"}); err != nil || ip.String() != got[2] {
		t.Errorf("after release got %s %v, want %s", ip, err, got[2])
	}
	keep := []Attachment{{ContainerID: "a", IfName: "eth0"}}
	if err := st.GC(keep, func([]netip.Addr) error { return errors.New("no") }); err == nil {
		t.Error("GC succeeded although before failed")
	}
	if ips, _ := st.Lookup(Attachment{ContainerID: "b", IfName: "eth0"}); len(ips) != 1 {
		t.Errorf("GC freed %s although before failed", got[1])
	}
	var gone []netip.Addr
	if err := st.GC(keep, func(a []netip.Addr) error { gone = a; return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gone) != "[10.244.3.3 10.244.3.4 10.244.3.5 10.244.3.6]" {
		t.Errorf("GC announced %v, want every address but a's", gone)
	}
	if ips, _ := st.Lookup(Attachment{ContainerID: "b", IfName: "eth0"}); len(ips) != 0 {
		t.Error("GC kept an attachment not in the valid list")
	}
	if ips, _ := st.Lookup(Attachment{ContainerID: "a", IfName: "eth0"}); len(ips) != 1 {
		t.Error("GC dropped a valid attachment")
	}
}

// TestAllocateDualStack: an attachment holds one address of each family,
// each family goes round its own subnet, and Release frees both.
func TestAllocateDualStack(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("2001:db8:244:3::/64")
	var got []string
	for _, id := range []string{"a", "b"} {
		for _, p := range []netip.Prefix{v4, v6} {
			ip, err := st.Allocate(p, Attachment{ContainerID: id, IfName: "eth0"})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ip.String())
		}
	}
	if want := "[10.244.3.2 2001:db8:244:3::2 10.244.3.3 2001:db8:244:3::3]"; fmt.Sprint(got) != want {
		t.Errorf("allocated %v, want %s", got, want)
	}
	ips, err := st.Lookup(Attachment{ContainerID: "b", IfName: "eth0"})
	if err != nil || fmt.Sprint(ips) != "[10.244.3.3 2001:db8:244:3::3]" {
		t.Errorf("Lookup(b) = %v %v", ips, err)
	}
	if err := st.Release(Attachment{ContainerID: "b", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if ips, _ := st.Lookup(Attachment{ContainerID: "b", IfName: "eth0"}); len(ips) != 0 {
		t.Errorf("Release kept %v", ips)
	}
	// Round robin per family: the next address is after the last one, not
	// the one just released.
	if ip, _ := st.Allocate(v6, Attachment{ContainerID: "c", IfName: "eth0"}); ip.String() != "2001:db8:244:3::4" {
		t.Errorf("next IPv6 address %s, want 2001:db8:244:3::4", ip)
	}
}

func TestAllocateConcurrent(t *testing.T) {
	dir := t.TempDir()
	subnet := netip.MustParsePrefix("10.244.3.0/24")
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 100)
	for i := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _ := OpenStore(dir) // separate handles, as separate processes
			ip, err := st.Allocate(subnet, Attachment{ContainerID: string(rune(0x100 + i)), IfName: "eth0"})
			if err != nil {
				t.Error(err)
			}
			ips[i] = ip
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
}

func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","bridge":"cni0","subnetFile":"/x"}`))
	f.Add([]byte(flannelConflistPlugin))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"bridge":"br1","ipMasq":false,"mtu":1400,"hairpinMode":false,"isDefaultGateway":false,"type":"bridge"},"ipam":{"type":"host-local"}}`))
	f.Add([]byte(`{"name":"n","delegate":{"mtu":10}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConf(data)
		if err != nil {
			return
		}
		if c.Name == "" || c.Bridge == "" || len(c.Bridge) > 15 || c.SubnetFile == "" || c.DataDir == "" ||
			c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
			t.Fatalf("accepted conf without defaults: %+v", c)
		}
	})
}
