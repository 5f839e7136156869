package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/weftnet/weft/internal/firewall"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

const (
	dualConf   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"}}`
	ipv6Conf   = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"host-gw"}}`
	underlay4  = "192.0.2.1"
	underlay6  = "2001:db8:0:1::1"
	network6   = "2001:db8:244::/48"
	masqRule6  = "ip6 saddr 2001:db8:244::/48 ip6 daddr != ff00::/8 masquerade fully-random"
	forwardIn6 = "ip6 daddr 2001:db8:244::/48 accept"
)

// hostGW is a lease of another host-gw node; "" leaves a family out.
func hostGW(v4, ip4, v6, ip6 string) lease.Lease {
	l := lease.Lease{Attrs: lease.Attrs{PublicIP: netip.IPv4Unspecified(), BackendType: "host-gw"}}
	if v4 != "" {
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(v4), netip.MustParseAddr(ip4)
	}
	if v6 != "" {
		l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.MustParsePrefix(v6), netip.MustParseAddr(ip6)
	}
	return l
}

// ownRecord returns this node's record in the store.
func ownRecord(t *testing.T, m *leasetest.Memory, a *Agent) lease.Lease {
	t.Helper()
	a.mu.Lock()
	key := a.ownKey
	a.mu.Unlock()
	ls, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Key() == key {
			return l
		}
	}
	t.Fatalf("no record %s among %v", key, ls)
	return lease.Lease{}
}

// TestDualStack: a dual-stack node leases a subnet of each family,
// publishes both addresses, writes both families' subnet.env lines and
// firewall tables, takes dual, IPv4-only and IPv6-only peers, never its
// own old lease, and takes both subnets back when its record is deleted.
func TestDualStack(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(dualConf))
	p := &fakePlatform{}
	file := filepath.Join(t.TempDir(), "subnet.env")
	a, _, _ := start(t, m, p, file)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	st := a.Status()
	sub4, err4 := netip.ParsePrefix(st.Subnet)
	sub6, err6 := netip.ParsePrefix(st.IPv6Subnet)
	if err4 != nil || err6 != nil || sub6.Bits() != 64 || !netip.MustParsePrefix(network6).Contains(sub6.Addr()) {
		t.Fatalf("status subnets %q %q", st.Subnet, st.IPv6Subnet)
	}
	own := ownRecord(t, m, a)
	if own.Subnet != sub4 || own.IPv6Subnet != sub6 || own.Attrs.PublicIP.String() != underlay4 || own.Attrs.PublicIPv6.String() != underlay6 {
		t.Errorf("the store holds %s %+v", own.Key(), own.Attrs)
	}
	p.mu.Lock()
	env := p.env
	forwarding := slices.Contains(p.calls, "forwarding ipv4 ipv6")
	p.mu.Unlock()
	if !forwarding {
		t.Error("the agent did not turn on IPv6 forwarding")
	}
	if env.Network.String() != "10.244.0.0/16" || env.IPv6Network.String() != network6 || env.Underlay.Addr6.String() != underlay6 {
		t.Errorf("the backend was built with networks %s %s, underlay %+v", env.Network, env.IPv6Network, env.Underlay)
	}
	got, err := os.ReadFile(file)
	gw := func(p netip.Prefix) string { return netip.PrefixFrom(p.Addr().Next(), p.Bits()).String() }
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=" + gw(sub4) + "\nFLANNEL_IPV6_NETWORK=" + network6 +
		"\nFLANNEL_IPV6_SUBNET=" + gw(sub6) + "\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"
	if err != nil || string(got) != want {
		t.Errorf("subnet.env\n%s\nwant\n%s (%v)", got, want, err)
	}
	for _, fam := range []firewall.Family{firewall.IPv4, firewall.IPv6} {
		if chains, ok := p.fw.Chains(fam); !ok || !slices.Equal(chains, []string{"forward", "postrouting"}) {
			t.Errorf("table %s weft has chains %v (exists: %v)", fam, chains, ok)
		}
	}
	txs := p.fw.Transactions()
	for _, rule := range []string{masqRule6, forwardIn6, "ip6 saddr " + sub6.String() + " ip6 daddr " + network6 + " return", "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"} {
		if len(txs) == 0 || !strings.Contains(txs[0], rule) {
			t.Errorf("the firewall transaction lacks %q:\n%s", rule, txs)
		}
	}

	peers := []lease.Lease{
		hostGW("10.244.200.0/24", "192.0.2.20", "2001:db8:244:200::/64", "2001:db8:0:1::20"),
		hostGW("10.244.201.0/24", "192.0.2.21", "", ""),
		hostGW("", "", "2001:db8:244:202::/64", "2001:db8:0:1::22"),
	}
	for _, l := range peers {
		m.Reserve(l)
	}
	// An old lease of this node's, by either address: never a peer.
	m.Reserve(hostGW("", "", "2001:db8:244:203::/64", underlay6))
	m.Reserve(hostGW("10.244.204.0/24", underlay4, "", ""))
	eventually(t, "3 peers", func() bool {
		st, _ := p.lastState()
		return len(st.Peers) == 3
	})
	if st, _ := p.lastState(); !reflect.DeepEqual(keysOf(st.Peers), keysOf(peers)) || st.IPv6Network.String() != network6 {
		t.Errorf("node state: peers %v, IPv6 network %s", keysOf(st.Peers), st.IPv6Network)
	}

	m.Delete(own.Key())
	eventually(t, "the lease back with both subnets", func() bool {
		ls, _ := m.List(context.Background())
		return slices.ContainsFunc(ls, func(l lease.Lease) bool {
			return l.Subnet == sub4 && l.IPv6Subnet == sub6 && l.Attrs.PublicIPv6.String() == underlay6
		})
	})
}

func keysOf(ls []lease.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	slices.Sort(out)
	return out
}

// TestIPv6Only: an IPv6-only node keeps the IPv6 subnet of its old
// subnet.env, publishes PublicIP 0.0.0.0 as flannel does, writes only the
// IPv6 lines and table, knows its own record by PublicIPv6 (not changed,
// not lost), and is not confused with other IPv6-only nodes whose
// PublicIP is 0.0.0.0 too.
func TestIPv6Only(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(ipv6Conf))
	p := &fakePlatform{}
	file := filepath.Join(t.TempDir(), "subnet.env")
	if err := os.WriteFile(file, []byte("FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:77::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, _, _ := start(t, m, p, file)
	eventually(t, "ready", func() bool { return a.Status().Ready })
	if st := a.Status(); st.Subnet != "" || st.IPv6Subnet != "2001:db8:244:77::/64" {
		t.Fatalf("status subnets %q %q; the old subnet.env asked for 2001:db8:244:77::/64", st.Subnet, st.IPv6Subnet)
	}
	own := ownRecord(t, m, a)
	if own.Subnet.IsValid() || own.Attrs.PublicIP != netip.IPv4Unspecified() || own.Attrs.PublicIPv6.String() != underlay6 {
		t.Errorf("the store holds %s %+v", own.Key(), own.Attrs)
	}
	const want = "FLANNEL_IPV6_NETWORK=2001:db8:244::/48\nFLANNEL_IPV6_SUBNET=2001:db8:244:77::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"
	if got, err := os.ReadFile(file); err != nil || string(got) != want {
		t.Errorf("subnet.env\n%s\nwant\n%s (%v)", got, want, err)
	}
	if chains, ok := p.fw.Chains(firewall.IPv4); ok {
		t.Errorf("an IPv6-only node has table ip weft: %v", chains)
	}
	if chains, ok := p.fw.Chains(firewall.IPv6); !ok || !slices.Equal(chains, []string{"forward", "postrouting"}) {
		t.Errorf("table ip6 weft has chains %v (exists: %v)", chains, ok)
	}
	m.Delete(own.Key())
	eventually(t, "the lease back", func() bool {
		ls, _ := m.List(context.Background())
		return slices.ContainsFunc(ls, func(l lease.Lease) bool { return l.SameSubnets(own) && l.Attrs.PublicIPv6.String() == underlay6 })
	})
	peer := hostGW("", "", "2001:db8:244:5::/64", "2001:db8:0:1::5")
	m.Reserve(peer)
	m.Reserve(hostGW("", "", "2001:db8:244:6::/64", underlay6)) // this node's old lease
	eventually(t, "1 peer", func() bool {
		st, _ := p.lastState()
		return len(st.Peers) == 1 && st.Peers[0].Key() == peer.Key()
	})
	a.mu.Lock()
	lost, key := a.ownLost, a.ownKey
	a.mu.Unlock()
	if lost != "" || key != own.Key() {
		t.Errorf("own record %s is %q; want %s, as written", key, lost, own.Key())
	}
}

// previousStore is a store that keeps what the node published before
// (Kubernetes mode's Node annotations).
type previousStore struct {
	*leasetest.Memory
	attrs lease.Attrs
	err   error
}

func (s previousStore) PreviousAttrs(context.Context) (lease.Attrs, error) { return s.attrs, s.err }

// TestPreviousAttrs: the backend is built with the attributes the node
// published before; a store that cannot tell gives zero attributes and
// the agent goes on.
func TestPreviousAttrs(t *testing.T) {
	prev := lease.Attrs{PublicIP: netip.MustParseAddr(underlay4), BackendType: "vxlan",
		BackendData: []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`), BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:02"}`)}
	for _, tc := range []struct {
		err  error
		want lease.Attrs
	}{{nil, prev}, {errors.New("injected: no such node"), lease.Attrs{}}} {
		m := leasetest.NewMemory()
		m.PutConfig([]byte(dualConf))
		p := &fakePlatform{}
		a, _, _ := start(t, previousStore{m, prev, tc.err}, p, filepath.Join(t.TempDir(), "subnet.env"))
		eventually(t, "ready", func() bool { return a.Status().Ready })
		p.mu.Lock()
		got := p.env.Previous
		p.mu.Unlock()
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("store error %v: the backend got Previous %+v, want %+v", tc.err, got, tc.want)
		}
	}
}

// releasingStore lists extra leases beside the memory store's and records
// what the agent deletes, as etcd would delete it.
type releasingStore struct {
	*leasetest.Memory
	extra []lease.Lease

	mu      sync.Mutex // guards deleted
	deleted []string
}

func (s *releasingStore) List(ctx context.Context) ([]lease.Lease, error) {
	ls, err := s.Memory.List(ctx)
	return append(ls, s.extra...), err
}

func (s *releasingStore) Delete(_ context.Context, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted = append(s.deleted, key)
	return true, nil
}

// TestIPv6OnlyReleasesOnlyItsOwnOldLease: at start an IPv6-only node
// releases its own old lease, known by PublicIPv6, and not the leases of
// other IPv6-only nodes, whose PublicIP is 0.0.0.0 like its own, nor its
// reservations.
func TestIPv6OnlyReleasesOnlyItsOwnOldLease(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(ipv6Conf))
	mine := hostGW("", "", "2001:db8:244:78::/64", underlay6)
	mine.StoreID = 5
	other := hostGW("", "", "2001:db8:244:79::/64", "2001:db8:0:1::9")
	other.StoreID = 6
	reserved := hostGW("", "", "2001:db8:244:7a::/64", underlay6)
	s := &releasingStore{Memory: m, extra: []lease.Lease{mine, other, reserved}}
	a, _, _ := start(t, s, &fakePlatform{}, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "ready", func() bool { return a.Status().Ready })
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Equal(s.deleted, []string{mine.Key()}) {
		t.Errorf("released %v, want only %s", s.deleted, mine.Key())
	}
}
