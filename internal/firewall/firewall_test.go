package firewall

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

var golden = []string{
	"meta mark & 0x00004000 == 0x00004000 return",
	"ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
	"ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
	"ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
	"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
	"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
	"ip saddr 10.244.0.0/16 accept",
	"ip daddr 10.244.0.0/16 accept",
}

func TestRules(t *testing.T) {
	rs := Rules(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24"))
	if len(rs) != len(golden) {
		t.Fatalf("%d rules, want %d", len(rs), len(golden))
	}
	for i, r := range rs {
		if r.String() != golden[i] {
			t.Errorf("rule %d:\n got %s\nwant %s", i, r, golden[i])
		}
	}
	v6 := Rules(netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd00:10:244:3::/64"))
	if got := v6[4].String(); got != "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random" {
		t.Errorf("v6 masquerade rule: %s", got)
	}
}

// TestApplyInNamespace writes the table into a fresh namespace and reads it
// back with the nft binary, so the kernel's own rendering is compared.
func TestApplyInNamespace(t *testing.T) {
	name := netnstest.New(t)
	fd, err := netns.Fd(name)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	fw, err := New(int(fd))
	if err != nil {
		t.Fatal(err)
	}
	n := netip.MustParsePrefix("10.244.0.0/16")
	s := netip.MustParsePrefix("10.244.3.0/24")
	for range 2 { // applying twice must not duplicate rules
		if err := fw.Apply(n, Rules(n, s)); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := fw.Count(n); err != nil || c != 8 {
		t.Fatalf("rule count %d, %v; want 8", c, err)
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := netns.Command(name, "nft", "list", "table", "ip", Table).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		text := string(out)
		for _, want := range []string{
			"type nat hook postrouting priority srcnat; policy accept;",
			"meta mark & 0x00004000 == 0x00004000 return",
			"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
			"ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
			"type filter hook forward priority filter; policy accept;",
			"ip daddr 10.244.0.0/16 accept",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("nft output lacks %q:\n%s", want, text)
			}
		}
	}
	if err := fw.Delete(n); err != nil {
		t.Fatal(err)
	}
	if err := fw.Delete(n); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestMain(m *testing.M) {
	netns.HandleExec()
	os.Exit(m.Run())
}
