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
	if err != nil || back != e {
		t.Errorf("Read = %+v, %v", back, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
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
