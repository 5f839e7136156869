package etcdstore

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// embedded starts weft's own embedded etcd (the `weft store serve` code),
// with cheap password hashes for TestPasswordAuth.
func embedded(t *testing.T) string { return etcdservertest.Start(t) }

// external starts Debian's etcd-server binary, the external-cluster path.
func external(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcd binary missing in CI; .ci/run installs etcd-server")
		}
		t.Skip("etcd binary not installed (apt-get install etcd-server)")
	}
	cport, pport := etcdservertest.FreePort(t), etcdservertest.FreePort(t)
	curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
	cmd := exec.Command(bin, "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "default="+purl, "--log-level", "error")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	cli := client(t, curl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return curl
		}
		if time.Now().After(deadline) {
			t.Fatalf("external etcd did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func client(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func harness(url string) func(t *testing.T) leasetest.Harness {
	n := 0
	return func(t *testing.T) leasetest.Harness {
		n++
		// A fresh prefix per subtest gives an empty store on one server.
		s := NewFromClient(client(t, url), fmt.Sprintf("/test%d/coreos.com/network", n), nil)
		ctx := context.Background()
		return leasetest.Harness{
			Store: s,
			PutConfig: func(t *testing.T, doc string) {
				if err := s.PutConfig(ctx, []byte(doc)); err != nil {
					t.Fatal(err)
				}
			},
			Reserve: func(t *testing.T, l lease.Lease) {
				if err := s.Reserve(ctx, l); err != nil {
					t.Fatal(err)
				}
			},
			Delete: func(t *testing.T, key string) {
				if _, err := s.Delete(ctx, key); err != nil {
					t.Fatal(err)
				}
			},
		}
	}
}

func TestConformanceEmbedded(t *testing.T) { leasetest.Run(t, harness(embedded(t))) }
func TestConformanceExternal(t *testing.T) { leasetest.Run(t, harness(external(t))) }

// TestFlannelLayout reads back the raw keys and values from a real etcd and
// compares them with COMPAT.md byte for byte.
func TestFlannelLayout(t *testing.T) {
	url := embedded(t)
	cli := client(t, url)
	ctx := context.Background()
	s := NewFromClient(cli, DefaultPrefix, nil)
	if err := s.PutConfig(ctx, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParsePrefix("10.244.3.0/24")
	l, err := s.Acquire(ctx, lease.Request{
		Attrs: lease.Attrs{
			PublicIP:    netip.MustParseAddr("192.0.2.11"),
			BackendType: "vxlan",
			BackendData: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`),
		},
		TTL:    time.Hour,
		Prefer: []netip.Prefix{want},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/coreos.com/network/subnets/10.244.3.0-24")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("lease key not found: %v %v", resp, err)
	}
	kv := resp.Kvs[0]
	const wantValue = `{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
	if string(kv.Value) != wantValue {
		t.Errorf("value\n got %s\nwant %s", kv.Value, wantValue)
	}
	if kv.Lease == 0 || kv.Lease != l.StoreID {
		t.Errorf("key is not attached to the etcd lease: %d vs %d", kv.Lease, l.StoreID)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
	if err != nil || ttl.GrantedTTL != 3600 {
		t.Errorf("granted TTL %d, %v; want 3600", ttl.GrantedTTL, err)
	}
	// A record as flannel writes it for host-gw and udp decodes here.
	for _, v := range []string{
		`{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"host-gw"}`,
		`{"PublicIP":"192.0.2.13","PublicIPv6":null}`,
	} {
		if _, err := cli.Put(ctx, "/coreos.com/network/subnets/10.244.9.0-24", v); err != nil {
			t.Fatal(err)
		}
		ls, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, l := range ls {
			if l.Subnet == netip.MustParsePrefix("10.244.9.0/24") {
				found = true
				b, _ := l.Attrs.MarshalJSON()
				if string(b) != v {
					t.Errorf("round trip of %s gave %s", v, b)
				}
			}
		}
		if !found {
			t.Errorf("flannel record %s not listed", v)
		}
	}
}

// TestFlannelLayoutDual: dual-stack and IPv6-only keys and values as
// flannel's MakeSubnetKey and LeaseAttrs write them, byte for byte: the
// IPv6 subnet after "&", an IPv6-only key's IPv4 part "0.0.0.0-0", and
// PublicIPv6 and BackendV6Data in the value ("0.0.0.0", flannel's zero
// IP4, as the PublicIP of an IPv6-only node).
func TestFlannelLayoutDual(t *testing.T) {
	cli := client(t, embedded(t))
	ctx := context.Background()
	for _, tc := range []struct {
		name, conf string
		attrs      lease.Attrs
		prefer     []netip.Prefix
		key, value string
	}{
		{name: "dual", conf: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`,
			attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.11"), PublicIPv6: netip.MustParseAddr("2001:db8:1::11"), BackendType: "vxlan",
				BackendData: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`), BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}`)},
			prefer: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("2001:db8:244:3::/64")},
			key:    "/dual/subnets/10.244.3.0-24&2001:db8:244:3::-64",
			value:  `{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8:1::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}}`},
		{name: "v6only", conf: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"}}`,
			attrs:  lease.Attrs{PublicIPv6: netip.MustParseAddr("2001:db8:1::12"), BackendType: "host-gw"},
			prefer: []netip.Prefix{netip.MustParsePrefix("2001:db8:244:4::/64")},
			key:    "/v6only/subnets/0.0.0.0-0&2001:db8:244:4::-64",
			value:  `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::12","BackendType":"host-gw"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewFromClient(cli, "/"+tc.name, nil)
			if err := s.PutConfig(ctx, []byte(tc.conf)); err != nil {
				t.Fatal(err)
			}
			l, err := s.Acquire(ctx, lease.Request{Attrs: tc.attrs, TTL: time.Hour, Prefer: tc.prefer})
			if err != nil {
				t.Fatal(err)
			}
			if s.LeaseKey(l) != tc.key {
				t.Errorf("lease key %s, want %s", s.LeaseKey(l), tc.key)
			}
			resp, err := cli.Get(ctx, tc.key)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("key %s not found: %v %v", tc.key, resp, err)
			}
			if got := string(resp.Kvs[0].Value); got != tc.value {
				t.Errorf("value\n got %s\nwant %s", got, tc.value)
			}
			// flannel's record, written by flannel, reads back the same.
			if _, err := cli.Put(ctx, tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			ls, err := s.List(ctx)
			if err != nil || len(ls) != 1 || !ls[0].SameSubnets(l) || ls[0].Attrs.PublicIPv6 != tc.attrs.PublicIPv6 ||
				string(ls[0].Attrs.BackendV6Data) != string(tc.attrs.BackendV6Data) {
				t.Errorf("List = %+v %v, want %s with %+v", ls, err, tc.key, tc.attrs)
			}
		})
	}
}

// TestStaleLeaseSpelledOtherwise: a stale lease of this node stored under
// a key spelled otherwise than weft writes it (leading zeros in the IPv6
// address, by hand) is deleted under that key, and the new lease made.
func TestStaleLeaseSpelledOtherwise(t *testing.T) {
	cli := client(t, embedded(t))
	ctx := context.Background()
	s := NewFromClient(cli, "/spelled", nil)
	if err := s.PutConfig(ctx, []byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","IPv6SubnetLen":64,"Backend":{"Type":"host-gw"}}`)); err != nil {
		t.Fatal(err)
	}
	// A /56 from an older config (SubnetLen changed since): stale.
	const stale = "/spelled/subnets/0.0.0.0-0&2001:db8:244:0100::-56"
	g, err := cli.Grant(ctx, 3600) // with a TTL: a reservation would be kept
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, stale, `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::12","BackendType":"host-gw"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire(ctx, lease.Request{Attrs: lease.Attrs{PublicIPv6: netip.MustParseAddr("2001:db8:1::12"), BackendType: "host-gw"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if l.IPv6Subnet.Bits() != 64 {
		t.Errorf("leased %s, want a /64", l.IPv6Subnet)
	}
	if resp, err := cli.Get(ctx, stale); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the stale lease %s is still stored (%v)", stale, err)
	}
}
