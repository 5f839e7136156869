package difftest

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flease "github.com/flannel-io/flannel/pkg/lease"
	fkube "github.com/flannel-io/flannel/pkg/subnet/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/kubestore"
)

const annPrefix = kubestore.DefaultPrefix + "/"

// kubeNode creates a Node with the given pod CIDRs, as
// kube-controller-manager assigns them, and the annotation its ttl
// controller sets (flannel's AcquireLease panics on a Node without
// annotations, which a real cluster never has).
func kubeNode(t *testing.T, c kubernetes.Interface, name string, cidrs ...string) {
	t.Helper()
	meta := metav1.ObjectMeta{Name: name, Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}}
	n := &corev1.Node{ObjectMeta: meta, Spec: corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs}}
	if _, err := c.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// flannelAnnotations are a Node's annotations under flannel's prefix.
func flannelAnnotations(t *testing.T, c kubernetes.Interface, name string) map[string]string {
	t.Helper()
	n, err := c.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, annPrefix) {
			out[strings.TrimPrefix(k, annPrefix)] = v
		}
	}
	return out
}

// TestWireguardAnnotationsWithFlannelKube: in Kubernetes mode, on a real
// API server, flannel's own kube subnet manager (pkg/subnet/kube, the code
// flanneld runs with --kube-subnet-mgr) and weft's kubestore each publish
// a wireguard node, IPv4-only, dual stack and IPv6-only, and each reads
// the other's: flannel's AcquireLease writes the annotations, weft's List
// turns them into a lease whose backend data wireguard.ParseData reads as
// flannel's key and ports; weft's Acquire writes the annotations, flannel's
// informer (nodeToLease) turns them into a lease whose backend data
// decodes in flannel's wireguardLeaseAttrs as weft's key and ports. The
// annotations themselves are the same strings, but for the public
// addresses, and for flannel's backend-data "null" and public-ip "0.0.0.0"
// in an IPv6-only network (flannel writes them; weft writes no IPv4
// annotations when IPv4 is off, and neither reads them then).
func TestWireguardAnnotationsWithFlannelKube(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := srv.Files.WriteKubeconfig(kubeconfig, srv.URL, srv.Files.AdminToken); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name, doc  string
		fl, wf     []string // pod CIDRs
		flIP, wfIP [2]string
		p4, p6     uint16
	}{
		{"ipv4", `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`,
			[]string{"10.244.1.0/24"}, []string{"10.244.2.0/24"},
			[2]string{"192.0.2.41", ""}, [2]string{"192.0.2.42", ""}, 51820, 0},
		{"dual", `{"EnableIPv6":true,"Network":"10.245.0.0/16","IPv6Network":"2001:db8:245::/48","Backend":{"Type":"wireguard"}}`,
			[]string{"10.245.1.0/24", "2001:db8:245:1::/64"}, []string{"10.245.2.0/24", "2001:db8:245:2::/64"},
			[2]string{"192.0.2.43", "2001:db8:0:1::43"}, [2]string{"192.0.2.44", "2001:db8:0:1::44"}, 51820, 51821},
		{"ipv6", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:246::/48","Backend":{"Type":"wireguard"}}`,
			[]string{"2001:db8:246:1::/64"}, []string{"2001:db8:246:2::/64"},
			[2]string{"", "2001:db8:0:1::45"}, [2]string{"", "2001:db8:0:1::46"}, 0, 51821},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "net-conf.json")
			if err := os.WriteFile(conf, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			flName, wfName := "fl-"+tc.name, "wf-"+tc.name
			kubeNode(t, srv.Admin, flName, tc.fl...)
			kubeNode(t, srv.Admin, wfName, tc.wf...)
			flPub, flKey := wgKey(t, byte(20+i))
			wfPub, wfKey := wgKey(t, byte(30+i))
			ports := []uint16{tc.p4, tc.p6}

			// flannel's kube subnet manager, as flanneld on node fl-*.
			t.Setenv("NODE_NAME", flName)
			fctx, fcancel := context.WithCancel(ctx)
			defer fcancel()
			sm, err := fkube.NewSubnetManager(fctx, "", kubeconfig, kubestore.DefaultPrefix, conf, false)
			if err != nil {
				t.Fatal(err)
			}
			events := make(chan []flease.LeaseWatchResult, 100)
			go func() { _ = sm.WatchLeases(fctx, events) }()
			var ip4, ip6 net.IP
			if tc.flIP[0] != "" {
				ip4 = net.ParseIP(tc.flIP[0]).To4()
			}
			if tc.flIP[1] != "" {
				ip6 = net.ParseIP(tc.flIP[1])
			}
			fa := flannelWGAttrs(t, ip4, ip6, tc.p4 != 0, tc.p6 != 0, flPub, tc.p4, tc.p6)
			if _, err := sm.AcquireLease(fctx, &fa); err != nil {
				t.Fatalf("flannel's AcquireLease: %v", err)
			}

			// weft's kubestore, as weft-agent on node wf-*.
			st, err := kubestore.New(kubestore.Options{Client: srv.Client, NodeName: wfName, ConfigPath: conf, Log: slog.Default()})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			wa := lease.Attrs{BackendType: wireguard.Type}
			if tc.wfIP[0] != "" {
				wa.PublicIP = netip.MustParseAddr(tc.wfIP[0])
				wa.BackendData = mustJSON(t, wireguard.Data{PublicKey: wfPub, Port: tc.p4})
			}
			if tc.wfIP[1] != "" {
				wa.PublicIPv6 = netip.MustParseAddr(tc.wfIP[1])
				wa.BackendV6Data = mustJSON(t, wireguard.Data{PublicKey: wfPub, Port: tc.p6})
			}
			if _, err := st.Acquire(ctx, lease.Request{Attrs: wa}); err != nil {
				t.Fatalf("weft's Acquire: %v", err)
			}

			// The annotations: the same strings but for the addresses.
			fann, wann := flannelAnnotations(t, srv.Admin, flName), flannelAnnotations(t, srv.Admin, wfName)
			t.Logf("flannel wrote %v", fann)
			t.Logf("weft wrote    %v", wann)
			for k, fv := range fann {
				wv, ok := wann[k]
				switch {
				case k == "public-ip" || k == "public-ipv6":
					if ok != (fv != "0.0.0.0") {
						t.Errorf("%s: flannel %q, weft %q (present %v)", k, fv, wv, ok)
					}
				case tc.p4 == 0 && (k == "backend-data" && fv == "null"):
					if ok {
						t.Errorf("%s: flannel %q, weft %q; want none from weft with IPv4 off", k, fv, wv)
					}
				case !ok:
					t.Errorf("%s: flannel writes %q, weft nothing", k, fv)
				case k == "backend-data" || k == "backend-v6-data":
					if strings.ReplaceAll(fv, flPub, wfPub) != wv {
						t.Errorf("%s: flannel %q, weft %q (keys aside)", k, fv, wv)
					}
				case fv != wv:
					t.Errorf("%s: flannel %q, weft %q", k, fv, wv)
				}
			}
			for k, wv := range wann {
				if _, ok := fann[k]; !ok {
					t.Errorf("%s: weft writes %q, flannel nothing", k, wv)
				}
			}

			// weft reads flannel's node.
			var got *lease.Lease
			for got == nil {
				ls, err := st.List(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range ls {
					if l.Subnet == prefixOf(tc.fl, false) && l.IPv6Subnet == prefixOf(tc.fl, true) {
						got = &l
					}
				}
				if got == nil {
					select {
					case <-ctx.Done():
						t.Fatalf("weft never lists flannel's node %s", flName)
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
			if d := attrsDiff(fa, got.Attrs); d != "" {
				t.Errorf("weft reads flannel's node with %s", d)
			}
			checkWGDataInWeft(t, "weft reads flannel's node", []wgDataFamily{{"backend-data", got.Attrs.BackendData}, {"backend-v6-data", got.Attrs.BackendV6Data}}, flKey, ports)

			// flannel reads weft's node.
			var fl *flease.Lease
			for fl == nil {
				select {
				case <-ctx.Done():
					t.Fatalf("flannel never sees weft's node %s", wfName)
				case batch := <-events:
					for _, r := range batch {
						for _, ev := range r.Events {
							l := ev.Lease
							if ev.Type == flease.EventAdded && sameSubnets(l, tc.wf) {
								fl = &l
							}
						}
					}
				}
			}
			if d := attrsDiff(fl.Attrs, wa); d != "" {
				t.Errorf("flannel reads weft's node with %s", d)
			}
			checkWGDataInFlannel(t, "flannel reads weft's node", []wgDataFamily{{"backend-data", fl.Attrs.BackendData}, {"backend-v6-data", fl.Attrs.BackendV6Data}}, wfKey, ports)
		})
	}
}

// prefixOf is the pod CIDR of one family in cidrs (invalid if none).
func prefixOf(cidrs []string, v6 bool) netip.Prefix {
	for _, c := range cidrs {
		if p := netip.MustParsePrefix(c); p.Addr().Is6() == v6 {
			return p
		}
	}
	return netip.Prefix{}
}

// sameSubnets: flannel's lease holds the pod CIDRs of the families it
// enables.
func sameSubnets(l flease.Lease, cidrs []string) bool {
	want4, want6 := prefixOf(cidrs, false), prefixOf(cidrs, true)
	if want4.IsValid() != l.EnableIPv4 || want6.IsValid() != l.EnableIPv6 {
		return false
	}
	if l.EnableIPv4 && l.Subnet.String() != want4.String() {
		return false
	}
	return !l.EnableIPv6 || l.IPv6Subnet.String() == want6.String()
}
