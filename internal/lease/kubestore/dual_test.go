package kubestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/lease"
)

const (
	dualConf   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`
	v6OnlyConf = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`
)

func writeConf(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// addDualNode registers a node with podCIDRs of each family given and its
// InternalIPs, as kube-controller-manager and kubelet would.
func addDualNode(t *testing.T, c kubernetes.Interface, name string, podCIDRs []string, ips ...string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if len(podCIDRs) > 0 {
		n.Spec = corev1.NodeSpec{PodCIDR: podCIDRs[0], PodCIDRs: podCIDRs}
	}
	if _, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var addrs []corev1.NodeAddress
	for _, ip := range ips {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"addresses": addrs}})
	if _, err := c.CoreV1().Nodes().PatchStatus(ctx, name, patch); err != nil {
		t.Fatal(err)
	}
}

func dualAttrs(ip, ip6, mac, mac6 string) lease.Attrs {
	a := vxlanAttrs(ip, mac)
	a.PublicIPv6 = netip.MustParseAddr(ip6)
	a.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac6 + `"}`)
	return a
}

// TestDualStack: a dual-stack node's lease holds both podCIDRs; it
// publishes flannel's IPv6 annotations (public-ipv6-overwrite honoured),
// a peer reads them back, a change of only the IPv6 annotations is an
// event (flannel drops it), PreviousAttrs reads what was published, and
// NodePublicIPv6 and PublicIPv6Overwrite read this node's annotations.
func TestDualStack(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := writeConf(t, dualConf)
	addDualNode(t, srv.Admin, "n1", []string{"10.244.7.0/24", "2001:db8:244:7::/64"}, "192.0.2.11", "2001:db8:1::11")
	addDualNode(t, srv.Admin, "n2", []string{"2001:db8:244:8::/64", "10.244.8.0/24"}, "192.0.2.12", "2001:db8:1::12")
	addDualNode(t, srv.Admin, "v4only", []string{"10.244.9.0/24"}, "192.0.2.13")
	annotate(t, srv.Admin, "n1", map[string]string{"flannel.alpha.coreos.com/public-ipv6-overwrite": "2001:db8:99::11"})

	s1 := newStore(t, srv.Client, "n1", conf, false)
	if prev, err := s1.PreviousAttrs(ctx); err != nil || prev.BackendType != "" || prev.PublicIP.IsValid() || prev.PublicIPv6.IsValid() || prev.BackendData != nil || prev.BackendV6Data != nil {
		t.Errorf("PreviousAttrs of a fresh node = %+v %v, want zero", prev, err)
	}
	attrs := dualAttrs("192.0.2.11", "2001:db8:1::11", "0e:00:00:00:00:11", "0e:00:00:00:00:61")
	l1, err := s1.Acquire(ctx, lease.Request{Attrs: attrs})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Subnet != netip.MustParsePrefix("10.244.7.0/24") || l1.IPv6Subnet != netip.MustParsePrefix("2001:db8:244:7::/64") ||
		l1.Attrs.PublicIPv6 != netip.MustParseAddr("2001:db8:99::11") {
		t.Fatalf("lease %+v, want both podCIDRs and the overwritten IPv6 address", l1)
	}
	n1, err := srv.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"}`,
		"flannel.alpha.coreos.com/backend-v6-data":     `{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}`,
		"flannel.alpha.coreos.com/public-ip":           "192.0.2.11",
		"flannel.alpha.coreos.com/public-ipv6":         "2001:db8:99::11",
	} {
		if n1.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n1.Annotations[k], v)
		}
	}
	prev, err := s1.PreviousAttrs(ctx)
	if err != nil || prev.BackendType != "vxlan" || prev.PublicIP != attrs.PublicIP || prev.PublicIPv6 != l1.Attrs.PublicIPv6 ||
		string(prev.BackendData) != string(attrs.BackendData) || string(prev.BackendV6Data) != string(attrs.BackendV6Data) {
		t.Errorf("PreviousAttrs = %+v %v, want what was published: %+v", prev, err, l1.Attrs)
	}
	if ow, err := s1.PublicIPv6Overwrite(ctx); err != nil || !ow {
		t.Errorf("PublicIPv6Overwrite on n1 = %v %v, want true", ow, err)
	}
	if ow, err := s1.PublicIPOverwrite(ctx); err != nil || ow {
		t.Errorf("PublicIPOverwrite on n1 = %v %v, want false", ow, err)
	}

	s2 := newStore(t, srv.Client, "n2", conf, false)
	if ip, err := s2.NodePublicIPv6(ctx); err != nil || ip.IsValid() {
		t.Errorf("NodePublicIPv6 without the annotation = %v %v, want none", ip, err)
	}
	annotate(t, srv.Admin, "n2", map[string]string{"flannel.alpha.coreos.com/node-public-ipv6": "2001:db8:1::12"})
	if ip, err := s2.NodePublicIPv6(ctx); err != nil || ip != netip.MustParseAddr("2001:db8:1::12") {
		t.Errorf("NodePublicIPv6 = %v %v, want 2001:db8:1::12", ip, err)
	}
	annotate(t, srv.Admin, "n2", map[string]string{"flannel.alpha.coreos.com/node-public-ipv6": "192.0.2.12"})
	if ip, err := s2.NodePublicIPv6(ctx); err == nil || !strings.Contains(err.Error(), "node-public-ipv6") {
		t.Errorf("NodePublicIPv6 with an IPv4 address = %v %v, want an error naming the annotation", ip, err)
	}
	l2, err := s2.Acquire(ctx, lease.Request{Attrs: dualAttrs("192.0.2.12", "2001:db8:1::12", "0e:00:00:00:00:12", "0e:00:00:00:00:62")})
	if err != nil || l2.IPv6Subnet != netip.MustParsePrefix("2001:db8:244:8::/64") || l2.Subnet != netip.MustParsePrefix("10.244.8.0/24") {
		t.Fatalf("n2 (IPv6 podCIDR first): %+v %v", l2, err)
	}
	events := make(chan lease.Event, 64)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s2.Watch(wctx, func(e lease.Event) { events <- e }) }()
	t.Cleanup(func() { wcancel(); <-done })
	next := func() lease.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
		}
		return lease.Event{}
	}
	reset := next()
	var peer *lease.Lease
	for i, r := range reset.Leases {
		if r.Key == "node/n1" {
			peer = &reset.Leases[i].Lease
		}
	}
	if peer == nil || !peer.SameSubnets(l1) || peer.Attrs.PublicIPv6 != l1.Attrs.PublicIPv6 ||
		string(peer.Attrs.BackendV6Data) != string(attrs.BackendV6Data) || peer.Attrs.PublicIP != attrs.PublicIP {
		t.Fatalf("n2 reads n1 as %+v, want %+v", peer, l1)
	}
	// The v4only node has no IPv6 podCIDR: a record that says so.
	for _, r := range reset.Invalid {
		if r.Key == "node/v4only" {
			t.Errorf("v4only is not annotated and should not be a record: %v", r.Err)
		}
	}
	// Only n1's IPv6 annotations change: an event all the same.
	annotate(t, srv.Admin, "n1", map[string]string{"flannel.alpha.coreos.com/public-ipv6": "2001:db8:1::111",
		"flannel.alpha.coreos.com/backend-v6-data": `{"VNI":1,"VtepMAC":"0e:00:00:00:01:61"}`})
	for {
		e := next()
		if e.Record.Key != "node/n1" {
			continue
		}
		if e.Record.Lease.Attrs.PublicIPv6 == netip.MustParseAddr("2001:db8:1::111") &&
			string(e.Record.Lease.Attrs.BackendV6Data) == `{"VNI":1,"VtepMAC":"0e:00:00:00:01:61"}` {
			break
		}
	}
	// A dual-stack node without an IPv6 podCIDR says what to do.
	_, err = newStore(t, srv.Client, "v4only", conf, false).Acquire(ctx, lease.Request{Attrs: attrs})
	if !errors.Is(err, lease.ErrMisconfigured) || !strings.Contains(err.Error(), `node "v4only" has no IPv6 podCIDR`) ||
		!strings.Contains(err.Error(), "--cluster-cidr=10.244.0.0/16,2001:db8:244::/48") {
		t.Errorf("dual stack without an IPv6 podCIDR: %v", err)
	}
	annotate(t, srv.Admin, "v4only", flannelAnnotations("192.0.2.13"))
	for {
		e := next()
		if e.Record.Key == "node/v4only" {
			if e.Record.Err == nil || !strings.Contains(e.Record.Err.Error(), "no IPv6 podCIDR") {
				t.Errorf("a peer without an IPv6 podCIDR: %+v, want a record whose Err says so", e.Record)
			}
			break
		}
	}
}

// TestIPv6Only: with IPv4 disabled the lease is the IPv6 podCIDR alone,
// only the IPv6 annotations are published, and a peer is read by its
// IPv6 annotations; in read-only mode by its IPv6 InternalIP.
func TestIPv6Only(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := writeConf(t, v6OnlyConf)
	addDualNode(t, srv.Admin, "n1", []string{"2001:db8:244:1::/64"}, "2001:db8:1::11")
	addDualNode(t, srv.Admin, "n2", []string{"2001:db8:244:2::/64", "10.244.2.0/24"}, "192.0.2.12", "2001:db8:1::12")
	a := lease.Attrs{PublicIPv6: netip.MustParseAddr("2001:db8:1::11"), BackendType: "vxlan",
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}`)}
	l1, err := newStore(t, srv.Client, "n1", conf, false).Acquire(ctx, lease.Request{Attrs: a})
	if err != nil || l1.Subnet.IsValid() || l1.IPv6Subnet != netip.MustParsePrefix("2001:db8:244:1::/64") {
		t.Fatalf("IPv6-only lease %+v %v", l1, err)
	}
	n1, err := srv.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n1.Annotations["flannel.alpha.coreos.com/public-ipv6"] != "2001:db8:1::11" ||
		n1.Annotations["flannel.alpha.coreos.com/backend-v6-data"] != `{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}` {
		t.Errorf("IPv6 annotations %v", n1.Annotations)
	}
	for _, k := range []string{"flannel.alpha.coreos.com/public-ip", "flannel.alpha.coreos.com/backend-data"} {
		if v, ok := n1.Annotations[k]; ok {
			t.Errorf("IPv6-only node published %s=%q", k, v)
		}
	}
	s2 := newStore(t, srv.Client, "n2", conf, false)
	if _, err := s2.Acquire(ctx, lease.Request{Attrs: lease.Attrs{PublicIPv6: netip.MustParseAddr("2001:db8:1::12"), BackendType: "vxlan"}}); err != nil {
		t.Fatal(err)
	}
	ls := waitLeases(t, s2, 2)
	if p := ls[0]; p.IPv6Subnet != l1.IPv6Subnet || p.Subnet.IsValid() || p.Attrs.PublicIPv6 != a.PublicIPv6 || string(p.Attrs.BackendV6Data) != string(a.BackendV6Data) {
		t.Errorf("n2 reads n1 as %+v", p)
	}
	if own := ls[1]; own.IPv6Subnet != netip.MustParsePrefix("2001:db8:244:2::/64") || own.Subnet.IsValid() {
		t.Errorf("n2's own lease %+v: the IPv4 podCIDR of a disabled family is ignored", own)
	}
	ro := newStore(t, srv.Client, "n2", conf, true)
	ls = waitLeases(t, ro, 1) // its own is not acquired here
	if p := ls[0]; p.IPv6Subnet != l1.IPv6Subnet || p.Attrs.PublicIPv6 != netip.MustParseAddr("2001:db8:1::11") {
		t.Errorf("read-only n2 reads n1 as %+v, want its IPv6 InternalIP", p)
	}
}
