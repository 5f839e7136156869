package cni

import (
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
	if err := st.GC([]Attachment{{ContainerID: "a", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.Lookup(Attachment{ContainerID: "b", IfName: "eth0"}); ok {
		t.Error("GC kept an attachment not in the valid list")
	}
	if _, ok, _ := st.Lookup(Attachment{ContainerID: "a", IfName: "eth0"}); !ok {
		t.Error("GC dropped a valid attachment")
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
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConf(data)
		if err != nil {
			return
		}
		if c.Name == "" || c.Bridge == "" || len(c.Bridge) > 15 || c.SubnetFile == "" || c.DataDir == "" {
			t.Fatalf("accepted conf without defaults: %+v", c)
		}
	})
}
