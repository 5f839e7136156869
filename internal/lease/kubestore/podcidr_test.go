package kubestore

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodCIDRs: one pod CIDR of each family, from spec.podCIDRs or else
// spec.podCIDR; three, or two of one family, is an error naming the node
// (the API server refuses such a Node, but a store must not trust that).
func TestPodCIDRs(t *testing.T) {
	for _, tc := range []struct {
		podCIDR  string
		podCIDRs []string
		v4, v6   string
		err      string
	}{
		{podCIDR: "10.244.1.0/24", v4: "10.244.1.0/24"},
		{podCIDR: "2001:db8:244:1::/64", v6: "2001:db8:244:1::/64"},
		{podCIDRs: []string{"2001:db8:244:1::/64", "10.244.1.0/24"}, v4: "10.244.1.0/24", v6: "2001:db8:244:1::/64"},
		{podCIDR: "10.244.9.0/24", podCIDRs: []string{"10.244.1.0/24"}, v4: "10.244.1.0/24"},
		{podCIDRs: []string{"10.244.1.7/24"}, v4: "10.244.1.0/24"},
		{},
		{podCIDRs: []string{"10.244.1.0/24", "2001:db8:244:1::/64", "10.244.2.0/24"}, err: `node "n" has 3 podCIDRs`},
		{podCIDRs: []string{"10.244.1.0/24", "10.244.2.0/24"}, err: `node "n" has two IPv4 podCIDRs`},
		{podCIDRs: []string{"2001:db8:244:1::/64", "2001:db8:244:2::/64"}, err: `node "n" has two IPv6 podCIDRs`},
		{podCIDRs: []string{"::ffff:10.244.1.0/120"}, err: `node "n": podCIDR "::ffff:10.244.1.0/120" is an IPv4-mapped`},
		{podCIDRs: []string{"10.244.1.0"}, err: `node "n": podCIDR "10.244.1.0"`},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDR: tc.podCIDR, PodCIDRs: tc.podCIDRs}}
		l, err := podCIDRs(n)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("podCIDRs(%q, %q) = %v, want an error with %q", tc.podCIDR, tc.podCIDRs, err, tc.err)
			}
			continue
		}
		if err != nil || l.Subnet != prefix(tc.v4) || l.IPv6Subnet != prefix(tc.v6) {
			t.Errorf("podCIDRs(%q, %q) = %s %v, want %q %q", tc.podCIDR, tc.podCIDRs, l.Key(), err, tc.v4, tc.v6)
		}
	}
}

func prefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s)
}
