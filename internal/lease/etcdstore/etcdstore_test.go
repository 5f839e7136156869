package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
			Lease: func(t *testing.T, l lease.Lease, ttl time.Duration) {
				// as flanneld writes a lease: a key under an etcd lease
				v, err := l.Attrs.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				g, err := s.cli.Grant(ctx, ttlSeconds(ttl))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.cli.Put(ctx, s.LeaseKey(l), string(v), clientv3.WithLease(g.ID)); err != nil {
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

// TestCreateCmps: a create made on leases read at some revision fails once
// any record under subnets/ was created or rewritten since, and only then:
// not for an empty prefix, a deletion, or a write outside subnets/.
func TestCreateCmps(t *testing.T) {
	cli := client(t, embedded(t))
	ctx := context.Background()
	s := NewFromClient(cli, "/cmps", nil)
	key := s.subnetsKey() + "10.244.1.0-24&2001:db8:244:1::-64"
	other := s.subnetsKey() + "10.244.2.0-24&2001:db8:244:1::-64"
	read := func() int64 {
		t.Helper()
		resp, err := cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	create := func(rev int64) bool {
		t.Helper()
		resp, err := cli.Txn(ctx).If(s.createCmps(key, rev)...).Then(clientv3.OpPut(key, "{}")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded {
			if _, err := cli.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		return resp.Succeeded
	}
	put := func(k string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, "{}"); err != nil {
			t.Fatal(err)
		}
	}
	if !create(read()) {
		t.Fatal("create on an empty prefix failed")
	}
	rev := read()
	put(s.ConfigKey()) // outside subnets/
	if !create(rev) {
		t.Error("create failed after a write outside subnets/")
	}
	rev = read()
	put(other) // the same IPv6 subnet under another key
	if create(rev) {
		t.Error("create succeeded after another lease was created since the read")
	}
	if !create(read()) {
		t.Error("create on a fresh read failed")
	}
	rev = read()
	put(other) // a rewrite of an existing lease
	if create(rev) {
		t.Error("create succeeded after a lease was rewritten since the read")
	}
	rev = read()
	if _, err := cli.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
	if !create(rev) {
		t.Error("create failed after a deletion, which takes no subnet")
	}
	put(key)
	if create(read()) {
		t.Error("create of an existing key succeeded")
	}
}

// TestAcquireContention: agents that lease at once in dual stack, more
// than there are subnets, each get a key on an etcd lease of its own or
// ErrNoFreeSubnet, and the etcd leases granted for attempts that lost are
// revoked, also when the agent then finds no free subnet.
func TestAcquireContention(t *testing.T) {
	cli := client(t, embedded(t))
	ctx := context.Background()
	s := NewFromClient(cli, "/contention", nil)
	// 4 subnets of each family.
	if err := s.PutConfig(ctx, []byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.4.0",`+
		`"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","IPv6SubnetMin":"2001:db8:244:1::","IPv6SubnetMax":"2001:db8:244:4::"}`)); err != nil {
		t.Fatal(err)
	}
	const n, subnets = 12, 4
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		a := lease.Attrs{PublicIP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)),
			PublicIPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", i+1)), BackendType: "host-gw"}
		wg.Go(func() {
			<-start
			_, errs[i] = s.Acquire(ctx, lease.Request{Attrs: a, TTL: time.Hour})
		})
	}
	close(start)
	wg.Wait()
	full := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, lease.ErrNoFreeSubnet):
			full++
		case err != nil:
			t.Fatalf("agent %d: %v", i, err)
		}
	}
	if full != n-subnets {
		t.Errorf("%d agents found no free subnet, want %d", full, n-subnets)
	}
	resp, err := cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != subnets {
		t.Fatalf("%d keys, %v; want %d", len(resp.Kvs), err, subnets)
	}
	onKeys := map[int64]bool{}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 || onKeys[kv.Lease] {
			t.Errorf("key %s on etcd lease %d: want one of its own", kv.Key, kv.Lease)
		}
		onKeys[kv.Lease] = true
	}
	granted, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range granted.Leases {
		if !onKeys[int64(g.ID)] {
			t.Errorf("etcd lease %d holds no key: an attempt's grant was not revoked", g.ID)
		}
	}
}

// TestBackoff: the pause before a retry grows from at most 11ms to at most
// 321ms, and is never zero.
func TestBackoff(t *testing.T) {
	hi := func(n int64) int64 { return n - 1 }
	lo := func(int64) int64 { return 0 }
	for attempt, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80, 5: 160, 6: 320, 7: 320, 40: 320} {
		want = want*time.Millisecond + time.Millisecond - 1
		if got := backoff(attempt, hi); got != want {
			t.Errorf("backoff(%d) at most %v, want %v", attempt, got, want)
		}
		if got := backoff(attempt, lo); got != time.Millisecond {
			t.Errorf("backoff(%d) at least %v, want 1ms", attempt, got)
		}
	}
}
