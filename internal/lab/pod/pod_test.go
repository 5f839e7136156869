package pod

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestWriteConflist(t *testing.T) {
	dir := t.TempDir()
	r := Runtime{NS: "x-n1", Dir: dir, SubnetFile: filepath.Join(dir, "subnet.env"),
		ConfDir: filepath.Join(dir, "cni", "net.d"), BinDirs: []string{filepath.Join(dir, "bin")}} // no portmap there
	if err := r.WriteConflist(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(r.ConfDir, "10-weft.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.CNIVersion != "1.1.0" || doc.Name != "weft" || len(doc.Plugins) != 1 ||
		doc.Plugins[0]["type"] != "weft-cni" || doc.Plugins[0]["subnetFile"] != r.SubnetFile ||
		doc.Plugins[0]["dataDir"] != filepath.Join(dir, "ipam") {
		t.Errorf("conflist:\n%s", b)
	}
}

func TestDelWithoutConfigIsSuccess(t *testing.T) {
	r := Runtime{NS: "x-n1", Dir: t.TempDir(), ConfDir: filepath.Join(t.TempDir(), "none")}
	if err := r.Del(context.Background(), &Pod{Name: "n1-p1", NS: "x-n1-p1"}); err != nil {
		t.Errorf("DEL on a node without CNI config: %v", err)
	}
	if err := r.Add(context.Background(), &Pod{Name: "n1-p1", NS: "x-n1-p1"}); err == nil {
		t.Error("ADD without CNI config succeeded")
	}
}

// TestResultAddrs: a dual-stack result gives IPv4 then IPv6, whatever
// order the plugin lists them in; the first is the pod's Addr.
func TestResultAddrs(t *testing.T) {
	mk := func(cidrs ...string) *current.Result {
		r := &current.Result{}
		for _, c := range cidrs {
			ip, n, _ := net.ParseCIDR(c)
			n.IP = ip
			r.IPs = append(r.IPs, &current.IPConfig{Address: *n})
		}
		return r
	}
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"10.244.1.2/24"}, "[10.244.1.2]"},
		{[]string{"2001:db8:244:1::2/64", "10.244.1.2/24"}, "[10.244.1.2 2001:db8:244:1::2]"},
		{[]string{"2001:db8:244:1::2/64"}, "[2001:db8:244:1::2]"},
	} {
		got := resultAddrs(mk(tc.in...))
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%v: %v, want %s", tc.in, got, tc.want)
		}
		p := &Pod{Addrs: got}
		if a := p.AddrOf(true); a.IsValid() != strings.Contains(tc.want, ":") {
			t.Errorf("%v: AddrOf(IPv6) = %s", tc.in, a)
		}
	}
	old := &Pod{Addr: netip.MustParseAddr("10.244.1.2")}
	if len(old.AllAddrs()) != 1 || old.AddrOf(false) != old.Addr {
		t.Errorf("a pod without Addrs: %v", old.AllAddrs())
	}
}
