package kubestore

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// fuzzConfigs are the network configs FuzzNodeLease reads nodes with:
// IPv4 only, dual stack, IPv6 only.
var fuzzConfigs = []string{
	`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`,
	`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:244::/48","Backend":{"Type":"vxlan"}}`,
}

// FuzzNodeLease feeds arbitrary annotations, pod CIDRs and addresses (all
// written by others) to the Node-to-lease conversion, under an IPv4, a
// dual-stack and an IPv6-only config: no panic, and a lease it accepts is
// well formed, with a subnet, an address and backend data of each enabled
// family and nothing of a disabled one.
func FuzzNodeLease(f *testing.F) {
	f.Add(uint8(0), "true", "vxlan", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`, "192.0.2.11", "", "", "10.244.1.0/24", "", "192.0.2.11", false)
	f.Add(uint8(0), "true", "host-gw", "null", "192.0.2.12", "", "", "10.244.2.0/24", "", "", false)
	f.Add(uint8(0), "", "", "", "", "", "", "fd00::/64", "", "192.0.2.13", true)
	f.Add(uint8(0), "true", "vxlan", `{"VNI":`, "::1", "", "", "10.244.300.0/24", "", "x", true)
	f.Add(uint8(1), "true", "vxlan", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`, "192.0.2.11",
		`{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}`, "2001:db8:1::11", "10.244.1.0/24", "2001:db8:244:1::/64", "192.0.2.11", false)
	f.Add(uint8(1), "true", "host-gw", "null", "192.0.2.12", "null", "2001:db8:1::12", "2001:db8:244:2::/64", "10.244.2.0/24", "2001:db8:1::12", true)
	f.Add(uint8(1), "true", "vxlan", "null", "192.0.2.12", "null", "192.0.2.12", "10.244.2.0/24", "10.244.3.0/24", "", false)
	f.Add(uint8(2), "true", "vxlan", "", "", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:61"}`, "2001:db8:1::11", "2001:db8:244:1::/64", "", "2001:db8:1::11", false)
	f.Add(uint8(2), "true", "vxlan", "", "", "", "::ffff:192.0.2.1", "::ffff:10.244.1.0/120", "2001:db8:99::/64", "::ffff:192.0.2.1", true)
	var cfgs []*config.Config
	for _, doc := range fuzzConfigs {
		cfg, err := config.Parse([]byte(doc))
		if err != nil {
			f.Fatal(err)
		}
		cfgs = append(cfgs, cfg)
	}
	f.Fuzz(func(t *testing.T, which uint8, managed, typ, data, publicIP, data6, publicIPv6, podCIDR, podCIDR2, internalIP string, readOnly bool) {
		cfg := cfgs[int(which)%len(cfgs)]
		ann, _ := newAnnotations(DefaultPrefix)
		s := &Store{o: Options{ReadOnly: readOnly, Prefix: DefaultPrefix}, ann: ann, cfg: cfg}
		v4, v6 := ann.fam[lease.IPv4], ann.fam[lease.IPv6]
		cidrs := []string{podCIDR}
		if podCIDR2 != "" {
			cidrs = append(cidrs, podCIDR2)
		}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{
			ann.managed: managed, ann.backendType: typ,
			v4.backendData: data, v4.publicIP: publicIP, v4.nodePublicIP: publicIP,
			v6.backendData: data6, v6.publicIP: publicIPv6, v6.nodePublicIP: publicIPv6}},
			Spec:   corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: cidrs},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}}}}
		stripped, err := s.strip(n)
		if err != nil {
			t.Fatal(err)
		}
		l, ok, err := s.nodeLease(stripped.(*corev1.Node))
		if err != nil {
			if ok {
				t.Errorf("accepted a node with error %v", err)
			}
			for _, v := range []string{publicIP, publicIPv6} {
				if len(v) > 16 && strings.Contains(err.Error(), v) {
					t.Errorf("the error quotes the annotation: %v", err)
				}
			}
		}
		if !ok {
			return
		}
		for _, f := range lease.Families {
			fam, on := f.Of(cfg)
			sub, ip, bd := *l.SubnetOf(f), *l.Attrs.PublicIPOf(f), *l.Attrs.BackendDataOf(f)
			if !on {
				if sub.IsValid() || ip.IsValid() || bd != nil {
					t.Errorf("%s is disabled, yet the lease has %v %v %q", f, sub, ip, bd)
				}
				continue
			}
			if !sub.IsValid() || !fam.Network.Contains(sub.Addr()) || sub.Bits() < fam.Network.Bits() || sub.Masked() != sub {
				t.Errorf("accepted %s subnet %v from %q", f, sub, cidrs)
			}
			if !f.Has(ip) {
				t.Errorf("accepted %s public IP %v", f, ip)
			}
			if bd != nil && !json.Valid(bd) {
				t.Errorf("accepted %s backend data %q", f, bd)
			}
		}
		if !readOnly && managed != "true" {
			t.Error("accepted a node without kube-subnet-manager=true")
		}
	})
}
