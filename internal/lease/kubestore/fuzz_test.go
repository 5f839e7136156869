package kubestore

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/config"
)

// FuzzNodeLease feeds arbitrary annotations, pod CIDRs and addresses (all
// written by others) to the Node-to-lease conversion: no panic, and a lease
// it accepts is well formed.
func FuzzNodeLease(f *testing.F) {
	f.Add("true", "vxlan", `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`, "192.0.2.11", "10.244.1.0/24", "192.0.2.11", false)
	f.Add("true", "host-gw", "null", "192.0.2.12", "10.244.2.0/24", "", false)
	f.Add("", "", "", "", "fd00::/64", "192.0.2.13", true)
	f.Add("true", "vxlan", `{"VNI":`, "::1", "10.244.300.0/24", "x", true)
	cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, managed, typ, data, publicIP, podCIDR, internalIP string, readOnly bool) {
		ann, _ := newAnnotations(DefaultPrefix)
		s := &Store{o: Options{ReadOnly: readOnly, Prefix: DefaultPrefix}, ann: ann, cfg: cfg}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{
			ann.managed: managed, ann.backendType: typ, ann.backendData: data, ann.publicIP: publicIP, ann.nodePublicIP: publicIP}},
			Spec:   corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
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
			if len(publicIP) > 16 && strings.Contains(err.Error(), publicIP) {
				t.Errorf("the error quotes the annotation: %v", err)
			}
		}
		if !ok {
			return
		}
		if !l.Subnet.IsValid() || !cfg.IPv4.Network.Contains(l.Subnet.Addr()) || l.Subnet.Masked() != l.Subnet {
			t.Errorf("accepted subnet %v from %q", l.Subnet, podCIDR)
		}
		if !l.Attrs.PublicIP.Is4() {
			t.Errorf("accepted public IP %v", l.Attrs.PublicIP)
		}
		if l.Attrs.BackendData != nil && !json.Valid(l.Attrs.BackendData) {
			t.Errorf("accepted backend data %q", l.Attrs.BackendData)
		}
		if !readOnly && managed != "true" {
			t.Error("accepted a node without kube-subnet-manager=true")
		}
	})
}
