package subnetenv

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteExactFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "subnet.env")
	e := Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  GatewayPrefix(netip.MustParsePrefix("10.244.3.0/24")),
		MTU:     1450,
		IPMasq:  true,
	}
	if err := Write(path, e); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const want = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	back, err := Read(path)
	if err != nil || back != withMasqLine(e) {
		t.Errorf("Read = %+v, %v", back, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// Dual stack and IPv6-only, in flannel's form (FLANNEL.md 5.3): each
// family's lines only when it is enabled, the subnet as its first address
// with the subnet's length; and read back the same.
func TestWriteFamilies(t *testing.T) {
	v4, sub4 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24")
	v6, sub6 := netip.MustParsePrefix("2001:db8:244::/48"), netip.MustParsePrefix("2001:db8:244:3::/64")
	for _, tc := range []struct {
		name string
		set  [][2]netip.Prefix
		want string
	}{
		{"dual", [][2]netip.Prefix{{v4, sub4}, {v6, sub6}},
			"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"},
		{"IPv6 first: the order is flannel's", [][2]netip.Prefix{{v6, sub6}, {v4, sub4}},
			"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"},
		{"IPv6 only", [][2]netip.Prefix{{v6, sub6}},
			"FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Env{MTU: 1450, IPMasq: true}
			for _, f := range tc.set {
				e.SetFamily(f[0], f[1])
			}
			path := filepath.Join(t.TempDir(), "subnet.env")
			if err := Write(path, e); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tc.want {
				t.Fatalf("got\n%s\nwant\n%s (%v)", got, tc.want, err)
			}
			back, err := Read(path)
			if err != nil || back != withMasqLine(e) {
				t.Errorf("Read = %+v, %v; want %+v", back, err, e)
			}
			if back.IPv6Subnet.Masked() != sub6 {
				t.Errorf("IPv6 subnet read back %s, masked %s; want %s", back.IPv6Subnet, back.IPv6Subnet.Masked(), sub6)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_SUBNET=10.244.3.1/24\n"))
	f.Add([]byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.7.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		if _, err := Parse(e.Marshal()); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

// withMasqLine is e as Read returns it after Write, which always writes
// FLANNEL_IPMASQ.
func withMasqLine(e Env) Env {
	e.HasIPMasq = true
	return e
}

func TestMissingIPMasqLine(t *testing.T) {
	e, err := Parse([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n"))
	if err != nil || e.HasIPMasq || e.IPMasq {
		t.Errorf("a file without FLANNEL_IPMASQ: %+v, %v", e, err)
	}
}
